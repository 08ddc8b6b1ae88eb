//! [`Optimizer`]: benchmarks a registered model and candidates rewritten from it, and keeps the
//! fastest one that stays within the accuracy threshold — or the original.
//!
//! Candidates: ONNX Runtime's offline graph optimisation (all levels, saved), INT8 dynamic per tensor
//! and per channel, INT8 static (QDQ) calibrated on the data's first 256 rows by MinMax, Percentile
//! and Entropy ([`crate::quantize`], [`crate::calibrate`]), FP16 when a GPU execution provider is
//! configured (on CPU a float16 model runs behind casts and is slower, so it is not tried), and the
//! original's native plan ([`crate::native`]; on a GPU provider with feature `gpu`, also its plan on
//! the GPU in float32 and float16). A native candidate is the same file run by another executor:
//! when it wins, no version is registered (the engine runs the model natively when its plan verifies
//! at load; a GPU plan needs the model's `native_gpu` option, which the report spells out). Each is
//! benchmarked on the
//! caller's data exactly like the original: latency p50/p95/p99 at batch 1, 8, 64 and 512, throughput,
//! file size, resident memory of a loaded session, and accuracy against the outcomes plus agreement
//! and score differences against the float32 original. A candidate is accepted when it loads, loses
//! no more than `accuracy_threshold` accuracy, and is at least `min_speedup` faster at batch 1 (the
//! engine's main use); INT8 on a CPU without VNNI is often slower for small models, and the decision
//! then says no. The chosen model is registered as a new version with its lineage; the model's
//! default version is left as it was (make it the default, a hot swap, when you are ready).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::calibrate::Calibrator;
use crate::engine::InferenceEngine;
use crate::error::{Error, Result};
use crate::input_type::InputType;
use crate::native::NativeModel;
use crate::quantize::{self, Granularity, NodeReport};
use crate::registry::{self, Lineage, ModelMetadata, ModelRegistration, OutputSpec, Task, VersionSpec};
use crate::replay::Table;
use crate::runtime::Runtime;
use crate::runtime::{ExecutionProvider, ProviderFallback};
use crate::stats::percentiles;

/// Rows static quantization calibrates on (the first ones of the data).
pub const CALIBRATION_ROWS: usize = 256;

/// Batch sizes every benchmark measures.
pub const BATCH_SIZES: [usize; 4] = [1, 8, 64, 512];

/// A rewrite the optimizer can try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// ONNX Runtime's graph optimisations applied offline and saved (float32), up to
    /// [`OptimizeOptions::graph_level`].
    Fp32Optimized,
    /// INT8 dynamic quantization, one weight scale per tensor.
    Int8Dynamic,
    /// INT8 dynamic quantization, one weight scale per output channel.
    Int8DynamicPerChannel,
    /// INT8 static (QDQ), activations calibrated by min/max.
    Int8StaticMinmax,
    /// INT8 static (QDQ), activations calibrated on a percentile of their values.
    Int8StaticPercentile,
    /// INT8 static (QDQ), activations calibrated by minimising the KL divergence (entropy).
    Int8StaticEntropy,
    /// Float16 weights and activations (inputs and outputs stay float32).
    Fp16,
    /// The original's native plan on the CPU (no ONNX Runtime call), verified on the probe rows.
    Native,
    /// The original's native plan on a GPU in float32 (feature `gpu`, a GPU provider).
    NativeGpu,
    /// The original's native plan on a GPU with float16 weights and activations.
    NativeGpuFp16,
}

impl Method {
    /// The method's name on the command line and in reports (`int8-dynamic`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Fp32Optimized => "fp32-optimized",
            Method::Int8Dynamic => "int8-dynamic",
            Method::Int8DynamicPerChannel => "int8-dynamic-per-channel",
            Method::Int8StaticMinmax => "int8-static-minmax",
            Method::Int8StaticPercentile => "int8-static-percentile",
            Method::Int8StaticEntropy => "int8-static-entropy",
            Method::Fp16 => "fp16",
            Method::Native => "native",
            Method::NativeGpu => "native-gpu",
            Method::NativeGpuFp16 => "native-gpu-fp16",
        }
    }

    /// Whether the candidate is the original run by a native executor (no new file).
    pub fn is_native(self) -> bool {
        matches!(self, Method::Native | Method::NativeGpu | Method::NativeGpuFp16)
    }

    /// The calibrator of a static method.
    pub fn calibrator(self) -> Option<Calibrator> {
        match self {
            Method::Int8StaticMinmax => Some(Calibrator::MIN_MAX),
            Method::Int8StaticPercentile => Some(Calibrator::PERCENTILE),
            Method::Int8StaticEntropy => Some(Calibrator::ENTROPY),
            _ => None,
        }
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Method> {
        Ok(match s {
            "fp32-optimized" => Method::Fp32Optimized,
            "int8-dynamic" => Method::Int8Dynamic,
            "int8-dynamic-per-channel" => Method::Int8DynamicPerChannel,
            "int8-static-minmax" => Method::Int8StaticMinmax,
            "int8-static-percentile" => Method::Int8StaticPercentile,
            "int8-static-entropy" => Method::Int8StaticEntropy,
            "fp16" => Method::Fp16,
            "native" => Method::Native,
            "native-gpu" => Method::NativeGpu,
            "native-gpu-fp16" => Method::NativeGpuFp16,
            other => {
                return Err(Error::Config(format!(
                    "unknown optimization method {other:?} (fp32-optimized, int8-dynamic, int8-dynamic-per-channel, \
                     int8-static-minmax, int8-static-percentile, int8-static-entropy, fp16, native, native-gpu, \
                     native-gpu-fp16)"
                )))
            }
        })
    }
}

/// How far ONNX Runtime's graph optimisations go in the saved `fp32-optimized` candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphLevel {
    /// Constant folding, redundant node elimination.
    Basic,
    /// Plus fusions (GELU, layer norm, MatMul + Add...). Portable: the default for a saved model.
    #[default]
    Extended,
    /// Plus layout changes for this machine's CPU (NCHWc): fastest here, may not suit another machine.
    All,
}

impl GraphLevel {
    fn ort(self) -> ort::session::builder::GraphOptimizationLevel {
        use ort::session::builder::GraphOptimizationLevel as L;
        match self {
            GraphLevel::Basic => L::Level1,
            GraphLevel::Extended => L::Level2,
            GraphLevel::All => L::Level3,
        }
    }
}

impl std::str::FromStr for GraphLevel {
    type Err = Error;
    fn from_str(s: &str) -> Result<GraphLevel> {
        match s {
            "basic" => Ok(GraphLevel::Basic),
            "extended" => Ok(GraphLevel::Extended),
            "all" => Ok(GraphLevel::All),
            other => Err(Error::Config(format!("graph level {other:?}: basic, extended or all"))),
        }
    }
}

