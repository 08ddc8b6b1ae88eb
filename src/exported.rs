//! Classifier outputs as exporters write them, settled once at registration. skl2onnx and
//! onnxmltools end a classifier with a `ZipMap`: a sequence of maps from class label to probability,
//! one map per row, which quorum cannot read and which costs a map per prediction. The ZipMap is cut
//! off: the model is stored with the probability tensor that fed it as its output, and the class
//! the prediction is read from is mapped to that tensor's column once, from the ZipMap's labels.
//! A class label (`--output NAME:up`) is resolved the same way for a ZipMap or a classifier node
//! with labels.

use crate::onnx::proto::type_proto::{Tensor as TensorType, Value as TypeValue};
use crate::onnx::proto::{tensor_proto::DataType, NodeProto, TypeProto, ValueInfoProto};
use crate::onnx::{self, ML_DOMAIN};

/// A declared output: the name, and a column or a class label (the registry's `OutputSpec`, kept
/// apart so that this module does not import the registry that calls it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Declared {
    pub name: String,
    pub column: Option<usize>,
    pub label: Option<String>,
    /// Nothing was declared: `probabilities:1` when the model has it, else the obvious output.
    pub pick: bool,
}

/// What registration reads from a model and what it stores.
#[derive(Debug)]
pub(crate) struct Settled {
    /// The model without its ZipMap, when it had one on the declared output.
    pub bytes: Option<Vec<u8>>,
    /// The declared output, resolved: the tensor's name and its column.
    pub output: Declared,
    /// What was done, for the registration's report.
    pub note: Option<String>,
}

/// Settles `spec` against the model: cuts a ZipMap that produces it (or that its name feeds), and
/// resolves a class label to a column. A model that does not decode is left to the load check.
pub(crate) fn settle(bytes: &[u8], spec: &Declared) -> Result<Settled, String> {
    let unchanged = |output: Declared| Settled { bytes: None, output, note: None };
    let Ok(mut model) = onnx::decode(bytes) else { return Ok(unchanged(spec.clone())) };
    let Some(graph) = model.graph.as_mut() else { return Ok(unchanged(spec.clone())) };
    let is_output = |name: &str| graph.output.iter().any(|o| o.name() == name);
    let named = graph.node.iter().position(|n| {
        n.op_type() == "ZipMap" && (n.output.first() == Some(&spec.name) || n.input.first() == Some(&spec.name))
    });
    // Nothing declared and no `probabilities`: the model's only ZipMap, else its only float output.
    let zipmap = match named {
        None if spec.pick && !is_output(&spec.name) => {
            let mut zipmaps = graph
                .node
                .iter()
                .enumerate()
                .filter(|(_, n)| n.op_type() == "ZipMap" && n.output.first().is_some_and(|o| is_output(o)));
            match (zipmaps.next(), zipmaps.next()) {
                (Some((z, _)), None) => Some(z),
                _ => {
                    return pick_float_output(graph).map(|(output, note)| Settled {
                        bytes: None,
                        output,
                        note: Some(note),
                    })
                }
            }
        }
        other => other,
    };
    let Some(z) = zipmap else {
        return match &spec.label {
            // A plain classifier's labels name the column's class, for the prediction to report.
            None => {
                let label =
                    spec.column.zip(classifier_labels(&graph.node)).and_then(|(c, labels)| labels.get(c).cloned());
                Ok(unchanged(Declared { label, ..spec.clone() }))
            }
            Some(label) => {
                let labels = classifier_labels(&graph.node).ok_or_else(|| {
                    format!("output {:?}: class {label:?} needs class labels, and the model has none", spec.name)
                })?;
                let column = position(&labels, label, &spec.name)?;
                Ok(unchanged(Declared {
                    name: spec.name.clone(),
                    column: Some(column),
                    label: Some(label.clone()),
                    pick: false,
                }))
            }
        };
    };
    let node = graph.node.remove(z);
    let (Some(tensor), Some(map)) = (node.input.first().cloned(), node.output.first().cloned()) else {
        return Err("a ZipMap without an input or an output".into());
    };
    let labels = labels_of(&node).ok_or("a ZipMap without class labels")?;
    // The class: a label (given as text or as an integer label), else the positive class of two.
    let column = match (&spec.label, spec.column) {
        (Some(label), _) => position(&labels, label, &map)?,
        // Picked, not declared: the positive class of two.
        (None, Some(_)) if spec.pick && labels.len() == 2 => 1,
        (None, Some(_)) if spec.pick => {
            return Err(format!(
                "output {map:?} has {} classes ({}): name one with --output {map}:CLASS",
                labels.len(),
                labels.join(", ")
            ))
        }
        (None, Some(c)) if is_integer_labelled(&node) => position(&labels, &c.to_string(), &map)?,
        (None, Some(c)) if c < labels.len() => c,
        (None, Some(c)) => return Err(format!("output {map:?} has {} classes, not a column {c}", labels.len())),
        (None, None) if labels.len() == 2 => 1,
        (None, None) => {
            return Err(format!(
                "output {map:?} has {} classes ({}): name one with --output {map}:CLASS",
                labels.len(),
                labels.join(", ")
            ))
        }
    };
    // The map's values are the tensor's type: float32, or float64 from a float64 pipeline.
    let elem_type = graph.output.iter().find(|o| o.name() == map).and_then(map_value_type);
    let existing = graph.output.iter().find(|o| o.name() == tensor).cloned();
    // The stored model answers the probabilities alone: the label branch (the exporter's Cast to
    // `output_label`) would cost every call a node quorum never reads.
    graph.output = vec![existing.unwrap_or_else(|| float_output(&tensor, elem_type.unwrap_or(DataType::Float as i32)))];
    let needed = crate::onnx::nodes_needed_for(&graph.node, &tensor);
    let mut keep = needed.into_iter();
    graph.node.retain(|_| keep.next().unwrap_or(false));
    let used: std::collections::HashSet<String> = graph.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
    let dropped: Vec<String> =
        graph.initializer.iter().map(|t| t.name().to_string()).filter(|n| !used.contains(n)).collect();
    graph.initializer.retain(|t| used.contains(t.name()));
    // Before IR 4 initializers are listed as inputs too: a dropped one must not become an input.
    graph.input.retain(|i| !dropped.iter().any(|d| d == i.name()));
    let label = labels[column].clone();
    let note = format!(
        "output {map:?} is a ZipMap (a map per row): stored without it, reading the tensor {tensor:?} that fed it, \
         column {column} (class {label})"
    );
    Ok(Settled {
        bytes: Some(onnx::encode(&model)),
        output: Declared { name: tensor, column: Some(column), label: Some(label), pick: false },
        note: Some(note),
    })
}

