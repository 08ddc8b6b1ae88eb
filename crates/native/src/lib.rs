//! Native executors: a model whose graph uses only operators quorum knows (tree ensembles, linear
//! models, scalers, and the dense operators of small MLPs) is compiled into a flat plan of Rust
//! kernels and runs without ONNX Runtime. Anything else keeps ONNX Runtime, with the reason.
//!
//! The plan treats every value as a `[rows, width]` block (a 1-D `[rows]` value is width 1): the
//! batch dimension stays first through every supported operator, so one plan serves any batch
//! size. Constants (initializers, `Constant` nodes) are folded into the kernels at compile time.
//! Only the nodes the declared output needs are compiled. The engine switches a model to its plan
//! only after the plan and ONNX Runtime agree on probe rows ([`probe_rows`]).
//!
//! ```
//! use quorum_onnx::proto::tensor_proto::DataType;
//! use quorum_onnx::proto::{type_proto, GraphProto, ModelProto, OperatorSetIdProto, TypeProto, ValueInfoProto};
//! use quorum_onnx::{encode, node};
//!
//! // y = Relu(x), x a float32 [batch, 2].
//! let tensor = type_proto::Tensor { elem_type: Some(DataType::Float as i32), shape: None };
//! let float = |name: &str| ValueInfoProto {
//!     name: Some(name.into()),
//!     r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor.clone())), ..Default::default() }),
//!     ..Default::default()
//! };
//! let graph = GraphProto {
//!     node: vec![node("Relu", &["x"], &["y"], "relu")],
//!     input: vec![float("x")],
//!     output: vec![float("y")],
//!     ..Default::default()
//! };
//! let opset = OperatorSetIdProto { domain: Some(String::new()), version: Some(17) };
//! let bytes = encode(&ModelProto { graph: Some(graph), opset_import: vec![opset], ..Default::default() });
//!
//! let plan = quorum_native::NativeModel::compile(&bytes, "y", 2)?;
//! let mut arena = Vec::new();
//! assert_eq!(plan.run(&[-1.0, 2.0, 3.0, -4.0], 2, &mut arena), &[0.0, 2.0, 3.0, 0.0]);
//! // An operator it does not know keeps ONNX Runtime, with the reason.
//! let lstm = GraphProto { node: vec![node("LSTM", &["x"], &["y"], "lstm")], input: vec![float("x")], output: vec![float("y")], ..Default::default() };
//! let opset = OperatorSetIdProto { domain: Some(String::new()), version: Some(17) };
//! let refused = quorum_native::NativeModel::compile(&encode(&ModelProto { graph: Some(lstm), opset_import: vec![opset], ..Default::default() }), "y", 2);
//! assert!(refused.unwrap_err().contains("LSTM"));
//! # Ok::<(), String>(())
//! ```

#![warn(missing_docs)]

mod attributes;
mod compile;
mod dense;
#[cfg(feature = "gpu")]
pub mod gpu;
mod ml;
mod perfect;
mod quickscorer;
#[cfg(test)]
mod random_forest;
mod trees;

use std::cell::RefCell;

/// Which executor runs a model, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecutorInfo {
    /// `"native"`, `"onnxruntime"` or `"remote"`.
    pub kind: String,
    /// Why the model is not native (an operator, an attribute, a failed probe, native turned off);
    /// `None` when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With [`GpuOptions`]: where large batches of a native MLP run (`"cuda:0 f16, from 512 rows"`),
    /// or why they stay on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// For a remote model: the URL it is served at (never its token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// How a GPU plan stores weights and activations (feature `gpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Float32 weights and activations.
    F32,
    /// Half-precision weights and activations, float32 accumulation in cuBLAS; answers within 1e-2
    /// of the CPU plan's (checked on the probe rows at load).
    F16,
}

/// Batches of at least `min_rows` rows of a native MLP run on GPU `device` (feature `gpu`; see
/// `quorum::ModelOptions::with_native_gpu`). JSON: `{"device": 0, "precision": "f16", "min_rows": 512}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuOptions {
    /// The CUDA device's index.
    #[serde(default)]
    pub device: usize,
    /// float32 or float16.
    pub precision: Precision,
    /// Batches smaller than this run on the CPU plan.
    #[serde(alias = "minRows")]
    pub min_rows: usize,
}

impl ExecutorInfo {
    /// The model runs on its native plan.
    pub fn native() -> ExecutorInfo {
        ExecutorInfo { kind: "native".into(), reason: None, gpu: None, url: None }
    }

    /// The model runs on ONNX Runtime, for `reason`.
    pub fn onnxruntime(reason: impl Into<String>) -> ExecutorInfo {
        ExecutorInfo { kind: "onnxruntime".into(), reason: Some(reason.into()), gpu: None, url: None }
    }

    /// The model is served by another server, at `url`.
    pub fn remote(url: impl Into<String>) -> ExecutorInfo {
        ExecutorInfo { kind: "remote".into(), reason: None, gpu: None, url: Some(url.into()) }
    }

    /// Whether the model runs on its native plan.
    pub fn is_native(&self) -> bool {
        self.kind == "native"
    }
}

/// One compiled step; reads earlier slots, writes its own.
#[derive(Debug)]
pub(crate) enum Kernel {
    Dense(dense::Dense),
    Trees(Box<trees::TreeEnsemble>),
    Ml(ml::MlOp),
}

#[derive(Debug)]
pub(crate) struct Step {
    pub kernel: Kernel,
    /// Input slots (slot 0 is the model's input).
    pub inputs: Vec<usize>,
    pub output: usize,
}