/// Rows to measure on: features in the model's input order, and the outcomes when known.
#[derive(Debug, Clone)]
pub struct BenchmarkData {
    rows: Vec<f32>,
    width: usize,
    outcomes: Option<Vec<f32>>,
}

impl BenchmarkData {
    /// The model's features (and `outcome`, if given) from a CSV table; rows with a missing or
    /// non-finite value are skipped. Errors when no row is left.
    ///
    /// # Errors
    ///
    /// `optimize` when no row is left; `invalid_input` when a feature or the outcome column is missing.
    pub fn from_table(table: &Table, features: &[String], outcome: Option<&str>) -> Result<BenchmarkData> {
        let columns = features.iter().map(|f| table.column_index(f)).collect::<Result<Vec<_>>>()?;
        let outcome_column = outcome.map(|o| table.column_index(o)).transpose()?;
        let (mut rows, mut outcomes) = (Vec::new(), Vec::new());
        for r in 0..table.rows() {
            let values: Option<Vec<f32>> =
                columns.iter().map(|&c| table.feature(r, c).ok().filter(|v| v.is_finite())).collect();
            let label = match outcome_column {
                Some(c) => match table.cell(r, c) {
                    Ok(v) if v.is_finite() => Some(v as f32),
                    _ => continue,
                },
                None => None,
            };
            if let Some(values) = values {
                rows.extend(values);
                outcomes.extend(label);
            }
        }
        if rows.is_empty() {
            return Err(Error::Optimize("the data has no row with finite values for every feature".into()));
        }
        Ok(BenchmarkData { rows, width: features.len(), outcomes: outcome_column.map(|_| outcomes) })
    }

    /// How many rows the data holds.
    pub fn len(&self) -> usize {
        self.rows.len() / self.width
    }

    /// The rows static quantization calibrates on: the first 256 (in file order).
    pub fn calibration_rows(&self) -> &[f32] {
        &self.rows[..self.rows.len().min(CALIBRATION_ROWS * self.width)]
    }

    /// Whether the data holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Latency of one batch size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchLatency {
    /// Rows per call.
    pub batch: usize,
    /// Median latency of one call, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile latency of one call, in milliseconds.
    pub p95_ms: f64,
    /// 99th percentile latency of one call, in milliseconds.
    pub p99_ms: f64,
    /// Rows per second at this batch size (one thread).
    pub throughput: f64,
}

/// What [`benchmark_model`] measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelBenchmark {
    /// The model file's size, in bytes.
    pub size_bytes: u64,
    /// Resident memory added by creating the session and running it once (Linux; noisy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_memory_bytes: Option<u64>,
    /// Latency and throughput at each batch size measured (1, 8, 64, 512).
    pub latency: Vec<BatchLatency>,
    /// Classification accuracy against the data's outcomes (threshold 0.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Share of rows whose predicted class matches the float32 original's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    /// Largest absolute difference from the original's scores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs_diff: Option<f64>,
    /// Mean absolute difference from the original's scores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_abs_diff: Option<f64>,
    #[serde(skip)]
    scores: Vec<f32>,
}

impl ModelBenchmark {
    /// The median latency at batch size `batch`, in milliseconds, if it was measured.
    pub fn p50_ms(&self, batch: usize) -> Option<f64> {
        self.latency.iter().find(|l| l.batch == batch).map(|l| l.p50_ms)
    }
}

/// Benchmarks `model` (ONNX bytes) with quorum's session settings; `reference` is the float32
/// original's benchmark, for agreement and score differences.
///
/// # Errors
///
/// `model_load` or `inference` when ONNX Runtime refuses or fails on the model; `optimize` when nothing can be
/// measured.
pub fn benchmark_model(
    runtime: &Runtime,
    model: &[u8],
    output: &OutputSpec,
    task: Task,
    data: &BenchmarkData,
    reference: Option<&ModelBenchmark>,
) -> Result<ModelBenchmark> {
    let mut measured = benchmark_models(runtime, &[Subject::Onnx(model)], output, task, data, &ExecutionProvider::Cpu)?;
    let mut bench = measured.remove(0)?;
    if let Some(r) = reference {
        compare(&mut bench, r, task);
    }
    Ok(bench)
}

/// What one benchmarked model is: ONNX bytes run on an ONNX Runtime session, or a native plan (of
/// a file of `size` bytes) run on the CPU or, with feature `gpu`, on a GPU.
pub enum Subject<'a> {
    /// A model as ONNX bytes, run on an ONNX Runtime session.
    Onnx(&'a [u8]),
    /// A native plan, run on the CPU.
    Native {
        /// The compiled plan.
        plan: &'a NativeModel,
        /// The size of the model file it was compiled from, in bytes.
        size: usize,
    },
    /// A native plan, run on a GPU (feature `gpu`).
    #[cfg(feature = "gpu")]
    Gpu {
        /// The compiled plan.
        plan: &'a NativeModel,
        /// The size of the model file it was compiled from, in bytes.
        size: usize,
        /// The device and precision.
        options: crate::native::GpuOptions,
    },
}

impl std::fmt::Debug for Subject<'_> {
    // The model's bytes or plan would drown the output: its kind and size say which it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Subject::Onnx(_) => "Onnx",
            Subject::Native { .. } => "Native",
            #[cfg(feature = "gpu")]
            Subject::Gpu { .. } => "Gpu",
        };
        f.debug_struct(kind).field("size", &self.size()).finish()
    }
}

impl Subject<'_> {
    fn size(&self) -> usize {
        match self {
            Subject::Onnx(bytes) => bytes.len(),
            Subject::Native { size, .. } => *size,
            #[cfg(feature = "gpu")]
            Subject::Gpu { size, .. } => *size,
        }
    }

    fn load(&self, runtime: &Runtime, provider: &ExecutionProvider) -> Result<Runner<'_>> {
        match self {
            Subject::Onnx(bytes) => {
                let (session, _) = runtime.session_on("benchmark", bytes, None, provider, ProviderFallback::Fail)?;
                let (_, input_type) = registry::model_input(&session).map_err(Error::Optimize)?;
                Ok(Runner::Session(session, input_type))
            }
            Subject::Native { plan, .. } => Ok(Runner::Native { plan, arena: Vec::new() }),
            #[cfg(feature = "gpu")]
            Subject::Gpu { plan, options, .. } => {
                let gpu = crate::native::gpu::GpuMlp::verified(plan, *options).map_err(Error::Optimize)?;
                Ok(Runner::Gpu { gpu: Box::new(gpu), columns: plan.output_width(), answer: Vec::new() })
            }
        }
    }
}

