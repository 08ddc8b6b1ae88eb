//! [`InferenceEngine`]: loads ensembles from the quorum home and serves predictions from many threads.
//!
//! The path of one prediction: look up the loaded ensemble (one read lock, or none through an
//! [`EnsembleHandle`]) → fill one dense row in the ensemble's schema order, checking NaN/±Inf → run
//! every member in one call of the ensemble's fused model when it has one (see [`crate::fusion`]),
//! otherwise for each member check a session out of its pool, gather its columns into the session's
//! reusable input buffer and run ONNX Runtime (no lock held) → combine the answers with the strategy →
//! log the prediction for outcome tracking → return [`Prediction`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ort::session::SessionInputValue;
use ort::value::TensorRef;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::adaptive::{Learning, Published, RegimeWeights};
use crate::batching::{BatchModel, Batcher, BatchingOptions, Completion, MemberResult};
use crate::breaker::{BreakerOptions, BreakerState, CircuitBreaker};
use crate::cache::{CacheKey, CacheOptions, CacheStats, PredictionCache};
use crate::ensemble::{EnsembleConfig, EnsembleStore};
use crate::error::{Error, Result};
use crate::features::{gather, Batch, Features, Schema};
use crate::fusion::{self, FusedSession, FusedSessions, FusionMember, FUSION_MAX_BYTES};
use crate::meta::FitWindow;
use crate::persist::{PersistOptions, StateStore, WeightsRow};
use crate::regime::Regime;
use crate::registry::{self, ModelMetadata, ModelRegistration, Registry, Task, VersionSpec};
use crate::replicas::{
    self, ExecutionProvider, LoadPolicy, ModelOptions, ReplicaPool, ReplicaStatus, RunOutcome, ScaleDecision,
};
use crate::runtime::{Runtime, RuntimeOptions};
use crate::strategy::{normalise_weights, MajorityVote, SoftVote, Stacking, Strategy, StrategyKind};
use crate::tracking::{DriftEvent, EnsembleKey, EnsembleMetrics, Tracker, TrackingOptions};

/// One member's part in a prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelContribution {
    #[serde(skip)]
    pub model: Arc<str>,
    pub version: u32,
    /// The member's own prediction; `None` when it failed.
    pub prediction: Option<f32>,
    /// The weight it carried in this prediction (renormalised over the members that answered); for
    /// stacking, its coefficient on the member's logit.
    pub weight: f32,
    /// Wall time of the member's ONNX Runtime call (for a batch: the whole batch's call).
    pub latency_ms: f64,
    /// Adaptive strategies: the member's recent squared error, which its weight follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_loss: Option<f32>,
    /// Why the member did not answer itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The fallback model whose prediction stood in for the member's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Arc<str>>,
}

/// The answer to one request (one row).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub request_id: u64,
    pub ensemble: Arc<str>,
    pub ensemble_version: u32,
    pub strategy: &'static str,
    /// Classification: probability of the positive class (or vote share, for majority voting).
    /// Regression: the predicted value.
    pub prediction: f32,
    /// See [`crate::strategy`] for the definition.
    pub confidence: f32,
    /// Classification only: 1 when `prediction ≥ 0.5`, else 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<u8>,
    #[serde(serialize_with = "contributions_by_model")]
    pub model_contributions: Vec<ModelContribution>,
    /// The market regime in force, for ensembles with regimes configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regime: Option<Regime>,
    /// Stacking and blending: the rows their current fit was made on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit_window: Option<FitWindow>,
    /// Increases whenever learning changes the weights.
    pub weights_epoch: u64,
    /// True when a member failed, was skipped by its circuit breaker, or was replaced by its fallback.
    pub degraded: bool,
    /// Served from the prediction cache (a new request id; the rest as first computed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// The ensemble lost its quorum and this is the last good prediction for the same features
    /// (ensembles with `serve_stale`); `degraded` is set too.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// Every member ran in one call of the ensemble's fused model (see [`EnsembleHandle::fusion`]);
    /// each member's `latency_ms` is then that call's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fused: bool,
    /// Members that gave no prediction (neither they nor a fallback answered).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Arc<str>>,
    /// Wall time inside the engine (for a batch: the whole batch).
    pub latency_ms: f64,
}

fn contributions_by_model<S: Serializer>(list: &[ModelContribution], s: S) -> std::result::Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(list.len()))?;
    for c in list {
        map.serialize_entry(&*c.model, c)?;
    }
    map.end()
}

/// One request's features in an ensemble's schema order, tied to the load they were resolved
/// against (see [`EnsembleHandle::resolve_row`]).
pub struct ResolvedRow {
    ens: Arc<LoadedEnsemble>,
    values: Vec<f32>,
}

impl std::fmt::Debug for ResolvedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedRow").field("ensemble", &self.ens.config.name).field("values", &self.values).finish()
    }
}

impl ResolvedRow {
    /// The values in the ensemble's feature order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

/// See [`EnsembleHandle::fusion`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FusionStatus {
    pub fused: bool,
    /// Fused sessions built so far (they grow on demand up to the members' largest replica count).
    pub sessions: usize,
    /// Why the members are not fused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A model with its replicas, its request queue and its circuit breaker.
struct LoadedModel {
    name: Arc<str>,
    meta: ModelMetadata,
    pool: ReplicaPool,
    /// Serves queued requests: batched synchronous callers and every asynchronous one.
    batcher: Arc<Batcher>,
    /// Whether synchronous single-row callers queue under contention (batching configured).
    batching: bool,
    breaker: CircuitBreaker,
    /// Fault injection for tests (see [`Fault`]): 0 none, 1 fail, 2 panic, 3 slow.
    fault: AtomicU8,
    fault_delay_us: AtomicU64,
}

/// A fault injected into a model (for tests of degraded operation): every call to the model fails,
/// panics, or sleeps first, until cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Fail,
    Panic,
    Slow(Duration),
}

/// The rows a model call runs on: the ensemble's dense rows (the member picks its columns), or rows
/// a queue's dispatcher selects once a replica is in hand (so that requests whose deadline passed
/// while it waited are refused, not run) and writes into the replica's input buffer.
enum Rows<'a> {
    Schema { dense: &'a [f32], width: usize, indices: &'a [usize] },
    Selected(&'a mut dyn FnMut(&mut Vec<f32>) -> usize),
}

impl Drop for LoadedModel {
    fn drop(&mut self) {
        self.batcher.close();
    }
}

impl LoadedModel {
    fn load(
        runtime: &Runtime,
        registry: &Registry,
        meta: ModelMetadata,
        breaker: BreakerOptions,
        options: &ModelOptions,
    ) -> Result<LoadedModel> {
        let range = options.validate(runtime.options().sessions_per_model())?;
        let width = meta.features.len();
        let pool = ReplicaPool::new(runtime, registry, meta.clone(), options, range)?;
        // Without batching, queued (asynchronous) requests still go through the queue, one row per call.
        let batching = options.batching.unwrap_or(BatchingOptions { max_batch: 1, ..BatchingOptions::default() });
        Ok(LoadedModel {
            name: Arc::from(meta.name.as_str()),
            batcher: Arc::new(Batcher::new(&meta.name, width, batching)),
            batching: options.batching.is_some(),
            meta,
            pool,
            breaker: CircuitBreaker::new(breaker),
            fault: AtomicU8::new(0),
            fault_delay_us: AtomicU64::new(0),
        })
    }

