//! Lifting a graph's nodes to a higher opset, by ONNX's own rules: a node keeps its meaning when
//! its operator's schema is the same at both opsets (the same `since_version`, from
//! `history::SINCE`); where the schema changed, each step from opset N to N+1 is adapted
//! the way ONNX's version converter does (`history::STEPS`): attributes that became
//! inputs (axes, Clip's bounds, TopK's k, Split's sizes, Pad, Slice, Dropout's ratio) are moved into
//! constant inputs, Softmax-like axis semantics get a Flatten/Reshape where the input may not be
//! 2-D, and a step with no adapter here refuses the node with the reason. Fusion lifts its members
//! to one opset per domain with it.

use std::collections::{HashMap, HashSet};

use super::history::{SINCE, STEPS};
use super::proto::attribute_proto::AttributeType;
use super::proto::tensor_proto::DataType;
use super::proto::type_proto::Value as TypeValue;
use super::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use super::ML_DOMAIN;

/// The opset versions of the two domains quorum lifts (`None`: the domain is not imported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Opsets {
    /// The `ai.onnx` (default domain) opset.
    pub default: Option<i64>,
    /// The `ai.onnx.ml` opset.
    pub ml: Option<i64>,
}

impl Opsets {
    /// The model's imports of `ai.onnx` and `ai.onnx.ml`.
    pub fn of(model: &ModelProto) -> Opsets {
        let version = |ml: bool| {
            model
                .opset_import
                .iter()
                .find(|o| if ml { o.domain() == ML_DOMAIN } else { o.domain().is_empty() || o.domain() == "ai.onnx" })
                .and_then(|o| o.version)
        };
        Opsets { default: version(false), ml: version(true) }
    }

    /// The higher of each domain's versions.
    pub fn max(self, other: Opsets) -> Opsets {
        Opsets { default: self.default.max(other.default), ml: self.ml.max(other.ml) }
    }
}

/// What lifting added to the graph beside the rewritten nodes.
#[derive(Debug, Default)]
pub struct Lifted {
    /// The nodes, rewritten where their schema changed, in their original order (an adapter may add
    /// helper nodes before the node it adapts).
    pub nodes: Vec<NodeProto>,
    /// Constant inputs the adapters made of former attributes.
    pub initializers: Vec<TensorProto>,
    /// How many nodes an adapter rewrote (a node whose schema did not change counts for nothing).
    pub adapted: usize,
}

/// Lifts `nodes` (of `graph`, read for ranks and names) from `from` to `to`; `Err` names the first
/// node that cannot be lifted and why.
pub fn lift_nodes(graph: &GraphProto, nodes: &[NodeProto], from: Opsets, to: Opsets) -> Result<Lifted, String> {
    let mut ctx = Context::new(graph);
    let mut lifted = Lifted::default();
    for node in nodes {
        let (domain, range) = match node.domain() {
            "" | "ai.onnx" => ("ai.onnx", from.default.zip(to.default)),
            ML_DOMAIN => (ML_DOMAIN, from.ml.zip(to.ml)),
            // Other domains keep their version (fusion refuses two versions of one).
            _ => {
                ctx.rank_of(node);
                lifted.nodes.push(node.clone());
                continue;
            }
        };
        let Some((a, b)) = range.filter(|(a, b)| a < b) else {
            ctx.rank_of(node);
            lifted.nodes.push(node.clone());
            continue;
        };
        let before = lifted.nodes.len();
        lift_node(&mut ctx, node, domain, a, b, &mut lifted)
            .map_err(|why| format!("{} node {:?}: {why}", node.op_type(), node.name()))?;
        if lifted.nodes.len() != before + 1 || lifted.nodes.last() != Some(node) {
            lifted.adapted += 1;
        }
    }
    lifted.initializers = ctx.initializers;
    Ok(lifted)
}

