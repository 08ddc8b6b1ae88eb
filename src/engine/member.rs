//! A loaded model as the engine runs it: its replica pool, request queue, circuit breaker and
//! injected faults, one guarded call, and the one check of a model's output column that the members'
//! own path and the fused path share.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ort::value::DynValue;

use super::counters::ModelTelemetry;
use crate::batch_size;
use crate::batching::BatchingOptions;
use crate::breaker::{BreakerOptions, CircuitBreaker};
use crate::error::{Error, Result};
use crate::features::gather;
use crate::native::{self, ExecutorInfo, NativeModel};
use crate::prediction::Name;
use crate::registry::{self, ModelMetadata, OutputSpec, Registry};
use crate::remote::{RemoteModel, DEFAULT_REMOTE_TIMEOUT};
use crate::replicas::{LoadPolicy, ModelOptions, ReplicaPool, RunOutcome};
use crate::runtime::{ExecutionProvider, Runtime};

/// A fault injected into a model (for tests of degraded operation): every call to the model fails,
/// panics, or sleeps first, or a fraction of calls fails, until cleared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Every call fails.
    Fail,
    /// Every call panics (the panic is caught and counted as a failure).
    Panic,
    /// Every call sleeps this long first (cut off at the ensemble's latency budget).
    Slow(Duration),
    /// This fraction of calls (0 to 1) fails, spread evenly (with 0.1, every tenth call).
    FailFraction(f32),
}

impl Fault {
    /// A fault as the bindings name it: `"fail"`, `"panic"`, `"slow"` (`amount`: milliseconds each
    /// call sleeps first), `"fail_fraction"` (`amount`: the fraction of calls, 0 to 1), or `"none"`
    /// (`None`: behave again).
    ///
    /// # Errors
    /// `invalid_input` for another kind or a missing or out-of-range amount.
    pub fn from_kind(kind: &str, amount: Option<f64>) -> Result<Option<Fault>> {
        let invalid = |why: &str| Error::InvalidInput(format!("fault {kind:?}: {why}"));
        let amount_in = |lo: f64, hi: f64, unit: &str| match amount {
            Some(a) if a.is_finite() && (lo..=hi).contains(&a) => Ok(a),
            Some(a) => Err(invalid(&format!("amount {a} is not within {lo} to {hi} {unit}"))),
            None => Err(invalid(&format!("needs an amount ({unit})"))),
        };
        match kind {
            "none" => Ok(None),
            "fail" => Ok(Some(Fault::Fail)),
            "panic" => Ok(Some(Fault::Panic)),
            "slow" => {
                Ok(Some(Fault::Slow(Duration::from_secs_f64(amount_in(0.0, 3_600_000.0, "milliseconds")? / 1e3))))
            }
            "fail_fraction" => Ok(Some(Fault::FailFraction(amount_in(0.0, 1.0, "a fraction of calls")? as f32))),
            _ => Err(invalid("the kinds are none, fail, panic, slow and fail_fraction")),
        }
    }
}

/// What kind of fault a model has now; one atomic byte, read on every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum FaultKind {
    None = 0,
    Fail = 1,
    Panic = 2,
    Slow = 3,
    FailSome = 4,
}

impl FaultKind {
    fn from_u8(code: u8) -> FaultKind {
        match code {
            1 => FaultKind::Fail,
            2 => FaultKind::Panic,
            3 => FaultKind::Slow,
            4 => FaultKind::FailSome,
            _ => FaultKind::None,
        }
    }
}

/// A model's injected fault: the kind and, for [`Fault::Slow`], the delay.
#[derive(Debug)]
struct FaultSlot {
    kind: AtomicU8,
    delay_us: AtomicU64,
    /// [`Fault::FailFraction`] in parts per million, and the calls counted so far.
    fraction_ppm: AtomicU64,
    calls: AtomicU64,
}

impl FaultSlot {
    fn kind(&self) -> FaultKind {
        FaultKind::from_u8(self.kind.load(Ordering::Acquire))
    }

