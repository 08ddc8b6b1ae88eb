//! Models with several inputs, joined at registration into the one `[batch, features]` input that
//! quorum feeds. skl2onnx writes one `[N, 1]` input per DataFrame column, named as the column;
//! other graphs take groups of features (`x1 = [a, b]`, `x2 = [c, d]`). The stored model gets one
//! float32 input `[N, F]` over the declared features, and for each original input a `Gather` of
//! its columns (then a `Cast` where the input is not float32) whose output keeps the input's name.
//! The rest of the graph is untouched, and every path (batching, caching, fusion, native
//! executors, the optimizer) sees an ordinary single-input model.
//!
//! Conversion into an input's type happens inside the graph, once per call: float64 exactly,
//! float16 by ONNX `Cast` (to nearest), integers by ONNX `Round` (halves to even; from opset 11,
//! below it `Cast` truncates) then `Cast`, booleans as "not zero".

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::tensor_shape_proto::dimension::Value as Dim;
use crate::onnx::proto::type_proto::{Tensor as TensorType, Value as TypeValue};
use crate::onnx::proto::{
    attribute_proto::AttributeType, AttributeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use crate::onnx::{self};

/// Which declared features feed which model input: `x1=a,b;x2=c,d` (inputs separated by `;`,
/// features by `,`). A `[N, k]` input takes its `k` features in the order given; a `[N]` input
/// takes one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InputMap {
    entries: Vec<(String, Vec<String>)>,
}

impl InputMap {
    /// Each input with the features it takes, in the model's input order once joined.
    pub fn entries(&self) -> &[(String, Vec<String>)] {
        &self.entries
    }
}

impl FromStr for InputMap {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad =
            |why: String| Error::Config(format!("--inputs {s:?}: {why} (expected 'INPUT=FEATURE,...;INPUT=...')"));
        let mut entries: Vec<(String, Vec<String>)> = Vec::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (input, features) = part.split_once('=').ok_or_else(|| bad(format!("{part:?} has no '='")))?;
            let input = input.trim();
            if input.is_empty() {
                return Err(bad(format!("{part:?} names no input")));
            }
            if entries.iter().any(|(name, _)| name == input) {
                return Err(bad(format!("input {input:?} is mapped twice")));
            }
            let features: Vec<String> =
                features.split(',').map(str::trim).filter(|f| !f.is_empty()).map(String::from).collect();
            if features.is_empty() {
                return Err(bad(format!("input {input:?} is given no feature")));
            }
            entries.push((input.to_string(), features));
        }
        if entries.is_empty() {
            return Err(bad("no input is mapped".into()));
        }
        Ok(InputMap { entries })
    }
}

impl fmt::Display for InputMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (input, features)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{input}={}", features.join(","))?;
        }
        Ok(())
    }
}

/// A model rewritten to take one input, the map it was joined by, and what was done.
#[derive(Debug)]
pub(crate) struct Joined {
    pub bytes: Vec<u8>,
    pub map: InputMap,
    pub note: String,
}

/// One graph input as registration sees it.
struct GraphInput {
    name: String,
    elem_type: i32,
    /// `None` for an unknown shape; each dimension `None` when symbolic.
    dims: Option<Vec<Option<i64>>>,
}

