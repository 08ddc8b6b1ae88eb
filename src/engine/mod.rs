//! [`InferenceEngine`]: loads ensembles from the quorum home and serves predictions from many threads.
//!
//! The rooms of the engine, each a file:
//! - `mod.rs` (here): the engine, its shared state, accessors and the outcome path;
//! - `builder.rs`: [`EngineBuilder`], where every option is validated once;
//! - `loaded.rs`: `LoadedEnsemble`, one ensemble version with its models loaded;
//! - `load.rs`: creating, loading and hot-swapping ensembles, sharing loaded models;
//! - `route.rs`: an ensemble's slot (its current load) and, during an experiment, each request's arm;
//! - `member.rs`: a loaded model (replicas, queue, breaker, injected [`Fault`]) and its output check;
//! - `fused.rs`: the fusion probe at load and the one ONNX Runtime call of a fused ensemble;
//! - `handle.rs`: [`EnsembleHandle`], the public ways to predict;
//! - `pipeline.rs`: one request's way through cache → members (inline, fused or queued) → fallbacks
//!   → combination → tracking → settle (cache, last good, stale);
//! - `background.rs`: refits, state flushes, autoscaling and the memory budget, off the request path;
//! - `experiment.rs`: A/B experiments: starting, crediting outcomes, applying decisions, guardrails;
//! - `counters.rs`: live counters per ensemble and per model version (atomic adds on the request path);
//! - `telemetry.rs`: [`InferenceEngine::metrics_text`], the alerts' snapshot and actions;
//! - `registry_handle.rs`: [`RegistryHandle`], a registry on its own or an engine's (what the bindings' `Registry` wraps).
//!
//! The path of one prediction is in ARCHITECTURE.md.

mod background;
mod builder;
mod coalesce;
mod counters;
mod experiment;
mod fused;
mod handle;
mod lease;
mod load;
mod loaded;
mod member;
#[cfg(feature = "ndarray")]
mod ndarray;
mod pipeline;
mod registry_handle;
mod route;
mod shared;
mod telemetry;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Instant;

pub use builder::{
    AutoscaleSettings, EngineBuilder, EngineOptions, InferenceLogSetting, TrackingSetting, TrackingTable,
};
pub use handle::{CurrentWeights, EnsembleHandle, FusionStatus, ResolvedRow};
pub use member::Fault;
pub use registry_handle::RegistryHandle;
pub use shared::SharedStatus;

use crate::breaker::{BreakerOptions, BreakerState};
use crate::cache::{CacheStats, PredictionCache};
use crate::ensemble::EnsembleStore;
use crate::error::{Error, Result};
use crate::features::{Batch, Features};
use crate::prediction::{BatchPrediction, Prediction};
use crate::registry::{ModelMetadata, ModelRegistration, Registry};
use crate::replicas::{ModelOptions, ReplicaStatus};
use crate::runtime::Runtime;
use crate::state::inference_log::InferenceLog;
use crate::state::{InferenceLogStats, PersistOptions, StateStore};
use crate::tracking::{DriftEvent, EnsembleMetrics, Tracker};
use background::Background;
use member::LoadedModel;
use route::EnsembleSlot;

/// Loaded models, shared by the ensembles that use them, and injected faults.
#[derive(Default)]
struct Models {
    /// Weak: a model lives as long as a loaded ensemble (or a running prediction) holds it, so a
    /// version that a hot swap or a new ensemble version left unused is released with its sessions.
    loaded: HashMap<(String, u32), Weak<LoadedModel>>,
    faults: HashMap<String, Option<Fault>>,
    /// Models an alert sent to their fallbacks (versions loaded later are sent too).
    forced_fallback: std::collections::HashSet<String>,
}

impl Models {
    fn live(&self) -> Vec<Arc<LoadedModel>> {
        self.loaded.values().filter_map(Weak::upgrade).collect()
    }
}

