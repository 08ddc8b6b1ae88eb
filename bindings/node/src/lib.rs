//! The `quorum-engine` Node addon. Logic lives in the core crate; this is conversions only.
//!
//! Every error is thrown as `[code] message`; `index.js` moves the code into `error.code`, for
//! synchronous calls and rejected Promises alike.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use napi::bindgen_prelude::*;
use napi_derive::napi;

/// quorum's error as a JS error carrying its stable code.
fn js_error(error: quorum::Error) -> napi::Error {
    napi::Error::new(Status::GenericFailure, format!("[{}] {error}", error.code()))
}

/// Runs `f`, turning its error — or a panic, which must never cross into JS — into a JS error.
fn guarded<T>(f: impl FnOnce() -> quorum::Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(js_error),
        Err(_) => Err(js_error(quorum::Error::Config("internal error (please report): a panic was caught".into()))),
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| js_error(quorum::Error::json("result", e)))
}

/// One member's part in a prediction.
#[napi(object)]
pub struct Contribution {
    pub version: u32,
    /// The member's own prediction; absent when it failed.
    pub prediction: Option<f64>,
    /// Its weight in this prediction (stacking: its coefficient).
    pub weight: f64,
    pub latency_ms: f64,
    /// Adaptive strategies: the member's recent squared error.
    pub recent_loss: Option<f64>,
    /// Why the member did not answer itself.
    pub error: Option<String>,
    /// The fallback model that answered in its place.
    pub fallback: Option<String>,
}

/// One prediction: the story's fields, in JavaScript's camelCase.
#[napi(object)]
pub struct Prediction {
    pub request_id: f64,
    pub ensemble: String,
    pub ensemble_version: u32,
    pub strategy: String,
    /// Classification: probability of the positive class. Regression: the value.
    pub prediction: f64,
    pub confidence: f64,
    /// Classification: 1 when `prediction >= 0.5`, else 0.
    pub label: Option<u32>,
    pub model_contributions: HashMap<String, Contribution>,
    pub regime: Option<String>,
    pub weights_epoch: f64,
    /// A member failed, was skipped by its circuit breaker, or was replaced by its fallback.
    pub degraded: bool,
    /// Served from the prediction cache.
    pub cached: bool,
    /// Quorum was lost and this is the last good prediction for the same features.
    pub stale: bool,
    /// Every member ran in one call of the ensemble's fused model.
    pub fused: bool,
    /// Members that gave no prediction.
    pub skipped: Vec<String>,
    pub latency_ms: f64,
}

/// A prediction as it crosses N-API: index.js's `unpack` builds the public [`Prediction`] from it in
/// JavaScript, where an object literal costs far less than N-API's property-by-property construction
/// (see CHANGELOG for the measured difference); the `Prediction` interface above is the shape it builds.
#[napi(object)]
pub struct PackedPrediction {
    /// requestId, ensembleVersion, prediction, confidence, label (NaN: none), weightsEpoch, flags
    /// (1 degraded, 2 cached, 4 stale, 8 fused), latencyMs; then per member: version, prediction (NaN:
    /// no answer), weight, latencyMs, recentLoss (NaN: none).
    pub numbers: Float64Array,
    /// ensemble, strategy, regime ("": none); then per member: model, error ("": none), fallback ("": none).
    pub strings: Vec<String>,
}

fn packed(p: quorum::Prediction) -> PackedPrediction {
    let mut numbers = Vec::with_capacity(8 + 5 * p.model_contributions.len());
    let flags = u8::from(p.degraded) | u8::from(p.cached) << 1 | u8::from(p.stale) << 2 | u8::from(p.fused) << 3;
    numbers.extend([
        p.request_id as f64,
        f64::from(p.ensemble_version),
        f64::from(p.prediction),
        f64::from(p.confidence),
        p.class.map_or(f64::NAN, f64::from),
        p.weights_epoch as f64,
        f64::from(flags),
        p.latency_ms,
    ]);
    let mut strings = Vec::with_capacity(3 + 3 * p.model_contributions.len());
    strings.extend([
        p.ensemble.to_string(),
        p.strategy.to_string(),
        p.regime.map_or_else(String::new, |r| r.as_str().to_string()),
    ]);
    for c in p.model_contributions {
        numbers.extend([
            f64::from(c.version),
            c.prediction.map_or(f64::NAN, f64::from),
            f64::from(c.weight),
            c.latency_ms,
            c.recent_loss.map_or(f64::NAN, f64::from),
        ]);
        strings.extend([
            c.model.to_string(),
            c.error.unwrap_or_default(),
            c.fallback.map_or_else(String::new, |f| f.to_string()),
        ]);
    }
    PackedPrediction { numbers: Float64Array::new(numbers), strings }
}

