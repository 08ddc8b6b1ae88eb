//! The element type a model's input takes. Features are float32 throughout quorum; a model that
//! takes float64 (what skl2onnx writes for sklearn's float64 data), float16 or int64 gets them
//! converted once per call: float64 exactly, float16 rounded to nearest, int64 rounded to the
//! nearest integer (halves away from zero) and saturated at the type's range.

use ort::session::SessionInputValue;
use ort::value::{Tensor, TensorElementType, TensorRef};
use serde::{Deserialize, Serialize};

/// The element type of a model's input (see the module docs for the conversions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// float32 (the features as they are).
    #[default]
    Float32,
    /// float64 (features widened).
    Float64,
    /// float16 (features rounded).
    Float16,
    /// int64 (features must be whole numbers).
    Int64,
}

impl InputType {
    /// The type for an ONNX Runtime element type, or `None` when quorum cannot feed it.
    pub(crate) fn of(element: TensorElementType) -> Option<InputType> {
        match element {
            TensorElementType::Float32 => Some(InputType::Float32),
            TensorElementType::Float64 => Some(InputType::Float64),
            TensorElementType::Float16 => Some(InputType::Float16),
            TensorElementType::Int64 => Some(InputType::Int64),
            _ => None,
        }
    }

    /// Whether the input takes float32 (no conversion).
    pub fn is_float32(&self) -> bool {
        *self == InputType::Float32
    }

    /// `rows × width` features as this type's tensor: float32 borrowed, the others converted.
    pub(crate) fn tensor(self, rows: usize, width: usize, values: &[f32]) -> ort::Result<SessionInputValue<'_>> {
        let shape = [rows, width];
        Ok(match self {
            InputType::Float32 => TensorRef::from_array_view((shape, values))?.into(),
            InputType::Float64 => {
                Tensor::from_array((shape, values.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>()))?.into()
            }
            InputType::Float16 => {
                Tensor::from_array((shape, values.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>()))?.into()
            }
            // `as` saturates (and sends NaN to 0; features are finite by then).
            InputType::Int64 => {
                Tensor::from_array((shape, values.iter().map(|&v| v.round() as i64).collect::<Vec<i64>>()))?.into()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_convert_to_each_input_type_as_documented() {
        // Tensors need ONNX Runtime loaded: the runtime finds the library as the engine does.
        let _runtime = crate::runtime::Runtime::new(crate::runtime::RuntimeOptions::default()).unwrap();
        let values = [1.5f32, -2.5, 0.1, 1e20];
        let check = |ty: InputType| {
            let tensor = ty.tensor(2, 2, &values).unwrap();
            tensor.dtype().clone()
        };
        for ty in [InputType::Float32, InputType::Float64, InputType::Float16, InputType::Int64] {
            let dtype = check(ty);
            let element = match dtype {
                ort::value::ValueType::Tensor { ty, .. } => ty,
                other => panic!("{other:?}"),
            };
            assert_eq!(InputType::of(element), Some(ty));
        }
        let ints = InputType::Int64.tensor(2, 2, &values).unwrap();
        let (_, data) = ints.try_extract_tensor::<i64>().unwrap();
        // Halves away from zero; beyond the range, saturated.
        assert_eq!(data, &[2, -3, 0, i64::MAX]);
        let doubles = InputType::Float64.tensor(2, 2, &values).unwrap();
        let (_, data) = doubles.try_extract_tensor::<f64>().unwrap();
        assert_eq!(data[2], f64::from(0.1f32));
    }
}