    /// [`LoadedModel::run`] behind the model's circuit breaker, with injected faults applied and a
    /// panic turned into this call's failure (the replica goes back to its pool while unwinding).
    /// Writes row `r`'s prediction to `out[r * stride + member]`, `stride = out.len() / count`.
    fn call(&self, rows: Rows<'_>, count: usize, out: &mut [f32], member: usize) -> Result<usize> {
        let unavailable = |reason: String| Error::MemberUnavailable { model: self.meta.name.clone(), reason };
        let Some(permit) = self.breaker.try_acquire() else {
            return Err(unavailable("its circuit breaker is open".into()));
        };
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            match self.fault.load(Ordering::Relaxed) {
                1 => return Err(unavailable("injected failure".into())),
                2 => panic!("injected panic in model {}", self.meta.name),
                _ => {}
            }
            self.run(rows, count, out, member, started)
        }))
        .unwrap_or_else(|_| Err(unavailable("it panicked".into())));
        self.breaker.record(permit, started.elapsed(), result.is_err());
        result
    }

    fn timed_out(&self, timeout: Duration) -> Error {
        Error::MemberUnavailable {
            model: self.meta.name.clone(),
            reason: format!("timed out after {:.3} ms", timeout.as_secs_f64() * 1e3),
        }
    }

    fn inject(&self, fault: Option<Fault>) {
        let (code, delay) = match fault {
            None => (0, 0),
            Some(Fault::Fail) => (1, 0),
            Some(Fault::Panic) => (2, 0),
            Some(Fault::Slow(d)) => (3, d.as_micros() as u64),
        };
        self.fault_delay_us.store(delay, Ordering::Relaxed);
        self.fault.store(code, Ordering::Relaxed);
    }

    /// Runs the model once on `count` rows on an idle replica, under its timeout.
    /// Returns the rows run (`count`, or what a `Selected` dispatcher chose).
    fn run(&self, rows: Rows<'_>, count: usize, out: &mut [f32], member: usize, started: Instant) -> Result<usize> {
        let stride = if matches!(rows, Rows::Selected(_)) { 1 } else { out.len() / count };
        let mut replica = self.pool.checkout(started)?;
        if self.fault.load(Ordering::Relaxed) == 3 {
            // An injected slow call holds its replica, as a slow model would, and obeys the timeout.
            let delay = Duration::from_micros(self.fault_delay_us.load(Ordering::Relaxed));
            match self.pool.timeout() {
                Some(timeout) if delay > timeout => {
                    std::thread::sleep(timeout);
                    return Err(self.timed_out(timeout));
                }
                _ => std::thread::sleep(delay),
            }
        }
        let columns = self.meta.features.len();
        let output = &self.meta.output;
        let model = &self.meta.name;
        let outcome = replica.run(self.pool.timeout(), |session, input, options| -> Result<usize> {
            let count = match rows {
                Rows::Schema { dense, width, indices } => {
                    gather(dense, width, indices, input);
                    count
                }
                Rows::Selected(select) => select(input),
            };
            if count == 0 {
                return Ok(0);
            }
            let tensor = TensorRef::from_array_view(([count, columns], input.as_slice()))?;
            let outputs = match options {
                Some(options) => session.run_with_options(ort::inputs![tensor], options)?,
                None => session.run(ort::inputs![tensor])?,
            };
            let value = outputs.get(&output.name).ok_or_else(|| Error::OutputShape {
                model: model.clone(),
                expected: format!("an output named {:?}", output.name),
                found: "no such output".into(),
            })?;
            let column = registry::read_output_column(model, value, output, count)?;
            for row in 0..count {
                let v = column.get(row);
                if !v.is_finite() {
                    return Err(Error::OutputShape {
                        model: model.clone(),
                        expected: "finite predictions".into(),
                        found: format!("{v} in row {row}"),
                    });
                }
                out[row * stride + member] = v;
            }
            Ok(count)
        });
        match outcome {
            RunOutcome::Done(result) => result,
            RunOutcome::TimedOut => Err(self.timed_out(self.pool.timeout().unwrap_or_default())),
        }
    }
}

impl BatchModel for LoadedModel {
    fn run_selected(&self, select: &mut dyn FnMut(&mut Vec<f32>) -> usize, out: &mut [f32]) -> Result<usize> {
        self.call(Rows::Selected(select), out.len(), out, 0)
    }
}

struct Member {
    model: Arc<LoadedModel>,
    /// The member's features as positions in the ensemble schema.
    indices: Vec<usize>,
    /// A model that stands in when this one fails or its breaker is open, with its feature positions.
    fallback: Option<(Arc<LoadedModel>, Vec<usize>)>,
}

/// An ensemble resolved against the registry, with its models loaded.
struct LoadedEnsemble {
    /// Unique per load: pins the ensemble version and its members' versions in cache keys.
    id: u64,
    config: EnsembleConfig,
    key: EnsembleKey,
    task: Task,
    schema: Schema,
    members: Vec<Member>,
    /// Some member batches: synchronous single rows go through the queues under contention.
    batched: bool,
    /// The last good prediction per feature row, when the ensemble serves stale answers below quorum.
    last_good: Option<Arc<LastGood>>,
    /// The members as one fused model, or why they are not.
    fused: std::result::Result<FusedSessions, String>,
    /// A hash of the schema's feature names (see [`EnsembleHandle::schema_id`]).
    schema_id: u64,
}

/// Last good predictions keyed by the exact bits of the dense feature row.
type LastGood = quick_cache::sync::Cache<Box<[u32]>, Arc<Prediction>>;

/// How many rows' last good predictions an ensemble with `serve_stale` keeps.
const LAST_GOOD_ROWS: usize = 10_000;

/// The slot an ensemble's current load lives in; handles read it, a reload (hot swap) replaces it.
type EnsembleSlot = ArcSwap<LoadedEnsemble>;

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
}

/// How often the autoscaler looks at the pools, and how long a pool must be quiet before it shrinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoscaleSettings {
    pub interval: Duration,
    pub quiet_for: Duration,
}

impl Default for AutoscaleSettings {
    fn default() -> Self {
        AutoscaleSettings { interval: Duration::from_millis(100), quiet_for: Duration::from_secs(5) }
    }
}

impl EngineBuilder {
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
    /// [`EnsembleHandle::fusion`]). Off: every member is its own ONNX Runtime call, always.
    pub fn with_fusion(mut self, fuse: bool) -> Self {
        self.fusion = fuse;
        self
    }

    /// Keep learning state in memory only.
    pub fn without_persistence(mut self) -> Self {
        self.persistence = None;
        self
    }

    pub fn build(self) -> Result<InferenceEngine> {
        let registry = Registry::open(&self.home)?;
        let ensembles = EnsembleStore::open(&self.home)?;
        let runtime = Runtime::new(self.runtime)?;
        let tracker = self.tracking.map(Tracker::new).transpose()?;
        self.breaker.validate()?;
        let default_replicas = runtime.options().sessions_per_model();
        for options in self.model_options.values().chain([&self.default_model_options]) {
            options.validate(default_replicas)?;
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
        let state = match self.persistence {
            Some(options) => Some((StateStore::open(&self.home)?, options)),
            None => None,
        };
        let inner = Arc::new(EngineInner {
            home: self.home,
            registry,
            ensemble_store: ensembles,
            runtime,
            models: Mutex::new(Models::default()),
            ensembles: RwLock::new(HashMap::new()),
            tracker,
            next_request_id: AtomicU64::new(1),
            last_history: Mutex::new(Instant::now()),
            state,
            synchronous_refits: self.synchronous_refits,
            background: Arc::new(Background::default()),
            breaker: self.breaker,
            cache,
            default_model_options: self.default_model_options,
            model_options: self.model_options,
            memory_budget: self.memory_budget,
            fusion: self.fusion,
        });
        if scaling || inner.memory_budget.is_some() {
            spawn_housekeeping(Arc::downgrade(&inner), self.autoscale);
        }
        let flush_interval = inner.state.as_ref().map(|(_, o)| o.flush_interval);
        if flush_interval.is_some() || !inner.synchronous_refits {
            spawn_background(Arc::downgrade(&inner), Arc::clone(&inner.background), flush_interval);
        }
        Ok(InferenceEngine { inner })
    }
}

/// Work kept off the prediction and outcome paths: meta-learner refits and state flushes.
#[derive(Default)]
struct Background {
    state: Mutex<BackgroundState>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct BackgroundState {
    refits: Vec<Arc<Learning>>,
    closed: bool,
}

impl Background {
    fn lock(&self) -> std::sync::MutexGuard<'_, BackgroundState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn submit(&self, learning: Arc<Learning>) {
        let mut state = self.lock();
        if !state.refits.iter().any(|l| Arc::ptr_eq(l, &learning)) {
            state.refits.push(learning);
        }
        drop(state);
        self.wake.notify_one();
    }