/// Lifts a whole model to `to` in place (graph nodes, opset imports); `Ok(false)` when it already
/// is there.
pub fn lift_model(model: &mut ModelProto, to: Opsets) -> Result<bool, String> {
    let from = Opsets::of(model);
    let target = from.max(to);
    if target == from {
        return Ok(false);
    }
    let graph = model.graph.as_mut().ok_or("the model has no graph")?;
    if graph.node.iter().any(super::has_subgraph) {
        return Err("a node with a subgraph (If, Loop, Scan) is not lifted".into());
    }
    let lifted = lift_nodes(graph, &graph.node, from, target)?;
    graph.node = lifted.nodes;
    graph.initializer.extend(lifted.initializers);
    for import in &mut model.opset_import {
        if import.domain().is_empty() || import.domain() == "ai.onnx" {
            import.version = target.default;
        } else if import.domain() == ML_DOMAIN {
            import.version = target.ml;
        }
    }
    Ok(true)
}

/// The versions at which `op` of `domain` changed, or `None` for an operator ONNX does not define.
fn history(domain: &str, op: &str) -> Option<&'static [i64]> {
    SINCE.binary_search_by(|(d, o, _)| (*d, *o).cmp(&(domain, op))).ok().map(|i| SINCE[i].2)
}

fn step(op: &str, from: i64) -> Option<&'static str> {
    STEPS.binary_search_by(|(o, a, _, _)| (*o, *a).cmp(&(op, from))).ok().map(|i| STEPS[i].3)
}

fn lift_node(
    ctx: &mut Context,
    node: &NodeProto,
    domain: &str,
    from: i64,
    to: i64,
    out: &mut Lifted,
) -> Result<(), String> {
    let mut node = node.clone();
    let mut extra: Vec<NodeProto> = Vec::new();
    for k in from..to {
        // Read per step: an adapter may turn the node into another operator (Upsample → Resize).
        let op = node.op_type().to_string();
        let op = op.as_str();
        let changes = history(domain, op).ok_or_else(|| format!("{op} is not an operator of {domain}"))?;
        if !changes.contains(&(k + 1)) {
            continue;
        }
        if domain == ML_DOMAIN {
            ml_step(op, k + 1)?;
            continue;
        }
        // ONNX's converter calls Hardmax compatible at 13 and has nothing for LogSoftmax; their axis
        // semantics changed exactly as Softmax's did, so they get its adapter.
        let kind = if k == 12 && matches!(op, "LogSoftmax" | "Hardmax") {
            "Softmax_12_13"
        } else {
            step(op, k).ok_or_else(|| format!("ONNX has no adapter from opset {k} to {}", k + 1))?
        };
        adapt(ctx, &mut node, &mut extra, kind, k)?;
    }
    ctx.rank_of(&node);
    if extra.is_empty() {
        out.nodes.push(node);
    } else {
        out.nodes.append(&mut extra);
        // `extra` holds the nodes that replace the original (it is among them).
    }
    Ok(())
}

/// ai.onnx.ml has no version converter: its changes are few and known.
fn ml_step(op: &str, to: i64) -> Result<(), String> {
    match (op, to) {
        // Version 3 added tensor-valued alternatives to the float attributes; the old ones stand.
        ("TreeEnsembleClassifier" | "TreeEnsembleRegressor", 3) => Ok(()),
        // Version 4 added tensor-valued keys and values beside version 2's attributes.
        ("LabelEncoder", 4) => Ok(()),
        ("TreeEnsembleClassifier" | "TreeEnsembleRegressor", 5) => {
            Err("deprecated at ai.onnx.ml opset 5 (replaced by TreeEnsemble); no adapter".into())
        }
        _ => Err(format!("no adapter lifts it to ai.onnx.ml opset {to}")),
    }
}

