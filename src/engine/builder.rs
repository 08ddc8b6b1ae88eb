//! [`EngineBuilder`]: every engine option, validated once in [`EngineBuilder::build`], which also
//! opens the home's stores and starts the background threads the options call for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::background::{spawn_background, spawn_housekeeping, Background};
use super::{EngineInner, InferenceEngine, Models};
use crate::breaker::BreakerOptions;
use crate::cache::{CacheOptions, PredictionCache};
use crate::ensemble::EnsembleStore;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::replicas::ModelOptions;
use crate::runtime::{Runtime, RuntimeOptions};
use crate::state::inference_log::InferenceLog;
use crate::state::{InferenceLogOptions, PersistOptions, StateStore, StateUrl};
use crate::tracking::{Tracker, TrackingOptions};
use crate::units::duration_from_ms;

/// Builds an [`InferenceEngine`].
#[derive(Debug, Clone)]
#[must_use]
pub struct EngineBuilder {
    home: PathBuf,
    runtime: RuntimeOptions,
    tracking: Option<TrackingOptions>,
    persistence: Option<PersistOptions>,
    synchronous_refits: bool,
    breaker: BreakerOptions,
    cache: Option<CacheOptions>,
    default_model_options: ModelOptions,
    model_options: HashMap<String, ModelOptions>,
    memory_budget: Option<u64>,
    autoscale: AutoscaleSettings,
    fusion: bool,
    native: bool,
    async_inline_limit: Duration,
    state_url: Option<StateUrl>,
    inference_log: Option<InferenceLogOptions>,
}

/// How often the autoscaler looks at the pools, and how long a pool must be quiet before it shrinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoscaleSettings {
    /// How often the autoscaler looks at the pools.
    pub interval: Duration,
    /// How long a pool must have had idle replicas before it shrinks.
    pub quiet_for: Duration,
}

impl Default for AutoscaleSettings {
    fn default() -> Self {
        AutoscaleSettings { interval: Duration::from_millis(100), quiet_for: Duration::from_secs(5) }
    }
}

impl EngineBuilder {
    pub(super) fn new(home: &Path) -> EngineBuilder {
        EngineBuilder {
            home: home.to_path_buf(),
            runtime: RuntimeOptions::default(),
            tracking: Some(TrackingOptions::default()),
            persistence: Some(PersistOptions::default()),
            synchronous_refits: false,
            breaker: BreakerOptions::default(),
            cache: None,
            default_model_options: ModelOptions::default(),
            model_options: HashMap::new(),
            memory_budget: None,
            autoscale: AutoscaleSettings::default(),
            fusion: true,
            native: true,
            async_inline_limit: super::coalesce::QUICK,
            state_url: None,
            inference_log: None,
        }
    }

    /// How every model without options of its own is served (replicas, batching, timeout, loading).
    pub fn with_default_model_options(mut self, options: ModelOptions) -> Self {
        self.default_model_options = options;
        self
    }

    /// How the model `name` (every version) is served.
    pub fn with_model_options(mut self, name: impl Into<String>, options: ModelOptions) -> Self {
        self.model_options.insert(name.into(), options);
        self
    }