    fn set(&self, fault: Option<Fault>) {
        let (kind, delay) = match fault {
            None => (FaultKind::None, Duration::ZERO),
            Some(Fault::Fail) => (FaultKind::Fail, Duration::ZERO),
            Some(Fault::Panic) => (FaultKind::Panic, Duration::ZERO),
            Some(Fault::Slow(d)) => (FaultKind::Slow, d),
            Some(Fault::FailFraction(f)) => {
                let ppm = (f64::from(f).clamp(0.0, 1.0) * 1e6).round() as u64;
                self.fraction_ppm.store(ppm, Ordering::Relaxed);
                (FaultKind::FailSome, Duration::ZERO)
            }
        };
        // The delay first, published by the kind's release store: a call that sees `Slow` (acquire
        // load; a plain load on x86) reads this delay or a newer one.
        self.delay_us.store(delay.as_micros().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
        self.kind.store(kind as u8, Ordering::Release);
    }

    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// Whether this call is one of the failing fraction's (call n fails when ⌊(n+1)f⌋ > ⌊nf⌋).
    fn this_call_fails(&self) -> bool {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let ppm = self.fraction_ppm.load(Ordering::Relaxed);
        (n + 1) * ppm / 1_000_000 > n * ppm / 1_000_000
    }
}

/// A model with its replicas, its request queue and its circuit breaker.
pub(super) struct LoadedModel {
    /// Its name, as every prediction reports it (a [`Name`]: cloned per row without a shared count).
    pub name: Name,
    /// The class label its prediction is the probability of (`output.label`).
    pub class: Option<Name>,
    pub meta: ModelMetadata,
    pub pool: ReplicaPool,
    /// The model's native plan, when it has one that agreed with ONNX Runtime at load: every call
    /// then runs it on the caller's thread and the pool's sessions stay unloaded.
    pub native: Option<NativeModel>,
    /// Which executor runs the model, and why not native.
    pub executor: ExecutorInfo,
    /// For a model served by another server: its client. Its pool then stays unloaded.
    remote: Option<RemoteModel>,
    /// Large batches of a native MLP on a GPU, and from how many rows (feature `gpu`).
    #[cfg(feature = "gpu")]
    gpu: Option<(std::sync::Mutex<crate::native::gpu::GpuMlp>, usize)>,
    /// The batching configured for the model, when it coalesces rows (not for a model that takes
    /// one row per call): an ensemble with such a member queues its requests under contention.
    pub batching: Option<BatchingOptions>,
    /// Batches of queued requests this model ran (for an ensemble's dispatcher, fused or not) and
    /// the rows they carried.
    pub batches: AtomicU64,
    pub batched_rows: AtomicU64,
    pub breaker: CircuitBreaker,
    fault: FaultSlot,
    pub telemetry: ModelTelemetry,
    /// Set by an alert (model_failure → activate_fallback_model): every call is refused at once so
    /// that members with a fallback use it; not counted as the model's own calls or failures.
    pub forced_fallback: AtomicBool,
}

/// The rows a model call runs on: the ensemble's dense rows, `width` values each, of which the
/// member takes the columns `indices`.
pub(super) struct Rows<'a> {
    pub dense: &'a [f32],
    pub width: usize,
    pub indices: &'a [usize],
}

/// Replicas per default session (one per core) of a model that takes one row per call, unless its
/// options set them: such a model has no batch to share a call among callers, and when callers
/// outnumber cores, a replica held by a caller the scheduler has set aside idles. On a 2-core AMD
/// EPYC, 64 callers made a median 0.84 of two inline threads with one replica per core and 0.88
/// with two (`examples/exporters_bench.rs`, six alternating runs, each run ahead); four per core
/// made 0.90–1.06 but let calls wait past a 100 ms latency budget (1 to 27 of 400,000 failed in a
/// run), so two it is. The replicas share their weights (`share_weights`). Native and remote
/// models, which load no session unless asked, keep the default.
const ONE_ROW_REPLICAS: usize = 2;