fn adapt(
    ctx: &mut Context,
    node: &mut NodeProto,
    extra: &mut Vec<NodeProto>,
    kind: &str,
    from: i64,
) -> Result<(), String> {
    match kind {
        "CompatibleAdapter" => Ok(()),
        "AxesAttributeToInput" => {
            if let Some(axes) = take_attribute(node, "axes") {
                let name = ctx.constant_i64(node, "axes", &[axes.ints.len() as i64], &axes.ints);
                set_input(node, 1, name);
            }
            Ok(())
        }
        "Split_12_13" => {
            if let Some(split) = take_attribute(node, "split") {
                let name = ctx.constant_i64(node, "split", &[split.ints.len() as i64], &split.ints);
                set_input(node, 1, name);
            }
            Ok(())
        }
        "Split_17_18" => {
            if node.input.get(1).is_none_or(|s| s.is_empty()) && !has_attribute(node, "num_outputs") {
                node.attribute.push(super::int_attribute("num_outputs", node.output.len() as i64));
            }
            Ok(())
        }
        "TopK_9_10" => {
            let k = take_attribute(node, "k").and_then(|a| a.i).ok_or("TopK without k")?;
            let name = ctx.constant_i64(node, "k", &[1], &[k]);
            set_input(node, 1, name);
            Ok(())
        }
        "Clip_10_11" => {
            let min = take_attribute(node, "min").and_then(|a| a.f);
            let max = take_attribute(node, "max").and_then(|a| a.f);
            if let Some(v) = min {
                let name = ctx.constant_f32(node, "min", v);
                set_input(node, 1, name);
            }
            if let Some(v) = max {
                let name = ctx.constant_f32(node, "max", v);
                set_input(node, 2, name);
            }
            Ok(())
        }
        "Pad_10_11" => {
            let pads = take_attribute(node, "pads").ok_or("Pad without pads")?;
            let name = ctx.constant_i64(node, "pads", &[pads.ints.len() as i64], &pads.ints);
            set_input(node, 1, name);
            if let Some(v) = take_attribute(node, "value").and_then(|a| a.f) {
                let name = ctx.constant_f32(node, "value", v);
                set_input(node, 2, name);
            }
            Ok(())
        }
        "Slice_9_10" => {
            let starts = take_attribute(node, "starts").ok_or("Slice without starts")?;
            let ends = take_attribute(node, "ends").ok_or("Slice without ends")?;
            let n = starts.ints.len() as i64;
            let s = ctx.constant_i64(node, "starts", &[n], &starts.ints);
            let e = ctx.constant_i64(node, "ends", &[n], &ends.ints);
            set_input(node, 1, s);
            set_input(node, 2, e);
            if let Some(axes) = take_attribute(node, "axes") {
                let a = ctx.constant_i64(node, "axes", &[n], &axes.ints);
                set_input(node, 3, a);
            }
            Ok(())
        }
        "Dropout_11_12" => {
            if let Some(ratio) = take_attribute(node, "ratio").and_then(|a| a.f) {
                let name = ctx.constant_f32(node, "ratio", ratio);
                set_input(node, 1, name);
            }
            Ok(())
        }
        "BatchNormalization_13_14" => {
            if node.output.iter().skip(1).any(|o| !o.is_empty()) {
                return Err("BatchNormalization with training outputs is not lifted past 13".into());
            }
            Ok(())
        }
        "Softmax_12_13" => softmax_12_13(ctx, node, extra),
        "Upsample_8_9" => {
            let scales = take_attribute(node, "scales").ok_or("Upsample without scales")?;
            let name = ctx.constant_f32s(node, "scales", &scales.floats);
            set_input(node, 1, name);
            Ok(())
        }
        // Upsample is deprecated at 10: the same node as a Resize (same inputs, same mode).
        "Upsample_9_10" => {
            node.op_type = Some("Resize".into());
            node.attribute.retain(|a| a.name() == "mode");
            Ok(())
        }
        // Resize 11 takes roi before scales. ONNX's converter leaves the new coordinate default
        // (half_pixel), which moves every sample; Resize 10 meant asymmetric coordinates and, for
        // nearest, the floor, so both are written out.
        "Resize_10_11" => {
            let scales = node.input.get(1).cloned().ok_or("Resize without scales")?;
            let roi = ctx.constant_f32s(node, "roi", &[]);
            node.input.truncate(1);
            node.input.push(roi);
            node.input.push(scales);
            let nearest = node
                .attribute
                .iter()
                .find(|a| a.name() == "mode")
                .and_then(|a| a.s.as_deref())
                .is_none_or(|m| m == b"nearest");
            let string = |name: &str, value: &str| AttributeProto {
                name: Some(name.into()),
                s: Some(value.as_bytes().to_vec()),
                r#type: Some(AttributeType::String as i32),
                ..Default::default()
            };
            node.attribute.retain(|a| a.name() != "coordinate_transformation_mode" && a.name() != "nearest_mode");
            node.attribute.push(string("coordinate_transformation_mode", "asymmetric"));
            if nearest {
                node.attribute.push(string("nearest_mode", "floor"));
            }
            Ok(())
        }
        other => {
            if let Some(rest) =
                other.strip_prefix("SetAttribute:").or_else(|| other.strip_prefix("SetAttributeIfAbsent:"))
            {
                let (name, value) = rest.split_once(':').unwrap_or((rest, ""));
                if other.starts_with("SetAttribute:") || !has_attribute(node, name) {
                    node.attribute.retain(|a| a.name() != name);
                    node.attribute.push(match value.parse::<i64>() {
                        Ok(v) => super::int_attribute(name, v),
                        Err(_) => AttributeProto {
                            name: Some(name.into()),
                            s: Some(value.as_bytes().to_vec()),
                            r#type: Some(AttributeType::String as i32),
                            ..Default::default()
                        },
                    });
                }
                return Ok(());
            }
            if let Some(rest) = other.strip_prefix("RemoveAttribute:") {
                let (name, default) = rest.split_once(':').unwrap_or((rest, ""));
                if let Some(a) = take_attribute(node, name) {
                    if !default.is_empty() && a.i.map(|v| v.to_string()).as_deref() != Some(default) {
                        return Err(format!(
                            "attribute {name} is not its default {default}, which opset {} drops",
                            from + 1
                        ));
                    }
                }
                return Ok(());
            }
            Err(format!("no adapter here for {other} (opset {from} to {})", from + 1))
        }
    }
}