    /// Unload idle models, least recently used first, while the replicas' estimated memory (the
    /// model file's size per replica) exceeds `bytes`; they load again on their next call.
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = Some(bytes);
        self
    }

    /// The autoscaler's tick and shrink hysteresis (defaults: 100 ms, 5 s).
    pub fn with_autoscale_settings(mut self, settings: AutoscaleSettings) -> Self {
        self.autoscale = settings;
        self
    }

    /// How ONNX Runtime is found and configured (library path, threads, graph optimisation).
    pub fn with_runtime_options(mut self, options: RuntimeOptions) -> Self {
        self.runtime = options;
        self
    }

    /// Tracking bounds (tracking is on by default).
    pub fn with_tracking(mut self, options: TrackingOptions) -> Self {
        self.tracking = Some(options);
        self
    }

    /// No outcome tracking: predictions are not logged and `record_outcome` is an error.
    pub fn without_tracking(mut self) -> Self {
        self.tracking = None;
        self
    }

    /// When learnt weights and tracked metrics are written to `<home>/state.sqlite` (on by default).
    pub fn with_persistence(mut self, options: PersistOptions) -> Self {
        self.persistence = Some(options);
        self
    }

    /// Run stacking and blending refits inside `record_outcome` instead of on the background thread:
    /// deterministic (each prediction sees every fit that was due before it, as in a backtest) at the
    /// price of an occasional slow outcome.
    pub fn with_synchronous_refits(mut self) -> Self {
        self.synchronous_refits = true;
        self
    }

    /// Settings of the circuit breaker each model gets (see [`crate::breaker`] for the defaults).
    pub fn with_circuit_breaker(mut self, options: BreakerOptions) -> Self {
        self.breaker = options;
        self
    }

    /// Puts a prediction cache in front of every ensemble's single-row predictions (off by default).
    pub fn with_prediction_cache(mut self, options: CacheOptions) -> Self {
        self.cache = Some(options);
        self
    }

    /// Whether ensembles run their members as one fused ONNX model when they can (on by default; see
    /// [`EnsembleHandle::fusion`](crate::EnsembleHandle::fusion)). Off: every member is its own ONNX Runtime call,
    /// always.
    pub fn with_fusion(mut self, fuse: bool) -> Self {
        self.fusion = fuse;
        self
    }

    /// Whether a model whose graph uses only operators quorum compiles (tree ensembles, linear
    /// models, scalers, small MLPs; see [`crate::native`]) runs on its native plan instead of ONNX
    /// Runtime, once the plan agreed with ONNX Runtime on probe rows at load (on by default). Off:
    /// every model runs on ONNX Runtime. [`InferenceEngine::replicas`] says which executor each
    /// model runs on, and why.
    pub fn with_native(mut self, native: bool) -> Self {
        self.native = native;
        self
    }

    /// The longest an asynchronous request may run on its caller's thread — alone, or serving the
    /// queued requests of others with its own — judged by the ensemble's recent runs (default
    /// 200 µs; a quarter of it while more than 256 asynchronous requests are outstanding, when one
    /// caller serves batches back to back). Tokio's guidance for work between two awaits is 10 to
    /// 100 µs; a caller serving others yields between its batches, and on 2 cores a hand-off to
    /// another thread cost 64 callers of a 50–100 µs ensemble three quarters of their throughput.
    /// An ensemble whose runs take longer has its asynchronous requests served by its dispatcher
    /// threads; zero sends them all there.
    pub fn with_async_inline_limit(mut self, limit: Duration) -> Self {
        self.async_inline_limit = limit;
        self
    }

    /// Where state is kept (default `sqlite:<home>/state.sqlite`). A `postgres://` state is shared:
    /// several processes over the same home learn as one from its ordered outcome log, follow each
    /// other's registrations and ensemble changes, and never issue the same request id (feature
    /// `postgres`).
    pub fn with_state(mut self, url: StateUrl) -> Self {
        self.state_url = Some(url);
        self
    }

    /// Logs every prediction (or a sample) to the state's `inference_logs` table, off the
    /// prediction path (see [`InferenceLogOptions`]). With a shared state it is what lets an outcome
    /// be posted to any replica.
    pub fn with_inference_log(mut self, options: InferenceLogOptions) -> Self {
        self.inference_log = Some(options);
        self
    }

    /// Keep learning state in memory only.
    pub fn without_persistence(mut self) -> Self {
        self.persistence = None;
        self
    }

    /// Opens (or creates) the home and builds the engine; ensembles load on first use.
    ///
    /// # Errors
    ///
    /// [`Error::RuntimeUnavailable`](crate::Error::RuntimeUnavailable) (code `runtime_unavailable`) when ONNX Runtime
    /// cannot be loaded; [`Error::Config`](crate::Error::Config) for invalid options;
    /// [`Error::Locked`](crate::Error::Locked) when another process writes the home's SQLite state;
    /// [`Error::Io`](crate::Error::Io) when the home cannot be created.
    pub fn build(self) -> Result<InferenceEngine> {
        // An engine writes state, so it may make its home; read-only tools never do.
        crate::store::create_dir_all(&self.home)?;
        let registry = Registry::open(&self.home)?;
        let ensembles = EnsembleStore::open(&self.home)?;
        let runtime = Runtime::new(self.runtime)?;
        let tracker = self.tracking.map(Tracker::new).transpose()?;
        self.breaker.validate()?;
        let default_replicas = runtime.options().sessions_per_model();
        for options in self.model_options.values().chain([&self.default_model_options]) {
            options.validate(default_replicas)?;
        }
        if self.memory_budget == Some(0) {
            return Err(Error::Config("the memory budget must be a positive number of bytes".into()));
        }
        if self.autoscale.interval.is_zero() {
            return Err(Error::Config("the autoscale interval must be positive".into()));
        }
        let scaling = self
            .model_options
            .values()
            .chain([&self.default_model_options])
            .any(|o| o.validate(default_replicas).is_ok_and(|(min, max)| min < max));
        let cache = self.cache.map(PredictionCache::new).transpose()?;
        // NVML is asked only when some model runs on a GPU provider.
        let on_gpu = self
            .model_options
            .values()
            .chain([&self.default_model_options])
            .any(|o| o.provider != crate::runtime::ExecutionProvider::Cpu);
        let state =
            match self.persistence {
                Some(options) => {
                    let url = self.state_url.clone().unwrap_or_else(|| StateUrl::default_for(&self.home));
                    Some((Arc::new(StateStore::connect(&url)?), options))
                }
                None if self.state_url.is_some() || self.inference_log.is_some() => return Err(Error::Config(
                    "a state URL or an inference log needs persistence: do not combine them with without_persistence"
                        .into(),
                )),
                None => None,
            };
        let inference_log = match (&state, self.inference_log) {
            (Some((store, _)), Some(options)) => Some(InferenceLog::start(Arc::downgrade(store), options)?),
            _ => None,
        };
        let shared = match state.as_ref().and_then(|(s, _)| s.shared()) {
            Some(log) => Some(Arc::new(super::shared::Shared::new(Arc::clone(log))?)),
            None => None,
        };
        // Request ids are unique across the processes sharing a state: each starts at its instance
        // number times 2^40 (ids stay below 2^53, exact in JavaScript and JSON).
        let first_request_id = shared.as_ref().map_or(0, |s| u64::from(s.status().instance) << 40) + 1;
        let inner = Arc::new(EngineInner {
            home: self.home,
            registry,
            ensemble_store: ensembles,
            runtime,
            models: Mutex::new(Models::default()),
            ensembles: RwLock::new(HashMap::new()),
            loading: Mutex::new(()),
            tracker,
            next_request_id: AtomicU64::new(first_request_id),
            last_history: Mutex::new(Instant::now()),
            state,
            inference_log,
            shared: shared.clone(),
            synchronous_refits: self.synchronous_refits,
            background: Arc::new(Background::default()),
            breaker: self.breaker,
            cache,
            default_model_options: self.default_model_options,
            model_options: self.model_options,
            memory_budget: self.memory_budget,
            fusion: self.fusion,
            native: self.native,
            async_inline_limit: self.async_inline_limit,
            experiments: Mutex::new(Vec::new()),
            flush_errors: Default::default(),
            gpus: if on_gpu { crate::telemetry::Gpus::open() } else { None },
        });
        if scaling || inner.memory_budget.is_some() {
            spawn_housekeeping(Arc::downgrade(&inner), self.autoscale);
        }
        let flush_interval = inner.state.as_ref().map(|(_, o)| o.flush_interval);
        if flush_interval.is_some() || !inner.synchronous_refits {
            spawn_background(Arc::downgrade(&inner), Arc::clone(&inner.background), flush_interval);
        }
        if let Some(shared) = shared {
            super::shared::spawn_consumer(Arc::downgrade(&inner), shared)?;
        }
        Ok(InferenceEngine { inner })
    }
}

