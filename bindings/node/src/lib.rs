//! The `quorum-engine` Node addon. Logic lives in the core crate; this is conversions only.
//!
//! Every error is thrown as `[code] message`; `index.js` moves the code into `error.code`, for
//! synchronous calls and rejected Promises alike.

mod optimizer;
mod registry;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use napi::bindgen_prelude::*;
use napi_derive::napi;

pub use optimizer::JsOptimizer;
pub use registry::JsRegistry;

/// quorum's error as a JS error carrying its stable code.
fn js_error(error: quorum::Error) -> napi::Error {
    napi::Error::new(Status::GenericFailure, format!("[{}] {error}", error.code()))
}

/// Runs `f`, turning its error — or a panic, which must never cross into JS — into a JS error
/// (a panic is `internal`).
fn guarded<T>(f: impl FnOnce() -> quorum::Result<T>) -> Result<T> {
    quorum::Error::guard(f).map_err(js_error)
}

/// The version of quorum this addon was built from (index.js exports it as the `version` string).
#[napi(skip_typescript)]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Every code the core's errors carry (`quorum.ErrorCode` in index.js names each; a test checks).
#[napi]
pub fn error_codes() -> Vec<String> {
    quorum::Error::CODES.iter().map(|c| c.to_string()).collect()
}

fn to_json(value: &impl serde::Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| js_error(quorum::Error::json("result", e)))
}

/// One member's part in a prediction.
#[derive(Debug)]
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
    /// The class its prediction is the probability of, as the model labels it (`'up'`, `'1'`).
    pub class: Option<String>,
}

/// One prediction: the story's fields, in JavaScript's camelCase.
#[derive(Debug)]
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
    /// The experiment and arm that served the request, while the ensemble runs an experiment.
    pub experiment: Option<ExperimentArm>,
}

/// See `Prediction.experiment`.
#[derive(Debug)]
#[napi(object)]
pub struct ExperimentArm {
    pub name: String,
    /// `control` or `treatment`.
    pub arm: String,
}

/// A prediction as it crosses N-API: index.js's `unpack` builds the public [`Prediction`] from it in
/// JavaScript, where an object literal costs far less than N-API's property-by-property construction
/// (see CHANGELOG for the measured difference); the `Prediction` interface above is the shape it builds.
#[allow(missing_debug_implementations)] // napi's typed arrays implement no Debug
#[napi(object)]
pub struct PackedPrediction {
    /// requestId, ensembleVersion, prediction, confidence, label (NaN: none), weightsEpoch, flags
    /// (1 degraded, 2 cached, 4 stale, 8 fused), latencyMs; then per member: version, prediction (NaN:
    /// no answer), weight, latencyMs, recentLoss (NaN: none).
    pub numbers: Float64Array,
    /// ensemble, strategy, regime ("": none), experiment and arm ("": none); then per member: model,
    /// error ("": none), fallback ("": none), class ("": none).
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
        p.label.map_or(f64::NAN, f64::from),
        p.weights_epoch as f64,
        f64::from(flags),
        p.latency_ms,
    ]);
    let mut strings = Vec::with_capacity(5 + 4 * p.model_contributions.len());
    let (experiment, arm) = match &p.experiment {
        Some(e) => (e.name.to_string(), e.arm.as_str().to_string()),
        None => (String::new(), String::new()),
    };
    strings.extend([
        p.ensemble.to_string(),
        p.strategy.to_string(),
        p.regime.map_or_else(String::new, |r| r.as_str().to_string()),
        experiment,
        arm,
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
            c.class.map_or_else(String::new, |f| f.to_string()),
        ]);
    }
    PackedPrediction { numbers: Float64Array::new(numbers), strings }
}

/// For index.js (internal): an ensemble's feature names and the id of that order.
#[derive(Debug)]
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
    // SAFETY: napi offers no safe mutable view of a typed array, since JavaScript may write it at any
    // time. Here it cannot: this runs inside a synchronous call on the JavaScript thread, so no
    // JavaScript runs until it returns, and the slice does not outlive the call.
    #[allow(unsafe_code)]
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
fn resolve(
    handle: &quorum::EnsembleHandle,
    features: &Object,
    routing_key: Option<&str>,
) -> quorum::Result<quorum::ResolvedRow> {
    handle.resolve_row_routed(
        |name| {
            features
                .get::<f64>(name)
                .map(|v| v.map(|v| v as f32))
                .map_err(|_| quorum::Error::InvalidInput(format!("feature {name:?} is not a number")))
        },
        routing_key,
    )
}

