//! Model rewrites: INT8 dynamic quantization and FP16 conversion, natively on the ONNX protobuf.
//!
//! **INT8 dynamic** rewrites every `MatMul` (and `Gemm` with `transA = 0`) whose weight is a constant
//! 2-D float initializer into the integer pattern ONNX Runtime's `quantize_dynamic` emits and its
//! optimizer fuses into `DynamicQuantizeMatMul`:
//! `DynamicQuantizeLinear(A) → MatMulInteger(A_q, B_q, A_zp, B_zp) → Cast(float) → Mul(A_scale·B_scale)`.
//! Weights are symmetric int8 in [-127, 127] (7 bits, [-64, 64], on x86-64 CPUs without VNNI: see
//! [`weight_qmax`]), per tensor or per output column, with ONNX Runtime's
//! arithmetic: the range widened to include 0, `scale = (rmax − rmin) / (qmax − qmin)` (computed in
//! f64, stored f32), zero point 0, `q = clip(round_half_even(w / scale))`. Activations are quantized at
//! run time by `DynamicQuantizeLinear` (uint8, asymmetric).
//!
//! **FP16** stores float initializers as float16 (clamped into its finite range) and runs the default
//! domain's operators in float16; ai.onnx.ml operators (tree ensembles, linear classifiers, scalers),
//! which have no float16 kernels, stay float32 behind inserted `Cast`s, and the model's inputs and
//! outputs stay float32.
//!
//! Every rewrite reports each node: rewritten, or left as it was and why. A model with nothing to
//! rewrite is an error ("nothing to quantize"), never a broken model.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::calibrate::Calibrator;
use crate::error::{Error, Result};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{NodeProto, TensorProto};
use crate::onnx::{self, ML_DOMAIN};

/// What happened to one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeReport {
    /// The node's name.
    pub node: String,
    /// Its operator (`MatMul`, `Gemm`, ...).
    pub op_type: String,
    /// Rewritten (quantized, or converted to float16).
    pub rewritten: bool,
    /// Why a node was left as it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A rewritten model and the per-node report.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// The rewritten ONNX model.
    pub bytes: Vec<u8>,
    /// Per node: rewritten or left, and why.
    pub nodes: Vec<NodeReport>,
}

impl Rewritten {
    /// How many nodes were rewritten.
    pub fn rewritten_nodes(&self) -> usize {
        self.nodes.iter().filter(|n| n.rewritten).count()
    }
}

/// Symmetric int8 weights: one scale per tensor, or per output column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// One scale for the whole weight tensor.
    PerTensor,
    /// One scale per output column.
    PerChannel,
}

/// Scale and zero point of a range, as ONNX Runtime's `compute_scale_zp` computes them.
pub fn scale_zero_point(rmin: f32, rmax: f32, qmin: i32, qmax: i32, symmetric: bool) -> (f32, i32) {
    let (mut rmin, mut rmax) = (rmin.min(0.0), rmax.max(0.0));
    if symmetric {
        let absmax = rmin.abs().max(rmax.abs());
        rmin = -absmax;
        rmax = absmax;
    }
    let scale = (f64::from(rmax) - f64::from(rmin)) / f64::from(qmax - qmin);
    if (scale as f32) < f32::MIN_POSITIVE {
        return (1.0, 0);
    }
    let zero_point = if symmetric {
        ((f64::from(qmin + qmax)) / 2.0).round_ties_even() as i32
    } else {
        (f64::from(qmin) - f64::from(rmin) / scale).round_ties_even() as i32
    };
    (scale as f32, zero_point.clamp(qmin, qmax))
}

/// `clip(round_half_even(v / scale) + zero_point, qmin, qmax)` in f32, as ONNX Runtime does.
pub fn quantize_value(v: f32, scale: f32, zero_point: i32, qmin: i32, qmax: i32) -> i32 {
    ((v / scale).round_ties_even() as i32 + zero_point).clamp(qmin, qmax)
}