/// The engine's options as a plain document — what the Python keyword arguments and the Node
/// options object hold, in snake_case or camelCase — turned into an [`EngineBuilder`] in one place,
/// so every language validates them alike and reports the same error text. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineOptions {
    /// Path of libonnxruntime (default: found as [`RuntimeOptions`] finds it).
    #[serde(alias = "ortLibrary")]
    pub ort_library: Option<PathBuf>,
    /// Outcome tracking: `true` (the default), `false`, or its options (see [`TrackingSetting`]).
    pub tracking: Option<TrackingSetting>,
    /// Learnt weights and tracked metrics written to `<home>/state.sqlite` (default on).
    pub persistence: Option<bool>,
    /// ONNX Runtime sessions per model (default one per core, at most 8; twice that for a model that
    /// takes one row per call; `replicas` in the model options supersedes it).
    #[serde(alias = "sessionsPerModel")]
    pub sessions_per_model: Option<usize>,
    /// Refit stacking and blending on the request thread instead of in the background (for tests).
    #[serde(alias = "synchronousRefits")]
    pub synchronous_refits: Option<bool>,
    /// Entries of the prediction cache (no cache when absent).
    #[serde(alias = "cacheCapacity")]
    pub cache_capacity: Option<usize>,
    /// How long a cached prediction may be served (default 1000 ms).
    #[serde(alias = "cacheTtlMs")]
    pub cache_ttl_ms: Option<f64>,
    /// How every model without options of its own is served.
    #[serde(alias = "defaultModel")]
    pub default_model: Option<ModelOptions>,
    /// How each named model is served.
    pub models: Option<HashMap<String, ModelOptions>>,
    /// See [`EngineBuilder::with_memory_budget`].
    #[serde(alias = "memoryBudgetBytes")]
    pub memory_budget_bytes: Option<u64>,
    /// Fused ensembles (default on; see [`EngineBuilder::with_fusion`]).
    pub fusion: Option<bool>,
    /// Native executors (default on; see [`EngineBuilder::with_native`]).
    pub native: Option<bool>,
    /// Where state lives: `sqlite:<path>` (default `<home>/state.sqlite`) or `postgres://...`
    /// (shared by replicas; see [`EngineBuilder::with_state`]).
    pub state: Option<String>,
    /// The inference log: `true` for the defaults, or its options (default off).
    #[serde(alias = "inferenceLog")]
    pub inference_log: Option<InferenceLogSetting>,
}