/// What every clone of an engine shares.
struct EngineInner {
    home: PathBuf,
    registry: Registry,
    ensemble_store: EnsembleStore,
    runtime: Runtime,
    models: Mutex<Models>,
    ensembles: RwLock<HashMap<String, Arc<EnsembleSlot>>>,
    /// Held while an ensemble not loaded yet is loaded by name (see `ensemble`).
    loading: Mutex<()>,
    tracker: Option<Tracker>,
    next_request_id: AtomicU64,
    last_history: Mutex<Instant>,
    state: Option<(Arc<StateStore>, PersistOptions)>,
    /// The inference log's producer side, when logging is on.
    inference_log: Option<InferenceLog>,
    /// The shared outcome log and change feed, when the state is shared (PostgreSQL).
    shared: Option<Arc<shared::Shared>>,
    synchronous_refits: bool,
    background: Arc<Background>,
    breaker: BreakerOptions,
    cache: Option<PredictionCache>,
    default_model_options: ModelOptions,
    model_options: HashMap<String, ModelOptions>,
    memory_budget: Option<u64>,
    fusion: bool,
    /// Whether models whose graphs compile run on their native plans.
    native: bool,
    /// See [`EngineBuilder::with_async_inline_limit`].
    async_inline_limit: std::time::Duration,
    /// Experiments this engine has taken up (running, paused or ended since).
    experiments: Mutex<Vec<Arc<route::RunningExperiment>>>,
    /// Failed background writes to the state store (a metric; the next flush retries).
    flush_errors: crate::telemetry::Counter,
    /// NVML, when a GPU provider is configured and libnvidia-ml answers (feature `nvml`).
    gpus: Option<crate::telemetry::Gpus>,
}

impl EngineInner {
    /// How `model` is served: its own options, or the engine's default.
    fn options_of(&self, model: &str) -> &ModelOptions {
        self.model_options.get(model).unwrap_or(&self.default_model_options)
    }

    fn lock_models(&self) -> MutexGuard<'_, Models> {
        self.models.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_request_ids(&self, count: usize) -> u64 {
        self.next_request_id.fetch_add(count as u64, Ordering::Relaxed)
    }

    fn tracker(&self) -> Result<&Tracker> {
        self.tracker.as_ref().ok_or(Error::TrackingDisabled)
    }
}

/// Runs ensembles of ONNX models in-process.
///
/// `Clone` is an `Arc` increment: clone it into every thread that predicts. All methods take `&self`
/// and are safe to call concurrently; each model keeps a pool of ONNX Runtime sessions so concurrent
/// predictions do not serialise on one lock.
///
/// ```
/// use quorum::{EnsembleConfig, Features, InferenceEngine, MemberSpec, ModelRegistration};
///
/// # fn main() -> quorum::Result<()> {
/// # let home = tempfile::tempdir().map_err(|e| quorum::Error::io("tempdir", e))?;
/// let engine = InferenceEngine::builder(home.path()).build()?;
/// engine.register_model(ModelRegistration::new("sentiment", "examples/models/sentiment.onnx",
///     ["vix", "vix_chg_1d", "vix_chg_5d", "vix_rel_20d", "vix_zscore_60d"]))?;
/// engine.create_ensemble(EnsembleConfig::new("market", ["sentiment".parse::<MemberSpec>()?]))?;
///
/// let worker = engine.clone(); // the same engine, for another thread
/// let features = Features::new().with("vix", 13.5).with("vix_chg_1d", -0.02).with("vix_chg_5d", 0.05)
///     .with("vix_rel_20d", 0.01).with("vix_zscore_60d", -0.4);
/// let prediction = std::thread::spawn(move || worker.predict("market", &features)).join().unwrap()?;
/// assert_eq!(prediction.ensemble.as_str(), "market");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct InferenceEngine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for InferenceEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceEngine").field("home", &self.inner.home).finish_non_exhaustive()
    }
}