/// A loaded [`Subject`], ready to score rows.
enum Runner<'a> {
    Session(ort::session::Session, InputType),
    Native {
        plan: &'a NativeModel,
        arena: Vec<f32>,
    },
    #[cfg(feature = "gpu")]
    Gpu {
        gpu: Box<crate::native::gpu::GpuMlp>,
        columns: usize,
        answer: Vec<f32>,
    },
}

impl Runner<'_> {
    /// The output column's score for each row of `rows` (`width` columns).
    fn scores(&mut self, output: &OutputSpec, rows: &[f32], width: usize) -> Result<Vec<f32>> {
        let n = rows.len() / width;
        let column = output.column.unwrap_or(0);
        match self {
            Runner::Session(session, input_type) => run_scores(session, *input_type, output, rows, width),
            Runner::Native { plan, arena } => {
                let columns = plan.output_width();
                let values = plan.run(rows, n, arena);
                Ok((0..n).map(|r| values[r * columns + column]).collect())
            }
            #[cfg(feature = "gpu")]
            Runner::Gpu { gpu, columns, answer } => {
                gpu.run(rows, n, answer).map_err(Error::Optimize)?;
                Ok((0..n).map(|r| answer[r * *columns + column]).collect())
            }
        }
    }
}

/// Benchmarks several models side by side: their latency samples are taken in interleaved rounds,
/// so that warm-up and the machine's other load fall on all of them alike (measured one after the
/// other, whichever ran first looked ~40% slower on this machine). The first model is the reference
/// of the others' agreement and score differences. A model that does not load or run gets its error.
///
/// # Errors
///
/// `optimize` when there is no data to measure on (each model's own failure is in its entry).
pub fn benchmark_models(
    runtime: &Runtime,
    models: &[Subject<'_>],
    output: &OutputSpec,
    task: Task,
    data: &BenchmarkData,
    provider: &ExecutionProvider,
) -> Result<Vec<Result<ModelBenchmark>>> {
    let mut sessions: Vec<Result<Loaded>> = Vec::with_capacity(models.len());
    for model in models {
        let before = resident_bytes();
        let built = model.load(runtime, provider).and_then(|mut session| {
            let mut scores = Vec::with_capacity(data.len());
            for chunk in data.rows.chunks(512 * data.width) {
                scores.extend(session.scores(output, chunk, data.width)?);
            }
            let memory = before.zip(resident_bytes()).map(|(b, a)| a.saturating_sub(b));
            Ok((session, scores, memory))
        });
        sessions.push(built);
    }
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); BATCH_SIZES.len()]; models.len()];
    let mut failures: Vec<Option<Error>> = (0..models.len()).map(|_| None).collect();
    for (b, batch) in BATCH_SIZES.iter().enumerate() {
        let input: Vec<f32> = data.rows.iter().copied().cycle().take(batch * data.width).collect();
        let started = Instant::now();
        let mut round = 0;
        // 10 runs per model per round; at least 3 rounds, up to 30 or about 0.3 s per model.
        while round < 3 || (round < 30 && started.elapsed() < Duration::from_millis(300) * models.len() as u32) {
            for (m, session) in sessions.iter_mut().enumerate() {
                let (Ok((session, _, _)), None) = (session, &failures[m]) else { continue };
                for i in 0..12 {
                    let t = Instant::now();
                    if let Err(e) = session.scores(output, &input, data.width) {
                        failures[m] = Some(e);
                        break;
                    }
                    // The first two runs of a round warm the session back up after the others ran.
                    if i >= 2 {
                        samples[m][b].push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
            round += 1;
        }
    }
    let classify = |s: f32| if s >= 0.5 { 1.0 } else { 0.0 };
    let mut results = Vec::with_capacity(models.len());
    for (m, (session, failure)) in sessions.into_iter().zip(failures).enumerate() {
        let (_, scores, session_memory_bytes) = match (session, failure) {
            (Err(e), _) | (Ok(_), Some(e)) => {
                results.push(Err(e));
                continue;
            }
            (Ok(s), None) => s,
        };
        let latency = BATCH_SIZES
            .iter()
            .zip(&mut samples[m])
            .map(|(&batch, samples)| {
                let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
                let p = percentiles(samples);
                BatchLatency {
                    batch,
                    p50_ms: p.p50,
                    p95_ms: p.p95,
                    p99_ms: p.p99,
                    throughput: batch as f64 / (mean / 1e3),
                }
            })
            .collect();
        let accuracy = match (&data.outcomes, task) {
            (Some(outcomes), Task::Classification) => Some(
                scores.iter().zip(outcomes).filter(|(s, o)| classify(**s) == **o).count() as f64 / scores.len() as f64,
            ),
            _ => None,
        };
        results.push(Ok(ModelBenchmark {
            size_bytes: models[m].size() as u64,
            session_memory_bytes,
            latency,
            accuracy,
            agreement: None,
            max_abs_diff: None,
            mean_abs_diff: None,
            scores,
        }));
    }
    if let Some(Ok(reference)) = results.first().map(|r| r.as_ref().cloned()) {
        for r in results.iter_mut().skip(1).flatten() {
            compare(r, &reference, task);
        }
    }
    Ok(results)
}

/// A benchmarked model's runner, its scores on the data, and the memory its creation added.
type Loaded<'a> = (Runner<'a>, Vec<f32>, Option<u64>);

/// Agreement of predicted classes and score differences against the reference's scores.
fn compare(bench: &mut ModelBenchmark, reference: &ModelBenchmark, task: Task) {
    let classify = |s: f32| if s >= 0.5 { 1.0 } else { 0.0 };
    let diffs: Vec<f64> = bench.scores.iter().zip(&reference.scores).map(|(a, b)| f64::from((a - b).abs())).collect();
    let agree = bench.scores.iter().zip(&reference.scores).filter(|(a, b)| classify(**a) == classify(**b)).count();
    bench.agreement = (task == Task::Classification).then(|| agree as f64 / bench.scores.len().max(1) as f64);
    bench.max_abs_diff = diffs.iter().copied().reduce(f64::max);
    bench.mean_abs_diff = Some(diffs.iter().sum::<f64>() / diffs.len().max(1) as f64);
}

fn run_scores(
    session: &mut ort::session::Session,
    input_type: InputType,
    output: &OutputSpec,
    rows: &[f32],
    width: usize,
) -> Result<Vec<f32>> {
    let mut scores = Vec::with_capacity(rows.len() / width.max(1));
    // A model with a fixed batch size gets as many calls as that takes.
    let per_call = crate::batch_size::fixed_batch(session);
    crate::batch_size::in_calls(rows, width, per_call, &mut Vec::new(), |piece| -> Result<()> {
        let tensor = input_type.tensor(piece.input_rows, width, piece.input)?;
        let outputs = session.run(ort::inputs![tensor])?;
        let value = outputs.get(&output.name).ok_or_else(|| Error::OutputShape {
            model: "benchmark".into(),
            expected: format!("an output named {:?}", output.name),
            found: "no such output".into(),
        })?;
        let column = registry::read_output_column("benchmark", value, output, piece.input_rows)?;
        scores.extend((0..piece.rows).map(|r| column.get(r)));
        Ok(())
    })?;
    Ok(scores)
}

/// Resident set size from /proc (Linux only).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// The decision's settings.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct OptimizeOptions {
    /// Largest accuracy loss accepted, absolute (0.01 = one percentage point).
    pub accuracy_threshold: f64,
    /// A candidate must be at least this much faster at batch 1 (0.05 = 5%) to replace the original:
    /// smaller gains are within this machine's noise. Negative accepts a slower candidate (−0.1: up to
    /// 10% slower), e.g. to trade speed for a smaller model.
    pub min_speedup: f64,
    /// The p50 single-row latency a deployment needs; `deployment_ready` requires it when set.
    pub target_latency: Option<Duration>,
    /// Methods to try (default: every method that suits the configured providers).
    pub methods: Option<Vec<Method>>,
    /// Where the model will run: every benchmark runs there (and fails if it is unavailable). FP16 is
    /// tried only on a GPU provider.
    pub provider: ExecutionProvider,
    /// The graph optimisation level of the saved `fp32-optimized` candidate.
    pub graph_level: GraphLevel,
    /// The workload the decision is made for: batch size → its share of the calls (default `{1: 1}`,
    /// the single rows of the trading path). A candidate's speed-up is `1 − Σ wᵦ · p50ᵦ(candidate) /
    /// p50ᵦ(original)` over `Σ wᵦ = 1`, so an INT8 model twice as fast at batch 64 can win for a
    /// batching service even when it is slower at one row. Sizes are among [`BATCH_SIZES`].
    pub batch_sizes: BTreeMap<usize, f64>,
}

