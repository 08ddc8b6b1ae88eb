//! Replicas: each model runs as an elastic pool of ONNX Runtime sessions.
//!
//! * A replica is one session plus its reusable input buffer; it runs one call at a time
//!   (`Session::run` takes `&mut self`). A call takes an idle replica — one with nothing in flight,
//!   so the least-loaded by construction — and waits in FIFO-ish order when every replica is busy.
//! * Replicas of a model share its weights: the large initializers are handed to every session as one
//!   set of values, so an extra replica costs a fraction of the first (`src/initializers.rs`,
//!   `examples/replica_memory.rs`).
//! * The pool holds between `min` and `max` replicas. The autoscaler (engine background thread) adds
//!   one when calls queued or the p95 latency exceeded the target, and removes an idle one after a
//!   quiet period (hysteresis). Only idle replicas are ever removed, so scaling cannot drop a call.
//! * Lazy models start with no replica and load one on first use; idle models can be unloaded (every
//!   replica dropped) and load again on demand.
//! * A per-call timeout is enforced by a watchdog thread that sets ONNX Runtime's terminate flag on
//!   the run's `RunOptions`; the mutex is never held across an ONNX Runtime call.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use ort::session::{RunOptions, Session};
use serde::{Deserialize, Serialize};

use crate::batching::BatchingOptions;
use crate::error::{Error, Result};
use crate::initializers::SharedInitializers;
use crate::native::{ExecutorInfo, GpuOptions};
use crate::registry::{self, ModelMetadata, Registry};
use crate::runtime::{ExecutionProvider, ProviderFallback, Runtime};

/// When a model's sessions are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadPolicy {
    /// When an ensemble using it loads (errors surface then).
    #[default]
    Eager,
    /// On the first prediction that needs it.
    Lazy,
}

/// How one model is served; also read from JSON (the bindings' `models` option):
/// `{"replicas": [min, max], "load": "eager"|"lazy", "timeout_ms": 5, "latency_target_ms": 1,
/// "share_weights": true, "batching": {"max_batch": 256, "max_delay_us": 0, "dispatchers": 1, "max_queued": 65536},
/// "provider": {"kind": "cuda", "device_id": 0}, "provider_fallback": "cpu"|"fail",
/// "native_gpu": {"device": 0, "precision": "f32"|"f16", "min_rows": 512}}`,
/// every key optional. Set per model name with
/// [`EngineBuilder::with_model_options`](crate::EngineBuilder::with_model_options), or for every model
/// with [`EngineBuilder::with_default_model_options`](crate::EngineBuilder::with_default_model_options).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "ModelOptionsDocument")]
#[must_use]
pub struct ModelOptions {
    pub(crate) replicas: Option<(usize, usize)>,
    pub(crate) load: LoadPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) batching: Option<BatchingOptions>,
    pub(crate) latency_target: Duration,
    pub(crate) share_weights: bool,
    pub(crate) provider: ExecutionProvider,
    pub(crate) provider_fallback: ProviderFallback,
    pub(crate) native_gpu: Option<GpuOptions>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            replicas: None,
            load: LoadPolicy::Eager,
            timeout: None,
            batching: None,
            latency_target: Duration::from_millis(1),
            share_weights: true,
            provider: ExecutionProvider::Cpu,
            provider_fallback: ProviderFallback::Cpu,
            native_gpu: None,
        }
    }
}

impl ModelOptions {
    /// Between `min` and `max` replicas; the autoscaler moves within the range (default: a fixed pool
    /// of [`RuntimeOptions::sessions_per_model`](crate::RuntimeOptions::sessions_per_model)).
    pub fn with_replicas(mut self, min: usize, max: usize) -> Self {
        self.replicas = Some((min, max));
        self
    }

    /// Eager (load at ensemble load, the default) or lazy (at first call).
    pub fn with_load_policy(mut self, load: LoadPolicy) -> Self {
        self.load = load;
        self
    }