impl LoadedModel {
    pub fn load(
        runtime: &Runtime,
        registry: &Registry,
        meta: ModelMetadata,
        breaker: BreakerOptions,
        options: &ModelOptions,
        native: bool,
    ) -> Result<LoadedModel> {
        let range = options.validate(runtime.options().sessions_per_model())?;
        let width = meta.features.len();
        let remote = match &meta.remote {
            Some(spec) => Some(RemoteModel::open(spec, &meta.features, &meta.output.name).map_err(|reason| {
                Error::ModelLoad { model: meta.name.clone(), reason: format!("remote {}: {reason}", spec.url) }
            })?),
            None => None,
        };
        let plan = if let Some(remote) = &remote {
            Err(format!("it is served remotely ({})", remote.url()))
        } else if !native {
            Err("native executors are off (EngineBuilder::with_native)".to_string())
        } else if !matches!(options.provider, ExecutionProvider::Cpu) {
            Err(format!("it is configured for the {} execution provider", options.provider.name()))
        } else {
            registry
                .read_verified(&meta)
                .map_err(|e| e.to_string())
                .and_then(|bytes| native::verified(runtime, &meta.name, &bytes, &meta.output.name, width, None))
        };
        let (native, executor) = match (plan, &remote) {
            (_, Some(remote)) => (None, ExecutorInfo::remote(remote.url())),
            (Ok(plan), None) => (Some(plan), ExecutorInfo::native()),
            (Err(why), None) => (None, ExecutorInfo::onnxruntime(why)),
        };
        #[cfg(feature = "gpu")]
        let mut executor = executor;
        #[cfg(feature = "gpu")]
        let gpu = match (&native, options.native_gpu) {
            (Some(plan), Some(gpu)) => match native::gpu::GpuMlp::verified(plan, gpu) {
                Ok(mlp) => {
                    executor.gpu = Some(format!("cuda:{} {:?}, from {} rows", gpu.device, gpu.precision, gpu.min_rows));
                    Some((std::sync::Mutex::new(mlp), gpu.min_rows))
                }
                Err(why) => {
                    executor.gpu = Some(format!("not on the GPU: {why}"));
                    None
                }
            },
            _ => None,
        };

        // A native or remote model needs no session: its pool loads one only if asked (a remote
        // one never is).
        let lazy;
        let lazy_pool = native.is_some() || remote.is_some();
        let options = if lazy_pool {
            let mut o = options.clone().with_load_policy(LoadPolicy::Lazy);
            // Concurrent rows for a remote model are worth one request: coalesce them by default.
            if remote.is_some() && o.batching.is_none() {
                o.batching = Some(BatchingOptions::default());
            }
            lazy = o;
            &lazy
        } else {
            options
        };
        let range = match range {
            (min, max) if options.replicas.is_none() && meta.max_batch == Some(1) && !lazy_pool => {
                (min * ONE_ROW_REPLICAS, max * ONE_ROW_REPLICAS)
            }
            range => range,
        };
        let pool = ReplicaPool::new(runtime, registry, meta.clone(), options, range)?;
        // A model that takes one row per call gains nothing from coalescing: its ensemble's
        // callers run inline on the pool.
        let batching = options.batching.filter(|_| meta.max_batch != Some(1));
        Ok(LoadedModel {
            name: Name::new(&meta.name),
            class: meta.output.label.as_deref().map(Name::new),
            batching,
            batches: AtomicU64::new(0),
            batched_rows: AtomicU64::new(0),
            meta,
            pool,
            native,
            executor,
            remote,
            #[cfg(feature = "gpu")]
            gpu,
            breaker: CircuitBreaker::new(breaker),
            fault: FaultSlot {
                kind: AtomicU8::new(FaultKind::None as u8),
                delay_us: AtomicU64::new(0),
                fraction_ppm: AtomicU64::new(0),
                calls: AtomicU64::new(0),
            },
            telemetry: ModelTelemetry::new(),
            forced_fallback: AtomicBool::new(false),
        })
    }

    /// Whether the model is served by another server (it then never joins a fused session).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Whether a fault is injected now (the fused path then leaves the call to the members' own).
    pub fn has_fault(&self) -> bool {
        self.fault.kind() != FaultKind::None
    }

    /// Whether the fused path must leave this model to the members' own calls: a fault is injected,
    /// or an alert sent it to its fallback.
    pub fn diverted(&self) -> bool {
        self.has_fault() || self.forced_fallback.load(Ordering::Relaxed)
    }

    pub fn inject(&self, fault: Option<Fault>) {
        self.fault.set(fault);
    }