impl OptimizeOptions {
    /// Parses `1:0.2,64:0.8` (the CLI's `--batch-sizes`); weights are normalised by the decision.
    ///
    /// # Errors
    ///
    /// `config` for a malformed list or a batch size other than 1, 8, 64 and 512.
    pub fn parse_batch_sizes(text: &str) -> Result<BTreeMap<usize, f64>> {
        text.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|pair| {
                let (size, weight) = pair.split_once(':').unwrap_or((pair, "1"));
                let size = size.trim().parse::<usize>();
                let weight = weight.trim().parse::<f64>();
                match (size, weight) {
                    (Ok(size), Ok(weight)) => Ok((size, weight)),
                    _ => Err(Error::Config(format!("--batch-sizes {pair:?}: expected SIZE:WEIGHT, e.g. 1:0.2,64:0.8"))),
                }
            })
            .collect()
    }

    fn check_batch_sizes(&self) -> Result<()> {
        let bad = |why: String| Err(Error::Config(format!("batch_sizes: {why}")));
        if self.batch_sizes.is_empty() {
            return bad("give at least one batch size".into());
        }
        for (&size, &weight) in &self.batch_sizes {
            if !BATCH_SIZES.contains(&size) {
                return bad(format!("{size} is not a measured batch size ({BATCH_SIZES:?})"));
            }
            if !(weight.is_finite() && weight >= 0.0) {
                return bad(format!("the weight of batch {size} must be a finite number ≥ 0, not {weight}"));
            }
        }
        if self.batch_sizes.values().sum::<f64>() <= 0.0 {
            return bad("the weights sum to 0".into());
        }
        Ok(())
    }

    /// The workload's latency of `candidate` relative to `original` (1 = as fast; 0.5 = twice as
    /// fast), and the ratio at each weighted batch size.
    fn workload_ratio(&self, original: &ModelBenchmark, candidate: &ModelBenchmark) -> (f64, BTreeMap<usize, f64>) {
        let total: f64 = self.batch_sizes.values().sum();
        let mut by_batch = BTreeMap::new();
        let mut ratio = 0.0;
        for (&size, &weight) in &self.batch_sizes {
            let r = candidate.p50_ms(size).unwrap_or(f64::INFINITY) / original.p50_ms(size).unwrap_or(f64::NAN);
            by_batch.insert(size, r);
            ratio += weight / total * r;
        }
        (ratio, by_batch)
    }
}

/// The JSON form of [`OptimizeOptions`] (what the bindings pass): every key optional, snake_case or
/// camelCase, methods by name, the target latency in milliseconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptimizeDocument {
    #[serde(alias = "accuracyThreshold")]
    accuracy_threshold: Option<f64>,
    #[serde(alias = "minSpeedup")]
    min_speedup: Option<f64>,
    #[serde(alias = "targetLatencyMs")]
    target_latency_ms: Option<f64>,
    methods: Option<Vec<String>>,
    #[serde(default)]
    provider: Option<ExecutionProvider>,
    /// `{"1": 0.2, "64": 0.8}`: batch size → share of the calls.
    #[serde(alias = "batchSizes")]
    batch_sizes: Option<BTreeMap<String, f64>>,
}

impl OptimizeOptions {
    /// The options from a JSON document (or `null`) such as `{"accuracy_threshold": 0.01, "methods":
    /// ["int8-dynamic"], "target_latency_ms": 0.05}`; the defaults for every key left out.
    ///
    /// # Errors
    ///
    /// `json` for a document of another shape; `config` for invalid values.
    pub fn from_json(value: serde_json::Value) -> Result<OptimizeOptions> {
        // No document (a binding's absent options argument) means every default.
        let value = if value.is_null() { serde_json::json!({}) } else { value };
        let doc: OptimizeDocument = serde_json::from_value(value).map_err(|e| Error::json("optimize options", e))?;
        let mut options = OptimizeOptions::default();
        // Checked with the rest by Optimizer::optimize.
        if let Some(threshold) = doc.accuracy_threshold {
            options.accuracy_threshold = threshold;
        }
        if let Some(speedup) = doc.min_speedup {
            options.min_speedup = speedup;
        }
        if let Some(ms) = doc.target_latency_ms {
            options.target_latency = Some(crate::units::duration_from_ms("target_latency_ms", ms)?);
        }
        if let Some(methods) = doc.methods {
            options.methods = Some(methods.iter().map(|m| m.parse()).collect::<Result<Vec<Method>>>()?);
        }
        if let Some(provider) = doc.provider {
            options.provider = provider;
        }
        if let Some(sizes) = doc.batch_sizes {
            options.batch_sizes = sizes
                .into_iter()
                .map(|(size, weight)| {
                    size.trim()
                        .parse::<usize>()
                        .map(|size| (size, weight))
                        .map_err(|_| Error::Config(format!("batch_sizes: {size:?} is not a batch size")))
                })
                .collect::<Result<_>>()?;
        }
        Ok(options)
    }
}