    /// Each call to the model is cut off after `timeout` (ONNX Runtime's terminate flag) and counts
    /// as the member's failure.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Coalesce concurrent single-row requests into one ONNX Runtime call (see [`crate::batching`]).
    pub fn with_batching(mut self, batching: BatchingOptions) -> Self {
        self.batching = Some(batching);
        self
    }

    /// The p95 call latency (queueing included) the autoscaler aims to stay under (default 1 ms).
    pub fn with_latency_target(mut self, target: Duration) -> Self {
        self.latency_target = target;
        self
    }

    /// Where the model runs, and what to do when that provider is unavailable (default: CPU).
    pub fn with_execution_provider(mut self, provider: ExecutionProvider, fallback: ProviderFallback) -> Self {
        self.provider = provider;
        self.provider_fallback = fallback;
        self
    }

    /// Batches of at least `min_rows` rows of the model's native MLP plan run on a GPU (feature
    /// `gpu`), once the GPU and the CPU plan agree on the probe rows at load; smaller calls, and any
    /// call while the GPU is busy with another, stay on the CPU plan.
    pub fn with_native_gpu(mut self, gpu: GpuOptions) -> Self {
        self.native_gpu = Some(gpu);
        self
    }

    /// Whether replicas share prepacked weights (default true; off only to measure what it saves).
    pub fn with_shared_weights(mut self, share: bool) -> Self {
        self.share_weights = share;
        self
    }

    pub(crate) fn validate(&self, default_replicas: usize) -> Result<(usize, usize)> {
        let (min, max) = self.replicas.unwrap_or((default_replicas, default_replicas));
        if max == 0 || min > max || max > 1024 {
            return Err(Error::Config(format!(
                "replicas: need 0 ≤ min ≤ max and 1 ≤ max ≤ 1024, got min {min}, max {max}"
            )));
        }
        if self.load == LoadPolicy::Eager && min == 0 {
            return Err(Error::Config("replicas: an eagerly loaded model needs min ≥ 1 (or LoadPolicy::Lazy)".into()));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) || self.latency_target.is_zero() {
            return Err(Error::Config("timeout and latency target must be positive".into()));
        }
        if let Some(b) = &self.batching {
            b.validate()?;
        }
        if self.native_gpu.is_some() && !cfg!(feature = "gpu") {
            return Err(Error::Config("native_gpu needs quorum built with the `gpu` feature".into()));
        }
        Ok((min, max))
    }
}

/// The JSON form of [`ModelOptions`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelOptionsDocument {
    replicas: Option<(usize, usize)>,
    #[serde(default)]
    load: LoadPolicy,
    #[serde(alias = "timeoutMs")]
    timeout_ms: Option<f64>,
    #[serde(alias = "latencyTargetMs")]
    latency_target_ms: Option<f64>,
    #[serde(alias = "shareWeights")]
    share_weights: Option<bool>,
    batching: Option<BatchingDocument>,
    #[serde(default)]
    provider: ExecutionProvider,
    #[serde(default, alias = "providerFallback")]
    provider_fallback: ProviderFallback,
    #[serde(alias = "nativeGpu")]
    native_gpu: Option<GpuOptions>,
}

/// Keys in snake_case, or camelCase as JavaScript writes them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchingDocument {
    #[serde(alias = "maxBatch")]
    max_batch: Option<usize>,
    #[serde(alias = "maxDelayUs")]
    max_delay_us: Option<u64>,
    dispatchers: Option<usize>,
    #[serde(alias = "maxQueued")]
    max_queued: Option<usize>,
}

fn millis(what: &str, ms: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(ms / 1e3).map_err(|_| Error::Config(format!("{what} {ms} is not a duration in ms")))
}

impl TryFrom<ModelOptionsDocument> for ModelOptions {
    type Error = Error;