/// The largest int8 weight magnitude for models quantized on this machine: 127, or 64 (onnxruntime's
/// `reduce_range`) on x86-64 without VNNI, where ONNX Runtime's AVX2 uint8 × int8 kernel adds pairs of
/// products in saturating 16-bit lanes (`vpmaddubsw`: 255 · 127 · 2 overflows, 255 · 64 · 2 does not).
/// Measured on an AVX2-only EPYC: per-channel INT8 of the technical MLP moved probabilities by up to
/// 0.134 with full-range weights.
pub fn weight_qmax() -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("avx512vnni") && !std::arch::is_x86_feature_detected!("avxvnni") {
            return 64;
        }
    }
    127
}

/// Symmetric int8 quantization of a `[k, n]` row-major weight into [-qmax, qmax]: (values, scales,
/// one per tensor or column).
pub fn quantize_weight(values: &[f32], k: usize, n: usize, granularity: Granularity, qmax: i32) -> (Vec<i8>, Vec<f32>) {
    let qmin = -qmax;
    let range = |iter: &mut dyn Iterator<Item = f32>| {
        iter.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let scales: Vec<f32> = match granularity {
        Granularity::PerTensor => {
            let (lo, hi) = range(&mut values.iter().copied());
            vec![scale_zero_point(lo, hi, qmin, qmax, true).0]
        }
        Granularity::PerChannel => (0..n)
            .map(|col| {
                let (lo, hi) = range(&mut (0..k).map(|row| values[row * n + col]));
                scale_zero_point(lo, hi, qmin, qmax, true).0
            })
            .collect(),
    };
    let q = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let scale = if scales.len() == 1 { scales[0] } else { scales[i % n] };
            quantize_value(*v, scale, 0, qmin, qmax) as i8
        })
        .collect();
    (q, scales)
}