/// For index.js (internal): an ensemble's feature names and the id of that order.
#[napi(object)]
pub struct CachedSchema {
    pub names: Vec<String>,
    pub id: f64,
}

/// A schema id as a JavaScript number (53 bits of the 64-bit hash).
fn js_schema_id(id: u64) -> f64 {
    (id >> 11) as f64
}

/// A synchronous call's prediction for index.js: the numbers of [`PackedPrediction`] written into
/// `scratch`, a buffer index.js reuses for every call (no typed array made per call), and the
/// strings joined by NUL (one string instead of an array of them); a prediction whose numbers do not
/// fit comes back packed whole.
fn into_scratch(p: quorum::Prediction, mut scratch: Float64ArraySlice<'_>) -> Either<String, PackedPrediction> {
    // SAFETY: called within a synchronous call: no JavaScript runs meanwhile, so nothing else
    // touches the buffer.
    let scratch = unsafe { scratch.as_mut() };
    let mut whole = packed(p);
    if whole.numbers.len() > scratch.len() {
        return Either::B(whole);
    }
    scratch[..whole.numbers.len()].copy_from_slice(&whole.numbers);
    Either::A(std::mem::take(&mut whole.strings).join("\0"))
}

/// Reads the ensemble's features from a plain object, one named property at a time (keys the
/// ensemble does not use are never touched), without holding the values in a map.
fn resolve(handle: &quorum::EnsembleHandle, features: &Object) -> quorum::Result<quorum::ResolvedRow> {
    handle.resolve_row(|name| {
        features
            .get::<f64>(name)
            .map(|v| v.map(|v| v as f32))
            .map_err(|_| quorum::Error::InvalidInput(format!("feature {name:?} is not a number")))
    })
}

/// Options of `new InferenceEngine(home, options)`.
#[napi(object)]
pub struct EngineOptions {
    /// Path of libonnxruntime (default: the one bundled in `onnxruntime-node`).
    pub ort_library: Option<String>,
    pub tracking: Option<bool>,
    pub persistence: Option<bool>,
    pub sessions_per_model: Option<u32>,
    pub synchronous_refits: Option<bool>,
    /// Entries of the prediction cache (no cache when absent).
    pub cache_capacity: Option<u32>,
    /// How long a cached prediction may be served, in milliseconds (default 1000).
    pub cache_ttl_ms: Option<f64>,
    /// How every model is served: `{replicas?: [min, max], load?: "eager" | "lazy", timeoutMs?,
    /// latencyTargetMs?, shareWeights?, batching?: {maxBatch?, maxDelayUs?, dispatchers?}}`.
    pub default_model: Option<serde_json::Value>,
    /// The same, per model name.
    pub models: Option<HashMap<String, serde_json::Value>>,
    /// Unload idle models (least recently used first) while their estimated memory exceeds this.
    pub memory_budget_bytes: Option<f64>,
    /// Run each ensemble's members as one fused ONNX model when they can be (default true).
    pub fusion: Option<bool>,
}

/// Options of `optimize`.
#[napi(object)]
pub struct OptimizeOptions {
    /// Largest accuracy loss accepted, absolute (default 0.01: one point).
    pub accuracy_threshold: Option<f64>,
    /// Methods to try (default: all for the CPU): fp32-optimized, int8-dynamic,
    /// int8-dynamic-per-channel, int8-static-minmax, int8-static-percentile, int8-static-entropy.
    pub methods: Option<Vec<String>>,
    /// The p50 single-row latency a deployment needs (deploymentReady requires it).
    pub target_latency_ms: Option<f64>,
}

/// Options of `registerModel`.
#[napi(object)]
pub struct ModelOptions {
    /// Output holding the prediction, `name` or `name:column` (default `probabilities:1`).
    pub output: Option<String>,
    /// technical, fundamental, sentiment or other.
    pub kind: Option<String>,
    /// classification or regression.
    pub task: Option<String>,
    pub version: Option<u32>,
}