    fn close(&self) -> Vec<Arc<Learning>> {
        let mut state = self.lock();
        state.closed = true;
        let pending = std::mem::take(&mut state.refits);
        drop(state);
        self.wake.notify_one();
        pending
    }
}

/// Autoscaling, the memory budget and dropping models no ensemble uses any more, every `interval`,
/// until the engine is dropped.
fn spawn_housekeeping(engine: Weak<EngineInner>, settings: AutoscaleSettings) {
    let spawned = std::thread::Builder::new().name("quorum-replicas".into()).spawn(move || {
        let mut quiet_since: HashMap<(String, u32), Instant> = HashMap::new();
        loop {
            std::thread::sleep(settings.interval);
            let Some(inner) = engine.upgrade() else { break };
            inner.housekeep(&mut quiet_since, settings.quiet_for);
        }
    });
    // Without the thread pools keep their size and nothing is unloaded; predictions still work.
    drop(spawned);
}

/// Runs refits as they are submitted and flushes state every `flush_interval`, until the engine is
/// dropped (the thread holds only a weak reference to it).
fn spawn_background(engine: Weak<EngineInner>, background: Arc<Background>, flush_interval: Option<Duration>) {
    let spawned = std::thread::Builder::new().name("quorum-background".into()).spawn(move || {
        let mut last_flush = Instant::now();
        loop {
            let refits = {
                let mut state = background.lock();
                if state.refits.is_empty() && !state.closed {
                    // Without flushes there is nothing to time: sleep until a refit or close wakes it
                    // (a zero timeout here once made the thread spin on a core).
                    state = match flush_interval {
                        Some(tick) => {
                            let wait = tick.saturating_sub(last_flush.elapsed());
                            background.wake.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0
                        }
                        None => background.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
                    };
                }
                if state.closed {
                    break;
                }
                std::mem::take(&mut state.refits)
            };
            for learning in refits {
                learning.refit();
            }
            if flush_interval.is_some_and(|tick| last_flush.elapsed() >= tick) {
                last_flush = Instant::now();
                let Some(inner) = engine.upgrade() else { break };
                // A failed flush is retried at the next tick; the changes stay marked.
                let _ = inner.flush();
            }
        }
    });
    // Without the thread, refits still run at drop time and state is written on drop and by `flush`.
    drop(spawned);
}

impl EngineInner {
    fn flush(&self) -> Result<()> {
        let (Some((store, options)), Some(tracker)) = (&self.state, &self.tracker) else { return Ok(()) };
        let history = {
            let mut last = self.last_history.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.elapsed() >= options.history_interval;
            if due {
                *last = Instant::now();
            }
            due
        };
        let (keys, mut flush) = tracker.take_changes(history);
        let mut flushed = Vec::new();
        for key in &keys {
            if let Some(snapshot) = key.learning.snapshot(&key.members, false) {
                flushed.push((Arc::clone(&key.learning), snapshot.epoch));
                flush.weights.push(WeightsRow {
                    ensemble: key.name.to_string(),
                    version: key.version,
                    strategy: snapshot.strategy.to_string(),
                    weights: snapshot.weights,
                    epoch: snapshot.epoch,
                    learner_state: Some(snapshot.state),
                });
            }
        }
        if let Err(e) = store.write(&flush) {
            // Keep the changes pending: the next flush writes them.
            tracker.mark_dirty(&keys);
            return Err(e);
        }
        for (learning, epoch) in flushed {
            learning.mark_flushed(epoch);
        }
        Ok(())
    }
}

impl EngineInner {
    fn housekeep(&self, quiet_since: &mut HashMap<(String, u32), Instant>, quiet_for: Duration) {
        let models = self.lock_models().live();
        quiet_since.retain(|key, _| models.iter().any(|m| m.meta.name == key.0 && m.meta.version == key.1));
        for model in models.iter().filter(|m| m.pool.scales()) {
            let (peak_waiting, p95) = model.pool.take_load();
            let now = Instant::now();
            let since = quiet_since.entry((model.meta.name.clone(), model.meta.version)).or_insert(now);
            match replicas::decide(peak_waiting, p95, model.pool.latency_target, *since, quiet_for) {
                ScaleDecision::Grow => {
                    *since = now;
                    let within_budget = self.memory_budget.is_none_or(|budget| {
                        models.iter().map(|m| m.pool.estimated_bytes()).sum::<u64>() + model.meta.size_bytes <= budget
                    });
                    if within_budget {
                        // A failed build leaves the pool as it was; the next tick tries again.
                        let _ = model.pool.grow();
                    }
                }
                ScaleDecision::Shrink => {
                    if model.pool.shrink() {
                        *since = now;
                    }
                }
                ScaleDecision::Hold => {}
            }
        }
        if let Some(budget) = self.memory_budget {
            enforce_budget(&models, budget);
        }
    }

    /// How `model` is served: its own options, or the engine's default.
    fn options_of(&self, model: &str) -> &ModelOptions {
        self.model_options.get(model).unwrap_or(&self.default_model_options)
    }