/// Joins the inputs of a model that has several (or one `[N]` input) into one `[N, features]`
/// float32 input. `None` when the model already takes one `[N, k]` input and no map was given, or
/// when it does not decode (the load check reports that).
pub(crate) fn join(
    bytes: &[u8],
    features: &[String],
    map: Option<&InputMap>,
) -> std::result::Result<Option<Joined>, String> {
    let Ok(mut model) = onnx::decode(bytes) else { return Ok(None) };
    let opset = onnx::default_opset(&model);
    let Some(graph) = model.graph.as_mut() else { return Ok(None) };
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let inputs: Vec<GraphInput> =
        graph.input.iter().filter(|v| !initializers.contains(v.name())).map(graph_input).collect();
    if map.is_none() && inputs.len() == 1 && inputs[0].dims.as_ref().is_none_or(|d| d.len() != 1) {
        return Ok(None);
    }
    let names = || inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ");
    let map = match map {
        Some(map) => {
            for (input, _) in &map.entries {
                if !inputs.iter().any(|i| &i.name == input) {
                    return Err(format!(
                        "--inputs maps {input:?}, which is not an input of the model (inputs: {})",
                        names()
                    ));
                }
            }
            if let Some(missing) = inputs.iter().find(|i| !map.entries.iter().any(|(name, _)| name == &i.name)) {
                return Err(format!(
                    "--inputs does not map the model's input {:?} (inputs: {})",
                    missing.name,
                    names()
                ));
            }
            map.clone()
        }
        None => {
            let unnamed: Vec<&str> =
                inputs.iter().map(|i| i.name.as_str()).filter(|n| !features.iter().any(|f| f == n)).collect();
            if !unnamed.is_empty() {
                return Err(format!(
                    "the model has {} inputs ({}) and {} not named as a declared feature ({}): declare the \
                     features by the input names, or map them with --inputs 'INPUT=FEATURE,...;...'",
                    inputs.len(),
                    names(),
                    if unnamed.len() == 1 { "one is" } else { "some are" },
                    unnamed.join(", ")
                ));
            }
            InputMap { entries: inputs.iter().map(|i| (i.name.clone(), vec![i.name.clone()])).collect() }
        }
    };
    for (input, mapped) in &map.entries {
        if let Some(f) = mapped.iter().find(|f| !features.contains(f)) {
            return Err(format!("--inputs maps feature {f:?} to input {input:?}, and it is not declared"));
        }
    }

    // Check every input and find the batch dimension they share.
    let mut batch: Option<i64> = None;
    for input in &inputs {
        let mapped = &map.entries.iter().find(|(name, _)| name == &input.name).expect("every input is mapped").1;
        check_type(input)?;
        let Some(dims) = &input.dims else {
            return Err(format!("input {:?} declares no shape; quorum needs [batch] or [batch, columns]", input.name));
        };
        match dims.as_slice() {
            [_] if mapped.len() != 1 => {
                return Err(format!(
                    "input {:?} is [batch] (one feature) and is given {} ({})",
                    input.name,
                    mapped.len(),
                    mapped.join(", ")
                ))
            }
            [_, Some(k)] if *k != mapped.len() as i64 => {
                return Err(format!(
                    "input {:?} takes {k} columns and is given {} feature(s) ({})",
                    input.name,
                    mapped.len(),
                    mapped.join(", ")
                ))
            }
            [_] | [_, _] => {}
            other => {
                return Err(format!(
                    "input {:?} has rank {}; quorum needs [batch] or [batch, columns]",
                    input.name,
                    other.len()
                ))
            }
        }
        if let Some(n) = dims[0] {
            if batch.is_some_and(|b| b != n) {
                return Err(format!("the inputs fix different batch sizes ({} and {n})", batch.unwrap_or(0)));
            }
            batch = Some(n);
        }
    }

    // The joined input, named so that it collides with no value of the graph.
    let taken = |name: &str| {
        graph.input.iter().any(|v| v.name() == name)
            || graph.initializer.iter().any(|t| t.name() == name)
            || graph.node.iter().any(|n| n.output.iter().any(|o| o == name))
    };
    let mut joined = "features".to_string();
    let mut n = 0;
    while taken(&joined) {
        n += 1;
        joined = format!("features_{n}");
    }
    let mut nodes = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let mapped = &map.entries.iter().find(|(name, _)| name == &input.name).expect("every input is mapped").1;
        let columns: Vec<i64> =
            mapped.iter().map(|f| features.iter().position(|d| d == f).expect("checked above") as i64).collect();
        let rank1 = input.dims.as_ref().is_some_and(|d| d.len() == 1);
        let prefix = format!("quorum_join_{i}");
        let indices = format!("{prefix}_columns");
        let dims: &[i64] = if rank1 { &[] } else { &[columns.len() as i64] };
        nodes.push(constant(&indices, dims, &columns, &prefix));
        let float32 = input.elem_type == DataType::Float as i32;
        let gathered = if float32 { input.name.clone() } else { format!("{prefix}_gathered") };
        let mut gather = onnx::node("Gather", &[&joined, &indices], &[&gathered], &format!("{prefix}_gather"));
        gather.attribute.push(onnx::int_attribute("axis", 1));
        nodes.push(gather);
        if float32 {
            continue;
        }
        let mut source = gathered;
        if is_integer(input.elem_type) && opset.unwrap_or(0) >= 11 {
            let rounded = format!("{prefix}_rounded");
            nodes.push(onnx::node("Round", &[&source], &[&rounded], &format!("{prefix}_round")));
            source = rounded;
        }
        let mut cast = onnx::node("Cast", &[&source], &[&input.name], &format!("{prefix}_cast"));
        cast.attribute.push(onnx::int_attribute("to", i64::from(input.elem_type)));
        nodes.push(cast);
    }
    let original: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    graph.input.retain(|v| !original.iter().any(|o| o == v.name()));
    graph.input.insert(0, float_input(&joined, batch, features.len() as i64));
    nodes.append(&mut graph.node);
    graph.node = nodes;
    if opset.is_none() {
        // A graph of ai.onnx.ml operators alone: Gather and Cast need the default domain.
        model.opset_import.push(OperatorSetIdProto { domain: Some(String::new()), version: Some(9) });
    }
    let unused: Vec<&str> =
        features.iter().filter(|f| !map.entries.iter().any(|(_, m)| m.contains(f))).map(String::as_str).collect();
    let mut note = format!(
        "its {} input(s) are joined into one [batch, {}] input over the declared features ({map})",
        inputs.len(),
        features.len()
    );
    if !unused.is_empty() {
        note.push_str(&format!("; the model does not read {}", unused.join(", ")));
    }
    Ok(Some(Joined { bytes: onnx::encode(&model), map, note }))
}