/// A batch's answers by column.
#[napi(object)]
pub struct BatchResult {
    pub predictions: Float32Array,
    pub confidences: Float32Array,
    /// Row-major `rows × members`; NaN where a member failed.
    pub member_predictions: Float32Array,
    pub members: Vec<String>,
    /// Row `i` has request id `firstRequestId + i`.
    pub first_request_id: f64,
    pub latency_ms: f64,
}

fn batch_result(b: quorum::BatchPrediction) -> BatchResult {
    BatchResult {
        members: b.members.iter().map(|m| m.model.to_string()).collect(),
        first_request_id: b.first_request_id as f64,
        latency_ms: b.latency_ms,
        predictions: Float32Array::new(b.predictions),
        confidences: Float32Array::new(b.confidences),
        member_predictions: Float32Array::new(b.member_predictions),
    }
}

/// An engine over a quorum home. One per process; calls are synchronous or, with `…Async`, run on
/// the libuv thread pool and return Promises.
#[napi(js_name = "InferenceEngine")]
pub struct JsInferenceEngine {
    inner: quorum::InferenceEngine,
}

#[napi]
impl JsInferenceEngine {
    #[napi(constructor)]
    pub fn new(home: String, options: Option<EngineOptions>) -> Result<Self> {
        let o = options.unwrap_or(EngineOptions {
            ort_library: None,
            tracking: None,
            persistence: None,
            sessions_per_model: None,
            synchronous_refits: None,
            cache_capacity: None,
            cache_ttl_ms: None,
            default_model: None,
            models: None,
            memory_budget_bytes: None,
            fusion: None,
        });
        let mut runtime = quorum::RuntimeOptions::default();
        if let Some(path) = o.ort_library {
            runtime = runtime.with_dylib_path(path);
        }
        if let Some(n) = o.sessions_per_model {
            runtime = runtime.with_sessions_per_model(n as usize);
        }
        let mut builder =
            quorum::InferenceEngine::builder(home).with_runtime_options(runtime).with_fusion(o.fusion.unwrap_or(true));
        if o.tracking == Some(false) {
            builder = builder.without_tracking();
        }
        if o.persistence == Some(false) {
            builder = builder.without_persistence();
        }
        if o.synchronous_refits == Some(true) {
            builder = builder.with_synchronous_refits();
        }
        if let Some(capacity) = o.cache_capacity {
            let ttl_ms = o.cache_ttl_ms.unwrap_or(1000.0);
            let ttl = std::time::Duration::try_from_secs_f64(ttl_ms / 1000.0)
                .map_err(|_| js_error(quorum::Error::Config(format!("cacheTtlMs {ttl_ms} is not a duration"))))?;
            builder = builder.with_prediction_cache(quorum::CacheOptions {
                capacity: capacity as usize,
                ttl,
                ..Default::default()
            });
        }
        let model_options = |what: &str, value: serde_json::Value| -> Result<quorum::ModelOptions> {
            serde_json::from_value(value).map_err(|e| js_error(quorum::Error::json(what, e)))
        };
        if let Some(options) = o.default_model {
            builder = builder.with_default_model_options(model_options("defaultModel options", options)?);
        }
        for (name, options) in o.models.unwrap_or_default() {
            let parsed = model_options(&format!("options of model {name}"), options)?;
            builder = builder.with_model_options(name, parsed);
        }
        if let Some(bytes) = o.memory_budget_bytes {
            if !(bytes >= 1.0 && bytes.fract() == 0.0 && bytes < 9_007_199_254_740_992.0) {
                return Err(js_error(quorum::Error::Config(format!(
                    "memoryBudgetBytes {bytes} is not a positive integer"
                ))));
            }
            builder = builder.with_memory_budget(bytes as u64);
        }
        Ok(JsInferenceEngine { inner: guarded(|| builder.build())? })
    }

    /// Copies a model into the registry as a new version; returns its metadata.
    #[napi]
    pub fn register_model(
        &self,
        name: String,
        file: String,
        features: Vec<String>,
        options: Option<ModelOptions>,
    ) -> Result<serde_json::Value> {
        let meta = guarded(|| {
            let mut r = quorum::ModelRegistration::new(name, file, features);
            if let Some(o) = options {
                if let Some(output) = o.output {
                    r = r.with_output(output.parse()?);
                }
                if let Some(kind) = o.kind {
                    r = r.with_kind(kind.parse()?);
                }
                if let Some(task) = o.task {
                    r = r.with_task(task.parse()?);
                }
                if let Some(v) = o.version {
                    r = r.with_version(v);
                }
            }
            self.inner.register_model(r)
        })?;
        to_json(&meta)
    }