    fn try_from(d: ModelOptionsDocument) -> Result<ModelOptions> {
        let defaults = ModelOptions::default();
        let batch_defaults = BatchingOptions::default();
        Ok(ModelOptions {
            replicas: d.replicas,
            load: d.load,
            timeout: d.timeout_ms.map(|ms| millis("timeout_ms", ms)).transpose()?,
            batching: d.batching.map(|b| BatchingOptions {
                max_batch: b.max_batch.unwrap_or(batch_defaults.max_batch),
                max_delay: b.max_delay_us.map_or(batch_defaults.max_delay, Duration::from_micros),
                dispatchers: b.dispatchers.unwrap_or(batch_defaults.dispatchers),
                max_queued: b.max_queued.unwrap_or(batch_defaults.max_queued),
            }),
            latency_target: match d.latency_target_ms {
                Some(ms) => millis("latency_target_ms", ms)?,
                None => defaults.latency_target,
            },
            share_weights: d.share_weights.unwrap_or(defaults.share_weights),
            provider: d.provider,
            provider_fallback: d.provider_fallback,
            native_gpu: d.native_gpu,
        })
    }
}

/// What a pool needs to build a replica at any time (autoscaling, reload after unload).
struct ReplicaSource {
    runtime: Runtime,
    registry: Registry,
    meta: ModelMetadata,
    share_weights: bool,
    /// Built with the first replica, dropped with the last (an unloaded model holds no weights).
    sharing: Mutex<Option<Arc<SharedInitializers>>>,
    timeout: Option<Duration>,
    provider: ExecutionProvider,
    provider_fallback: ProviderFallback,
    /// Why the last replica built runs on the CPU instead of the configured provider.
    fell_back: Mutex<Option<String>>,
}

impl ReplicaSource {
    fn label(&self) -> String {
        format!("{}@{}", self.meta.name, self.meta.version)
    }

    fn build(&self) -> Result<Replica> {
        let bytes = self.registry.read_verified(&self.meta)?;
        let label = self.label();
        let sharing = self.share_weights.then(|| {
            let mut slot = self.sharing.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(slot.get_or_insert_with(|| Arc::new(SharedInitializers::from_model(&bytes))))
        });
        let (session, fell_back) =
            self.runtime.session_on(&label, &bytes, sharing.as_deref(), &self.provider, self.provider_fallback)?;
        *self.fell_back.lock().unwrap_or_else(|p| p.into_inner()) = fell_back;
        let load_error = |reason: String| Error::ModelLoad { model: label.clone(), reason };
        if let (Some(width), _) = registry::model_input(&session).map_err(load_error)? {
            if width != self.meta.features.len() {
                return Err(load_error(format!(
                    "its input takes {width} features but its metadata declares {}",
                    self.meta.features.len()
                )));
            }
        }
        if !session.outputs().iter().any(|o| o.name() == self.meta.output.name) {
            return Err(load_error(format!("it has no output {:?}", self.meta.output.name)));
        }
        // Every replica can be cut off: by the model's timeout, or by an ensemble's latency budget.
        let watch = Some(Watchdog::register(RunOptions::new().map_err(|e| load_error(e.to_string()))?));
        Ok(Replica { session, input: Vec::with_capacity(self.meta.features.len()), watch })
    }
}

/// One session and what a call needs besides it.
pub(crate) struct Replica {
    session: Session,
    input: Vec<f32>,
    /// Present when the model has a timeout: the run options the watchdog can terminate.
    watch: Option<Arc<Watch>>,
}

/// A run that ONNX Runtime reported, or that the watchdog cut off.
pub(crate) enum RunOutcome<T> {
    Done(T),
    TimedOut,
}

impl Replica {
    /// Runs `f` on the session and its input buffer, under the watchdog when a timeout is set.
    pub fn run<T>(
        &mut self,
        timeout: Option<Duration>,
        f: impl FnOnce(&mut Session, &mut Vec<f32>, Option<&RunOptions>) -> T,
    ) -> RunOutcome<T> {
        match (&self.watch, timeout) {
            (Some(watch), Some(timeout)) => {
                watch.arm(timeout);
                let result = f(&mut self.session, &mut self.input, Some(&watch.options));
                if watch.disarm() {
                    RunOutcome::TimedOut
                } else {
                    RunOutcome::Done(result)
                }
            }
            _ => RunOutcome::Done(f(&mut self.session, &mut self.input, None)),
        }
    }
}