/// Before 13, Softmax (LogSoftmax, Hardmax) flattened its input to 2-D at `axis` (default 1) and
/// normalised each row; from 13 it normalises along one axis (default -1). On a 2-D input with
/// axis 1 they agree and the node only gets its axis written out; otherwise the old meaning is
/// rebuilt: Flatten at the old axis, the operator on axis -1, and Reshape back to the input's shape.
fn softmax_12_13(ctx: &mut Context, node: &mut NodeProto, extra: &mut Vec<NodeProto>) -> Result<(), String> {
    let axis = take_attribute(node, "axis").and_then(|a| a.i).unwrap_or(1);
    let input = node.input.first().cloned().ok_or("no input")?;
    let rank = ctx.ranks.get(input.as_str()).copied();
    if rank == Some(2) && (axis == 1 || axis == -1) {
        node.attribute.push(super::int_attribute("axis", 1));
        return Ok(());
    }
    let output = node.output.first().cloned().ok_or("no output")?;
    let base = ctx.fresh(&output);
    let (shape, flat, normalised) = (format!("{base}_shape"), format!("{base}_flat"), format!("{base}_2d"));
    extra.push(super::node("Shape", &[&input], &[&shape], &format!("{base}_Shape")));
    let mut flatten = super::node("Flatten", &[&input], &[&flat], &format!("{base}_Flatten"));
    flatten.attribute.push(super::int_attribute("axis", axis));
    extra.push(flatten);
    node.input[0] = flat;
    node.output[0] = normalised.clone();
    node.attribute.push(super::int_attribute("axis", -1));
    extra.push(node.clone());
    extra.push(super::node("Reshape", &[&normalised, &shape], &[&output], &format!("{base}_Reshape")));
    Ok(())
}

fn has_attribute(node: &NodeProto, name: &str) -> bool {
    node.attribute.iter().any(|a| a.name() == name)
}

fn take_attribute(node: &mut NodeProto, name: &str) -> Option<AttributeProto> {
    let i = node.attribute.iter().position(|a| a.name() == name)?;
    Some(node.attribute.remove(i))
}

/// Sets input `i`, padding skipped optional inputs with "".
fn set_input(node: &mut NodeProto, i: usize, name: String) {
    if node.input.len() <= i {
        node.input.resize(i + 1, String::new());
    }
    node.input[i] = name;
}

/// Names in use, constants added, and the ranks known so far (graph inputs and initializers, then
/// each node's outputs where its operator keeps or fixes the rank).
struct Context {
    names: HashSet<String>,
    ranks: HashMap<String, usize>,
    initializers: Vec<TensorProto>,
}