/// INT8 dynamic quantization of every MatMul / Gemm with a constant 2-D weight.
///
/// # Errors
///
/// `optimize` when the bytes are not an ONNX model, use external data, or have nothing to quantize.
pub fn quantize_dynamic(model: &[u8], granularity: Granularity) -> Result<Rewritten> {
    let mut model = onnx::decode(model)?;
    {
        // What the model holds comes first: a tree ensemble has nothing to quantize at any opset.
        let graph = model.graph.as_ref().ok_or_else(|| Error::Optimize("the model has no graph".into()))?;
        let initializers: HashMap<String, TensorProto> =
            graph.initializer.iter().map(|t| (t.name().to_string(), t.clone())).collect();
        let plans: Vec<NodeReport> = graph
            .node
            .iter()
            .enumerate()
            .map(|(index, node)| NodeReport {
                node: if node.name().is_empty() {
                    format!("{}_{index}", node.op_type())
                } else {
                    node.name().to_string()
                },
                op_type: node.op_type().to_string(),
                rewritten: false,
                reason: plan_integer_matmul(node, &initializers).err(),
            })
            .collect();
        if plans.iter().all(|r| r.reason.is_some()) {
            return Err(nothing_to_rewrite("quantize", &plans));
        }
    }
    lift_opset(&mut model, 11, "INT8 dynamic quantization (MatMulInteger, DynamicQuantizeLinear)")?;
    let graph = model.graph.as_mut().ok_or_else(|| Error::Optimize("the model has no graph".into()))?;
    let initializers: HashMap<String, TensorProto> =
        graph.initializer.iter().map(|t| (t.name().to_string(), t.clone())).collect();
    let mut report = Vec::with_capacity(graph.node.len());
    let mut nodes = Vec::with_capacity(graph.node.len() * 2);
    let mut new_initializers = Vec::new();
    // One DynamicQuantizeLinear per activation, shared by the nodes that read it.
    let mut quantized_activations: HashMap<String, [String; 3]> = HashMap::new();
    let mut replaced_weights = HashSet::new();
    for (index, node) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        let label =
            if node.name().is_empty() { format!("{}_{index}", node.op_type()) } else { node.name().to_string() };
        match plan_integer_matmul(&node, &initializers) {
            Ok(plan) => {
                let activation = node.input[0].clone();
                let [a_q, a_scale, a_zp] = quantized_activations
                    .entry(activation.clone())
                    .or_insert_with(|| {
                        let names = [
                            format!("{activation}_quantized"),
                            format!("{activation}_scale"),
                            format!("{activation}_zero_point"),
                        ];
                        nodes.push(onnx::node(
                            "DynamicQuantizeLinear",
                            &[&activation],
                            &[&names[0], &names[1], &names[2]],
                            &format!("{activation}_QuantizeLinear"),
                        ));
                        names
                    })
                    .clone();
                let (q, scales) = quantize_weight(&plan.weight, plan.k, plan.n, granularity, weight_qmax());
                let b = &plan.weight_name;
                let (b_q, b_scale, b_zp) = (format!("{b}_quantized"), format!("{b}_scale"), format!("{b}_zero_point"));
                let channel_dims: Vec<i64> = if scales.len() == 1 { vec![] } else { vec![plan.n as i64] };
                let folded: Vec<f32> = scales.iter().map(|s| s * plan.alpha).collect();
                new_initializers.push(onnx::i8_tensor(&b_q, &[plan.k as i64, plan.n as i64], &q));
                new_initializers.push(onnx::f32_tensor(&b_scale, &channel_dims, &folded));
                new_initializers.push(onnx::i8_tensor(&b_zp, &channel_dims, &vec![0; scales.len()]));
                replaced_weights.insert(plan.weight_name.clone());
                let output = node.output[0].clone();
                let integer = format!("{output}_output_quantized");
                let cast = format!("{integer}_cast_output");
                let scale = format!("{label}_scales_mul:0");
                let scaled = if plan.bias.is_some() { format!("{output}_scaled") } else { output.clone() };
                nodes.push(onnx::node(
                    "MatMulInteger",
                    &[&a_q, &b_q, &a_zp, &b_zp],
                    &[&integer],
                    &format!("{label}_quant"),
                ));
                let mut cast_node = onnx::node("Cast", &[&integer], &[&cast], &format!("{integer}_cast"));
                cast_node.attribute.push(onnx::int_attribute("to", DataType::Float as i64));
                nodes.push(cast_node);
                nodes.push(onnx::node("Mul", &[&a_scale, &b_scale], &[&scale], &format!("{label}_scales_mul")));
                nodes.push(onnx::node("Mul", &[&cast, &scale], &[&scaled], &format!("{label}_output_scale_mul")));
                if let Some(bias) = plan.bias {
                    nodes.push(onnx::node("Add", &[&scaled, &bias], &[&output], &format!("{label}_bias_add")));
                }
                if let Some(t) = plan.bias_initializer {
                    new_initializers.push(t);
                }
                report.push(NodeReport {
                    node: label,
                    op_type: node.op_type().to_string(),
                    rewritten: true,
                    reason: None,
                });
            }
            Err(reason) => {
                report.push(NodeReport {
                    node: label,
                    op_type: node.op_type().to_string(),
                    rewritten: false,
                    reason: Some(reason),
                });
                nodes.push(node);
            }
        }
    }
    if report.iter().all(|r| !r.rewritten) {
        return Err(nothing_to_rewrite("quantize", &report));
    }
    graph.node = nodes;
    // A weight replaced everywhere it was read is dropped; one still read elsewhere stays.
    let still_read: HashSet<&str> = graph.node.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
    graph.initializer.retain(|t| !replaced_weights.contains(t.name()) || still_read.contains(t.name()));
    graph.initializer.extend(new_initializers);
    Ok(Rewritten { bytes: onnx::encode(&model), nodes: report })
}

/// Raises the model's default-domain opset to `needed` when it is lower, by the lifting pass fusion
/// uses (ONNX's schemas and its version converter's adapters, see `onnx::lift`), as ONNX Runtime's
/// quantizer lifts old models to 11; else the error names the node that cannot be lifted. Other
/// domains (`ai.onnx.ml`) are left as they are.
fn lift_opset(model: &mut onnx::proto::ModelProto, needed: i64, what: &str) -> Result<()> {
    let current = onnx::default_opset(model).unwrap_or(0);
    if current >= needed {
        return Ok(());
    }
    let target = onnx::Opsets { default: Some(needed), ml: None };
    onnx::lift::lift_model(model, target).map(|_| ()).map_err(|why| {
        Error::Optimize(format!(
            "{what} needs opset {needed}; the model has {current} and cannot be lifted: {why} (convert the model \
             to opset {needed} first, e.g. with onnx.version_converter)"
        ))
    })
}