    /// [`LoadedModel::run`] behind the model's circuit breaker, with injected faults applied and a
    /// panic turned into this call's failure (the replica goes back to its pool while unwinding).
    /// Writes row `r`'s prediction to `out[r * stride + member]`, `stride = out.len() / count`.
    /// `limit`: when the call must end (an ensemble's latency budget); it is cut off then.
    pub fn call(
        &self,
        rows: Rows<'_>,
        count: usize,
        out: &mut [f32],
        member: usize,
        limit: Option<Instant>,
    ) -> Result<usize> {
        let unavailable = |reason: String| Error::MemberUnavailable { model: self.meta.name.clone(), reason };
        if self.forced_fallback.load(Ordering::Relaxed) {
            return Err(unavailable("an alert sent its calls to its fallback".into()));
        }
        let Some(permit) = self.breaker.try_acquire() else {
            self.telemetry.refused();
            return Err(unavailable("its circuit breaker is open".into()));
        };
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            match self.fault.kind() {
                FaultKind::Fail => return Err(unavailable("injected failure".into())),
                FaultKind::FailSome if self.fault.this_call_fails() => {
                    return Err(unavailable("injected failure (a fraction of calls)".into()))
                }
                FaultKind::Panic => panic!("injected panic in model {}", self.meta.name),
                FaultKind::None | FaultKind::Slow | FaultKind::FailSome => {}
            }
            self.run(rows, count, out, member, started, limit)
        }))
        .unwrap_or_else(|_| Err(unavailable("it panicked".into())));
        let elapsed = started.elapsed();
        self.breaker.record(permit, elapsed, result.is_err());
        self.telemetry.call(result.is_err(), elapsed);
        result
    }

    /// The model's own timeout, or what is left of the budget when that is shorter (and whether the
    /// budget is the limit).
    fn time_left(&self, limit: Option<Instant>) -> (Option<Duration>, bool) {
        let left = limit.map(|end| end.saturating_duration_since(Instant::now()));
        match (self.pool.timeout(), left) {
            (Some(own), Some(left)) if left < own => (Some(left), true),
            (Some(own), _) => (Some(own), false),
            (None, Some(left)) => (Some(left), true),
            (None, None) => (None, false),
        }
    }

    /// An injected slow fault sleeps first, cut off at the timeout.
    fn injected_delay(&self, timeout: Option<Duration>, by_budget: bool) -> Result<()> {
        if self.fault.kind() != FaultKind::Slow {
            return Ok(());
        }
        let delay = self.fault.delay();
        match timeout {
            Some(t) if delay > t => {
                std::thread::sleep(t);
                Err(self.timed_out(t, by_budget))
            }
            _ => {
                std::thread::sleep(delay);
                Ok(())
            }
        }
    }

    fn timed_out(&self, timeout: Duration, budget: bool) -> Error {
        let what = if budget { "cut off when the ensemble's latency budget was spent" } else { "timed out" };
        Error::MemberUnavailable {
            model: self.meta.name.clone(),
            reason: format!("{what} after {:.3} ms", timeout.as_secs_f64() * 1e3),
        }
    }

    /// Runs the model once on `count` rows on an idle replica, under its timeout, past the breaker
    /// (the fusion probe calls it directly: probing is not traffic).
    /// Returns the rows run (`count`).
    pub fn run(
        &self,
        rows: Rows<'_>,
        count: usize,
        out: &mut [f32],
        member: usize,
        started: Instant,
        limit: Option<Instant>,
    ) -> Result<usize> {
        let stride = out.len() / count;
        if self.native.is_some() {
            return self.run_native(rows, count, out, stride, member, limit);
        }
        if self.remote.is_some() {
            return self.run_remote(rows, count, out, stride, member, limit);
        }
        let mut replica = self.pool.checkout(started)?;
        // The model's own timeout, or what is left of the budget when that is shorter.
        let (timeout, by_budget) = self.time_left(limit);
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(self.timed_out(Duration::ZERO, by_budget));
        }
        // An injected slow call holds its replica, as a slow model would, and obeys the timeout.
        self.injected_delay(timeout, by_budget)?;
        let columns = self.meta.features.len();
        let meta = &self.meta;
        let outcome = replica.run(timeout, |session, input, options| -> Result<usize> {
            gather(rows.dense, rows.width, rows.indices, input);
            if count == 0 {
                return Ok(0);
            }
            let target =
                OutputTarget { model: &meta.name, spec: &meta.output, name: &meta.output.name, task: meta.task };
            // A model with a fixed batch size gets as many calls as that takes.
            let per_call = meta.max_batch.map(|n| n as usize);
            batch_size::in_calls(&input[..count * columns], columns, per_call, &mut Vec::new(), |piece| {
                // Converted once per call when the model takes another type than float32.
                let tensor = meta.input_type.tensor(piece.input_rows, columns, piece.input)?;
                let outputs = match options {
                    Some(options) => session.run_with_options(ort::inputs![tensor], options)?,
                    None => session.run(ort::inputs![tensor])?,
                };
                let value = outputs.get(&meta.output.name);
                let out = &mut out[piece.first * stride..];
                target.write(value, piece.input_rows, piece.rows, out, stride, member)
            })?;
            Ok(count)
        });
        match outcome {
            RunOutcome::Done(result) => result,
            RunOutcome::TimedOut => Err(self.timed_out(timeout.unwrap_or_default(), by_budget)),
        }
    }
}

