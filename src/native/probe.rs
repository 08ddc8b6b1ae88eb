//! The proof a native plan must pass before it serves: ONNX Runtime and the plan run the same rows
//! and every value of the declared output agrees (see [`super::agrees`]).

use ort::session::Session;
use ort::value::TensorRef;

use super::{agrees, probe_rows, NativeModel};
use crate::runtime::Runtime;

/// Compiles `bytes` for `output` and checks the plan against ONNX Runtime on `rows` (the probe rows
/// when `None`); `Err` says why the model keeps ONNX Runtime.
///
/// # Errors
///
/// Why the plan was not taken, as text.
pub fn verified(
    runtime: &Runtime,
    model: &str,
    bytes: &[u8],
    output: &str,
    features: usize,
    rows: Option<&[f32]>,
) -> Result<NativeModel, String> {
    let plan = NativeModel::compile(bytes, output, features)?;
    let mut session = runtime.session(model, bytes, None).map_err(|e| e.to_string())?;
    let probes;
    let rows = match rows {
        Some(r) => r,
        None => {
            probes = probe_rows(features);
            &probes
        }
    };
    compare(&plan, &mut session, output, features, rows)?;
    Ok(plan)
}

/// Runs `rows` through both; the first disagreement, or an output ONNX Runtime computes but the
/// plan cannot match in shape, is the error.
///
/// # Errors
///
/// The first mismatch, as text.
pub fn compare(
    plan: &NativeModel,
    session: &mut Session,
    output: &str,
    features: usize,
    rows: &[f32],
) -> Result<(), String> {
    let count = rows.len() / features;
    let width = plan.output_width();
    // ONNX Runtime's answers, in as many calls as a fixed batch size takes.
    let mut expected = Vec::with_capacity(count * width);
    let per_call = crate::batch_size::fixed_batch(session);
    crate::batch_size::in_calls(rows, features, per_call, &mut Vec::new(), |piece| {
        let tensor =
            TensorRef::from_array_view(([piece.input_rows, features], piece.input)).map_err(|e| e.to_string())?;
        let outputs =
            session.run(ort::inputs![tensor]).map_err(|e| format!("ONNX Runtime failed on the probe rows: {e}"))?;
        let value = outputs.get(output).ok_or_else(|| format!("ONNX Runtime did not produce {output:?}"))?;
        let (shape, values) =
            value.try_extract_tensor::<f32>().map_err(|_| format!("output {output:?} is not a float32 tensor"))?;
        let per_row: i64 = shape.iter().skip(1).product();
        if shape.first().copied() != Some(piece.input_rows as i64) || per_row != width as i64 {
            let rows = piece.input_rows;
            return Err(format!("ONNX Runtime's output has shape {:?}, the plan's [{rows}, {width}]", &shape[..]));
        }
        expected.extend_from_slice(&values[..piece.rows * width]);
        Ok(())
    })?;
    let mut arena = Vec::new();
    let got = plan.run(rows, count, &mut arena);
    for (i, (n, o)) in got.iter().zip(&expected).enumerate() {
        if !agrees(*n, *o) {
            return Err(format!(
                "on probe row {} column {} the plan answered {n} where ONNX Runtime answered {o}",
                i / width,
                i % width
            ));
        }
    }
    Ok(())
}