/// Options of `new InferenceEngine(home, options)`: the shape TypeScript sees. The constructor hands
/// the object to the core's `quorum::EngineOptions`, which reads and checks it (the same document the
/// Python keyword arguments become).
#[derive(Debug)]
#[napi(object)]
pub struct EngineOptions {
    /// Path of libonnxruntime (default: the one bundled in `onnxruntime-node`).
    pub ort_library: Option<String>,
    /// Outcome tracking: `true` (default), `false`, or its bounds.
    #[napi(
        ts_type = "boolean | { window?: number, windowSeconds?: number, pendingCapacity?: number, pendingTtlSeconds?: number }"
    )]
    pub tracking: Option<serde_json::Value>,
    pub persistence: Option<bool>,
    pub sessions_per_model: Option<u32>,
    pub synchronous_refits: Option<bool>,
    /// Entries of the prediction cache (no cache when absent).
    pub cache_capacity: Option<u32>,
    /// How long a cached prediction may be served, in milliseconds (default 1000; needs cacheCapacity).
    pub cache_ttl_ms: Option<f64>,
    /// How every model is served: `{replicas?: [min, max], load?: "eager" | "lazy", timeoutMs?,
    /// latencyTargetMs?, shareWeights?, batching?: {maxBatch?, maxDelayUs?, dispatchers?, maxQueued?}}`.
    #[napi(ts_type = "ModelServing")]
    pub default_model: Option<serde_json::Value>,
    /// The same, per model name.
    #[napi(ts_type = "Record<string, ModelServing>")]
    pub models: Option<HashMap<String, serde_json::Value>>,
    /// Unload idle models (least recently used first) while their estimated memory exceeds this.
    pub memory_budget_bytes: Option<f64>,
    /// Run each ensemble's members as one fused ONNX model when they can be (default true).
    pub fusion: Option<bool>,
    /// Run models whose graphs compile on native plans instead of ONNX Runtime (default true).
    pub native: Option<bool>,
    /// Where state lives: `sqlite:<path>` (default `<home>/state.sqlite`) or `postgres://...`.
    pub state: Option<String>,
    /// Log every prediction: `true`, or `{sample?, queueCapacity?, batchRows?, flushMs?}`.
    #[napi(ts_type = "boolean | { sample?: number, queueCapacity?: number, batchRows?: number, flushMs?: number }")]
    pub inference_log: Option<serde_json::Value>,
}

/// Options of `optimize`.
#[derive(Debug)]
#[napi(object)]
pub struct OptimizeOptions {
    /// Largest accuracy loss accepted, absolute (default 0.01: one point).
    pub accuracy_threshold: Option<f64>,
    /// Methods to try (default: all for the CPU): fp32-optimized, int8-dynamic,
    /// int8-dynamic-per-channel, int8-static-minmax, int8-static-percentile, int8-static-entropy,
    /// native (the original's native plan: a winner registers no version).
    pub methods: Option<Vec<String>>,
    /// The p50 single-row latency a deployment needs (deploymentReady requires it).
    pub target_latency_ms: Option<f64>,
    /// The workload the decision weighs: batch size → share of calls, e.g. `{1: 0.2, 64: 0.8}`
    /// (default single rows; sizes among 1, 8, 64, 512).
    pub batch_sizes: Option<HashMap<String, f64>>,
}

/// Options of `registerModel`.
#[derive(Debug)]
#[napi(object)]
pub struct ModelOptions {
    /// Output holding the prediction, `name`, `name:column` or `name:CLASS` (default: `probabilities:1`, else the only ZipMap or float output).
    pub output: Option<String>,
    /// For a model with several inputs, which features feed which: `'x1=a,b;x2=c,d'` (default: inputs named as the features).
    pub inputs: Option<String>,
    /// technical, fundamental, sentiment or other.
    pub kind: Option<String>,
    /// classification or regression.
    pub task: Option<String>,
    /// A whole number from 1 to 2147483647 (anything else throws `invalid_name`).
    pub version: Option<f64>,
}