impl Default for OptimizeOptions {
    fn default() -> Self {
        OptimizeOptions {
            accuracy_threshold: 0.01,
            min_speedup: 0.05,
            target_latency: None,
            methods: None,
            provider: ExecutionProvider::Cpu,
            graph_level: GraphLevel::Extended,
            batch_sizes: BTreeMap::from([(1, 1.0)]),
        }
    }
}

/// One candidate as the decision saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// The rewrite.
    pub method: Method,
    /// Whether it passed the accuracy threshold (and every check before it).
    pub accepted: bool,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its classification accuracy on the data's outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Share of rows whose predicted class matches the original's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    /// p50 latency per batch size ("1", "8", "64", "512").
    pub latency_ms: BTreeMap<usize, f64>,
    /// At each batch size of the workload, the candidate's p50 over the original's (0.5 = twice as
    /// fast); the decision weighs them by `batch_sizes`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub latency_ratio: BTreeMap<usize, f64>,
    /// Its model file's size, in bytes.
    pub size_bytes: u64,
    /// Everything measured of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benchmark: Option<ModelBenchmark>,
    /// Per node: rewritten or left float, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeReport>,
}

/// The chosen candidate: registered as a new version, or (a native executor) the original version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chosen {
    /// The rewrite chosen.
    pub method: Method,
    /// The new version, or the original's when nothing was registered.
    pub version: u32,
    /// Whether a new version was registered (false for a native candidate: same file).
    pub registered: bool,
    /// For a native candidate: what makes the engine run the model that way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The story's `performance_improvement` object: the chosen model against the original, as measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerformanceImprovement {
    /// Fractional cut of the p50 single-row latency (0.1 = 10% faster).
    pub latency_reduction: f64,
    /// Original p50 / chosen p50 per batch size ("1", "8", "64", "512").
    pub speedup: BTreeMap<usize, f64>,
    /// Fractional cut of the model file's size.
    pub size_reduction: f64,
    /// Accuracy change in points (chosen − original).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_change: Option<f64>,
}

impl PerformanceImprovement {
    fn none() -> PerformanceImprovement {
        PerformanceImprovement {
            latency_reduction: 0.0,
            speedup: BATCH_SIZES.iter().map(|&b| (b, 1.0)).collect(),
            size_reduction: 0.0,
            accuracy_change: None,
        }
    }

    fn between(original: &ModelBenchmark, chosen: &ModelBenchmark) -> PerformanceImprovement {
        let p50 = |b: &ModelBenchmark, batch| b.p50_ms(batch).unwrap_or(f64::NAN);
        PerformanceImprovement {
            latency_reduction: 1.0 - p50(chosen, 1) / p50(original, 1),
            speedup: BATCH_SIZES.iter().map(|&b| (b, p50(original, b) / p50(chosen, b))).collect(),
            size_reduction: 1.0 - chosen.size_bytes as f64 / original.size_bytes as f64,
            accuracy_change: original.accuracy.zip(chosen.accuracy).map(|(o, c)| (c - o) * 100.0),
        }
    }
}

/// How [`quantize_model`] rewrites one model.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeOptions {
    /// The rewrite.
    pub method: Method,
    /// INT8 static methods: one weight scale per output channel instead of per tensor.
    pub per_channel: bool,
    /// INT8 static methods: the CSV file to calibrate on and the model's features in input order.
    pub calibration: Option<(PathBuf, Vec<String>)>,
}

/// What [`Optimizer::quantize`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuantizeReport {
    /// The file written.
    pub out: PathBuf,
    /// Its size, in bytes.
    pub bytes: usize,
    /// Per node: rewritten or left float, and why.
    pub nodes: Vec<NodeReport>,
}

/// Rewrites the ONNX model `bytes` with one method: INT8 dynamic (per tensor or per channel), INT8
/// static calibrated on data, or FP16. `fp32-optimized` is a session setting that only
/// [`Optimizer::optimize`] applies.
///
/// # Errors
///
/// `config` for `fp32-optimized` or a static method without calibration data; `optimize` when the model cannot be
/// rewritten (not ONNX, external data, nothing to quantize).
pub fn quantize_model(runtime: &Runtime, bytes: &[u8], options: &QuantizeOptions) -> Result<quantize::Rewritten> {
    let granularity = if options.per_channel { Granularity::PerChannel } else { Granularity::PerTensor };
    match options.method {
        Method::Int8Dynamic => quantize::quantize_dynamic(bytes, Granularity::PerTensor),
        Method::Int8DynamicPerChannel => quantize::quantize_dynamic(bytes, Granularity::PerChannel),
        Method::Fp16 => quantize::convert_fp16(bytes),
        Method::Fp32Optimized => Err(Error::Config("fp32-optimized is applied by optimize, not quantize".into())),
        method => {
            let (data, features) = options.calibration.as_ref().ok_or_else(|| {
                Error::Config(format!("{} needs calibration data and the model's features", method.as_str()))
            })?;
            let rows = BenchmarkData::from_table(&Table::read(data)?, features, None)?;
            let calibrator = method.calibrator().unwrap_or(Calibrator::MIN_MAX);
            quantize::quantize_static(runtime, bytes, rows.calibration_rows(), features.len(), calibrator, granularity)
        }
    }
}

/// What [`Optimizer::optimize`] decided, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptimizeReport {
    /// The model optimized.
    pub model: String,
    /// The version measured as the original.
    pub version: u32,
    /// The original's benchmark.
    pub original: ModelBenchmark,
    /// Every candidate tried, as the decision saw it.
    pub candidates: Vec<Candidate>,
    /// `None` when the original is kept.
    pub chosen: Option<Chosen>,
    /// What the chosen model gains over the original (all neutral when the original is kept).
    pub performance_improvement: PerformanceImprovement,
    /// The model to deploy (chosen or original) is within the accuracy threshold and meets the target
    /// latency, if one was given.
    pub deployment_ready: bool,
}