impl Context {
    fn new(graph: &GraphProto) -> Context {
        let mut names: HashSet<String> = graph.initializer.iter().map(|t| t.name().to_string()).collect();
        names.extend(graph.input.iter().map(|v| v.name().to_string()));
        names.extend(graph.node.iter().flat_map(|n| n.output.iter().cloned()));
        let mut ranks: HashMap<String, usize> = HashMap::new();
        for v in graph.input.iter().chain(&graph.value_info) {
            if let Some(TypeValue::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                if let Some(shape) = &t.shape {
                    ranks.insert(v.name().to_string(), shape.dim.len());
                }
            }
        }
        for t in &graph.initializer {
            ranks.insert(t.name().to_string(), t.dims.len());
        }
        Context { names, ranks, initializers: Vec::new() }
    }

    /// A name derived from `base` that nothing in the graph uses yet.
    fn fresh(&mut self, base: &str) -> String {
        let mut name = format!("{base}_lifted");
        let mut n = 0;
        while self.names.contains(&name) {
            n += 1;
            name = format!("{base}_lifted{n}");
        }
        self.names.insert(name.clone());
        name
    }

    fn constant_i64(&mut self, node: &NodeProto, what: &str, dims: &[i64], values: &[i64]) -> String {
        let name = self.fresh(&format!("{}_{what}", node.output.first().map_or("node", String::as_str)));
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Int64 as i32),
            int64_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    fn constant_f32s(&mut self, node: &NodeProto, what: &str, values: &[f32]) -> String {
        let name = self.fresh(&format!("{}_{what}", node.output.first().map_or("node", String::as_str)));
        self.initializers.push(super::f32_tensor(&name, &[values.len() as i64], values));
        name
    }

    fn constant_f32(&mut self, node: &NodeProto, what: &str, value: f32) -> String {
        let name = self.fresh(&format!("{}_{what}", node.output.first().map_or("node", String::as_str)));
        self.initializers.push(super::f32_tensor(&name, &[], &[value]));
        name
    }

    /// Records the rank of `node`'s first output where the operator determines it.
    fn rank_of(&mut self, node: &NodeProto) {
        let rank = |name: &String| self.ranks.get(name).copied();
        let first = node.input.first().and_then(rank);
        let widest = node.input.iter().filter(|n| !n.is_empty()).map(rank).try_fold(0, |m, r| r.map(|r| m.max(r)));
        let keepdims = super::attribute_i(node, "keepdims", 1) == 1;
        let out = match node.op_type() {
            "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Abs" | "Neg" | "Sqrt" | "Reciprocal" | "Cast"
            | "CastLike" | "Identity" | "Dropout" | "Clip" | "LeakyRelu" | "Erf" | "Softplus" | "Softmax"
            | "LogSoftmax" | "Hardmax" | "Floor" | "Ceil" | "Round" | "Sign" | "Not" | "Elu" | "Selu"
            | "HardSigmoid" | "Normalizer" | "Scaler" | "Imputer" | "Binarizer" => first,
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mean" | "Where" | "Equal" | "Less"
            | "Greater" | "And" | "Or" | "MatMul" => widest,
            "Gemm"
            | "Flatten"
            | "LinearClassifier"
            | "LinearRegressor"
            | "TreeEnsembleClassifier"
            | "TreeEnsembleRegressor"
            | "Concat"
            | "FeatureVectorizer" => {
                if node.op_type() == "Concat" {
                    first
                } else {
                    Some(2)
                }
            }
            "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2"
            | "ReduceLogSumExp" | "ReduceSumSquare" | "ArgMax" | "ArgMin"
                if keepdims =>
            {
                first
            }
            _ => None,
        };
        // Second outputs (TreeEnsembleClassifier's probabilities, LinearClassifier's scores) are 2-D.
        if matches!(node.op_type(), "LinearClassifier" | "TreeEnsembleClassifier" | "SVMClassifier") {
            if let Some(scores) = node.output.get(1) {
                self.ranks.insert(scores.clone(), 2);
            }
        }
        if let (Some(r), Some(o)) = (out, node.output.first()) {
            self.ranks.insert(o.clone(), r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_is_sorted_for_binary_search() {
        assert!(SINCE.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        assert!(STEPS.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        assert_eq!(history("ai.onnx", "Softmax").unwrap().last(), Some(&13));
        assert_eq!(step("Softmax", 12), Some("Softmax_12_13"));
        assert_eq!(step("ReduceSum", 12), Some("AxesAttributeToInput"));
    }
}