/// A model's replicas and the figures the autoscaler steers by.
pub(crate) struct ReplicaPool {
    source: ReplicaSource,
    state: Mutex<PoolState>,
    pub min: usize,
    pub max: usize,
    pub latency_target: Duration,
    /// Call latencies (µs, queueing included), recorded only when the pool can scale.
    latencies: LatencyRing,
    calls: AtomicU64,
    /// `calls` when the autoscaler last looked: no new calls means no fresh latency figure.
    seen_calls: AtomicU64,
}

struct PoolState {
    idle: Vec<Replica>,
    /// Callers waiting for a replica, oldest first; each parks its own thread.
    waiters: VecDeque<Waiter>,
    /// Replicas handed to a waiter that waited too long (its ticket), not yet taken.
    handed: Vec<(u64, Replica)>,
    next_ticket: u64,
    /// Replicas in existence: idle or running a call.
    total: usize,
    waiting: usize,
    /// The most callers that waited at once since the autoscaler last looked.
    peak_waiting: usize,
    /// A replica is being built for a caller that found the pool unloaded.
    loading: bool,
    growing: bool,
    last_used: Instant,
}

/// A caller parked in [`ReplicaPool::checkout`].
struct Waiter {
    ticket: u64,
    since: Instant,
    thread: std::thread::Thread,
}

/// A waiter older than this gets the next returned replica handed to it: callers that keep calling
/// may otherwise retake every replica they return (which keeps throughput up) and starve the
/// parked ones past a latency budget (64 callers on 2 cores lost calls to the 100 ms budget). At
/// 0.5 ms nearly every return became a hand-off and a context switch, halving throughput; 5 ms
/// keeps the p99 wait near 5 ms at the throughput of barging (`examples/exporters_bench.rs`).
const FAIR_AFTER: Duration = Duration::from_micros(5000);

/// A pool's state as reported by [`InferenceEngine::replicas`](crate::InferenceEngine::replicas).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaStatus {
    /// The model's name.
    pub model: String,
    /// The loaded version.
    pub version: u32,
    /// ONNX Runtime sessions in the pool now.
    pub replicas: usize,
    /// Of those, how many are idle.
    pub idle: usize,
    /// Calls running now.
    pub in_flight: usize,
    /// Callers waiting for a replica.
    pub waiting: usize,
    /// Rows queued for the model's dispatchers (batching and asynchronous callers).
    pub queued: usize,
    /// Calls the dispatchers made and the queued rows they carried (their ratio: the mean batch).
    pub batches: u64,
    /// See `batches`.
    pub batched_rows: u64,
    /// The pool's least replicas.
    pub min: usize,
    /// The pool's most replicas.
    pub max: usize,
    /// p95 of recent call latencies (queueing included), when the pool scales and has seen calls.
    pub p95_ms: Option<f64>,
    /// Calls made since the pool was created.
    pub calls: u64,
    /// Estimated memory: the model file's size per replica (weights dominate a session's memory).
    pub estimated_bytes: u64,
    /// How long since the last call, in milliseconds.
    pub idle_for_ms: f64,
    /// The configured execution provider ("cpu", "cuda", "tensorrt").
    pub provider: &'static str,
    /// Set when the replicas run on the CPU instead: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_fallback: Option<String>,
    /// Which executor runs the model (`native`: its compiled plan, no session needed; else
    /// `onnxruntime`), and why it is not native.
    pub executor: ExecutorInfo,
}

impl PoolState {
    /// Removes waiter `ticket`, which took a replica itself.
    fn stop_waiting(&mut self, ticket: u64) {
        self.waiters.retain(|w| w.ticket != ticket);
        self.waiting -= 1;
    }
}