fn nothing_to_rewrite(what: &str, report: &[NodeReport]) -> Error {
    let nodes: Vec<String> =
        report.iter().map(|r| format!("{} ({}): {}", r.node, r.op_type, r.reason.as_deref().unwrap_or("-"))).collect();
    Error::Optimize(format!("nothing to {what}: {}", nodes.join("; ")))
}

/// How one MatMul / Gemm becomes integer arithmetic.
struct IntegerMatMul {
    weight_name: String,
    weight: Vec<f32>,
    k: usize,
    n: usize,
    /// Gemm's alpha, folded into the weight scale.
    alpha: f32,
    /// Gemm's bias input (already multiplied by beta when it is a constant).
    bias: Option<String>,
    bias_initializer: Option<TensorProto>,
}

fn plan_integer_matmul(
    node: &NodeProto,
    initializers: &HashMap<String, TensorProto>,
) -> std::result::Result<IntegerMatMul, String> {
    if node.domain() == ML_DOMAIN {
        return Err("ai.onnx.ml operator: no integer kernel, stays float".into());
    }
    let op = node.op_type();
    if !onnx::is_default_domain(node) || !matches!(op, "MatMul" | "Gemm") {
        return Err(format!("{op} is not quantized (MatMul and Gemm only)"));
    }
    if node.output.first().is_none_or(|o| o.is_empty()) || node.input.first().is_none_or(|i| i.is_empty()) {
        return Err("no input or output".into());
    }
    let weight_name = node.input.get(1).ok_or("no weight input")?;
    let tensor = initializers.get(weight_name).ok_or("the weight is not a constant initializer")?;
    let values = onnx::float_values(tensor).ok_or("the weight is not float32")?;
    let [d0, d1] = tensor.dims[..] else { return Err(format!("the weight has shape {:?}, not 2-D", tensor.dims)) };
    let (d0, d1) = (d0 as usize, d1 as usize);
    let mut plan = IntegerMatMul {
        weight_name: weight_name.clone(),
        weight: values,
        k: d0,
        n: d1,
        alpha: 1.0,
        bias: None,
        bias_initializer: None,
    };
    if op == "Gemm" {
        if onnx::attribute_i(node, "transA", 0) != 0 {
            return Err("Gemm with transA = 1 is left float".into());
        }
        if onnx::attribute_i(node, "transB", 0) != 0 {
            // B is stored [N, K]; MatMulInteger wants Bᵀ as [K, N]: element (k, n) is B[n][k].
            let b = &plan.weight;
            plan.weight = (0..d0 * d1).map(|i| b[(i % d0) * d1 + i / d0]).collect();
            plan.k = d1;
            plan.n = d0;
        }
        plan.alpha = onnx::attribute_f(node, "alpha", 1.0);
        let beta = onnx::attribute_f(node, "beta", 1.0);
        if let Some(c) = node.input.get(2).filter(|c| !c.is_empty()) {
            match initializers.get(c).and_then(|t| onnx::float_values(t).map(|v| (t, v))) {
                Some((t, values)) => {
                    let name = format!("{c}_beta_scaled");
                    let scaled: Vec<f32> = values.iter().map(|v| v * beta).collect();
                    plan.bias_initializer = Some(onnx::f32_tensor(&name, &t.dims, &scaled));
                    plan.bias = Some(name);
                }
                None if beta == 1.0 => plan.bias = Some(c.clone()),
                None => return Err("Gemm with a non-constant C and beta ≠ 1 is left float".into()),
            }
        }
    }
    if plan.k == 0 || plan.n == 0 {
        return Err("an empty weight".into());
    }
    Ok(plan)
}