/// Benchmarks and optimizes registered models.
///
/// ```
/// use quorum::{InferenceEngine, ModelRegistration, Optimizer, VersionSpec};
///
/// # fn main() -> quorum::Result<()> {
/// # let home = tempfile::tempdir().map_err(|e| quorum::Error::io("tempdir", e))?;
/// let engine = InferenceEngine::builder(home.path()).build()?;
/// engine.register_model(ModelRegistration::new("sentiment", "examples/models/sentiment.onnx",
///     ["vix", "vix_chg_1d", "vix_chg_5d", "vix_rel_20d", "vix_zscore_60d"]))?;
///
/// // A CSV file with the model's features and (optionally) an outcome column.
/// let data = home.path().join("data.csv");
/// let mut csv = String::from("vix,vix_chg_1d,vix_chg_5d,vix_rel_20d,vix_zscore_60d,up\n");
/// for i in 0..64 {
///     let x = f64::from(i) / 64.0;
///     csv += &format!("{},{},{},{},{},{}\n", 12.0 + 8.0 * x, x - 0.5, 0.1 - x / 5.0, x / 10.0, 2.0 * x - 1.0, i % 2);
/// }
/// std::fs::write(&data, csv).map_err(|e| quorum::Error::io("writing data.csv", e))?;
///
/// let bench = Optimizer::new(&engine).benchmark("sentiment", VersionSpec::Default, &data, Some("up"))?;
/// assert!(bench.p50_ms(1).is_some_and(|ms| ms > 0.0)); // milliseconds per single-row call
/// assert!(bench.accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Optimizer {
    engine: InferenceEngine,
}

impl Optimizer {
    /// An optimizer over `engine`'s registry and runtime.
    pub fn new(engine: &InferenceEngine) -> Optimizer {
        Optimizer { engine: engine.clone() }
    }

    /// Rewrites the ONNX file `input` with one method into `output` (see [`quantize_model`]).
    ///
    /// # Errors
    ///
    /// As [`quantize_model`], and `io` when a file cannot be read or written.
    pub fn quantize(&self, input: &Path, output: &Path, options: &QuantizeOptions) -> Result<QuantizeReport> {
        let bytes = std::fs::read(input).map_err(|e| Error::io(format!("reading {}", input.display()), e))?;
        let rewritten = quantize_model(self.engine.runtime(), &bytes, options)?;
        crate::store::write_atomic(output, &rewritten.bytes)?;
        Ok(QuantizeReport { out: output.to_path_buf(), bytes: rewritten.bytes.len(), nodes: rewritten.nodes })
    }

    /// Benchmarks a registered model on a CSV file (`outcome`: the column to score accuracy on).
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown model or version; `io` or `invalid_input` for the data; `checksum_mismatch` when the
    /// stored file changed; otherwise as [`benchmark_model`].
    pub fn benchmark(
        &self,
        model: &str,
        version: VersionSpec,
        data: &Path,
        outcome: Option<&str>,
    ) -> Result<ModelBenchmark> {
        let meta = self.engine.registry().resolve(model, version)?;
        let bytes = self.engine.registry().read_verified(&meta)?;
        let data = BenchmarkData::from_table(&Table::read(data)?, &meta.features, outcome)?;
        benchmark_model(self.engine.runtime(), &bytes, &meta.output, meta.task, &data, None)
    }