/// `tracking = true | false`, or a table of what bounds it; absent keys keep their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TrackingSetting {
    /// `true` or `false`.
    On(bool),
    /// Tracking on, with these bounds.
    Options(TrackingTable),
}

/// The tracker's bounds as the bindings give them, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingTable {
    /// Outcomes in the count window (default 500).
    pub window: Option<usize>,
    /// Length of the time window, seconds (default 3600).
    #[serde(alias = "windowSeconds")]
    pub window_seconds: Option<f64>,
    /// Predictions kept waiting for their outcome (default 65 536).
    #[serde(alias = "pendingCapacity")]
    pub pending_capacity: Option<usize>,
    /// How long a prediction waits for its outcome, seconds (default 86 400).
    #[serde(alias = "pendingTtlSeconds")]
    pub pending_ttl_seconds: Option<f64>,
}

impl TrackingTable {
    fn options(self) -> Result<TrackingOptions> {
        let seconds = |what: &str, value: f64| {
            if value.is_finite() && value > 0.0 && value <= 365.0 * 86_400.0 {
                Ok(std::time::Duration::from_secs_f64(value))
            } else {
                Err(Error::Config(format!(
                    "tracking {what} must be a positive number of seconds up to a year, not {value}"
                )))
            }
        };
        let mut options = TrackingOptions::default();
        if let Some(window) = self.window {
            options.window = window;
        }
        if let Some(capacity) = self.pending_capacity {
            options.pending_capacity = capacity;
        }
        if let Some(s) = self.window_seconds {
            options.window_duration = seconds("window_seconds", s)?;
        }
        if let Some(s) = self.pending_ttl_seconds {
            options.pending_ttl = seconds("pending_ttl_seconds", s)?;
        }
        Ok(options)
    }
}