/// Options of `registerRemote`.
#[derive(Debug)]
#[napi(object)]
pub struct RemoteModelOptions {
    /// The environment variable holding the server's bearer token (only its name is stored).
    pub token_env: Option<String>,
    /// Output holding the prediction, `name`, `name:column` or `name:CLASS`.
    pub output: Option<String>,
    /// technical, fundamental, sentiment or other.
    pub kind: Option<String>,
    /// classification or regression.
    pub task: Option<String>,
    /// A whole number from 1 to 2147483647 (anything else throws `invalid_name`).
    pub version: Option<f64>,
    /// Send a request not answered by the model's recent 95th percentile a second time.
    pub hedge: Option<bool>,
    /// A second server of the same model, where hedged requests go (implies `hedge`).
    pub hedge_url: Option<String>,
}

/// A batch's answers by column.
#[allow(missing_debug_implementations)] // napi's typed arrays implement no Debug
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
#[derive(Debug)]
#[napi(js_name = "InferenceEngine")]
pub struct JsInferenceEngine {
    inner: quorum::InferenceEngine,
}

impl JsInferenceEngine {
    /// The core engine, for the other classes of the addon.
    pub fn core(&self) -> &quorum::InferenceEngine {
        &self.inner
    }
}

#[napi]
impl JsInferenceEngine {
    /// Opens (or creates) the quorum home `home` and loads ONNX Runtime (from `options.ortLibrary`,
    /// else the onnxruntime-node package). Throws `runtime_unavailable`, `config` or `locked`.
    #[napi(constructor, ts_args_type = "home: string, options?: EngineOptions | undefined | null")]
    pub fn new(home: String, options: Option<serde_json::Value>) -> Result<Self> {
        let inner = guarded(|| {
            let options = quorum::EngineOptions::from_json(options.unwrap_or(serde_json::Value::Null))?;
            options.builder(std::path::Path::new(&home))?.build()
        })?;
        Ok(JsInferenceEngine { inner })
    }

    /// The engine's model registry (a new default version set through it is hot-swapped in).
    #[napi(getter)]
    pub fn registry(&self) -> JsRegistry {
        JsRegistry::of_engine(&self.inner)
    }

    /// An optimizer over the engine's registry.
    #[napi(getter)]
    pub fn optimizer(&self) -> JsOptimizer {
        JsOptimizer::of_engine(&self.inner)
    }

    /// `registry.register(...)`: copies a model into the registry as a new version.
    #[napi(ts_return_type = "ModelMetadata")]
    pub fn register_model(
        &self,
        name: String,
        file: String,
        features: Vec<String>,
        options: Option<ModelOptions>,
    ) -> Result<serde_json::Value> {
        self.registry().register(name, file, features, options)
    }

    /// `registry.list()`: every registered model.
    #[napi(ts_return_type = "ModelSummary[]")]
    pub fn list_models(&self) -> Result<serde_json::Value> {
        self.registry().list()
    }