/// INT8 static quantization in ONNX Runtime's QDQ format, calibrated on `calibration` (row-major rows
/// of the model's single float input, `width` columns).
///
/// Every `MatMul` / `Gemm` with a constant 2-D weight gets: its activation input and its output
/// quantized asymmetrically to uint8 over the calibrator's range (`QuantizeLinear → DequantizeLinear`
/// pairs, shared by all readers of the tensor), its weight stored as symmetric int8 behind a
/// `DequantizeLinear` (per tensor or per output channel), and a constant Gemm bias as int32 with
/// `scale = s_input · s_weight`. ONNX Runtime fuses the pattern into `QLinearMatMul` and friends when
/// it loads the model.
///
/// # Errors
///
/// `optimize` as for [`quantize_dynamic`]; `model_load` or `inference` when ONNX Runtime cannot run the model to
/// calibrate.
pub fn quantize_static(
    runtime: &crate::runtime::Runtime,
    model: &[u8],
    calibration: &[f32],
    width: usize,
    calibrator: Calibrator,
    granularity: Granularity,
) -> Result<Rewritten> {
    let mut model = onnx::decode(model)?;
    let needed = if granularity == Granularity::PerChannel { 13 } else { 10 };
    lift_opset(&mut model, needed, &format!("INT8 static quantization ({granularity:?})"))?;
    if width == 0 || calibration.is_empty() || !calibration.len().is_multiple_of(width) {
        return Err(Error::Optimize("static quantization needs calibration rows".into()));
    }
    let graph = model.graph.as_ref().ok_or_else(|| Error::Optimize("the model has no graph".into()))?;
    let initializers: HashMap<String, TensorProto> =
        graph.initializer.iter().map(|t| (t.name().to_string(), t.clone())).collect();
    let graph_outputs: HashSet<String> = graph.output.iter().map(|o| o.name().to_string()).collect();
    let input_name = graph
        .input
        .iter()
        .find(|i| !initializers.contains_key(i.name()))
        .map(|i| i.name().to_string())
        .ok_or_else(|| Error::Optimize("the model has no input".into()))?;
    // Which nodes are quantized, and which tensors need a range.
    let mut report = Vec::new();
    let mut plans: HashMap<usize, IntegerMatMul> = HashMap::new();
    let mut tensors: Vec<String> = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        let label =
            if node.name().is_empty() { format!("{}_{index}", node.op_type()) } else { node.name().to_string() };
        match plan_integer_matmul(node, &initializers) {
            Ok(plan) => {
                for t in [&node.input[0], &node.output[0]] {
                    if !graph_outputs.contains(t) && !tensors.contains(t) {
                        tensors.push(t.clone());
                    }
                }
                plans.insert(index, plan);
                report.push(NodeReport {
                    node: label,
                    op_type: node.op_type().to_string(),
                    rewritten: true,
                    reason: None,
                });
            }
            Err(reason) => report.push(NodeReport {
                node: label,
                op_type: node.op_type().to_string(),
                rewritten: false,
                reason: Some(reason),
            }),
        }
    }
    if plans.is_empty() {
        return Err(nothing_to_rewrite("quantize", &report));
    }
    let values = collect_activations(runtime, &model, &input_name, &tensors, calibration, width)?;
    let params: HashMap<String, (f32, u8)> = tensors
        .iter()
        .map(|t| {
            let (rmin, rmax) = calibrator.range(&values[t]);
            let (scale, zero_point) = scale_zero_point(rmin, rmax, 0, 255, false);
            (t.clone(), (scale, zero_point as u8))
        })
        .collect();
    let graph = model.graph.as_mut().ok_or_else(|| Error::Optimize("the model has no graph".into()))?;
    let dq = |t: &str| format!("{t}_DequantizeLinear_Output");
    let mut new_initializers = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len() * 3);
    let mut paired: HashSet<String> = HashSet::new();
    let mut replaced_weights = HashSet::new();
    let old_nodes = std::mem::take(&mut graph.node);
    for (index, mut node) in old_nodes.into_iter().enumerate() {
        // A calibrated tensor gets its Q/DQ pair just before its first reader.
        for input in node.input.clone() {
            if let Some((scale, zero_point)) = params.get(&input) {
                if paired.insert(input.clone()) {
                    let (s, z, q) = (
                        format!("{input}_scale"),
                        format!("{input}_zero_point"),
                        format!("{input}_QuantizeLinear_Output"),
                    );
                    new_initializers.push(onnx::f32_tensor(&s, &[], &[*scale]));
                    new_initializers.push(onnx::u8_tensor(&z, &[], &[*zero_point]));
                    nodes.push(onnx::node(
                        "QuantizeLinear",
                        &[&input, &s, &z],
                        &[&q],
                        &format!("{input}_QuantizeLinear"),
                    ));
                    nodes.push(onnx::node(
                        "DequantizeLinear",
                        &[&q, &s, &z],
                        &[&dq(&input)],
                        &format!("{input}_DequantizeLinear"),
                    ));
                }
            }
        }
        // Nodes without inputs (Constant) have no activation.
        let activation = node.input.first().cloned().unwrap_or_default();
        for input in node.input.iter_mut() {
            if params.contains_key(input.as_str()) {
                *input = dq(input);
            }
        }
        if let Some(plan) = plans.remove(&index) {
            // The plan holds the weight as [k, n] (a transposed Gemm weight already turned back), so
            // the Gemm drops transB and the channels are always axis 1.
            let (weight, k, n) = (plan.weight_name.clone(), plan.k, plan.n);
            node.attribute.retain(|a| a.name() != "transB");
            let (q, scales) = quantize_weight(&plan.weight, k, n, granularity, weight_qmax());
            let (wq, ws, wz) =
                (format!("{weight}_quantized"), format!("{weight}_scale"), format!("{weight}_zero_point"));
            let channel_dims: Vec<i64> = if scales.len() == 1 { vec![] } else { vec![n as i64] };
            new_initializers.push(onnx::i8_tensor(&wq, &[k as i64, n as i64], &q));
            new_initializers.push(onnx::f32_tensor(&ws, &channel_dims, &scales));
            new_initializers.push(onnx::i8_tensor(&wz, &channel_dims, &vec![0; scales.len()]));
            let mut dequantize = onnx::node(
                "DequantizeLinear",
                &[&wq, &ws, &wz],
                &[&dq(&weight)],
                &format!("{weight}_DequantizeLinear"),
            );
            if scales.len() > 1 {
                dequantize.attribute.push(onnx::int_attribute("axis", 1));
            }
            nodes.push(dequantize);
            node.input[1] = dq(&weight);
            replaced_weights.insert(weight.clone());
            // A constant Gemm bias (alpha = beta = 1) as int32 at scale s_input · s_weight.
            let plain_gemm =
                onnx::attribute_f(&node, "alpha", 1.0) == 1.0 && onnx::attribute_f(&node, "beta", 1.0) == 1.0;
            if let (Some(bias), Some((a_scale, _)), true) =
                (node.input.get(2).cloned(), params.get(&activation), plain_gemm)
            {
                if let Some(b) = initializers.get(&bias).and_then(onnx::float_values).filter(|b| b.len() == n) {
                    let bias_scales: Vec<f32> =
                        (0..n).map(|c| a_scale * scales[if scales.len() == 1 { 0 } else { c }]).collect();
                    let q: Vec<i32> =
                        b.iter().zip(&bias_scales).map(|(v, s)| (v / s).round_ties_even() as i32).collect();
                    let (bq, bs) = (format!("{bias}_quantized"), format!("{bias}_scale"));
                    new_initializers.push(onnx::i32_tensor(&bq, &[n as i64], &q));
                    new_initializers.push(onnx::f32_tensor(&bs, &[n as i64], &bias_scales));
                    let mut dequantize =
                        onnx::node("DequantizeLinear", &[&bq, &bs], &[&dq(&bias)], &format!("{bias}_DequantizeLinear"));
                    dequantize.attribute.push(onnx::int_attribute("axis", 0));
                    nodes.push(dequantize);
                    node.input[2] = dq(&bias);
                    replaced_weights.insert(bias);
                }
            }
        }
        nodes.push(node);
    }
    graph.node = nodes;
    let still_read: HashSet<&str> = graph.node.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
    graph.initializer.retain(|t| !replaced_weights.contains(t.name()) || still_read.contains(t.name()));
    graph.initializer.extend(new_initializers);
    Ok(Rewritten { bytes: onnx::encode(&model), nodes: report })
}