    /// Every registered model.
    #[napi]
    pub fn list_models(&self) -> Result<serde_json::Value> {
        to_json(&guarded(|| self.inner.registry().list())?)
    }

    /// Creates (a new version of) an ensemble from quorum's ensemble JSON: `{name, members, strategy?,
    /// weights?, minMembers?, ...}`; members are "model" / "model@version" strings or objects.
    #[napi]
    pub fn create_ensemble(&self, config: serde_json::Value) -> Result<serde_json::Value> {
        let saved = guarded(|| {
            let mut config = config;
            if let Some(members) = config.get_mut("members").and_then(|m| m.as_array_mut()) {
                for member in members.iter_mut() {
                    if let Some(text) = member.as_str() {
                        let spec: quorum::MemberSpec = text.parse()?;
                        *member = serde_json::json!({"model": spec.model, "version": spec.version});
                    }
                }
            }
            if let Some(min) = config.as_object_mut().and_then(|o| o.remove("minMembers")) {
                config["min_members"] = min;
            }
            let parsed: quorum::EnsembleConfig =
                serde_json::from_value(config).map_err(|e| quorum::Error::json("ensemble configuration", e))?;
            self.inner.create_ensemble(parsed)
        })?;
        to_json(&saved)
    }

    /// The features an ensemble consumes, in the column order of `predictBatch`.
    #[napi]
    pub fn feature_names(&self, ensemble: String) -> Result<Vec<String>> {
        guarded(|| Ok(self.inner.ensemble(&ensemble)?.feature_names().to_vec()))
    }