impl LoadedModel {
    /// For a call that cannot be cut off once started (a native plan, a remote request bounded by
    /// its own deadline): the time it may take (see `time_left`, else `default`), refused when none
    /// is left, after any injected slow call.
    fn admit(&self, limit: Option<Instant>, default: Option<Duration>) -> Result<(Option<Duration>, bool)> {
        let (timeout, by_budget) = self.time_left(limit);
        let timeout = timeout.or(default);
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(self.timed_out(Duration::ZERO, by_budget));
        }
        self.injected_delay(timeout, by_budget)?;
        Ok((timeout, by_budget))
    }

    /// [`LoadedModel::run`] on the native plan, on this thread. A plan runs in microseconds and
    /// cannot be interrupted: the budget and an injected slow call are honoured before it starts.
    fn run_native(
        &self,
        rows: Rows<'_>,
        count: usize,
        out: &mut [f32],
        stride: usize,
        member: usize,
        limit: Option<Instant>,
    ) -> Result<usize> {
        self.admit(limit, None)?;
        let Some(plan) = &self.native else { return Err(Error::Internal("no native plan".into())) };
        let width = self.meta.features.len();
        let mut fill = |input: &mut Vec<f32>| -> usize {
            gather(rows.dense, rows.width, rows.indices, input);
            count
        };
        let meta = &self.meta;
        let target = OutputTarget { model: &meta.name, spec: &meta.output, name: &meta.output.name, task: meta.task };
        let columns = plan.output_width();
        debug_assert_eq!(plan.input_width(), width);
        #[cfg(feature = "gpu")]
        let mut on_gpu = |input: &[f32], rows: usize, answer: &mut Vec<f32>| -> bool {
            // A busy GPU is not waited for: the CPU plan answers this call.
            let Some((gpu, _)) = self.gpu.as_ref().filter(|(_, min)| rows >= *min) else { return false };
            let Ok(mut gpu) = gpu.try_lock() else { return false };
            gpu.run(input, rows, answer).is_ok()
        };
        #[cfg(feature = "gpu")]
        let device: Option<&mut native::Device<'_>> = if self.gpu.is_some() { Some(&mut on_gpu) } else { None };
        #[cfg(not(feature = "gpu"))]
        let device = None;
        plan.run_with(&mut fill, device, |values, rows| {
            if rows == 0 {
                return Ok(0);
            }
            let column = meta.output.column.unwrap_or(0);
            target.check_rows(|r| values[r * columns + column], rows, out, stride, member)?;
            Ok(rows)
        })
    }
}