/// Runs the float model on the calibration rows with `tensors` exposed as extra outputs and returns
/// every value each took.
fn collect_activations(
    runtime: &crate::runtime::Runtime,
    model: &crate::onnx::proto::ModelProto,
    input: &str,
    tensors: &[String],
    rows: &[f32],
    width: usize,
) -> Result<HashMap<String, Vec<f32>>> {
    use crate::onnx::proto::{type_proto, TypeProto, ValueInfoProto};
    let mut augmented = model.clone();
    let graph = augmented.graph.as_mut().ok_or_else(|| Error::Optimize("the model has no graph".into()))?;
    let exposed: Vec<&String> = tensors.iter().filter(|t| t.as_str() != input).collect();
    for t in &exposed {
        graph.output.push(ValueInfoProto {
            name: Some((*t).clone()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let bytes = onnx::encode(&augmented);
    let mut session = runtime.session("calibration", &bytes, None)?;
    let mut values: HashMap<String, Vec<f32>> = tensors.iter().map(|t| (t.clone(), Vec::new())).collect();
    // 512 rows a call, or what a fixed batch size takes (padding rows are left out of the ranges).
    let per_call = Some(crate::batch_size::fixed_batch(&session).unwrap_or(512));
    crate::batch_size::in_calls(rows, width, per_call, &mut Vec::new(), |piece| -> Result<()> {
        let tensor = ort::value::TensorRef::from_array_view(([piece.input_rows, width], piece.input))?;
        let outputs = session.run(ort::inputs![input => tensor])?;
        for t in &exposed {
            let value =
                outputs.get(t.as_str()).ok_or_else(|| Error::Optimize(format!("calibration: no output {t}")))?;
            let (_, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| Error::Optimize(format!("calibration: tensor {t} is not float32: {e}")))?;
            if let Some(v) = values.get_mut(t.as_str()) {
                v.extend_from_slice(&data[..data.len() / piece.input_rows * piece.rows]);
            }
        }
        if let Some(v) = values.get_mut(input) {
            v.extend_from_slice(&piece.input[..piece.rows * width]);
        }
        Ok(())
    })?;
    Ok(values)
}

/// Converts a model to float16 (see the module documentation).
///
/// # Errors
///
/// `optimize` when the bytes are not an ONNX model or use external data.
pub fn convert_fp16(model: &[u8]) -> Result<Rewritten> {
    let mut model = onnx::decode(model)?;
    let graph = model.graph.as_mut().ok_or_else(|| Error::Optimize("the model has no graph".into()))?;
    let float_inputs: HashSet<String> =
        graph.input.iter().filter(|v| is_float_value(v)).map(|v| v.name().to_string()).collect();
    let float_outputs: HashSet<String> =
        graph.output.iter().filter(|v| is_float_value(v)).map(|v| v.name().to_string()).collect();
    // Tensors that hold float16 once converted: converted initializers and float outputs of fp16 nodes.
    let mut half: HashSet<String> = HashSet::new();
    for t in &mut graph.initializer {
        if let Some(values) = onnx::float_values(t) {
            *t = onnx::f16_tensor(t.name(), &t.dims, &values);
            half.insert(t.name().to_string());
        }
    }
    let mut nodes = Vec::with_capacity(graph.node.len() + 8);
    // The model's float inputs enter float16 through one Cast each.
    for input in &float_inputs {
        let name = format!("{input}_fp16");
        let mut cast = onnx::node("Cast", &[input], &[&name], &format!("{input}_cast_to_fp16"));
        cast.attribute.push(onnx::int_attribute("to", DataType::Float16 as i64));
        nodes.push(cast);
    }
    let renamed_input =
        |name: &str| if float_inputs.contains(name) { format!("{name}_fp16") } else { name.to_string() };
    let mut report = Vec::new();
    let mut cast_back: HashMap<String, String> = HashMap::new();
    for (index, mut node) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        let label =
            if node.name().is_empty() { format!("{}_{index}", node.op_type()) } else { node.name().to_string() };
        if node.domain() == ML_DOMAIN || !onnx::is_default_domain(&node) {
            // It reads the model's inputs as they are (float32); float16 tensors go back to float32.
            for input in node.input.iter_mut().filter(|i| half.contains(i.as_str())) {
                let back = cast_back.entry(input.clone()).or_insert_with(|| {
                    let name = format!("{input}_fp32");
                    let mut cast = onnx::node("Cast", &[input], &[&name], &format!("{input}_cast_to_fp32"));
                    cast.attribute.push(onnx::int_attribute("to", DataType::Float as i64));
                    nodes.push(cast);
                    name
                });
                *input = back.clone();
            }
            report.push(NodeReport {
                node: label,
                op_type: node.op_type().to_string(),
                rewritten: false,
                reason: Some(format!("{} operator: no float16 kernel, stays float32", node.domain())),
            });
            nodes.push(node);
            continue;
        }
        for input in &mut node.input {
            *input = renamed_input(input);
        }
        let mut float_constant = false;
        if node.op_type() == "Cast" {
            // A cast to float32 inside the float16 region casts to float16 instead.
            for a in node.attribute.iter_mut().filter(|a| a.name() == "to" && a.i == Some(DataType::Float as i64)) {
                a.i = Some(DataType::Float16 as i64);
            }
        } else {
            for t in node.attribute.iter_mut().filter_map(|a| a.t.as_mut()) {
                if let Some(values) = onnx::float_values(t) {
                    *t = onnx::f16_tensor(t.name(), &t.dims, &values);
                    float_constant = true;
                }
            }
        }
        // Its outputs are float16 when it computes in float: float16 inputs, a float16 cast, a float constant.
        let computes_half = node.input.iter().any(|i| half.contains(i))
            || (node.op_type() == "Cast" && onnx::attribute_i(&node, "to", 0) == DataType::Float16 as i64)
            || (node.op_type() == "Constant" && float_constant);
        if computes_half && !is_integer_output(&node) {
            half.extend(node.output.iter().cloned());
        }
        report.push(NodeReport { node: label, op_type: node.op_type().to_string(), rewritten: true, reason: None });
        nodes.push(node);
    }
    // The model's float outputs leave as float32.
    for output in &float_outputs {
        if !half.contains(output) {
            continue;
        }
        let inner = format!("{output}_fp16");
        for n in &mut nodes {
            for o in n.output.iter_mut().filter(|o| *o == output) {
                *o = inner.clone();
            }
            for i in n.input.iter_mut().filter(|i| *i == output) {
                *i = inner.clone();
            }
        }
        let mut cast = onnx::node("Cast", &[&inner], &[output], &format!("{output}_cast_to_fp32"));
        cast.attribute.push(onnx::int_attribute("to", DataType::Float as i64));
        nodes.push(cast);
    }
    if report.iter().all(|r| !r.rewritten) {
        return Err(nothing_to_rewrite("convert to float16", &report));
    }
    graph.node = nodes;
    // Intermediate type annotations would now be wrong; ONNX Runtime infers them again.
    graph.value_info.clear();
    Ok(Rewritten { bytes: onnx::encode(&model), nodes: report })
}

/// Operators whose outputs are integers or booleans whatever their inputs.
fn is_integer_output(node: &NodeProto) -> bool {
    matches!(
        node.op_type(),
        "ArgMax"
            | "ArgMin"
            | "Shape"
            | "Size"
            | "NonZero"
            | "Equal"
            | "Greater"
            | "Less"
            | "GreaterOrEqual"
            | "LessOrEqual"
            | "Not"
            | "And"
            | "Or"
            | "Xor"
            | "IsNaN"
            | "IsInf"
    ) || (node.op_type() == "Cast" && onnx::attribute_i(node, "to", 0) != DataType::Float16 as i64)
}

fn is_float_value(v: &crate::onnx::proto::ValueInfoProto) -> bool {
    use crate::onnx::proto::type_proto::Value;
    matches!(
        v.r#type.as_ref().and_then(|t| t.value.as_ref()),
        Some(Value::TensorType(t)) if t.elem_type == Some(DataType::Float as i32)
    )
}

#[cfg(test)]
#[path = "../tests/unit/quantize.rs"]
mod tests;