impl ReplicaPool {
    /// Builds `min` replicas now unless the policy is lazy.
    pub fn new(
        runtime: &Runtime,
        registry: &Registry,
        meta: ModelMetadata,
        options: &ModelOptions,
        (min, max): (usize, usize),
    ) -> Result<ReplicaPool> {
        let source = ReplicaSource {
            runtime: runtime.clone(),
            registry: registry.clone(),
            meta,
            share_weights: options.share_weights,
            sharing: Mutex::new(None),
            timeout: options.timeout,
            provider: options.provider.clone(),
            provider_fallback: options.provider_fallback,
            fell_back: Mutex::new(None),
        };
        let eager = if options.load == LoadPolicy::Eager { min.max(1) } else { 0 };
        let idle = (0..eager).map(|_| source.build()).collect::<Result<Vec<_>>>()?;
        Ok(ReplicaPool {
            source,
            state: Mutex::new(PoolState {
                total: idle.len(),
                idle,
                waiters: VecDeque::new(),
                handed: Vec::new(),
                next_ticket: 0,
                waiting: 0,
                peak_waiting: 0,
                loading: false,
                growing: false,
                last_used: Instant::now(),
            }),
            min,
            max,
            latency_target: options.latency_target,
            latencies: LatencyRing::default(),
            calls: AtomicU64::new(0),
            seen_calls: AtomicU64::new(0),
        })
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.source.timeout
    }

    pub fn scales(&self) -> bool {
        self.min < self.max
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // The state is a stack and counters, consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes an idle replica, loading one if the pool is unloaded, waiting while all are busy (a
    /// waiter older than [`FAIR_AFTER`] is handed the next replica returned).
    pub fn checkout(&self, now: Instant) -> Result<PooledReplica<'_>> {
        let mut state = self.lock();
        let mut ticket: Option<u64> = None;
        loop {
            if let Some(t) = ticket {
                if let Some(i) = state.handed.iter().position(|(h, _)| *h == t) {
                    let (_, replica) = state.handed.swap_remove(i);
                    state.waiting -= 1;
                    state.last_used = now;
                    return Ok(PooledReplica { pool: self, replica: Some(replica), started: now });
                }
            }
            if let Some(replica) = state.idle.pop() {
                if let Some(t) = ticket.take() {
                    state.stop_waiting(t);
                }
                state.last_used = now;
                return Ok(PooledReplica { pool: self, replica: Some(replica), started: now });
            }
            if state.total == 0 && !state.loading {
                if let Some(t) = ticket.take() {
                    state.stop_waiting(t);
                }
                state.loading = true;
                drop(state);
                let built = self.source.build();
                state = self.lock();
                state.loading = false;
                state.last_used = now;
                return match built {
                    Ok(replica) => {
                        state.total += 1;
                        Ok(PooledReplica { pool: self, replica: Some(replica), started: now })
                    }
                    Err(e) => {
                        // Waiters retry the load themselves (and get its error if it fails again).
                        let waiters: Vec<_> = state.waiters.iter().map(|w| w.thread.clone()).collect();
                        drop(state);
                        waiters.iter().for_each(std::thread::Thread::unpark);
                        Err(e)
                    }
                };
            }
            if ticket.is_none() {
                let t = state.next_ticket;
                state.next_ticket += 1;
                state.waiters.push_back(Waiter { ticket: t, since: Instant::now(), thread: std::thread::current() });
                state.waiting += 1;
                state.peak_waiting = state.peak_waiting.max(state.waiting);
                ticket = Some(t);
            }
            drop(state);
            // Woken by a returned, handed, grown or failed-to-load replica; spurious wake-ups loop.
            std::thread::park();
            state = self.lock();
        }
    }