impl InferenceEngine {
    /// Starts building an engine over the quorum home `home` (created if absent).
    pub fn builder(home: impl AsRef<Path>) -> EngineBuilder {
        EngineBuilder::new(home.as_ref())
    }

    /// The home directory the engine serves.
    pub fn home(&self) -> &Path {
        &self.inner.home
    }

    /// The model registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The registry with the engine behind it: a default version set through it is hot-swapped in.
    pub fn registry_handle(&self) -> RegistryHandle {
        RegistryHandle::Engine(self.clone())
    }

    /// The ensemble configurations.
    pub fn ensemble_store(&self) -> &EnsembleStore {
        &self.inner.ensemble_store
    }

    /// The ONNX Runtime environment the engine's sessions use.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// Whether models whose graphs compile run on their native plans (see
    /// [`EngineBuilder::with_native`]).
    pub fn native_enabled(&self) -> bool {
        self.inner.native
    }

    /// Registers a model version (see [`Registry::register`]).
    ///
    /// # Errors
    ///
    /// As [`Registry::register`].
    pub fn register_model(&self, registration: ModelRegistration) -> Result<ModelMetadata> {
        self.inner.registry.register(&self.inner.runtime, registration)
    }

    /// Predicts one request with the named ensemble.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown ensemble; otherwise as [`EnsembleHandle::predict`].
    pub fn predict(&self, ensemble: &str, features: &Features) -> Result<Prediction> {
        self.ensemble(ensemble)?.predict(features)
    }

    /// Predicts every row of `batch`; each member runs once for the whole batch.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown ensemble; otherwise as [`EnsembleHandle::predict_batch`].
    pub fn predict_batch(&self, ensemble: &str, batch: &Batch<'_>) -> Result<BatchPrediction> {
        self.ensemble(ensemble)?.predict_batch(batch)
    }

    /// Joins a realised outcome with the prediction `request_id` (classification: 0 or 1).
    ///
    /// # Errors
    ///
    /// `tracking_disabled` when tracking is off; `not_found` for an unknown (or expired) request id; `outcome` for an
    /// outcome that is not finite, or not 0 or 1 for classification.
    pub fn record_outcome(&self, request_id: u64, outcome: f64) -> Result<()> {
        self.record_outcome_valued(request_id, outcome, None)
    }

    /// [`InferenceEngine::record_outcome`] with the outcome's business value (for example the
    /// trade's P&L; higher is better), which an experiment with the `business` metric compares.
    ///
    /// # Errors
    ///
    /// As [`InferenceEngine::record_outcome`].
    pub fn record_outcome_valued(&self, request_id: u64, outcome: f64, business_value: Option<f64>) -> Result<()> {
        if let Some(v) = business_value.filter(|v| !v.is_finite()) {
            return Err(Error::Outcome(format!("business value {v} for request {request_id} is not finite")));
        }
        if let Some(shared) = &self.inner.shared {
            return self.record_outcome_shared(shared, request_id, outcome, business_value);
        }
        let scored = self.inner.tracker()?.record_outcome(request_id, outcome)?;
        let key = &scored.key;
        let learning = &key.learning;
        if learning.learn(scored.regime, &scored.members, outcome) {
            if self.inner.synchronous_refits {
                learning.refit();
            } else {
                self.inner.background.submit(Arc::clone(learning));
            }
        }
        self.inner.credit_experiment(
            request_id,
            &key.name,
            key.version,
            scored.prediction,
            outcome as f32,
            business_value,
        )
    }

    /// Tracked metrics of the ensemble's most recent tracked version.
    ///
    /// # Errors
    ///
    /// `tracking_disabled` when tracking is off; `not_found` for an ensemble with no tracked version.
    pub fn metrics(&self, ensemble: &str) -> Result<EnsembleMetrics> {
        self.inner
            .tracker()?
            .metrics(ensemble)
            .pop()
            .ok_or_else(|| Error::not_found("tracked outcomes for ensemble", ensemble))
    }