    /// Creates (a new version of) an ensemble from quorum's ensemble JSON: `{name, members, strategy?,
    /// weights?, minMembers?, ...}`; members are "model" / "model@version" strings or objects.
    #[napi(ts_args_type = "config: EnsembleConfigInput", ts_return_type = "EnsembleConfig")]
    pub fn create_ensemble(&self, config: serde_json::Value) -> Result<serde_json::Value> {
        let saved = guarded(|| {
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
    /// within it throws `deadline_exceeded` instead of answering late. While the ensemble runs an
    /// experiment, `routingKey` (a user, an account, a symbol) picks the arm.
    // Natively it also takes index.js's scratch buffer before `deadlineMs` (see `into_scratch`).
    #[napi(
        ts_args_type = "ensemble: string, features: Record<string, number>, deadlineMs?: number | undefined | null, routingKey?: string | undefined | null",
        ts_return_type = "Prediction"
    )]
    pub fn predict(
        &self,
        ensemble: String,
        features: Object,
        scratch: Float64ArraySlice<'_>,
        deadline_ms: Option<f64>,
        routing_key: Option<String>,
    ) -> Result<Either<String, PackedPrediction>> {
        let deadline = deadline(deadline_ms)?;
        guarded(|| {
            let handle = self.inner.ensemble(&ensemble)?;
            handle.predict_resolved(&resolve(&handle, &features, routing_key.as_deref())?, deadline)
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
        routing_key: Option<String>,
    ) -> Result<Either<String, PackedPrediction>> {
        let deadline = deadline(deadline_ms)?;
        let predicted = guarded(|| {
            let handle = self.inner.ensemble(&ensemble)?;
            let id = handle.schema_id();
            if js_schema_id(id) != schema {
                return Ok(None);
            }
            handle.predict_row_for_schema(id, row, deadline, routing_key.as_deref())
        })?;
        Ok(predicted.map_or_else(|| Either::A(String::new()), |p| into_scratch(p, scratch)))
    }

    /// Predicts one row given as a Float32Array in `featureNames(ensemble)` order: no per-name lookups,
    /// the fastest single-row call. `deadlineMs` and `routingKey` as in `predict`.
    // Natively it also takes index.js's scratch buffer before `deadlineMs` (see `into_scratch`).
    #[napi(
        ts_args_type = "ensemble: string, row: Float32Array, deadlineMs?: number | undefined | null, routingKey?: string | undefined | null",
        ts_return_type = "Prediction"
    )]
    pub fn predict_row(
        &self,
        ensemble: String,
        row: &[f32],
        scratch: Float64ArraySlice<'_>,
        deadline_ms: Option<f64>,
        routing_key: Option<String>,
    ) -> Result<Either<String, PackedPrediction>> {
        let deadline = deadline(deadline_ms)?;
        guarded(|| self.inner.ensemble(&ensemble)?.predict_row_routed(row, routing_key.as_deref(), deadline))
            .map(|p| into_scratch(p, scratch))
    }

    /// Makes `version` the model's default and moves loaded ensembles onto it (a hot swap: running
    /// predictions finish on the old version). Returns the ensembles reloaded.
    #[napi]
    pub fn set_default_version(&self, model: String, version: f64) -> Result<Vec<String>> {
        guarded(|| self.inner.set_default_version(&model, quorum::check_version("version", version)?))
    }

    /// The replica pools of every loaded version of `model` (all models when absent).
    #[napi(ts_return_type = "ReplicaStatus[]")]
    pub fn replicas(&self, model: Option<String>) -> Result<serde_json::Value> {
        to_json(&self.inner.replicas(model.as_deref()))
    }

    /// Whether the ensemble's members run as one fused ONNX model: `fused`, `sessions`, and
    /// `reason` when they do not.
    #[napi(ts_return_type = "FusionStatus")]
    pub fn fusion(&self, ensemble: String) -> Result<serde_json::Value> {
        to_json(&guarded(|| Ok(self.inner.ensemble(&ensemble)?.fusion()))?)
    }

    /// The inference log's counters (`written`, `dropped`, `write_errors`, `waiting`, `last_error`), or
    /// null when logging is off.
    #[napi(ts_return_type = "InferenceLogStats | null")]
    pub fn inference_log_stats(&self) -> Result<serde_json::Value> {
        to_json(&self.inner.inference_log_stats())
    }

    /// Where this process stands in a shared (PostgreSQL) state's outcome log, or null.
    #[napi(ts_return_type = "SharedStatus | null")]
    pub fn shared_status(&self) -> Result<serde_json::Value> {
        to_json(&self.inner.shared_status())
    }

    /// For tests and rehearsals: makes every call to `model` fail (`'fail'`), panic (`'panic'`),
    /// sleep `amount` milliseconds first (`'slow'`), or fail for a fraction `amount` of calls
    /// (`'fail_fraction'`), until `'none'`. Breakers, fallbacks and quorum then act as in production.
    #[napi]
    pub fn inject_fault(&self, model: String, kind: String, amount: Option<f64>) -> Result<()> {
        guarded(|| {
            self.inner.inject_fault(&model, quorum::Fault::from_kind(&kind, amount)?);
            Ok(())
        })
    }

    /// Drops the idle replicas of `model` (it loads again on its next call); returns how many.
    #[napi]
    pub fn unload_model(&self, model: String) -> u32 {
        self.inner.unload_model(&model) as u32
    }

    /// `predict` without blocking the event loop (`routingKey` as in `predict`). A lone request to an
    /// ensemble whose runs take microseconds is answered at once, in an already settled Promise;
    /// otherwise it is queued to the ensemble (batched with other queued requests) and awaited on
    /// the libuv thread pool.
    // Natively it returns the packed prediction itself when it was answered at once (index.js wraps
    // it in a Promise), else a Promise.
    #[napi(ts_return_type = "Promise<Prediction>")]
    pub fn predict_async(
        &self,
        ensemble: String,
        #[napi(ts_arg_type = "Record<string, number>")] features: Object,
        routing_key: Option<String>,
    ) -> Result<Either<PackedPrediction, AsyncTask<PredictTask>>> {
        // The features are read here, on the JavaScript thread, and the first poll queues the request
        // (or answers it); only the wait for a queued answer goes to the pool.
        let pending = guarded(|| {
            let handle = self.inner.ensemble(&ensemble)?;
            let row = resolve(&handle, &features, routing_key.as_deref())?;
            Ok(Box::pin(handle.predict_resolved_async(row, None)) as Pending)
        })?;
        Ok(match first_poll(pending)? {
            Either::A(p) => Either::A(packed(p)),
            Either::B(task) => Either::B(task),
        })
    }

    /// For index.js: `predictAsync` of a row it filled from the request (see `schema`): the answer in
    /// `scratch` when it came at once, a Promise when the request was queued, an empty string when
    /// the ensemble's features changed.
    #[napi(skip_typescript)]
    pub fn predict_row_async_for_schema(
        &self,
        ensemble: String,
        row: &[f32],
        schema: f64,
        scratch: Float64ArraySlice<'_>,
        routing_key: Option<String>,
    ) -> Result<Either3<String, PackedPrediction, AsyncTask<PredictTask>>> {
        let pending = guarded(|| {
            let handle = self.inner.ensemble(&ensemble)?;
            let id = handle.schema_id();
            if js_schema_id(id) != schema {
                return Ok(None);
            }
            Ok(handle
                .predict_row_async_for_schema(id, row, None, routing_key.as_deref())
                .map(|f| Box::pin(f) as Pending))
        })?;
        let Some(pending) = pending else { return Ok(Either3::A(String::new())) };
        Ok(match first_poll(pending)? {
            Either::A(p) => match into_scratch(p, scratch) {
                Either::A(marker) => Either3::A(marker),
                Either::B(whole) => Either3::B(whole),
            },
            Either::B(task) => Either3::C(task),
        })
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
    #[napi(ts_return_type = "Promise<BatchResult>")]
    pub fn predict_batch_async(
        &self,
        ensemble: String,
        rows: Float32Array,
        feature_names: Option<Vec<String>>,
    ) -> AsyncTask<BatchTask> {
        AsyncTask::new(BatchTask { engine: self.inner.clone(), ensemble, rows: rows.to_vec(), feature_names })
    }

    /// Joins a realised outcome with the prediction `requestId` (classification: 0 or 1), with its
    /// business value (e.g. the trade's P&L) for experiments whose metric is `business`.
    #[napi]
    pub fn record_outcome(&self, request_id: f64, outcome: f64, business_value: Option<f64>) -> Result<()> {
        guarded(|| {
            if !(request_id >= 0.0 && request_id.fract() == 0.0 && request_id < 9_007_199_254_740_992.0) {
                return Err(quorum::Error::Outcome(format!("request id {request_id} is not a non-negative integer")));
            }
            self.inner.record_outcome_valued(request_id as u64, outcome, business_value)
        })
    }

    /// Starts an A/B experiment from quorum's experiment JSON (`name`, `ensemble`, `control`,
    /// `treatment`, optionally `steps`, `min_outcomes_per_step`, `metric`, `guardrails`, `alpha`,
    /// `max_outcomes`, `non_inferiority_margin`, `mixing_sd`, `seed`). Returns its status.
    #[napi(ts_args_type = "config: ExperimentConfigInput", ts_return_type = "ExperimentStatus")]
    pub fn start_experiment(&self, config: serde_json::Value) -> Result<serde_json::Value> {
        let status = guarded(|| {
            let parsed: quorum::ExperimentConfig =
                serde_json::from_value(config).map_err(|e| quorum::Error::json("experiment configuration", e))?;
            self.inner.start_experiment(parsed)
        })?;
        to_json(&status)
    }

    /// An experiment's arms, counts, metric and confidence sequence, p-value, step and decisions.
    #[napi(ts_return_type = "ExperimentStatus")]
    pub fn experiment_status(&self, name: String) -> Result<serde_json::Value> {
        to_json(&guarded(|| self.inner.experiment_status(&name))?)
    }

    /// Every experiment's status, by name.
    #[napi(ts_return_type = "ExperimentStatus[]")]
    pub fn experiments(&self) -> Result<serde_json::Value> {
        to_json(&guarded(|| self.inner.experiments())?)
    }

    /// Routes every request to the control until `resumeExperiment`.
    #[napi(ts_return_type = "ExperimentStatus")]
    pub fn pause_experiment(&self, name: String) -> Result<serde_json::Value> {
        to_json(&guarded(|| self.inner.pause_experiment(&name))?)
    }

    /// Resumes a paused experiment at the step it was paused in.
    #[napi(ts_return_type = "ExperimentStatus")]
    pub fn resume_experiment(&self, name: String) -> Result<serde_json::Value> {
        to_json(&guarded(|| self.inner.resume_experiment(&name))?)
    }

    /// Ends an experiment; the control stays the active version.
    #[napi(ts_return_type = "ExperimentStatus")]
    pub fn stop_experiment(&self, name: String, reason: Option<String>) -> Result<serde_json::Value> {
        to_json(&guarded(|| self.inner.stop_experiment(&name, reason.as_deref().unwrap_or("")))?)
    }

    /// Tracked metrics of an ensemble.
    #[napi(ts_return_type = "EnsembleMetrics")]
    pub fn metrics(&self, ensemble: String) -> Result<serde_json::Value> {
        to_json(&guarded(|| self.inner.metrics(&ensemble))?)
    }

    /// Members whose loss drifted upwards (Page-Hinkley), oldest first.
    #[napi(ts_return_type = "DriftEvent[]")]
    pub fn drift_events(&self) -> Result<serde_json::Value> {
        to_json(&self.inner.drift_events())
    }

    /// `optimizer.optimize(...)`.
    #[napi(ts_return_type = "OptimizeReport")]
    pub fn optimize(
        &self,
        model: String,
        data: String,
        outcome: String,
        options: Option<OptimizeOptions>,
    ) -> Result<serde_json::Value> {
        self.optimizer().optimize(model, data, outcome, options)
    }

    /// `optimizer.benchmark(...)`.
    #[napi(ts_return_type = "ModelBenchmark")]
    pub fn benchmark(&self, model: String, data: String, outcome: Option<String>) -> Result<serde_json::Value> {
        self.optimizer().benchmark(model, data, outcome)
    }

    /// Every metric the engine keeps, in the Prometheus text format, to serve on your own endpoint.
    #[napi]
    pub fn metrics_text(&self) -> String {
        self.inner.metrics_text()
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
    pending: Pending,
}

impl std::fmt::Debug for PredictTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PredictTask")
    }
}

/// A queued prediction's future, polled once on the JavaScript thread.
type Pending = Pin<Box<dyn Future<Output = quorum::Result<quorum::Prediction>> + Send>>;

impl Task for PredictTask {
    type Output = quorum::Prediction;
    type JsValue = PackedPrediction;

    fn compute(&mut self) -> Result<Self::Output> {
        guarded(|| block_on(self.pending.as_mut()))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(packed(output))
    }
}

/// Polls a prediction's future once, on the JavaScript thread: its answer when it came at once
/// (inline, or from the cache), else the task that waits for it on the pool.
fn first_poll(mut pending: Pending) -> Result<Either<quorum::Prediction, AsyncTask<PredictTask>>> {
    guarded(|| match pending.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result.map(Either::A),
        Poll::Pending => Ok(Either::B(AsyncTask::new(PredictTask { pending }))),
    })
}

/// Wakes a parked pool thread.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on this (pool) thread, parked between polls.
fn block_on<T>(mut future: Pin<&mut (dyn Future<Output = T> + Send)>) -> T {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::park();
    }
}

#[derive(Debug)]
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

/// `deadlineMs` from now as an instant (checked by the core, as for Python).
fn deadline(deadline_ms: Option<f64>) -> Result<Option<std::time::Instant>> {
    deadline_ms.map(quorum::units::deadline_after_ms).transpose().map_err(js_error)
}