    fn lock_models(&self) -> std::sync::MutexGuard<'_, Models> {
        self.models.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Unloads idle models, least recently used first, until the estimate fits `budget`.
fn enforce_budget(models: &[Arc<LoadedModel>], budget: u64) {
    let mut total: u64 = models.iter().map(|m| m.pool.estimated_bytes()).sum();
    if total <= budget {
        return;
    }
    let mut by_age: Vec<(Instant, &Arc<LoadedModel>)> =
        models.iter().filter(|m| m.pool.estimated_bytes() > 0).map(|m| (m.pool.last_used(), m)).collect();
    by_age.sort_by_key(|(used, _)| *used);
    for (_, model) in by_age {
        if total <= budget {
            break;
        }
        let held = model.pool.estimated_bytes();
        if model.pool.unload() > 0 {
            total -= held;
        }
    }
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        for learning in self.background.close() {
            learning.refit();
        }
        let _ = self.flush();
    }
}

impl Models {
    fn live(&self) -> Vec<Arc<LoadedModel>> {
        self.loaded.values().filter_map(Weak::upgrade).collect()
    }
}

#[derive(Default)]
struct Models {
    /// Weak: a model lives as long as a loaded ensemble (or a running prediction) holds it, so a
    /// version that a hot swap or a new ensemble version left unused is released with its sessions.
    loaded: HashMap<(String, u32), Weak<LoadedModel>>,
    faults: HashMap<String, Option<Fault>>,
}

struct EngineInner {
    home: PathBuf,
    registry: Registry,
    ensemble_store: EnsembleStore,
    runtime: Runtime,
    /// Loaded models, shared by the ensembles that use them, and injected faults.
    models: Mutex<Models>,
    ensembles: RwLock<HashMap<String, Arc<EnsembleSlot>>>,
    tracker: Option<Tracker>,
    next_request_id: AtomicU64,
    last_history: Mutex<Instant>,
    state: Option<(StateStore, PersistOptions)>,
    synchronous_refits: bool,
    background: Arc<Background>,
    breaker: BreakerOptions,
    cache: Option<PredictionCache>,
    default_model_options: ModelOptions,
    model_options: HashMap<String, ModelOptions>,
    memory_budget: Option<u64>,
    fusion: bool,
}

/// Runs ensembles of ONNX models in-process.
///
/// `Clone` is an `Arc` increment: clone it into every thread that predicts. All methods take `&self`
/// and are safe to call concurrently; each model keeps a pool of ONNX Runtime sessions so concurrent
/// predictions do not serialise on one lock.
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
        EngineBuilder {
            home: home.as_ref().to_path_buf(),
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
        }
    }

    pub fn home(&self) -> &Path {
        &self.inner.home
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn ensemble_store(&self) -> &EnsembleStore {
        &self.inner.ensemble_store
    }

    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// Registers a model version (see [`Registry::register`]).
    pub fn register_model(&self, registration: ModelRegistration) -> Result<ModelMetadata> {
        self.inner.registry.register(&self.inner.runtime, registration)
    }

    /// Validates `config` against the registry, saves it as the ensemble's next version and loads it.
    pub fn create_ensemble(&self, config: EnsembleConfig) -> Result<EnsembleConfig> {
        config.validate()?;
        self.check_members(&config)?;
        let saved = self.inner.ensemble_store.save(config)?;
        let handle = self.load_config(saved.clone())?;
        if let Some((store, _)) = &self.inner.state {
            // The first row of the weight history: the configured weights.
            let loaded = handle.slot.load();
            let key = &loaded.key;
            if let Some(snapshot) = key.learning.snapshot(&key.members, true) {
                let row = WeightsRow {
                    ensemble: saved.name.clone(),
                    version: saved.version,
                    strategy: snapshot.strategy.to_string(),
                    weights: snapshot.weights,
                    epoch: snapshot.epoch,
                    learner_state: Some(snapshot.state),
                };
                store.write(&crate::persist::Flush { weights: vec![row], ..Default::default() })?;
            }
        }
        Ok(saved)
    }

    fn check_members(&self, config: &EnsembleConfig) -> Result<Vec<ModelMetadata>> {
        let metas = config
            .members
            .iter()
            .map(|m| self.inner.registry.resolve(&m.model, m.version))
            .collect::<Result<Vec<_>>>()?;
        let task = metas[0].task;
        if let Some(other) = metas.iter().find(|m| m.task != task) {
            return Err(Error::Config(format!(
                "ensemble {:?} mixes tasks: {} is {:?} but {} is {:?}",
                config.name, metas[0].name, task, other.name, other.task
            )));
        }
        config.strategy.check_task(task)?;
        for strategy in config.regime.iter().flat_map(|r| r.strategies.values()) {
            strategy.check_task(task)?;
        }
        Ok(metas)
    }

    /// (Re)loads the latest saved version of an ensemble and makes it the one predictions use.
    pub fn load_ensemble(&self, name: &str) -> Result<EnsembleHandle> {
        let config = self.inner.ensemble_store.get(name)?;
        self.load_config(config)
    }

    fn load_config(&self, config: EnsembleConfig) -> Result<EnsembleHandle> {
        // What a previous load of this version learnt must be on disk before it is read back.
        self.inner.flush()?;
        let metas = self.check_members(&config)?;
        let fallbacks = config
            .members
            .iter()
            .map(|m| m.fallback.as_ref().map(|f| self.inner.registry.resolve(f, VersionSpec::Default)).transpose())
            .collect::<Result<Vec<_>>>()?;
        if let Some(f) = fallbacks.iter().flatten().find(|f| f.task != metas[0].task) {
            return Err(Error::Config(format!(
                "fallback {} is {:?}, the ensemble is {:?}",
                f.name, f.task, metas[0].task
            )));
        }
        let schema = Schema::new(
            metas.iter().chain(fallbacks.iter().flatten()).map(|m| (m.name.as_str(), m.features.as_slice())),
            &config.non_finite,
        );
        let positions = |meta: &ModelMetadata| {
            meta.features
                .iter()
                .map(|f| schema.index_of(f).ok_or_else(|| Error::Config(format!("feature {f} missing from schema"))))
                .collect::<Result<Vec<_>>>()
        };
        let mut members = Vec::with_capacity(metas.len());
        for (meta, fallback) in metas.into_iter().zip(fallbacks) {
            let indices = positions(&meta)?;
            let fallback = match fallback {
                Some(f) => {
                    let indices = positions(&f)?;
                    Some((self.model(f)?, indices))
                }
                None => None,
            };
            members.push(Member { model: self.model(meta)?, indices, fallback });
        }
        let weights = normalise_weights(config.weights.as_deref(), members.len())?;
        let task = members[0].model.meta.task;
        let regime = match &config.regime {
            Some(r) => {
                let column = schema.index_of(&r.detector.feature).ok_or_else(|| {
                    Error::Config(format!(
                        "ensemble {:?}: the regime feature {:?} is not an input of any member",
                        config.name, r.detector.feature
                    ))
                })?;
                Some((r, column))
            }
            None => None,
        };
        // A reload of the same ensemble version (hot swap of a member's default version) keeps what it
        // learnt and its last good predictions; a new version starts from its configuration.
        let previous = self.loaded_ensemble(&config.name).filter(|p| {
            p.config.version == config.version
                && p.members.iter().map(|m| &m.model.name).eq(members.iter().map(|m| &m.model.name))
        });
        let learning = match &previous {
            Some(p) => Arc::clone(&p.key.learning),
            None => Arc::new(Learning::new(task, config.strategy, weights, regime, config.online, config.meta)),
        };
        let last_good = match &previous {
            Some(p) => p.last_good.clone(),
            None => config.serve_stale.then(|| Arc::new(LastGood::new(LAST_GOOD_ROWS))),
        };
        let fused = self.fuse_members(&members, &schema, &config.name);
        let schema_id = schema.fingerprint();
        static LOADS: AtomicU64 = AtomicU64::new(1);
        let loaded = Arc::new(LoadedEnsemble {
            id: LOADS.fetch_add(1, Ordering::Relaxed),
            key: EnsembleKey {
                name: Arc::from(config.name.as_str()),
                version: config.version,
                members: members.iter().map(|m| Arc::clone(&m.model.name)).collect(),
                member_versions: members.iter().map(|m| m.model.meta.version).collect(),
                learning,
            },
            task,
            schema,
            batched: members.iter().any(|m| m.model.batching),
            fused,
            schema_id,
            members,
            config,
            last_good,
        });
        if let (Some((store, _)), None) = (&self.inner.state, &previous) {
            // Resume what this ensemble version had learnt and tracked before a restart.
            let key = &loaded.key;
            if let Some((_, state)) = store.learner_state(&key.name, key.version)? {
                key.learning.restore(&state);
            }
            if let (Some(tracker), Some(state)) = (&self.inner.tracker, store.tracking_state(&key.name, key.version)?) {
                tracker.restore(key, &state);
            }
        }
        let slot = {
            let mut ensembles = self.inner.ensembles.write().unwrap_or_else(|p| p.into_inner());
            match ensembles.get(&loaded.config.name) {
                // Handles read the slot on every call: from now on they predict with this load, while
                // calls already running finish on the one they started with.
                Some(slot) => {
                    slot.store(loaded);
                    Arc::clone(slot)
                }
                None => {
                    let slot = Arc::new(ArcSwap::new(loaded));
                    ensembles.insert(slot.load().config.name.clone(), Arc::clone(&slot));
                    slot
                }
            }
        };
        Ok(EnsembleHandle { engine: self.clone(), slot })
    }

    /// The members as one fused model (see [`crate::fusion`]), checked against the members on probe
    /// rows; `Err` says why the ensemble runs its members one by one.
    fn fuse_members(
        &self,
        members: &[Member],
        schema: &Schema,
        ensemble: &str,
    ) -> std::result::Result<FusedSessions, String> {
        if !self.inner.fusion {
            return Err("fusion is off (EngineBuilder::with_fusion)".into());
        }
        if members.len() < 2 {
            return Err("one member: nothing to fuse".into());
        }
        for member in members {
            let meta = &member.model.meta;
            let options = self.inner.options_of(&meta.name);
            let reason = if options.timeout.is_some() {
                "has a per-call timeout"
            } else if !matches!(options.provider, ExecutionProvider::Cpu) {
                "runs on another execution provider than the CPU"
            } else if options.load == LoadPolicy::Lazy {
                "loads lazily"
            } else {
                continue;
            };
            return Err(format!("model {} {reason}", meta.name));
        }
        let total: u64 = members.iter().map(|m| m.model.meta.size_bytes).sum();
        if total > FUSION_MAX_BYTES {
            return Err(format!("the members' files total {total} bytes, over the fusion limit of {FUSION_MAX_BYTES}"));
        }
        let files = members
            .iter()
            .map(|m| self.inner.registry.read_verified(&m.model.meta))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| e.to_string())?;
        let parts: Vec<FusionMember<'_>> =
            members.iter().zip(&files).map(|(m, bytes)| FusionMember { bytes, output: &m.model.meta.output }).collect();
        let width = schema.names().len();
        let model = fusion::fuse(&parts)?;
        let most_replicas = members.iter().map(|m| m.model.pool.max).max().unwrap_or(1);
        let fused = FusedSessions::new(&self.inner.runtime, format!("{ensemble} (fused)"), model, most_replicas)
            .map_err(|e| e.to_string())?;
        // The proof that fusion changes nothing: the fused model and the members, each on its own,
        // give the same answers on probe rows (zeros, halves, ones, a ramp; non-negative, as rates and
        // volatilities are). A row some member cannot answer is skipped; at least one must compare.
        let probes: Vec<Vec<f32>> = [0.0f32, 0.5, 1.0]
            .iter()
            .map(|v| vec![*v; width])
            .chain(std::iter::once((0..width).map(|c| (c + 1) as f32 / width as f32).collect()))
            .collect();
        let m = members.len();
        let mut compared = 0;
        for probe in &probes {
            let mut separate = vec![f32::NAN; m];
            let answered = members.iter().enumerate().all(|(i, member)| {
                // Past the breaker: probing is not traffic and must not move its statistics.
                let rows_in = Rows::Schema { dense: probe, width, indices: &member.indices };
                let run = || member.model.run(rows_in, 1, &mut separate, i, Instant::now());
                matches!(catch_unwind(AssertUnwindSafe(run)), Ok(Ok(_)))
            });
            if !answered {
                continue;
            }
            let mut together = vec![f32::NAN; m];
            let mut session = fused.checkout().ok_or("no fused session")?;
            let ran = run_fused_session(&mut session, &fused, members, probe, 1, &mut together);
            fused.give_back(session);
            ran.map_err(|e| format!("probe run of the fused model: {e}"))?;
            for (i, (a, b)) in separate.iter().zip(&together).enumerate() {
                if (a - b).abs() > 1e-5 * a.abs().max(1.0) {
                    let model = &members[i].model.meta.name;
                    return Err(format!("the fused model answered {b} where member {model} answered {a}"));
                }
            }
            compared += 1;
        }
        if compared == 0 {
            return Err("no probe row that every member could answer".into());
        }
        Ok(fused)
    }

    fn loaded_ensemble(&self, name: &str) -> Option<Arc<LoadedEnsemble>> {
        self.inner.ensembles.read().unwrap_or_else(|p| p.into_inner()).get(name).map(|slot| slot.load_full())
    }

    /// Makes `version` the default version of `model` and moves every loaded ensemble that uses the
    /// model's default version onto it (a hot swap): new predictions use the new version at once,
    /// predictions already running finish on the old one, none is dropped or failed. Returns the
    /// ensembles reloaded.
    pub fn set_default_version(&self, model: &str, version: u32) -> Result<Vec<String>> {
        self.inner.registry.set_default(model, version)?;
        let affected: Vec<EnsembleConfig> = {
            let ensembles = self.inner.ensembles.read().unwrap_or_else(|p| p.into_inner());
            ensembles
                .values()
                .map(|slot| slot.load_full())
                .filter(|e| {
                    e.config.members.iter().any(|m| {
                        (m.model == model && m.version == VersionSpec::Default) || m.fallback.as_deref() == Some(model)
                    })
                })
                .map(|e| e.config.clone())
                .collect()
        };
        let mut reloaded = Vec::with_capacity(affected.len());
        for config in affected {
            reloaded.push(config.name.clone());
            self.load_config(config)?;
        }
        Ok(reloaded)
    }

    /// The replica pools of every loaded version of `model` (all models when `None`).
    pub fn replicas(&self, model: Option<&str>) -> Vec<ReplicaStatus> {
        let mut list: Vec<ReplicaStatus> = self
            .inner
            .lock_models()
            .live()
            .into_iter()
            .filter(|m| model.is_none_or(|name| &*m.name == name))
            .map(|m| {
                let (batches, batched_rows) = m.batcher.dispatched();
                ReplicaStatus { queued: m.batcher.queued(), batches, batched_rows, ..m.pool.status() }
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

    fn model(&self, meta: ModelMetadata) -> Result<Arc<LoadedModel>> {
        let key = (meta.name.clone(), meta.version);
        if let Some(model) = self.inner.lock_models().loaded.get(&key).and_then(Weak::upgrade) {
            return Ok(model);
        }
        // Loaded outside the lock: building sessions takes milliseconds.
        let options = self.inner.options_of(&meta.name);
        let model =
            Arc::new(LoadedModel::load(&self.inner.runtime, &self.inner.registry, meta, self.inner.breaker, options)?);
        let mut models = self.inner.models.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fault) = models.faults.get(&key.0) {
            model.inject(*fault);
        }
        models.loaded.retain(|_, m| m.strong_count() > 0);
        match models.loaded.get(&key).and_then(Weak::upgrade) {
            // Another thread loaded it meanwhile: share theirs.
            Some(theirs) => Ok(theirs),
            None => {
                models.loaded.insert(key, Arc::downgrade(&model));
                Ok(model)
            }
        }
    }

    /// A handle on a loaded ensemble (loading it from the home on first use). Predicting through a
    /// handle skips the by-name lookup.
    pub fn ensemble(&self, name: &str) -> Result<EnsembleHandle> {
        let found = self.inner.ensembles.read().unwrap_or_else(|p| p.into_inner()).get(name).map(Arc::clone);
        match found {
            Some(slot) => Ok(EnsembleHandle { engine: self.clone(), slot }),
            None => self.load_ensemble(name),
        }
    }

    /// Predicts one request with the named ensemble.
    pub fn predict(&self, ensemble: &str, features: &Features) -> Result<Prediction> {
        self.ensemble(ensemble)?.predict(features)
    }

    /// Predicts every row of `batch`; each member runs once for the whole batch.
    pub fn predict_batch(&self, ensemble: &str, batch: &Batch<'_>) -> Result<BatchPrediction> {
        self.ensemble(ensemble)?.predict_batch(batch)
    }

    /// Joins a realised outcome with the prediction `request_id` (classification: 0 or 1).
    pub fn record_outcome(&self, request_id: u64, outcome: f32) -> Result<()> {
        let tracker =
            self.inner.tracker.as_ref().ok_or_else(|| Error::Outcome("tracking is disabled for this engine".into()))?;
        let scored = tracker.record_outcome(request_id, outcome)?;
        let learning = &scored.key.learning;
        if learning.learn(scored.regime, &scored.members, outcome) {
            if self.inner.synchronous_refits {
                learning.refit();
            } else {
                self.inner.background.submit(Arc::clone(learning));
            }
        }
        Ok(())
    }

    /// Members whose loss drifted upwards (Page-Hinkley), the most recent 1024, oldest first.
    pub fn drift_events(&self) -> Vec<DriftEvent> {
        self.inner.tracker.as_ref().map(Tracker::drift_events).unwrap_or_default()
    }

    /// Writes learnt weights and tracked metrics to the state database now (the engine also does it
    /// every `flush_interval` and when its last clone is dropped).
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// The state database, when persistence is on.
    pub fn state_store(&self) -> Option<&StateStore> {
        self.inner.state.as_ref().map(|(s, _)| s)
    }

    /// Makes every call to the loaded model `model` (all versions) fail, panic or slow down, or
    /// (`None`) behave again. For tests of degraded operation.
    pub fn inject_fault(&self, model: &str, fault: Option<Fault>) {
        let mut models = self.inner.models.lock().unwrap_or_else(|p| p.into_inner());
        // Kept for versions loaded later, too.
        models.faults.insert(model.to_string(), fault);
        for loaded in models.live().into_iter().filter(|m| &*m.name == model) {
            loaded.inject(fault);
        }
    }

    /// The circuit breaker state of each loaded version of `model`.
    pub fn breaker_state(&self, model: &str) -> Vec<(u32, BreakerState)> {
        let models = self.inner.models.lock().unwrap_or_else(|p| p.into_inner());
        let mut states: Vec<(u32, BreakerState)> =
            models.live().iter().filter(|m| &*m.name == model).map(|m| (m.meta.version, m.breaker.state())).collect();
        states.sort_by_key(|s| s.0);
        states
    }

    /// Hit and miss counts of the prediction cache, when there is one.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.inner.cache.as_ref().map(PredictionCache::stats)
    }

    pub fn tracking_enabled(&self) -> bool {
        self.inner.tracker.is_some()
    }

    /// Tracked metrics of the ensemble's most recent tracked version.
    pub fn metrics(&self, ensemble: &str) -> Result<EnsembleMetrics> {
        let tracker =
            self.inner.tracker.as_ref().ok_or_else(|| Error::Config("tracking is disabled for this engine".into()))?;
        tracker.metrics(ensemble).pop().ok_or_else(|| Error::not_found("tracked outcomes for ensemble", ensemble))
    }

    fn next_request_ids(&self, count: usize) -> u64 {
        self.inner.next_request_id.fetch_add(count as u64, Ordering::Relaxed)
    }
}