/// With nothing declared and neither `probabilities` nor a ZipMap: the graph's only float32 or
/// float64 tensor output (its column 1 when it has two columns, a classifier's probabilities), or
/// an error naming the candidates.
fn pick_float_output(graph: &crate::onnx::proto::GraphProto) -> Result<(Declared, String), String> {
    let floats: Vec<&ValueInfoProto> = graph
        .output
        .iter()
        .filter(|o| match o.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(TypeValue::TensorType(t)) => {
                t.elem_type == Some(DataType::Float as i32) || t.elem_type == Some(DataType::Double as i32)
            }
            _ => false,
        })
        .collect();
    let [output] = floats.as_slice() else {
        let names: Vec<&str> = graph.output.iter().map(|o| o.name()).collect();
        return Err(format!(
            "no output was declared and the model has no `probabilities` output and {} float outputs \
             (outputs: {}): pass --output NAME[:CLASS]",
            floats.len(),
            names.join(", ")
        ));
    };
    let columns = match output.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => t.shape.as_ref().and_then(|s| s.dim.get(1)).and_then(|d| match d.value {
            Some(crate::onnx::proto::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
            _ => None,
        }),
        _ => None,
    };
    let column = (columns == Some(2)).then_some(1);
    let name = output.name().to_string();
    let note = match column {
        Some(c) => format!("no output was declared: reading {name:?}, column {c}"),
        None => format!("no output was declared: reading {name:?}"),
    };
    Ok((Declared { name, column, label: None, pick: false }, note))
}

/// A float tensor output of unknown shape (ONNX Runtime infers it).
/// The element type of a ZipMap output's values (`seq(map(key, tensor(T)))` → `T`).
fn map_value_type(output: &ValueInfoProto) -> Option<i32> {
    let Some(TypeValue::SequenceType(seq)) = output.r#type.as_ref()?.value.as_ref() else { return None };
    let Some(TypeValue::MapType(map)) = seq.elem_type.as_ref()?.value.as_ref() else { return None };
    match map.value_type.as_ref()?.value.as_ref() {
        Some(TypeValue::TensorType(t)) => t.elem_type,
        _ => None,
    }
}

fn float_output(name: &str, elem_type: i32) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType { elem_type: Some(elem_type), shape: None })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn is_integer_labelled(node: &NodeProto) -> bool {
    node.attribute.iter().any(|a| a.name() == "classlabels_int64s" || a.name() == "classlabels_ints")
}

/// A node's class labels as text (`classlabels_strings`, `classlabels_int64s` or `classlabels_ints`).
fn labels_of(node: &NodeProto) -> Option<Vec<String>> {
    node.attribute.iter().find_map(|a| match a.name() {
        "classlabels_strings" => Some(a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()),
        "classlabels_int64s" | "classlabels_ints" => Some(a.ints.iter().map(|i| i.to_string()).collect()),
        _ => None,
    })
}

/// The labels of the graph's classifier node (ai.onnx.ml), if it has exactly one.
fn classifier_labels(nodes: &[NodeProto]) -> Option<Vec<String>> {
    let mut found = nodes.iter().filter(|n| n.domain() == ML_DOMAIN && n.op_type().ends_with("Classifier"));
    let node = found.next()?;
    found.next().is_none().then(|| labels_of(node)).flatten()
}

fn position(labels: &[String], label: &str, output: &str) -> Result<usize, String> {
    labels
        .iter()
        .position(|l| l == label)
        .ok_or_else(|| format!("output {output:?} has no class {label:?} (classes: {})", labels.join(", ")))
}