    /// Predicts one request `{featureName: value}`. With `deadlineMs`, a request that cannot finish
    /// within it throws `deadline_exceeded` instead of answering late.
    // Natively it also takes index.js's scratch buffer before `deadlineMs` (see `into_scratch`).
    #[napi(
        ts_args_type = "ensemble: string, features: Record<string, number>, deadlineMs?: number | undefined | null",
        ts_return_type = "Prediction"
    )]
    pub fn predict(
        &self,
        ensemble: String,
        features: Object,
        scratch: Float64ArraySlice<'_>,
        deadline_ms: Option<f64>,
    ) -> Result<Either<String, PackedPrediction>> {
        let deadline = deadline(deadline_ms)?;
        guarded(|| {
            let handle = self.inner.ensemble(&ensemble)?;
            handle.predict_resolved(&resolve(&handle, &features)?, deadline)
        })
        .map(|p| into_scratch(p, scratch))
    }

    /// For index.js: the ensemble's feature names and an id of that order, which it caches to fill
    /// rows itself from a request object (property reads in JavaScript cost far less than through
    /// N-API) and passes back to `predictRowForSchema`.
    #[napi(skip_typescript)]
    pub fn schema(&self, ensemble: String) -> Result<CachedSchema> {
        guarded(|| {
            let handle = self.inner.ensemble(&ensemble)?;
            Ok(CachedSchema { names: handle.feature_names().to_vec(), id: js_schema_id(handle.schema_id()) })
        })
    }

    /// For index.js: `predictRow` if the ensemble's features are still those of `schema` (see
    /// `schema`); an empty string when they changed.
    #[napi(skip_typescript)]
    pub fn predict_row_for_schema(
        &self,
        ensemble: String,
        row: &[f32],
        schema: f64,
        scratch: Float64ArraySlice<'_>,
        deadline_ms: Option<f64>,
    ) -> Result<Either<String, PackedPrediction>> {
        let deadline = deadline(deadline_ms)?;
        let predicted = guarded(|| {
            let handle = self.inner.ensemble(&ensemble)?;
            let id = handle.schema_id();
            if js_schema_id(id) != schema {
                return Ok(None);
            }
            handle.predict_row_for_schema(id, row, deadline)
        })?;
        Ok(predicted.map_or_else(|| Either::A(String::new()), |p| into_scratch(p, scratch)))
    }

    /// Predicts one row given as a Float32Array in `featureNames(ensemble)` order: no per-name lookups,
    /// the fastest single-row call. `deadlineMs` as in `predict`.
    // Natively it also takes index.js's scratch buffer before `deadlineMs` (see `into_scratch`).
    #[napi(
        ts_args_type = "ensemble: string, row: Float32Array, deadlineMs?: number | undefined | null",
        ts_return_type = "Prediction"
    )]
    pub fn predict_row(
        &self,
        ensemble: String,
        row: &[f32],
        scratch: Float64ArraySlice<'_>,
        deadline_ms: Option<f64>,
    ) -> Result<Either<String, PackedPrediction>> {
        let deadline = deadline(deadline_ms)?;
        guarded(|| {
            let handle = self.inner.ensemble(&ensemble)?;
            match deadline {
                Some(d) => handle.predict_row_by(row, d),
                None => handle.predict_row(row),
            }
        })
        .map(|p| into_scratch(p, scratch))
    }

    /// Makes `version` the model's default and moves loaded ensembles onto it (a hot swap: running
    /// predictions finish on the old version). Returns the ensembles reloaded.
    #[napi]
    pub fn set_default_version(&self, model: String, version: u32) -> Result<Vec<String>> {
        guarded(|| self.inner.set_default_version(&model, version))
    }

    /// The replica pools of every loaded version of `model` (all models when absent).
    #[napi]
    pub fn replicas(&self, model: Option<String>) -> Result<serde_json::Value> {
        to_json(&self.inner.replicas(model.as_deref()))
    }

    /// Whether the ensemble's members run as one fused ONNX model: `fused`, `sessions`, and
    /// `reason` when they do not.
    #[napi]
    pub fn fusion(&self, ensemble: String) -> Result<serde_json::Value> {
        to_json(&guarded(|| Ok(self.inner.ensemble(&ensemble)?.fusion()))?)
    }

    /// Drops the idle replicas of `model` (it loads again on its next call); returns how many.
    #[napi]
    pub fn unload_model(&self, model: String) -> u32 {
        self.inner.unload_model(&model) as u32
    }

    /// `predict` on the libuv thread pool.
    #[napi(ts_return_type = "Promise<Prediction>")]
    pub fn predict_async(
        &self,
        ensemble: String,
        #[napi(ts_arg_type = "Record<string, number>")] features: Object,
    ) -> Result<AsyncTask<PredictTask>> {
        // The features are read here, on the JavaScript thread; the prediction runs on the pool.
        let (handle, row) = guarded(|| {
            let handle = self.inner.ensemble(&ensemble)?;
            let row = resolve(&handle, &features)?;
            Ok((handle, row))
        })?;
        Ok(AsyncTask::new(PredictTask { handle, row }))
    }

    /// Predicts every row of a row-major Float32Array whose columns are `featureNames` (default: the
    /// ensemble's own order).
    #[napi]
    pub fn predict_batch(
        &self,
        ensemble: String,
        rows: Float32Array,
        feature_names: Option<Vec<String>>,
    ) -> Result<BatchResult> {
        let b = guarded(|| run_batch(&self.inner, &ensemble, &rows, feature_names))?;
        Ok(batch_result(b))
    }

    /// `predictBatch` on the libuv thread pool.
    #[napi]
    pub fn predict_batch_async(
        &self,
        ensemble: String,
        rows: Float32Array,
        feature_names: Option<Vec<String>>,
    ) -> AsyncTask<BatchTask> {
        AsyncTask::new(BatchTask { engine: self.inner.clone(), ensemble, rows: rows.to_vec(), feature_names })
    }

    /// Joins a realised outcome with the prediction `requestId` (classification: 0 or 1).
    #[napi]
    pub fn record_outcome(&self, request_id: f64, outcome: f64) -> Result<()> {
        guarded(|| {
            if !(request_id >= 0.0 && request_id.fract() == 0.0 && request_id < 9_007_199_254_740_992.0) {
                return Err(quorum::Error::Outcome(format!("request id {request_id} is not a non-negative integer")));
            }
            self.inner.record_outcome(request_id as u64, outcome as f32)
        })
    }

    /// Tracked metrics of an ensemble.
    #[napi]
    pub fn metrics(&self, ensemble: String) -> Result<serde_json::Value> {
        to_json(&guarded(|| self.inner.metrics(&ensemble))?)
    }

    /// Members whose loss drifted upwards (Page-Hinkley), oldest first.
    #[napi]
    pub fn drift_events(&self) -> Result<serde_json::Value> {
        to_json(&self.inner.drift_events())
    }

    /// Builds INT8 / optimised candidates of a registered model (`name` or `name@version`),
    /// benchmarks them on a CSV file and registers the fastest one within the accuracy threshold as a
    /// new version (or keeps the original). Returns the report.
    #[napi]
    pub fn optimize(
        &self,
        model: String,
        data: String,
        outcome: String,
        options: Option<OptimizeOptions>,
    ) -> Result<serde_json::Value> {
        let report = guarded(|| {
            let spec: quorum::MemberSpec = model.parse()?;
            let mut o = quorum::OptimizeOptions::default();
            if let Some(options) = options {
                if let Some(threshold) = options.accuracy_threshold {
                    o.accuracy_threshold = threshold;
                }
                if let Some(methods) = options.methods {
                    o.methods = Some(methods.iter().map(|m| m.parse()).collect::<quorum::Result<Vec<_>>>()?);
                }
                if let Some(ms) = options.target_latency_ms {
                    o.target_latency = Some(
                        std::time::Duration::try_from_secs_f64(ms / 1e3)
                            .map_err(|_| quorum::Error::Config(format!("targetLatencyMs {ms} is not a duration")))?,
                    );
                }
            }
            quorum::Optimizer::new(&self.inner).optimize(
                &spec.model,
                spec.version,
                std::path::Path::new(&data),
                &outcome,
                &o,
            )
        })?;
        to_json(&report)
    }

    /// Latency at batch 1/8/64/512, throughput, size, session memory and (with `outcome`) accuracy
    /// of a registered model (`name` or `name@version`) on a CSV file.
    #[napi]
    pub fn benchmark(&self, model: String, data: String, outcome: Option<String>) -> Result<serde_json::Value> {
        let bench = guarded(|| {
            let spec: quorum::MemberSpec = model.parse()?;
            quorum::Optimizer::new(&self.inner).benchmark(
                &spec.model,
                spec.version,
                std::path::Path::new(&data),
                outcome.as_deref(),
            )
        })?;
        to_json(&bench)
    }

    /// Writes learnt weights and tracked metrics to the home's state database now.
    #[napi]
    pub fn flush(&self) -> Result<()> {
        guarded(|| self.inner.flush())
    }
}