/// A loaded ensemble. Cheap to clone. It follows the engine: when the ensemble is reloaded (a new
/// version, or a member's default version swapped by [`InferenceEngine::set_default_version`]), the
/// next call uses the new load while calls already running finish on the old one.
#[derive(Clone)]
pub struct EnsembleHandle {
    engine: InferenceEngine,
    slot: Arc<EnsembleSlot>,
}

impl std::fmt::Debug for EnsembleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ensemble = self.slot.load();
        f.debug_struct("EnsembleHandle")
            .field("name", &ensemble.config.name)
            .field("version", &ensemble.config.version)
            .finish_non_exhaustive()
    }
}

/// A single-row request after the cache was consulted.
enum Lookup {
    Hit(Prediction),
    Miss(Option<CacheKey>),
}

/// Members' answers to one queued row: each slot filled by an inline run or a dispatcher.
type MemberResults = Vec<Option<MemberResult>>;

impl EnsembleHandle {
    /// The configuration of the ensemble's current load.
    pub fn config(&self) -> EnsembleConfig {
        self.slot.load().config.clone()
    }

    /// Every feature the ensemble consumes, in the order [`EnsembleHandle::predict_row`] expects.
    /// A reload can change it (a new member version with other features): read it again after one.
    pub fn feature_names(&self) -> Vec<String> {
        self.slot.load().schema.names().to_vec()
    }

    /// Whether the ensemble's members run as one fused ONNX model, and why not when they do not.
    ///
    /// Fusion merges the members' graphs into one model that one ONNX Runtime call runs (see
    /// [`crate::fusion`]): for small models, whose cost is mostly ONNX Runtime's per-call overhead,
    /// it makes a prediction markedly faster. It is used for inline predictions (`predict`,
    /// `predict_row`, `predict_batch`) while every member's breaker is closed; queued (batched or
    /// asynchronous) requests, and any call the fused model fails, run the members one by one.
    pub fn fusion(&self) -> FusionStatus {
        let ens = self.slot.load();
        match &ens.fused {
            Ok(fused) => FusionStatus { fused: true, sessions: fused.sessions(), reason: None },
            Err(reason) => FusionStatus { fused: false, sessions: 0, reason: Some(reason.clone()) },
        }
    }

    pub fn task(&self) -> Task {
        self.slot.load().task
    }

    /// Predicts one request given by name.
    pub fn predict(&self, features: &Features) -> Result<Prediction> {
        let started = Instant::now();
        let ens = self.slot.load();
        let mut dense = Vec::with_capacity(ens.schema.names().len());
        ens.schema.fill_from_features(features, &mut dense)?;
        self.single(&ens, &dense, started, None)
    }

    /// [`EnsembleHandle::predict`] that must finish by `deadline` (see [`EnsembleHandle::predict_row_by`]).
    pub fn predict_by(&self, features: &Features, deadline: Instant) -> Result<Prediction> {
        let started = Instant::now();
        let ens = self.slot.load();
        let mut dense = Vec::with_capacity(ens.schema.names().len());
        ens.schema.fill_from_features(features, &mut dense)?;
        self.single(&ens, &dense, started, Some(deadline))
    }

    /// Resolves one request against the ensemble as loaded now, asking `value_of` for each feature by
    /// name (`Ok(None)`: missing; values checked as [`EnsembleHandle::predict`] checks them), for
    /// callers whose features live in a map of their own — the Python and Node bindings read their
    /// dict / object this way, without building [`Features`], then predict with
    /// [`EnsembleHandle::predict_resolved`] (which they can run without holding their interpreter lock).
    pub fn resolve_row(&self, value_of: impl FnMut(&str) -> Result<Option<f32>>) -> Result<ResolvedRow> {
        let ens = self.slot.load_full();
        let mut values = Vec::with_capacity(ens.schema.names().len());
        ens.schema.fill_from(value_of, &mut values)?;
        Ok(ResolvedRow { ens, values })
    }