fn graph_input(v: &ValueInfoProto) -> GraphInput {
    let tensor = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => Some(t),
        _ => None,
    };
    GraphInput {
        name: v.name().to_string(),
        elem_type: tensor.and_then(|t| t.elem_type).unwrap_or(0),
        dims: tensor.and_then(|t| t.shape.as_ref()).map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Dim::DimValue(n)) if n >= 0 => Some(n),
                    _ => None,
                })
                .collect()
        }),
    }
}

/// Numbers and booleans can be fed; anything else is refused with what to change before export.
fn check_type(input: &GraphInput) -> std::result::Result<(), String> {
    let t = DataType::try_from(input.elem_type).unwrap_or(DataType::Undefined);
    match t {
        DataType::Float
        | DataType::Double
        | DataType::Float16
        | DataType::Bool
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::Uint8
        | DataType::Uint16
        | DataType::Uint32
        | DataType::Uint64 => Ok(()),
        DataType::String => Err(format!(
            "input {:?} takes strings; quorum's features are numbers: encode the column as numbers before \
             training and export (for example an OrdinalEncoder fitted outside the exported pipeline), or leave \
             it out of the model",
            input.name
        )),
        other => Err(format!(
            "input {:?} is {}; quorum feeds float32 and converts into float64, float16, integers or booleans \
             (cast the data to float32 before exporting, e.g. to_onnx(model, X[:1].astype(numpy.float32)))",
            input.name,
            if input.elem_type == 0 { "not a tensor".to_string() } else { format!("a tensor of {other:?}") }
        )),
    }
}

fn is_integer(elem_type: i32) -> bool {
    [DataType::Int8, DataType::Int16, DataType::Int32, DataType::Int64]
        .iter()
        .chain(&[DataType::Uint8, DataType::Uint16, DataType::Uint32, DataType::Uint64])
        .any(|t| *t as i32 == elem_type)
}

fn constant(name: &str, dims: &[i64], values: &[i64], node_name: &str) -> crate::onnx::proto::NodeProto {
    let tensor = TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Int64 as i32),
        int64_data: values.to_vec(),
        ..Default::default()
    };
    let mut node = onnx::node("Constant", &[], &[name], node_name);
    node.attribute.push(AttributeProto {
        name: Some("value".into()),
        t: Some(tensor),
        r#type: Some(AttributeType::Tensor as i32),
        ..Default::default()
    });
    node
}

fn float_input(name: &str, batch: Option<i64>, width: i64) -> ValueInfoProto {
    use crate::onnx::proto::tensor_shape_proto::Dimension;
    let batch = match batch {
        Some(n) => Dim::DimValue(n),
        None => Dim::DimParam("batch".into()),
    };
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: vec![
                        Dimension { value: Some(batch), ..Default::default() },
                        Dimension { value: Some(Dim::DimValue(width)), ..Default::default() },
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_parses_and_prints_back() {
        let map: InputMap = " x1 = a, b ; x2=c,d;".parse().unwrap();
        assert_eq!(map.entries()[0], ("x1".to_string(), vec!["a".to_string(), "b".to_string()]));
        assert_eq!(map.to_string(), "x1=a,b;x2=c,d");
    }

    #[test]
    fn malformed_maps_are_config_errors() {
        for bad in ["", "x1", "=a", "x1=", "x1=a;x1=b"] {
            let err = bad.parse::<InputMap>().unwrap_err();
            assert_eq!(err.code(), "config", "{bad:?}: {err}");
        }
    }
}