impl LoadedModel {
    /// [`LoadedModel::run`] as requests to the model's server, on this thread: as many as its
    /// batch limit takes, each bounded by what is left of the model's timeout or the budget (or
    /// [`DEFAULT_REMOTE_TIMEOUT`] when neither applies). Any failure — unreachable, refused, late,
    /// malformed — is this call's, for the breaker and the fallback.
    fn run_remote(
        &self,
        rows: Rows<'_>,
        count: usize,
        out: &mut [f32],
        stride: usize,
        member: usize,
        limit: Option<Instant>,
    ) -> Result<usize> {
        let Some(remote) = &self.remote else { return Err(Error::Internal("no remote client".into())) };
        let (timeout, by_budget) = self.admit(limit, Some(DEFAULT_REMOTE_TIMEOUT))?;
        let timeout = timeout.unwrap_or(DEFAULT_REMOTE_TIMEOUT);
        let deadline = Instant::now() + timeout;
        let width = self.meta.features.len();
        let mut input = Vec::with_capacity(count * width);
        gather(rows.dense, rows.width, rows.indices, &mut input);
        let meta = &self.meta;
        let target = OutputTarget { model: &meta.name, spec: &meta.output, name: &meta.output.name, task: meta.task };
        let column = meta.output.column.unwrap_or(0);
        let per_request = meta.max_batch.map_or(count, |n| (n as usize).max(1));
        let mut first = 0;
        while first < count {
            let n = per_request.min(count - first);
            let answer = remote.infer(&input[first * width..(first + n) * width], n, deadline).map_err(|reason| {
                let late = Instant::now() >= deadline;
                if late {
                    self.timed_out(timeout, by_budget)
                } else {
                    Error::MemberUnavailable { model: meta.name.clone(), reason: format!("remote: {reason}") }
                }
            })?;
            if column >= answer.columns {
                return Err(Error::OutputShape {
                    model: meta.name.clone(),
                    expected: format!("column {column} of output {:?}", meta.output.name),
                    found: format!("{} column(s)", answer.columns),
                });
            }
            let values = &answer.values;
            let columns = answer.columns;
            target.check_rows(|r| values[r * columns + column], n, &mut out[first * stride..], stride, member)?;
            first += n;
        }
        Ok(count)
    }
}

/// Where one model's prediction column is read from: the model, its declared output, and the name
/// that output has in the session that ran (its own, or its prefixed name in a fused model).
pub(super) struct OutputTarget<'a> {
    pub model: &'a str,
    pub spec: &'a OutputSpec,
    pub name: &'a str,
    /// A classifier's output must be a probability.
    pub task: registry::Task,
}

impl OutputTarget<'_> {
    /// Checks the output (present, declared shape, finite, a probability for a classifier) and writes row `r`'s value
    /// to
    /// `out[r * stride + member]`.
    #[inline]
    /// `produced`: the rows the model was given (a fixed batch size may exceed `rows`, the rows
    /// meant).
    pub fn write(
        &self,
        value: Option<&DynValue>,
        produced: usize,
        rows: usize,
        out: &mut [f32],
        stride: usize,
        member: usize,
    ) -> Result<()> {
        let value = value.ok_or_else(|| Error::OutputShape {
            model: self.model.to_string(),
            expected: format!("an output named {:?}", self.name),
            found: "no such output".into(),
        })?;
        let column = registry::read_output_column(self.model, value, self.spec, produced)?;
        self.check_rows(|row| column.get(row), rows, out, stride, member)
    }

    /// The checks of [`OutputTarget::write`] on values read through `get(row)`.
    #[inline]
    pub fn check_rows(
        &self,
        get: impl Fn(usize) -> f32,
        rows: usize,
        out: &mut [f32],
        stride: usize,
        member: usize,
    ) -> Result<()> {
        // One pass that copies and checks without a branch per row; the rows are searched for the
        // culprit only when some value is bad.
        let classifier = self.task == registry::Task::Classification;
        let mut fine = true;
        for row in 0..rows {
            let v = get(row);
            fine &= v.is_finite() & (!classifier | registry::is_probability(v));
            out[row * stride + member] = v;
        }
        if fine {
            return Ok(());
        }
        for row in 0..rows {
            let v = get(row);
            if !v.is_finite() {
                return Err(Error::OutputShape {
                    model: self.model.to_string(),
                    expected: "finite predictions".into(),
                    found: format!("{v} in row {row}"),
                });
            }
            if classifier {
                registry::check_probability(self.model, v, row)?;
            }
        }
        Ok(())
    }
}

/// One ensemble member: its model, its columns in the ensemble schema, and its fallback.
pub(super) struct Member {
    pub model: Arc<LoadedModel>,
    /// The member's features as positions in the ensemble schema.
    pub indices: Vec<usize>,
    /// A model that stands in when this one fails or its breaker is open, with its feature positions.
    pub fallback: Option<(Arc<LoadedModel>, Vec<usize>)>,
}