    fn give_back(&self, replica: Replica, started: Instant) {
        if self.scales() {
            self.latencies.record(started.elapsed());
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
        let mut state = self.lock();
        let overdue = state.waiters.front().is_some_and(|w| w.since.elapsed() >= FAIR_AFTER);
        let wake = if overdue {
            let waiter = state.waiters.pop_front().expect("checked");
            state.handed.push((waiter.ticket, replica));
            Some(waiter.thread)
        } else {
            state.idle.push(replica);
            state.waiters.front().map(|w| w.thread.clone())
        };
        drop(state);
        if let Some(thread) = wake {
            thread.unpark();
        }
    }

    /// Adds one replica (built outside the lock) if below `max`; false when at `max` or already growing.
    pub fn grow(&self) -> Result<bool> {
        {
            let mut state = self.lock();
            if state.total >= self.max || state.growing || state.total == 0 {
                return Ok(false);
            }
            state.growing = true;
        }
        let built = self.source.build();
        let mut state = self.lock();
        state.growing = false;
        let replica = built?;
        state.total += 1;
        state.idle.push(replica);
        let wake = state.waiters.front().map(|w| w.thread.clone());
        drop(state);
        if let Some(thread) = wake {
            thread.unpark();
        }
        Ok(true)
    }

    /// Drops one idle replica if above `min`. Never touches a replica that is running a call.
    pub fn shrink(&self) -> bool {
        let mut state = self.lock();
        if state.total <= self.min.max(1) {
            return false;
        }
        let Some(replica) = state.idle.pop() else { return false };
        state.total -= 1;
        drop(state);
        drop(replica);
        true
    }

    /// Drops every replica if none is running a call and nobody waits; returns the replicas dropped.
    pub fn unload(&self) -> usize {
        let mut state = self.lock();
        if state.total == 0 || state.idle.len() != state.total || state.waiting > 0 || state.loading {
            return 0;
        }
        let replicas = std::mem::take(&mut state.idle);
        state.total = 0;
        // The shared weights go with the last replica (they are rebuilt by the next load).
        let sharing = self.source.sharing.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(state);
        drop(sharing);
        replicas.len()
    }

    /// Estimated bytes held now (file size per replica).
    pub fn estimated_bytes(&self) -> u64 {
        self.lock().total as u64 * self.source.meta.size_bytes
    }

    pub fn last_used(&self) -> Instant {
        self.lock().last_used
    }

    /// The autoscaler's inputs since its last look: the most callers that waited at once, and the p95
    /// of the latest calls (`None` when no call completed since).
    pub fn take_load(&self) -> (usize, Option<Duration>) {
        let peak = std::mem::take(&mut self.lock().peak_waiting);
        let calls = self.calls.load(Ordering::Relaxed);
        let fresh = self.seen_calls.swap(calls, Ordering::Relaxed) != calls;
        (peak, if fresh { self.latencies.p95() } else { None })
    }

    pub fn status(&self) -> ReplicaStatus {
        let state = self.lock();
        let in_flight = state.total - state.idle.len();
        ReplicaStatus {
            model: self.source.meta.name.clone(),
            version: self.source.meta.version,
            replicas: state.total,
            idle: state.idle.len(),
            in_flight,
            waiting: state.waiting,
            queued: 0,
            batches: 0,
            batched_rows: 0,
            min: self.min,
            max: self.max,
            p95_ms: self.latencies.p95().map(|d| d.as_secs_f64() * 1e3),
            calls: self.calls.load(Ordering::Relaxed),
            estimated_bytes: state.total as u64 * self.source.meta.size_bytes,
            idle_for_ms: if in_flight == 0 { state.last_used.elapsed().as_secs_f64() * 1e3 } else { 0.0 },
            provider: self.source.provider.name(),
            provider_fallback: self.source.fell_back.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            // The pool knows only its sessions; the engine says whether the model runs natively.
            executor: ExecutorInfo { kind: "onnxruntime".into(), reason: None, gpu: None, url: None },
        }
    }
}

/// A checked-out replica; goes back to its pool when dropped (also while unwinding from a panic).
pub(crate) struct PooledReplica<'p> {
    pool: &'p ReplicaPool,
    replica: Option<Replica>,
    started: Instant,
}

impl std::ops::Deref for PooledReplica<'_> {
    type Target = Replica;
    fn deref(&self) -> &Replica {
        self.replica.as_ref().expect("replica present until drop")
    }
}

impl std::ops::DerefMut for PooledReplica<'_> {
    fn deref_mut(&mut self) -> &mut Replica {
        self.replica.as_mut().expect("replica present until drop")
    }
}