    /// Identifies the feature order [`EnsembleHandle::feature_names`] gives now: it changes only when
    /// a reload changes the ensemble's features, so a caller that cached the names (to fill rows
    /// itself) can check them with [`EnsembleHandle::predict_row_for_schema`].
    pub fn schema_id(&self) -> u64 {
        self.slot.load().schema_id
    }

    /// [`EnsembleHandle::predict_row`] if the ensemble's features are still those of `schema_id`,
    /// checked and predicted on the same load; `Ok(None)` when they changed (fetch the names again).
    pub fn predict_row_for_schema(
        &self,
        schema_id: u64,
        row: &[f32],
        deadline: Option<Instant>,
    ) -> Result<Option<Prediction>> {
        let started = Instant::now();
        let ens = self.slot.load();
        if ens.schema_id != schema_id {
            return Ok(None);
        }
        let dense = ens.schema.dense_row(row)?;
        self.single(&ens, &dense, started, deadline).map(Some)
    }

    /// Predicts a [`ResolvedRow`] on the load it was resolved against (after a hot swap in between,
    /// on the old one, as a call already running would), by `deadline` if given.
    pub fn predict_resolved(&self, row: &ResolvedRow, deadline: Option<Instant>) -> Result<Prediction> {
        self.single(&row.ens, &row.values, Instant::now(), deadline)
    }

    /// Predicts one row given in [`EnsembleHandle::feature_names`] order (no name lookups).
    pub fn predict_row(&self, row: &[f32]) -> Result<Prediction> {
        let started = Instant::now();
        let ens = self.slot.load();
        let dense = ens.schema.dense_row(row)?;
        self.single(&ens, &dense, started, None)
    }

    /// [`EnsembleHandle::predict_row`] that must finish by `deadline`: a request that cannot (it
    /// would queue past it, or the deadline has passed) fails with [`Error::DeadlineExceeded`].
    pub fn predict_row_by(&self, row: &[f32], deadline: Instant) -> Result<Prediction> {
        let started = Instant::now();
        let ens = self.slot.load();
        let dense = ens.schema.dense_row(row)?;
        self.single(&ens, &dense, started, Some(deadline))
    }