/// `inference_log = true` or a table of [`InferenceLogOptions`].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum InferenceLogSetting {
    /// `true` (default options) or `false`.
    On(bool),
    /// The log on, with these options.
    Options(InferenceLogOptions),
}

impl EngineOptions {
    /// The options parsed from a JSON document; `null` (no options given) is every default.
    ///
    /// # Errors
    ///
    /// `json` when the document does not have the options' shape (unknown keys are refused).
    pub fn from_json(value: serde_json::Value) -> Result<EngineOptions> {
        if value.is_null() {
            return Ok(EngineOptions::default());
        }
        serde_json::from_value(value).map_err(|e| Error::json("engine options", e))
    }

    /// A builder over `home` with these options applied (validated by [`EngineBuilder::build`]).
    ///
    /// # Errors
    ///
    /// `config` for a value that cannot apply (a zero or inverted replica range, a bad state URL).
    pub fn builder(self, home: &Path) -> Result<EngineBuilder> {
        let mut runtime = RuntimeOptions::default();
        if let Some(path) = self.ort_library {
            runtime = runtime.with_dylib_path(path);
        }
        if let Some(n) = self.sessions_per_model {
            runtime = runtime.with_sessions_per_model(n);
        }
        let mut builder = EngineBuilder::new(home)
            .with_runtime_options(runtime)
            .with_fusion(self.fusion.unwrap_or(true))
            .with_native(self.native.unwrap_or(true));
        match self.tracking {
            Some(TrackingSetting::On(false)) => builder = builder.without_tracking(),
            Some(TrackingSetting::Options(table)) => builder = builder.with_tracking(table.options()?),
            Some(TrackingSetting::On(true)) | None => {}
        }
        if self.persistence == Some(false) {
            builder = builder.without_persistence();
        }
        if self.synchronous_refits == Some(true) {
            builder = builder.with_synchronous_refits();
        }
        if let Some(capacity) = self.cache_capacity {
            let ttl = duration_from_ms("cache_ttl_ms", self.cache_ttl_ms.unwrap_or(1000.0))?;
            builder = builder.with_prediction_cache(CacheOptions { capacity, ttl, ..Default::default() });
        } else if self.cache_ttl_ms.is_some() {
            return Err(Error::Config("cache_ttl_ms is set but there is no cache (set cache_capacity)".into()));
        }
        if let Some(options) = self.default_model {
            builder = builder.with_default_model_options(options);
        }
        for (name, options) in self.models.unwrap_or_default() {
            builder = builder.with_model_options(name, options);
        }
        if let Some(bytes) = self.memory_budget_bytes {
            builder = builder.with_memory_budget(bytes);
        }
        if let Some(url) = &self.state {
            builder = builder.with_state(StateUrl::parse(url)?);
        }
        match self.inference_log {
            Some(InferenceLogSetting::On(true)) => builder = builder.with_inference_log(InferenceLogOptions::default()),
            Some(InferenceLogSetting::Options(options)) => builder = builder.with_inference_log(options),
            Some(InferenceLogSetting::On(false)) | None => {}
        }
        Ok(builder)
    }
}