    /// Builds, benchmarks and judges every candidate; registers the winner as a new version.
    ///
    /// # Errors
    ///
    /// `config` for invalid options; otherwise as [`Optimizer::benchmark`] (a candidate's own failure is in the report,
    /// not an error).
    pub fn optimize(
        &self,
        model: &str,
        version: VersionSpec,
        data: &Path,
        outcome: &str,
        options: &OptimizeOptions,
    ) -> Result<OptimizeReport> {
        let valid = (0.0..=1.0).contains(&options.accuracy_threshold)
            && options.min_speedup < 1.0
            && options.min_speedup > -1e6;
        if !valid {
            return Err(Error::Config("accuracy_threshold must be in [0, 1] and min_speedup below 1".into()));
        }
        options.check_batch_sizes()?;
        let meta = self.engine.registry().resolve(model, version)?;
        let bytes = self.engine.registry().read_verified(&meta)?;
        let data = BenchmarkData::from_table(&Table::read(data)?, &meta.features, Some(outcome))?;
        let runtime = self.engine.runtime();
        let methods = options.methods.clone().unwrap_or_else(|| {
            let mut all = vec![
                Method::Fp32Optimized,
                Method::Int8Dynamic,
                Method::Int8DynamicPerChannel,
                Method::Int8StaticMinmax,
                Method::Int8StaticPercentile,
                Method::Int8StaticEntropy,
            ];
            if options.provider.is_gpu() {
                all.extend([Method::Fp16, Method::NativeGpu, Method::NativeGpuFp16]);
            }
            all.push(Method::Native);
            all
        });
        let mut candidates = Vec::new();
        // The original's native plan, compiled and verified once for every native method.
        let mut plan: Option<std::result::Result<NativeModel, String>> = None;
        let mut rewrites: Vec<(Method, quantize::Rewritten)> = Vec::new();
        let mut natives: Vec<Method> = Vec::new();
        for method in methods {
            if method.is_native() {
                let verified = plan.get_or_insert_with(|| {
                    if !self.engine.native_enabled() {
                        return Err("native executors are off in this engine (EngineBuilder::with_native)".into());
                    }
                    crate::native::verified(runtime, &meta.name, &bytes, &meta.output.name, data.width, None)
                });
                match (verified, gpu_options(method, &options.provider)) {
                    (Err(why), _) => candidates.push(rejected(method, format!("no native plan: {why}"), Vec::new())),
                    (Ok(_), Err(why)) => candidates.push(rejected(method, why, Vec::new())),
                    (Ok(_), Ok(_)) => natives.push(method),
                }
                continue;
            }
            let rewritten = match method {
                Method::Fp32Optimized => optimized_graph(runtime, &bytes, options.graph_level)
                    .map(|b| quantize::Rewritten { bytes: b, nodes: vec![] }),
                Method::Int8Dynamic => quantize::quantize_dynamic(&bytes, Granularity::PerTensor),
                Method::Int8DynamicPerChannel => quantize::quantize_dynamic(&bytes, Granularity::PerChannel),
                Method::Int8StaticMinmax | Method::Int8StaticPercentile | Method::Int8StaticEntropy => {
                    let calibrator = method.calibrator().unwrap_or(Calibrator::MIN_MAX);
                    let rows = data.calibration_rows();
                    quantize::quantize_static(runtime, &bytes, rows, data.width, calibrator, Granularity::PerTensor)
                }
                Method::Fp16 => quantize::convert_fp16(&bytes),
                Method::Native | Method::NativeGpu | Method::NativeGpuFp16 => unreachable!("handled above"),
            };
            match rewritten {
                Ok(r) => rewrites.push((method, r)),
                Err(e) => candidates.push(rejected(method, e.to_string(), Vec::new())),
            }
        }
        let mut models: Vec<Subject<'_>> = std::iter::once(Subject::Onnx(&bytes))
            .chain(rewrites.iter().map(|(_, r)| Subject::Onnx(&r.bytes)))
            .collect();
        if let Some(Ok(plan)) = &plan {
            for &method in &natives {
                models.push(native_subject(method, plan, bytes.len(), &options.provider)?);
            }
        }
        let mut measured =
            benchmark_models(runtime, &models, &meta.output, meta.task, &data, &options.provider)?.into_iter();
        drop(models);
        let original = measured.next().ok_or_else(|| Error::Optimize("no benchmark of the original".into()))??;
        let base_p50 = original.p50_ms(1).unwrap_or(f64::INFINITY);
        // Native candidates carry no new file: the original's bytes and no per-node report.
        let tried = rewrites
            .into_iter()
            .chain(natives.into_iter().map(|m| (m, quantize::Rewritten { bytes: Vec::new(), nodes: Vec::new() })));
        // (method, model, workload latency ratio, p50 at batch 1)
        let mut built: Vec<(Method, Vec<u8>, f64, f64)> = Vec::new();
        for ((method, rewritten), bench) in tried.zip(measured) {
            let bench = match bench {
                Ok(b) => b,
                Err(e) => {
                    candidates.push(rejected(method, format!("does not run: {e}"), rewritten.nodes));
                    continue;
                }
            };
            let p50 = bench.p50_ms(1).unwrap_or(f64::INFINITY);
            let (ratio, latency_ratio) = options.workload_ratio(&original, &bench);
            let speedup = 1.0 - ratio;
            let loss = original.accuracy.zip(bench.accuracy).map(|(a, b)| a - b).unwrap_or(0.0);
            let reason = if loss > options.accuracy_threshold {
                Some(format!(
                    "accuracy drops by {:.2} points (threshold {:.2})",
                    loss * 100.0,
                    options.accuracy_threshold * 100.0
                ))
            } else if speedup < options.min_speedup {
                let per_batch: Vec<String> =
                    latency_ratio.iter().map(|(b, r)| format!("batch {b}: {:+.1}%", (r - 1.0) * 100.0)).collect();
                Some(format!(
                    "not faster on the workload: {:+.1}% time ({}; needs ≥ {:.0}% faster)",
                    -speedup * 100.0,
                    per_batch.join(", "),
                    options.min_speedup * 100.0
                ))
            } else {
                None
            };
            if reason.is_none() {
                built.push((method, rewritten.bytes.clone(), ratio, p50));
            }
            candidates.push(Candidate {
                method,
                accepted: reason.is_none(),
                reason,
                accuracy: bench.accuracy,
                agreement: bench.agreement,
                latency_ms: bench.latency.iter().map(|l| (l.batch, l.p50_ms)).collect(),
                latency_ratio,
                size_bytes: bench.size_bytes,
                benchmark: Some(bench),
                nodes: rewritten.nodes,
            });
        }
        built.sort_by(|a, b| a.2.total_cmp(&b.2));
        let target_met = |p50: f64| options.target_latency.is_none_or(|t| p50 <= t.as_secs_f64() * 1e3);
        let Some((method, winner, _, p50)) = built.into_iter().next() else {
            return Ok(OptimizeReport {
                model: meta.name.clone(),
                version: meta.version,
                deployment_ready: target_met(base_p50),
                original,
                candidates,
                chosen: None,
                performance_improvement: PerformanceImprovement::none(),
            });
        };
        let candidate = candidates.iter().find(|c| c.method == method).cloned();
        let improvement = match candidate.as_ref().and_then(|c| c.benchmark.as_ref()) {
            Some(bench) => PerformanceImprovement::between(&original, bench),
            None => PerformanceImprovement::none(),
        };
        let chosen = if method.is_native() {
            // The same file on another executor: nothing to register.
            let note = native_note(method, &candidates, &options.provider);
            Chosen { method, version: meta.version, registered: false, note: Some(note) }
        } else {
            let registered =
                self.register(&meta, method, &winner, &improvement, target_met(p50), candidate.as_ref())?;
            Chosen { method, version: registered.version, registered: true, note: None }
        };
        Ok(OptimizeReport {
            model: meta.name.clone(),
            version: meta.version,
            original,
            candidates,
            chosen: Some(chosen),
            performance_improvement: improvement,
            deployment_ready: target_met(p50),
        })
    }

    fn register(
        &self,
        parent: &ModelMetadata,
        method: Method,
        bytes: &[u8],
        improvement: &PerformanceImprovement,
        ready: bool,
        candidate: Option<&Candidate>,
    ) -> Result<ModelMetadata> {
        let registry = self.engine.registry();
        // Registering must not change which version ensembles get: pin the current default.
        let default = registry.default_version(&parent.name)?;
        registry.set_default(&parent.name, default)?;
        let dir = tempdir()?;
        let file = dir.join("model.onnx");
        std::fs::write(&file, bytes).map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
        let mut details = BTreeMap::new();
        if let Some(c) = candidate {
            details.insert("accuracy".into(), serde_json::json!(c.accuracy));
            details.insert("agreement".into(), serde_json::json!(c.agreement));
            details.insert("latency_ms".into(), serde_json::json!(c.latency_ms));
            details.insert("size_bytes".into(), serde_json::json!(c.size_bytes));
        }
        details.insert("parent".into(), serde_json::json!(format!("{}@{}", parent.name, parent.version)));
        if let Some(calibrator) = method.calibrator() {
            details.insert("calibrator".into(), serde_json::json!(calibrator));
        }
        let registration = ModelRegistration::new(&parent.name, &file, parent.features.clone())
            .with_output(parent.output.clone())
            .with_kind(parent.kind)
            .with_task(parent.task)
            .with_lineage(Lineage { parent_version: Some(parent.version), method: method.as_str().into(), details })
            .with_metadata("performance_improvement", serde_json::json!(improvement))
            .with_metadata("deployment_ready", serde_json::json!(ready));
        let registered = self.engine.register_model(registration);
        let _ = std::fs::remove_dir_all(&dir);
        registered
    }
}

/// The GPU a native GPU method runs on (the provider's device), or why it cannot be tried.
#[cfg(feature = "gpu")]
fn gpu_options(
    method: Method,
    provider: &ExecutionProvider,
) -> std::result::Result<Option<(usize, crate::native::Precision)>, String> {
    use crate::native::Precision;
    let precision = match method {
        Method::NativeGpu => Precision::F32,
        Method::NativeGpuFp16 => Precision::F16,
        _ => return Ok(None),
    };
    match provider {
        ExecutionProvider::Cuda { device_id } | ExecutionProvider::TensorRt { device_id, .. } => {
            Ok(Some((usize::try_from(*device_id).unwrap_or(0), precision)))
        }
        _ => Err("native GPU candidates need a GPU provider (--provider cuda)".into()),
    }
}