    /// Predicts one row without blocking the calling executor: every member's call is queued to the
    /// model's dispatcher threads (batched with other queued rows when the model batches) and the
    /// future resolves when they answer. Runtime-agnostic (tokio, async-std, a hand-rolled executor).
    pub fn predict_row_async(&self, row: &[f32]) -> impl Future<Output = Result<Prediction>> + Send + 'static {
        self.predict_row_async_inner(row, None)
    }

    /// [`EnsembleHandle::predict_row_async`] with a deadline, as in [`EnsembleHandle::predict_row_by`].
    pub fn predict_row_async_by(
        &self,
        row: &[f32],
        deadline: Instant,
    ) -> impl Future<Output = Result<Prediction>> + Send + 'static {
        self.predict_row_async_inner(row, Some(deadline))
    }

    /// [`EnsembleHandle::predict`] without blocking the calling executor.
    pub fn predict_async(&self, features: &Features) -> impl Future<Output = Result<Prediction>> + Send + 'static {
        let started = Instant::now();
        let ens = self.slot.load_full();
        let mut dense = Vec::with_capacity(ens.schema.names().len());
        let filled = ens.schema.fill_from_features(features, &mut dense);
        self.clone().finish_async(ens, filled.map(|()| dense), started, None)
    }

    fn predict_row_async_inner(
        &self,
        row: &[f32],
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Prediction>> + Send + 'static {
        let started = Instant::now();
        let ens = self.slot.load_full();
        let dense = ens.schema.dense_row(row).map(Cow::into_owned);
        self.clone().finish_async(ens, dense, started, deadline)
    }

    async fn finish_async(
        self,
        ens: Arc<LoadedEnsemble>,
        dense: Result<Vec<f32>>,
        started: Instant,
        deadline: Option<Instant>,
    ) -> Result<Prediction> {
        let dense = dense?;
        let published = ens.key.learning.published();
        let key = match self.lookup(&ens, &dense, started, &published) {
            Lookup::Hit(p) => return Ok(p),
            Lookup::Miss(key) => key,
        };
        check_deadline(&ens, deadline)?;
        let completion = self.submit(&ens, &dense, started, deadline, false);
        let results = completion.wait_async().await;
        let (mut values, mut runs, failed) = collect_member_results(&ens, results)?;
        if !failed.is_empty() {
            // Fallbacks are queued too: nothing runs on the executor's thread.
            let completion = Completion::new(ens.members.len());
            let mut row = Vec::new();
            for &i in &failed {
                if let Some((stand_in, indices)) = &ens.members[i].fallback {
                    gather(&dense, ens.schema.names().len(), indices, &mut row);
                    completion.expect(1);
                    stand_in.batcher.enqueue(stand_in, &row, &completion, i, deadline, Instant::now());
                }
            }
            apply_fallbacks(&ens, completion.wait_async().await, &mut values, &mut runs);
        }
        let outcome = self.combine(&ens, &dense, 1, started, published, values, runs);
        self.settle(&ens, &dense, started, key, outcome)
    }

    /// One row: the cache, then the members (inline, or through the queues under contention when
    /// some member batches), then the last good answer if quorum was lost.
    fn single(
        &self,
        ens: &Arc<LoadedEnsemble>,
        dense: &[f32],
        started: Instant,
        deadline: Option<Instant>,
    ) -> Result<Prediction> {
        let published = ens.key.learning.published();
        let key = match self.lookup(ens, dense, started, &published) {
            Lookup::Hit(p) => return Ok(p),
            Lookup::Miss(key) => key,
        };
        let outcome = if ens.batched {
            check_deadline(ens, deadline)?;
            let results = self.submit(ens, dense, started, deadline, true).wait();
            collect_member_results(ens, results).and_then(|(mut values, mut runs, failed)| {
                run_fallbacks_inline(ens, dense, &failed, &mut values, &mut runs);
                self.combine(ens, dense, 1, started, published, values, runs)
            })
        } else {
            self.run(ens, dense, 1, started, published, deadline)
        };
        self.settle(ens, dense, started, key, outcome)
    }

    /// A cache hit (tracked like any prediction, under a new request id), or the key to store under.
    fn lookup(&self, ens: &LoadedEnsemble, dense: &[f32], started: Instant, published: &Published) -> Lookup {
        let Some(cache) = self.engine.inner.cache.as_ref().filter(|_| !ens.key.learning.has_regimes()) else {
            return Lookup::Miss(None);
        };
        // The key's epoch is the snapshot's the prediction is computed with.
        let key = cache.key(ens.id, published.epoch, dense);
        let Some(hit) = cache.get(&key) else { return Lookup::Miss(Some(key)) };
        let mut p = Prediction::clone(&hit);
        p.request_id = self.engine.next_request_ids(1);
        p.cached = true;
        if let Some(tracker) = &self.engine.inner.tracker {
            let members: Vec<f32> = p.model_contributions.iter().map(|c| c.prediction.unwrap_or(f32::NAN)).collect();
            tracker.record_prediction(p.request_id, started, &ens.key, ens.task, None, p.prediction, &members);
        }
        p.latency_ms = started.elapsed().as_secs_f64() * 1e3;
        Lookup::Hit(p)
    }

    /// Stores a good answer (cache, last good) or, below quorum, serves the last good one as stale.
    fn settle(
        &self,
        ens: &LoadedEnsemble,
        dense: &[f32],
        started: Instant,
        key: Option<CacheKey>,
        outcome: Result<BatchPrediction>,
    ) -> Result<Prediction> {
        match outcome {
            Ok(batch) => {
                let p = batch.row(0);
                if !p.degraded {
                    if let (Some(cache), Some(key)) = (&self.engine.inner.cache, key) {
                        cache.insert(key, Arc::new(p.clone()));
                    }
                    if let Some(last_good) = &ens.last_good {
                        last_good.insert(row_bits(dense), Arc::new(p.clone()));
                    }
                }
                Ok(p)
            }
            Err(error @ Error::QuorumNotReached { .. }) => {
                let Some(good) = ens.last_good.as_ref().and_then(|l| l.get(&row_bits(dense))) else {
                    return Err(error);
                };
                let mut p = Prediction::clone(&good);
                p.request_id = self.engine.next_request_ids(1);
                p.stale = true;
                p.degraded = true;
                p.cached = false;
                p.latency_ms = started.elapsed().as_secs_f64() * 1e3;
                Ok(p)
            }
            Err(other) => Err(other),
        }
    }

    /// Starts every member on one dense row: inline when allowed and the model is quiet (or does not
    /// batch), otherwise queued. The returned completion resolves when the queued ones answer.
    fn submit(
        &self,
        ens: &LoadedEnsemble,
        dense: &[f32],
        started: Instant,
        deadline: Option<Instant>,
        inline: bool,
    ) -> Arc<Completion> {
        let width = ens.schema.names().len();
        let completion = Completion::new(ens.members.len());
        let mut row = Vec::new();
        for (i, member) in ens.members.iter().enumerate() {
            let model = &member.model;
            if inline && (!model.batching || (model.batcher.is_empty() && model.pool.has_idle())) {
                let t = Instant::now();
                let mut value = [f32::NAN];
                let result = model.call(Rows::Schema { dense, width, indices: &member.indices }, 1, &mut value, 0);
                completion.set(i, (result.map(|_| value[0]), t.elapsed().as_secs_f64() * 1e3));
            } else {
                gather(dense, width, &member.indices, &mut row);
                completion.expect(1);
                model.batcher.enqueue(model, &row, &completion, i, deadline, started);
            }
        }
        completion
    }

    /// Predicts every row of `batch`; each member runs once for the whole batch.
    pub fn predict_batch(&self, batch: &Batch<'_>) -> Result<BatchPrediction> {
        let started = Instant::now();
        let ens = self.slot.load();
        let dense = ens.schema.dense_batch(batch)?;
        self.run(&ens, &dense, batch.rows(), started, ens.key.learning.published(), None)
    }

    /// Every member on every row, inline, then [`EnsembleHandle::combine`].
    fn run(
        &self,
        ens: &LoadedEnsemble,
        dense: &[f32],
        rows: usize,
        started: Instant,
        published: Arc<Published>,
        deadline: Option<Instant>,
    ) -> Result<BatchPrediction> {
        let width = ens.schema.names().len();
        let m = ens.members.len();
        let mut member_predictions = vec![f32::NAN; rows * m];
        if let Ok(fused) = &ens.fused {
            check_deadline(ens, deadline)?;
            if let Some(elapsed) = run_fused(fused, ens, dense, rows, &mut member_predictions) {
                let latency_ms = elapsed.as_secs_f64() * 1e3;
                let members = ens
                    .members
                    .iter()
                    .map(|member| MemberRun {
                        model: Arc::clone(&member.model.name),
                        version: member.model.meta.version,
                        latency_ms,
                        error: None,
                        fallback: None,
                    })
                    .collect();
                let mut batch = self.combine(ens, dense, rows, started, published, member_predictions, members)?;
                batch.fused = true;
                return Ok(batch);
            }
        }
        let mut members: Vec<MemberRun> = Vec::with_capacity(m);
        for (i, member) in ens.members.iter().enumerate() {
            check_deadline(ens, deadline)?;
            let t = Instant::now();
            let rows_in = Rows::Schema { dense, width, indices: &member.indices };
            let result = member.model.call(rows_in, rows, &mut member_predictions, i);
            let mut fallback = None;
            if result.is_err() {
                if let Some((stand_in, indices)) = &member.fallback {
                    let rows_in = Rows::Schema { dense, width, indices };
                    if stand_in.call(rows_in, rows, &mut member_predictions, i).is_ok() {
                        fallback = Some(Arc::clone(&stand_in.name));
                    }
                }
            }
            members.push(MemberRun {
                model: Arc::clone(&member.model.name),
                version: member.model.meta.version,
                latency_ms: t.elapsed().as_secs_f64() * 1e3,
                error: result.err().map(|e| e.to_string()),
                fallback,
            });
        }
        self.combine(ens, dense, rows, started, published, member_predictions, members)
    }

    /// Checks the quorum, then combines each row's member predictions with the strategy and logs it
    /// for outcome tracking.
    #[allow(clippy::too_many_arguments)]
    fn combine(
        &self,
        ens: &LoadedEnsemble,
        dense: &[f32],
        rows: usize,
        started: Instant,
        published: Arc<Published>,
        member_predictions: Vec<f32>,
        members: Vec<MemberRun>,
    ) -> Result<BatchPrediction> {
        let width = ens.schema.names().len();
        let m = ens.members.len();
        let answered: Vec<bool> = members.iter().map(MemberRun::answered).collect();
        let live = answered.iter().filter(|a| **a).count();
        if live < ens.config.required_members() {
            return Err(Error::QuorumNotReached {
                ensemble: ens.config.name.clone(),
                succeeded: live,
                required: ens.config.required_members(),
                first_failure: members.iter().find(|r| !r.answered()).and_then(|r| r.error.clone()).unwrap_or_default(),
            });
        }
        let learning = &ens.key.learning;
        let first_request_id = self.engine.next_request_ids(rows);
        let (mut predictions, mut confidences) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
        let mut regimes = Vec::with_capacity(rows);
        // Without regimes every row uses the same weights: keep one row of them, not `rows`.
        let per_row = learning.has_regimes();
        let mut weights = vec![0f32; if per_row { rows * m } else { m }];
        if !per_row {
            effective_weights(published.for_regime(None), &answered, &mut weights);
        }
        // Only filled when a member failed: no allocation on the common path.
        let (mut live_values, mut live_weights) = (Vec::new(), Vec::new());
        let now = Instant::now();
        for (row, member_values) in member_predictions.chunks_exact(m).enumerate() {
            let regime = learning.observe(&dense[row * width..(row + 1) * width]);
            let choice = published.for_regime(regime);
            let row_weights = if per_row {
                let slice = &mut weights[row * m..(row + 1) * m];
                effective_weights(choice, &answered, slice);
                &*slice
            } else {
                &weights[..]
            };
            let strategy: &dyn Strategy = match (choice.strategy, choice.intercept) {
                (_, Some(intercept)) if live == m => &Stacking { intercept },
                (StrategyKind::Majority, _) => &MajorityVote,
                _ => &SoftVote,
            };
            let combined = if live == m {
                strategy.combine(ens.task, member_values, row_weights)
            } else {
                live_values.clear();
                live_weights.clear();
                for ((&v, &w), &a) in member_values.iter().zip(row_weights).zip(&answered) {
                    if a {
                        live_values.push(v);
                        live_weights.push(w);
                    }
                }
                strategy.combine(ens.task, &live_values, &live_weights)
            };
            if let Some(tracker) = &self.engine.inner.tracker {
                let id = first_request_id + row as u64;
                tracker.record_prediction(id, now, &ens.key, ens.task, regime, combined.prediction, member_values);
            }
            predictions.push(combined.prediction);
            confidences.push(combined.confidence);
            regimes.push(regime);
        }
        Ok(BatchPrediction {
            ensemble: Arc::clone(&ens.key.name),
            ensemble_version: ens.key.version,
            task: ens.task,
            first_request_id,
            predictions,
            confidences,
            member_predictions,
            weights,
            regimes,
            members,
            published,
            fused: false,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// The weights a row is combined with: stacking's coefficients once fitted and every member answered,
/// otherwise the published weights renormalised over the members that answered (0 for the others).
fn effective_weights(choice: &RegimeWeights, answered: &[bool], out: &mut [f32]) {
    if choice.intercept.is_some() && answered.iter().all(|a| *a) {
        out.copy_from_slice(&choice.weights);
        return;
    }
    let total: f32 = choice.weights.iter().zip(answered).filter(|(_, a)| **a).map(|(w, _)| w).sum();
    for ((w, &c), &a) in out.iter_mut().zip(&choice.weights).zip(answered) {
        *w = if a && total > 0.0 { c / total } else { 0.0 };
    }
}

/// Every member in one call of the fused model, writing `out[row * members + member]`. `None` when
/// the fused model is not used for this call — a member's breaker is not closed or a fault is
/// injected (the members' own path reports them), every fused session is busy — or when it failed;
/// the members then run one by one, so a failure is still isolated to the member that caused it.
fn run_fused(
    fused: &FusedSessions,
    ens: &LoadedEnsemble,
    dense: &[f32],
    rows: usize,
    out: &mut [f32],
) -> Option<Duration> {
    let healthy = ens.members.iter().all(|m| m.model.fault.load(Ordering::Relaxed) == 0 && m.model.breaker.is_closed());
    if !healthy {
        return None;
    }
    let mut session = fused.checkout()?;
    let started = Instant::now();
    let ran = catch_unwind(AssertUnwindSafe(|| run_fused_session(&mut session, fused, &ens.members, dense, rows, out)));
    fused.give_back(session);
    let elapsed = started.elapsed();
    if !matches!(ran, Ok(Ok(()))) {
        return None;
    }
    for member in &ens.members {
        member.model.breaker.record_success(elapsed);
    }
    Some(elapsed)
}

fn run_fused_session(
    session: &mut FusedSession,
    fused: &FusedSessions,
    members: &[Member],
    dense: &[f32],
    rows: usize,
    out: &mut [f32],
) -> Result<()> {
    let width = dense.len() / rows;
    let outputs = match &mut session.single {
        Some(single) if rows == 1 => {
            for (member, tensor) in members.iter().zip(&mut single.inputs) {
                let (_, values) = tensor.extract_tensor_mut();
                for (value, &column) in values.iter_mut().zip(&member.indices) {
                    *value = dense[column];
                }
            }
            session.session.run_binding(&single.binding)?
        }
        _ => {
            let mut inputs = Vec::with_capacity(members.len());
            for ((member, buffer), name) in members.iter().zip(&mut session.inputs).zip(&fused.inputs) {
                gather(dense, width, &member.indices, buffer);
                let tensor = TensorRef::from_array_view(([rows, member.indices.len()], buffer.as_slice()))?;
                inputs.push((Cow::Borrowed(name.as_str()), SessionInputValue::from(tensor)));
            }
            session.session.run(inputs)?
        }
    };
    let m = members.len();
    for (i, (member, name)) in members.iter().zip(&fused.outputs).enumerate() {
        let meta = &member.model.meta;
        let value = outputs.get(name).ok_or_else(|| Error::OutputShape {
            model: meta.name.clone(),
            expected: format!("a fused output named {name:?}"),
            found: "no such output".into(),
        })?;
        let column = registry::read_output_column(&meta.name, value, &meta.output, rows)?;
        for row in 0..rows {
            let v = column.get(row);
            if !v.is_finite() {
                return Err(Error::OutputShape {
                    model: meta.name.clone(),
                    expected: "finite predictions".into(),
                    found: format!("{v} in row {row}"),
                });
            }
            out[row * m + i] = v;
        }
    }
    Ok(())
}

/// Refuses a request whose deadline has passed.
fn check_deadline(ens: &LoadedEnsemble, deadline: Option<Instant>) -> Result<()> {
    match deadline {
        Some(deadline) if Instant::now() >= deadline => Err(Error::DeadlineExceeded {
            what: format!("ensemble {:?}", ens.config.name),
            detail: "the deadline passed before the members ran".into(),
        }),
        _ => Ok(()),
    }
}

/// The row's dense values as exact bits: the key of the last good prediction.
fn row_bits(dense: &[f32]) -> Box<[u32]> {
    dense.iter().map(|v| v.to_bits()).collect()
}

/// Member answers of one queued row as prediction values and runs; a member refused for its
/// deadline refuses the whole request. Also returns the members that failed and have a fallback.
fn collect_member_results(
    ens: &LoadedEnsemble,
    results: MemberResults,
) -> Result<(Vec<f32>, Vec<MemberRun>, Vec<usize>)> {
    let m = ens.members.len();
    let mut values = vec![f32::NAN; m];
    let mut runs = Vec::with_capacity(m);
    let mut failed = Vec::new();
    for (i, (member, result)) in ens.members.iter().zip(results).enumerate() {
        let (result, latency_ms) = result.unwrap_or_else(|| {
            (Err(Error::MemberUnavailable { model: member.model.meta.name.clone(), reason: "no answer".into() }), 0.0)
        });
        let error = match result {
            Ok(v) => {
                values[i] = v;
                None
            }
            Err(e @ Error::DeadlineExceeded { .. }) => return Err(e),
            Err(e) => {
                if member.fallback.is_some() {
                    failed.push(i);
                }
                Some(e.to_string())
            }
        };
        runs.push(MemberRun {
            model: Arc::clone(&member.model.name),
            version: member.model.meta.version,
            latency_ms,
            error,
            fallback: None,
        });
    }
    Ok((values, runs, failed))
}

/// Fills in the answers of fallbacks that stood in for failed members.
fn apply_fallbacks(ens: &LoadedEnsemble, results: MemberResults, values: &mut [f32], runs: &mut [MemberRun]) {
    for (i, result) in results.into_iter().enumerate() {
        if let Some((Ok(v), latency_ms)) = result {
            values[i] = v;
            runs[i].latency_ms += latency_ms;
            runs[i].fallback = ens.members[i].fallback.as_ref().map(|(f, _)| Arc::clone(&f.name));
        }
    }
}

fn run_fallbacks_inline(
    ens: &LoadedEnsemble,
    dense: &[f32],
    failed: &[usize],
    values: &mut [f32],
    runs: &mut [MemberRun],
) {
    let width = ens.schema.names().len();
    let mut results: MemberResults = (0..ens.members.len()).map(|_| None).collect();
    for &i in failed {
        if let Some((stand_in, indices)) = &ens.members[i].fallback {
            let t = Instant::now();
            let mut value = [f32::NAN];
            let result = stand_in.call(Rows::Schema { dense, width, indices }, 1, &mut value, 0);
            results[i] = Some((result.map(|_| value[0]), t.elapsed().as_secs_f64() * 1e3));
        }
    }
    apply_fallbacks(ens, results, values, runs);
}

/// One member's run within a batch: shared by every row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberRun {
    pub model: Arc<str>,
    pub version: u32,
    /// Wall time of the member's call(s) for the whole batch (its fallback's included).
    pub latency_ms: f64,
    /// Why the member itself did not answer (failure, open circuit breaker, panic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The model that answered in its place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Arc<str>>,
}

impl MemberRun {
    /// Whether the member (or its fallback) produced predictions.
    pub fn answered(&self) -> bool {
        self.error.is_none() || self.fallback.is_some()
    }
}

/// The answers to a batch, stored by column: one allocation per array, not per row.
///
/// [`BatchPrediction::row`] gives any row as a [`Prediction`]; serialised, a batch is the array of its
/// rows in the single-prediction format.
#[derive(Debug, Clone)]
pub struct BatchPrediction {
    pub ensemble: Arc<str>,
    pub ensemble_version: u32,
    pub task: Task,
    /// Row `i` has request id `first_request_id + i`.
    pub first_request_id: u64,
    pub predictions: Vec<f32>,
    pub confidences: Vec<f32>,
    /// Row-major `rows × members`; NaN where a member failed.
    pub member_predictions: Vec<f32>,
    /// The weight (or stacking coefficient) each member carried: `members` values shared by every row,
    /// or row-major `rows × members` when regimes give rows different weights. See [`BatchPrediction::weights_of`].
    pub weights: Vec<f32>,
    /// The regime each row was predicted in (ensembles with regimes configured).
    pub regimes: Vec<Option<Regime>>,
    pub members: Vec<MemberRun>,
    /// The learning snapshot the batch was combined with (strategy, recent losses, fit windows).
    published: Arc<Published>,
    /// Every member ran in one call of the ensemble's fused model.
    pub fused: bool,
    /// Wall time of the whole batch inside the engine.
    pub latency_ms: f64,
}

impl BatchPrediction {
    pub fn len(&self) -> usize {
        self.predictions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.predictions.is_empty()
    }

    pub fn request_id(&self, row: usize) -> u64 {
        self.first_request_id + row as u64
    }

    /// The weights row `row` was combined with, one per member.
    pub fn weights_of(&self, row: usize) -> &[f32] {
        let m = self.members.len();
        if self.weights.len() == m {
            &self.weights
        } else {
            &self.weights[row * m..(row + 1) * m]
        }
    }

    /// Row `row` as a standalone prediction (panics if `row >= len()`, like slice indexing).
    pub fn row(&self, row: usize) -> Prediction {
        let m = self.members.len();
        let prediction = self.predictions[row];
        let regime = self.regimes[row];
        let choice = self.published.for_regime(regime);
        let fitted = choice.intercept.is_some() || choice.strategy != StrategyKind::Stacking;
        Prediction {
            request_id: self.request_id(row),
            ensemble: Arc::clone(&self.ensemble),
            ensemble_version: self.ensemble_version,
            strategy: if fitted { choice.strategy.as_str() } else { "stacking (unfitted: configured weights)" },
            prediction,
            confidence: self.confidences[row],
            class: (self.task == Task::Classification).then_some(u8::from(prediction >= 0.5)),
            model_contributions: self
                .members
                .iter()
                .enumerate()
                .map(|(i, run)| ModelContribution {
                    model: Arc::clone(&run.model),
                    version: run.version,
                    prediction: run.answered().then_some(self.member_predictions[row * m + i]),
                    weight: self.weights_of(row)[i],
                    latency_ms: run.latency_ms,
                    recent_loss: choice.recent_loss[i],
                    error: run.error.clone(),
                    fallback: run.fallback.clone(),
                })
                .collect(),
            degraded: self.members.iter().any(|r| r.error.is_some()),
            cached: false,
            stale: false,
            fused: self.fused,
            skipped: self.members.iter().filter(|r| !r.answered()).map(|r| Arc::clone(&r.model)).collect(),
            regime,
            fit_window: choice.fit_window,
            weights_epoch: self.published.epoch,
            latency_ms: self.latency_ms,
        }
    }

    /// Every row as a [`Prediction`].
    pub fn rows(&self) -> impl ExactSizeIterator<Item = Prediction> + '_ {
        (0..self.len()).map(|i| self.row(i))
    }
}

impl Serialize for BatchPrediction {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.rows())
    }
}