    /// Whether outcome tracking is on.
    pub fn tracking_enabled(&self) -> bool {
        self.inner.tracker.is_some()
    }

    /// Members whose loss drifted upwards (Page-Hinkley), the most recent 1024, oldest first.
    pub fn drift_events(&self) -> Vec<DriftEvent> {
        self.inner.tracker.as_ref().map(Tracker::drift_events).unwrap_or_default()
    }

    /// Writes learnt weights and tracked metrics to the state database now (the engine also does it
    /// every `flush_interval` and when its last clone is dropped).
    ///
    /// # Errors
    ///
    /// `io`, `state_lost` or `locked` when the state store cannot be written.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// The state database, when persistence is on.
    pub fn state_store(&self) -> Option<&StateStore> {
        self.inner.state.as_ref().map(|(s, _)| &**s)
    }

    /// The inference log's counters, when logging is on.
    pub fn inference_log_stats(&self) -> Option<InferenceLogStats> {
        self.inner.inference_log.as_ref().map(InferenceLog::stats)
    }

    /// Hit and miss counts of the prediction cache, when there is one.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.inner.cache.as_ref().map(PredictionCache::stats)
    }

    /// The replica pools of every loaded version of `model` (all models when `None`).
    pub fn replicas(&self, model: Option<&str>) -> Vec<ReplicaStatus> {
        let loads = self.inner.loads();
        let mut list: Vec<ReplicaStatus> = self
            .inner
            .lock_models()
            .live()
            .into_iter()
            .filter(|m| model.is_none_or(|name| &*m.name == name))
            .map(|m| {
                let relaxed = std::sync::atomic::Ordering::Relaxed;
                let (batches, batched_rows) = (m.batches.load(relaxed), m.batched_rows.load(relaxed));
                // The queues of the loaded ensembles the model version is a member of.
                let queued = loads
                    .iter()
                    .filter(|l| l.members.iter().any(|x| Arc::ptr_eq(&x.model, &m)))
                    .map(|l| l.queues.queued())
                    .sum();
                let pool = m.pool.status();
                // A native model's calls never reach its pool.
                let calls = if m.native.is_some() { m.telemetry.calls.get() } else { pool.calls };
                let executor = m.executor.clone();
                ReplicaStatus { queued, batches, batched_rows, calls, executor, ..pool }
            })
            .collect();
        list.sort_by(|a, b| (&a.model, a.version).cmp(&(&b.model, b.version)));
        list
    }

    /// Drops every replica of `model` that is idle now (it loads again on its next call); returns how
    /// many were dropped. A version with a call running is left alone.
    pub fn unload_model(&self, model: &str) -> usize {
        let models: Vec<Arc<LoadedModel>> =
            self.inner.lock_models().live().into_iter().filter(|m| &*m.name == model).collect();
        models.iter().map(|m| m.pool.unload()).sum()
    }

    /// Makes every call to the loaded model `model` (all versions) fail, panic or slow down, or
    /// (`None`) behave again. For tests of degraded operation.
    pub fn inject_fault(&self, model: &str, fault: Option<Fault>) {
        let mut models = self.inner.lock_models();
        // Kept for versions loaded later, too.
        models.faults.insert(model.to_string(), fault);
        for loaded in models.live().into_iter().filter(|m| &*m.name == model) {
            loaded.inject(fault);
        }
    }

    /// The circuit breaker state of each loaded version of `model`.
    pub fn breaker_state(&self, model: &str) -> Vec<(u32, BreakerState)> {
        let models = self.inner.lock_models();
        let mut states: Vec<(u32, BreakerState)> =
            models.live().iter().filter(|m| &*m.name == model).map(|m| (m.meta.version, m.breaker.state())).collect();
        states.sort_by_key(|s| s.0);
        states
    }
}