impl Drop for PooledReplica<'_> {
    fn drop(&mut self) {
        if let Some(replica) = self.replica.take() {
            self.pool.give_back(replica, self.started);
        }
    }
}

/// The last 256 call latencies in µs; a lock-free ring (a relaxed increment and a store per call).
struct LatencyRing {
    slots: [AtomicU32; 256],
    next: AtomicUsize,
}

impl Default for LatencyRing {
    fn default() -> Self {
        LatencyRing { slots: std::array::from_fn(|_| AtomicU32::new(0)), next: AtomicUsize::new(0) }
    }
}

impl LatencyRing {
    fn record(&self, elapsed: Duration) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        // 0 marks an empty slot, so record at least 1 µs.
        self.slots[i].store(elapsed.as_micros().clamp(1, u32::MAX as u128) as u32, Ordering::Relaxed);
    }

    fn p95(&self) -> Option<Duration> {
        let mut micros: Vec<f64> =
            self.slots.iter().map(|s| s.load(Ordering::Relaxed)).filter(|v| *v > 0).map(f64::from).collect();
        if micros.len() < 20 {
            return None;
        }
        Some(Duration::from_micros(crate::stats::percentiles(&mut micros).p95 as u64))
    }
}

/// What the autoscaler does to one pool, given what it saw since its last look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScaleDecision {
    Grow,
    Shrink,
    Hold,
}

/// Hysteresis: grow at once under pressure; shrink only after `quiet_for` without any.
pub(crate) fn decide(
    peak_waiting: usize,
    p95: Option<Duration>,
    target: Duration,
    quiet_since: Instant,
    quiet_for: Duration,
) -> ScaleDecision {
    let pressed = peak_waiting > 0 || p95.is_some_and(|p| p > target);
    if pressed {
        ScaleDecision::Grow
    } else if quiet_since.elapsed() >= quiet_for {
        ScaleDecision::Shrink
    } else {
        ScaleDecision::Hold
    }
}

/// Cuts off runs that outlive their timeout by setting ONNX Runtime's terminate flag.
///
/// Each replica with a timeout owns a [`Watch`]: arming it is one atomic store of the deadline, so
/// the call path takes no lock. One thread checks every armed watch each millisecond.
struct Watchdog {
    watches: Mutex<Vec<Weak<Watch>>>,
}

/// Run options a watchdog can terminate: one per replica and per fused session.
pub(crate) struct Watch {
    options: RunOptions,
    /// µs since [`Watchdog::epoch`] when the run must end; 0 when idle; [`FIRING`] once terminated.
    deadline_us: AtomicU64,
    /// Set by the watchdog after it has called `terminate`.
    fired: AtomicBool,
}

const FIRING: u64 = u64::MAX;

impl Watchdog {
    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    fn now_us() -> u64 {
        Self::epoch().elapsed().as_micros() as u64 + 1
    }

    fn global() -> &'static Watchdog {
        static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();
        WATCHDOG.get_or_init(|| {
            // A 1 ms tick while some run is armed; 5 ms while none is, since every replica has a
            // watch and the thread would otherwise wake 1000 times a second in an idle process
            // (a run armed meanwhile is cut off up to 5 ms late, once).
            let spawned = std::thread::Builder::new().name("quorum-watchdog".into()).spawn(|| {
                let mut pause = Duration::from_millis(1);
                loop {
                    std::thread::sleep(pause);
                    let armed = Watchdog::global().tick();
                    pause = Duration::from_millis(if armed { 1 } else { 5 });
                }
            });
            // Without the thread timeouts are not enforced; calls still complete.
            drop(spawned);
            Watchdog { watches: Mutex::new(Vec::new()) }
        })
    }

    fn register(options: RunOptions) -> Arc<Watch> {
        let watch = Arc::new(Watch { options, deadline_us: AtomicU64::new(0), fired: AtomicBool::new(false) });
        let mut watches = Self::global().watches.lock().unwrap_or_else(|p| p.into_inner());
        watches.retain(|w| w.strong_count() > 0);
        watches.push(Arc::downgrade(&watch));
        watch
    }

    /// Terminates the runs past their deadline; whether any run is armed.
    fn tick(&self) -> bool {
        let now = Self::now_us();
        let mut armed = false;
        let watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        for watch in watches.iter().filter_map(Weak::upgrade) {
            let deadline = watch.deadline_us.load(Ordering::Acquire);
            armed |= deadline != 0;
            if deadline != 0
                && deadline != FIRING
                && now >= deadline
                && watch.deadline_us.compare_exchange(deadline, FIRING, Ordering::AcqRel, Ordering::Acquire).is_ok()
            {
                let _ = watch.options.terminate();
                watch.fired.store(true, Ordering::Release);
            }
        }
        armed
    }
}