fn run_batch(
    engine: &quorum::InferenceEngine,
    ensemble: &str,
    rows: &[f32],
    feature_names: Option<Vec<String>>,
) -> quorum::Result<quorum::BatchPrediction> {
    let handle = engine.ensemble(ensemble)?;
    let names = feature_names.unwrap_or_else(|| handle.feature_names().to_vec());
    handle.predict_batch(&quorum::Batch::row_major(&names, rows)?)
}

pub struct PredictTask {
    handle: quorum::EnsembleHandle,
    row: quorum::ResolvedRow,
}

impl Task for PredictTask {
    type Output = quorum::Prediction;
    type JsValue = PackedPrediction;

    fn compute(&mut self) -> Result<Self::Output> {
        guarded(|| self.handle.predict_resolved(&self.row, None))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(packed(output))
    }
}

pub struct BatchTask {
    engine: quorum::InferenceEngine,
    ensemble: String,
    rows: Vec<f32>,
    feature_names: Option<Vec<String>>,
}

impl Task for BatchTask {
    type Output = quorum::BatchPrediction;
    type JsValue = BatchResult;

    fn compute(&mut self) -> Result<Self::Output> {
        guarded(|| run_batch(&self.engine, &self.ensemble, &self.rows, self.feature_names.take()))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(batch_result(output))
    }
}

/// `deadlineMs` from now as an instant; a negative, NaN or absurd value is invalid input.
fn deadline(deadline_ms: Option<f64>) -> Result<Option<std::time::Instant>> {
    deadline_ms
        .map(|ms| {
            std::time::Duration::try_from_secs_f64(ms / 1e3)
                .ok()
                .and_then(|d| std::time::Instant::now().checked_add(d))
                .ok_or_else(|| js_error(quorum::Error::InvalidInput(format!("deadlineMs {ms} is not a duration"))))
        })
        .transpose()
}