/// A compiled model: its steps in order, the width of every slot, and where the declared output is.
#[derive(Debug)]
pub struct NativeModel {
    steps: Vec<Step>,
    /// Per-row width of each slot; slot 0 is the input.
    widths: Vec<usize>,
    /// Start of each slot in the per-row arena layout (`offsets[s] * rows` is where slot `s` begins;
    /// slot 0 is not in the arena).
    offsets: Vec<usize>,
    arena_width: usize,
    output: usize,
    /// The operators compiled, for reports.
    operators: Vec<String>,
}

/// Another executor that may answer a call instead of the CPU plan (a GPU): gets the input rows and
/// their count, returns whether it wrote the output into the buffer.
pub type Device<'a> = dyn FnMut(&[f32], usize, &mut Vec<f32>) -> bool + 'a;

thread_local! {
    /// Each thread's input buffer and arena, grown to the largest call seen: no allocation per call
    /// once warm, and no lock.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

impl NativeModel {
    /// Compiles the part of an ONNX model that `output` needs, for an input of `features` columns;
    /// `Err` names the node and what is not supported about it.
    ///
    /// # Errors
    ///
    /// The node and what about it has no native plan, as text (the model then stays on ONNX Runtime).
    pub fn compile(bytes: &[u8], output: &str, features: usize) -> Result<NativeModel, String> {
        compile::compile(bytes, output, features)
    }

    /// The input width (features).
    pub fn input_width(&self) -> usize {
        self.widths[0]
    }

    /// The width of the declared output (its columns).
    pub fn output_width(&self) -> usize {
        self.widths[self.output]
    }

    /// The distinct operators of the plan, in first-use order.
    pub fn operators(&self) -> &[String] {
        &self.operators
    }

    /// Runs `rows` rows: `fill` writes the `rows × input_width` input into the buffer it is given
    /// and returns the rows written (a queue's dispatcher may pick fewer); `read` gets the output
    /// block (`rows × output_width`, row-major) and those rows. Uses this thread's scratch space.
    /// `device`, when given, may answer instead (a GPU for large batches): it gets the input and
    /// the rows and returns whether it wrote the output into the buffer it is given.
    pub fn run_with<R>(
        &self,
        fill: &mut dyn FnMut(&mut Vec<f32>) -> usize,
        device: Option<&mut Device<'_>>,
        read: impl FnOnce(&[f32], usize) -> R,
    ) -> R {
        SCRATCH.with(|scratch| {
            let mut guard = scratch.borrow_mut();
            let (input, arena, answer) = &mut *guard;
            let rows = fill(input);
            let input = &input[..rows * self.widths[0]];
            if let Some(device) = device {
                if device(input, rows, answer) {
                    return read(answer, rows);
                }
            }
            let out = self.eval(input, rows, arena);
            read(out, rows)
        })
    }

    /// Runs `rows` rows of `input` (`rows × input_width`) with the caller's arena; returns the output
    /// block. Benchmarks and tests call it; the engine goes through [`NativeModel::run_with`].
    pub fn run<'a>(&self, input: &'a [f32], rows: usize, arena: &'a mut Vec<f32>) -> &'a [f32] {
        self.eval(input, rows, arena)
    }

    fn eval<'a>(&self, input: &'a [f32], rows: usize, arena: &'a mut Vec<f32>) -> &'a [f32] {
        debug_assert_eq!(input.len(), rows * self.widths[0]);
        let need = rows * self.arena_width;
        if arena.len() < need {
            arena.resize(need, 0.0);
        }
        for step in &self.steps {
            let start = self.offsets[step.output] * rows;
            let (before, after) = arena.split_at_mut(start);
            let out = &mut after[..rows * self.widths[step.output]];
            let slot = |s: usize| -> &[f32] {
                if s == 0 {
                    input
                } else {
                    let o = self.offsets[s] * rows;
                    &before[o..o + rows * self.widths[s]]
                }
            };
            match &step.kernel {
                Kernel::Dense(k) => k.run(&step.inputs, &slot, &self.widths, rows, out),
                Kernel::Trees(t) => t.run(slot(step.inputs[0]), self.widths[step.inputs[0]], rows, out),
                Kernel::Ml(k) => k.run(slot(step.inputs[0]), self.widths[step.inputs[0]], rows, out),
            }
        }
        if self.output == 0 {
            return input;
        }
        let o = self.offsets[self.output] * rows;
        &arena[o..o + rows * self.widths[self.output]]
    }
}

/// Rows the engine runs through a native plan and ONNX Runtime before trusting the plan: zeros,
/// halves, ones, a ramp, and fixed pseudo-random rows of both signs up to magnitude 4 (so that
/// branches on either side of typical thresholds, negative inputs and saturating activations are
/// all visited).
pub fn probe_rows(width: usize) -> Vec<f32> {
    let mut rows = Vec::new();
    for v in [0.0f32, 0.5, 1.0] {
        rows.extend(std::iter::repeat_n(v, width));
    }
    rows.extend((0..width).map(|c| (c + 1) as f32 / width as f32));
    // xorshift: deterministic, so a probe that fails fails the same way every time.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..28 {
        for _ in 0..width {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            rows.push((unit - 0.5) * 8.0);
        }
    }
    rows
}

/// How far a native answer may be from ONNX Runtime's: 1e-5 absolute for values up to 1 in
/// magnitude (probabilities), 1e-5 relative beyond, where float32 itself cannot resolve 1e-5.
pub fn agrees(native: f32, onnxruntime: f32) -> bool {
    if native.is_nan() || onnxruntime.is_nan() {
        return native.is_nan() && onnxruntime.is_nan();
    }
    (native - onnxruntime).abs() <= 1e-5 * onnxruntime.abs().max(1.0)
}