/// A new watch on the process's watchdog.
pub(crate) fn new_watch() -> ort::Result<Arc<Watch>> {
    Ok(Watchdog::register(RunOptions::new()?))
}

/// Microseconds on the watchdog's clock (monotonic, from its first use).
pub(crate) fn monotonic_us() -> u64 {
    Watchdog::now_us()
}

impl Watch {
    /// The options to run with, so that the watchdog can end the run.
    pub(crate) fn options(&self) -> &RunOptions {
        &self.options
    }

    /// Asks the watchdog to terminate the run in progress after `timeout`.
    pub(crate) fn arm(&self, timeout: Duration) {
        self.deadline_us.store(Watchdog::now_us() + timeout.as_micros() as u64, Ordering::Release);
    }

    /// Ends the watch; true when the watchdog terminated the run. Leaves the options reusable.
    pub(crate) fn disarm(&self) -> bool {
        if self.deadline_us.swap(0, Ordering::AcqRel) != FIRING {
            return false;
        }
        // The watchdog is between its compare-exchange and `fired`: a few instructions.
        while !self.fired.swap(false, Ordering::AcqRel) {
            std::hint::spin_loop();
        }
        let _ = self.options.unterminate();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_options_read_from_json_with_defaults_for_missing_keys() {
        let o: ModelOptions = serde_json::from_str(
            r#"{"replicas": [1, 4], "load": "lazy", "timeout_ms": 2.5, "batching": {"max_batch": 32}}"#,
        )
        .unwrap();
        assert_eq!(o.replicas, Some((1, 4)));
        assert_eq!(o.load, LoadPolicy::Lazy);
        assert_eq!(o.timeout, Some(Duration::from_micros(2500)));
        assert_eq!(o.batching, Some(BatchingOptions { max_batch: 32, ..BatchingOptions::default() }));
        assert_eq!(serde_json::from_str::<ModelOptions>("{}").unwrap(), ModelOptions::default());
        for bad in [r#"{"replica": [1, 2]}"#, r#"{"timeout_ms": -1}"#, r#"{"load": "sometimes"}"#] {
            assert!(serde_json::from_str::<ModelOptions>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_autoscaler_grows_under_pressure_and_shrinks_only_after_a_quiet_period() {
        let target = Duration::from_millis(1);
        let long_ago = Instant::now() - Duration::from_secs(10);
        let quiet_for = Duration::from_secs(5);
        assert_eq!(decide(1, None, target, long_ago, quiet_for), ScaleDecision::Grow);
        assert_eq!(decide(0, Some(Duration::from_millis(2)), target, long_ago, quiet_for), ScaleDecision::Grow);
        assert_eq!(decide(0, Some(Duration::from_micros(500)), target, long_ago, quiet_for), ScaleDecision::Shrink);
        assert_eq!(decide(0, None, target, Instant::now(), quiet_for), ScaleDecision::Hold);
    }

    #[test]
    fn the_latency_ring_reports_a_p95_once_it_has_enough_calls() {
        let ring = LatencyRing::default();
        for us in 1..=19 {
            ring.record(Duration::from_micros(us));
        }
        assert_eq!(ring.p95(), None);
        for us in 20..=100 {
            ring.record(Duration::from_micros(us));
        }
        assert_eq!(ring.p95(), Some(Duration::from_micros(95)));
    }
}