/// The GPU a native GPU method runs on, or why it cannot be tried.
#[cfg(not(feature = "gpu"))]
fn gpu_options(method: Method, _: &ExecutionProvider) -> std::result::Result<Option<(usize, ())>, String> {
    match method {
        Method::NativeGpu | Method::NativeGpuFp16 => Err("this build of quorum lacks the `gpu` feature".into()),
        _ => Ok(None),
    }
}

/// The subject a native method benchmarks: the plan on the CPU or on the provider's GPU.
fn native_subject<'a>(
    method: Method,
    plan: &'a NativeModel,
    size: usize,
    provider: &ExecutionProvider,
) -> Result<Subject<'a>> {
    match gpu_options(method, provider).map_err(Error::Optimize)? {
        None => Ok(Subject::Native { plan, size }),
        #[cfg(feature = "gpu")]
        Some((device, precision)) => Ok(Subject::Gpu {
            plan,
            size,
            // Every benchmarked call runs on the GPU; min_rows is chosen from the results.
            options: crate::native::GpuOptions { device, precision, min_rows: 0 },
        }),
        #[cfg(not(feature = "gpu"))]
        Some(_) => Err(Error::Optimize("this build of quorum lacks the `gpu` feature".into())),
    }
}

/// How to run a chosen native candidate. The CPU plan is the engine's default; a GPU plan needs the
/// model's `native_gpu` option, from the smallest measured batch size at which the GPU beat the CPU
/// plan (or the original, when the CPU plan was not measured).
fn native_note(method: Method, candidates: &[Candidate], provider: &ExecutionProvider) -> String {
    let precision = match method {
        Method::NativeGpu => "f32",
        Method::NativeGpuFp16 => "f16",
        _ => {
            return "no new version: the engine runs this version on its native plan whenever the plan verifies \
                    at load (EngineBuilder::with_native, on by default)"
                .into()
        }
    };
    let latency = |m: Method| candidates.iter().find(|c| c.method == m && c.benchmark.is_some()).map(|c| &c.latency_ms);
    let gpu = latency(method);
    let cpu = latency(Method::Native);
    let min_rows = BATCH_SIZES
        .iter()
        .copied()
        .find(|b| match (gpu.and_then(|g| g.get(b)), cpu.and_then(|c| c.get(b))) {
            (Some(g), Some(c)) => g < c,
            (Some(_), None) => true,
            _ => false,
        })
        .unwrap_or(BATCH_SIZES[BATCH_SIZES.len() - 1]);
    let device = match provider {
        ExecutionProvider::Cuda { device_id } | ExecutionProvider::TensorRt { device_id, .. } => *device_id,
        _ => 0,
    };
    format!(
        "no new version: set the model's option native_gpu = {{\"device\": {device}, \"precision\": \"{precision}\", \
         \"min_rows\": {min_rows}}} (ModelOptions::with_native_gpu)"
    )
}

fn rejected(method: Method, reason: String, nodes: Vec<NodeReport>) -> Candidate {
    Candidate {
        method,
        accepted: false,
        reason: Some(reason),
        accuracy: None,
        agreement: None,
        latency_ms: BTreeMap::new(),
        latency_ratio: BTreeMap::new(),
        size_bytes: 0,
        benchmark: None,
        nodes,
    }
}

/// ONNX Runtime's graph optimisations up to `level` applied and saved as a model file.
fn optimized_graph(runtime: &Runtime, bytes: &[u8], level: GraphLevel) -> Result<Vec<u8>> {
    let dir = tempdir()?;
    let path = dir.join("optimized.onnx");
    let result = runtime
        .save_optimized(bytes, &path, level.ort())
        .and_then(|()| std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e)));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempdir() -> Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "quorum-optimize-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench(p50: &[(usize, f64)]) -> ModelBenchmark {
        ModelBenchmark {
            size_bytes: 0,
            session_memory_bytes: None,
            latency: p50
                .iter()
                .map(|&(batch, p50_ms)| BatchLatency { batch, p50_ms, p95_ms: p50_ms, p99_ms: p50_ms, throughput: 0.0 })
                .collect(),
            accuracy: None,
            agreement: None,
            max_abs_diff: None,
            mean_abs_diff: None,
            scores: Vec::new(),
        }
    }

    #[test]
    fn the_decision_weighs_each_batch_size_of_the_workload() {
        // 12.6% slower at one row, twice as fast at 64 rows (the issue's 256-256-128 MLP).
        let original = bench(&[(1, 0.100), (64, 2.0)]);
        let int8 = bench(&[(1, 0.1126), (64, 1.0)]);
        let single = OptimizeOptions::default();
        let (ratio, by_batch) = single.workload_ratio(&original, &int8);
        assert!((ratio - 1.126).abs() < 1e-9 && by_batch.len() == 1, "single rows: slower");
        let batching = OptimizeOptions {
            batch_sizes: OptimizeOptions::parse_batch_sizes("1:0.2,64:0.8").unwrap(),
            ..OptimizeOptions::default()
        };
        batching.check_batch_sizes().unwrap();
        let (ratio, by_batch) = batching.workload_ratio(&original, &int8);
        assert!((ratio - (0.2 * 1.126 + 0.8 * 0.5)).abs() < 1e-9, "{ratio}");
        assert_eq!(by_batch.keys().copied().collect::<Vec<_>>(), [1, 64]);
        for bad in ["3:1", "1:-1", "1:0", "x"] {
            let options = OptimizeOptions::parse_batch_sizes(bad)
                .map(|batch_sizes| OptimizeOptions { batch_sizes, ..OptimizeOptions::default() });
            assert!(options.and_then(|o| o.check_batch_sizes()).is_err(), "{bad}");
        }
        let json = OptimizeOptions::from_json(serde_json::json!({"batch_sizes": {"1": 1, "512": 3}})).unwrap();
        assert_eq!(json.batch_sizes, BTreeMap::from([(1, 1.0), (512, 3.0)]));
    }

    #[test]
    fn optimize_options_from_json_take_defaults_for_null_and_refuse_unknown_keys() {
        assert_eq!(OptimizeOptions::from_json(serde_json::Value::Null).unwrap(), OptimizeOptions::default());
        let o = OptimizeOptions::from_json(serde_json::json!({"targetLatencyMs": 2.0, "methods": ["fp16"]})).unwrap();
        assert_eq!(o.target_latency, Some(Duration::from_millis(2)));
        assert_eq!(o.methods, Some(vec![Method::Fp16]));
        assert!(matches!(OptimizeOptions::from_json(serde_json::json!({"speed": 1})), Err(Error::Json { .. })));
        assert!(matches!(OptimizeOptions::from_json(serde_json::json!({"methods": ["int4"]})), Err(Error::Config(_))));
    }
}
