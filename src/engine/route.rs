//! Where a request's load comes from: the ensemble's [`EnsembleSlot`] (its current load, swapped
//! by a hot swap) and, while an experiment runs, the [`RunningExperiment`] that picks each request's
//! arm by its routing key, hands treatment requests the treatment's load, and counts each arm's
//! requests (errors, degraded answers, a latency histogram) for the guardrails.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};

use super::loaded::LoadedEnsemble;
use crate::error::{Error, Result};
use crate::experiment::{bucket, Action, Arm, ArmWindow, Experiment, ExperimentState, ExperimentStatus};
use crate::prediction::ExperimentArm;
use crate::telemetry::{fine_latency_bounds, Counter, Histogram, HistogramSnapshot};

/// The slot an ensemble's current load lives in; handles read it, a reload (hot swap) replaces it.
/// While an experiment runs on the ensemble it sits here too, so that routing costs one more
/// lock-free load and nothing without one.
pub(super) struct EnsembleSlot {
    current: ArcSwap<LoadedEnsemble>,
    pub experiment: ArcSwapOption<RunningExperiment>,
}

impl EnsembleSlot {
    pub fn new(loaded: Arc<LoadedEnsemble>) -> EnsembleSlot {
        EnsembleSlot { current: ArcSwap::new(loaded), experiment: ArcSwapOption::empty() }
    }

    pub fn load(&self) -> Guard<Arc<LoadedEnsemble>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<LoadedEnsemble> {
        self.current.load_full()
    }

    pub fn store(&self, loaded: Arc<LoadedEnsemble>) {
        self.current.store(loaded);
    }
}

/// One arm's live request counts (atomics: any number of predicting threads add to them).
pub(super) struct ArmCounters {
    requests: Counter,
    errors: Counter,
    degraded: Counter,
    latency: Histogram,
}

impl Default for ArmCounters {
    fn default() -> Self {
        ArmCounters {
            requests: Counter::default(),
            errors: Counter::default(),
            degraded: Counter::default(),
            latency: Histogram::new(fine_latency_bounds()),
        }
    }
}

/// A snapshot of an arm's counters (to take interval differences).
#[derive(Clone)]
pub(super) struct Counts {
    requests: u64,
    errors: u64,
    degraded: u64,
    latency: HistogramSnapshot,
}

impl ArmCounters {
    fn observe<T>(&self, result: &Result<T>, degraded: bool, elapsed: Duration) {
        self.requests.inc();
        if result.is_err() {
            self.errors.inc();
        } else if degraded {
            self.degraded.inc();
        }
        self.latency.observe_duration(elapsed);
    }

    pub fn counts(&self) -> Counts {
        Counts {
            requests: self.requests.get(),
            errors: self.errors.get(),
            degraded: self.degraded.get(),
            latency: self.latency.snapshot(),
        }
    }
}

/// What happened between two snapshots (the p95 interpolated within its 19% bucket).
pub(super) fn window(now: &Counts, before: &Counts) -> ArmWindow {
    let latency = now.latency.since(&before.latency);
    ArmWindow {
        requests: now.requests - before.requests,
        errors: now.errors - before.errors,
        degraded: now.degraded - before.degraded,
        p95_ms: latency.quantile(fine_latency_bounds(), 0.95).map(|ns| ns / 1e6),
    }
}

/// Request-id ranges `[from, to)` of past pauses, and the start of the current one.
#[derive(Default)]
struct PausedIds {
    past: Vec<(u64, u64)>,
    since: Option<u64>,
}

/// An experiment the engine is routing (running) or holding (paused) for one ensemble.
pub(super) struct RunningExperiment {
    pub name: Arc<str>,
    pub control_version: u32,
    /// The treatment's load, released when the experiment ends (a promotion hands it to the slot).
    pub treatment: ArcSwapOption<LoadedEnsemble>,
    pub treatment_version: u32,
    /// The treatment's features as positions in the control's schema (`None`: the same order).
    remap: Option<Box<[usize]>>,
    control_width: usize,
    /// The treatment's share in assignment buckets (0 while paused).
    pub split: AtomicU32,
    pub routing: AtomicBool,
    seed: u64,
    /// Assigns requests without a routing key.
    sequence: AtomicU64,
    /// Outcomes of predictions with an id below this one were not routed by the experiment.
    pub first_request_id: u64,
    /// Request ids made while the experiment was paused (not routed): `[from, to)`, and the start
    /// of the current pause.
    paused_ids: Mutex<PausedIds>,
    pub arms: [ArmCounters; 2],
    tags: [ExperimentArm; 2],
    state: Mutex<Experiment>,
}

impl RunningExperiment {
    /// The routing state of `experiment` between the control's load and the treatment's, checked:
    /// one task, and the treatment's features among the control's (its rows are picked from them).
    pub fn new(
        experiment: Experiment,
        control: &LoadedEnsemble,
        treatment: Arc<LoadedEnsemble>,
        first_request_id: u64,
    ) -> Result<RunningExperiment> {
        if treatment.task != control.task {
            return Err(Error::Config(format!(
                "the treatment (version {}) is {:?}, the control (version {}) {:?}",
                treatment.config.version, treatment.task, control.config.version, control.task
            )));
        }
        let control_names = control.schema.names();
        let indices = treatment
            .schema
            .names()
            .iter()
            .map(|f| {
                control.schema.index_of(f).ok_or_else(|| {
                    Error::Config(format!(
                        "the treatment (version {}) consumes feature {f:?}, which the control (version {}) does not: an experiment compares versions over the control's features",
                        treatment.config.version, control.config.version
                    ))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let same = indices.len() == control_names.len() && indices.iter().enumerate().all(|(i, &j)| i == j);
        let name: Arc<str> = Arc::from(experiment.config.name.as_str());
        let tag = |arm| ExperimentArm { name: crate::prediction::name_of(&name), arm };
        Ok(RunningExperiment {
            control_version: experiment.config.control,
            treatment_version: treatment.config.version,
            treatment: ArcSwapOption::new(Some(treatment)),
            remap: (!same).then(|| indices.into_boxed_slice()),
            control_width: control_names.len(),
            split: AtomicU32::new(experiment.split_buckets()),
            routing: AtomicBool::new(experiment.state == ExperimentState::Running),
            seed: experiment.seed,
            sequence: AtomicU64::new(0),
            first_request_id,
            paused_ids: Mutex::new(PausedIds {
                past: Vec::new(),
                since: (experiment.state == ExperimentState::Paused).then_some(first_request_id),
            }),
            arms: [ArmCounters::default(), ArmCounters::default()],
            tags: [tag(Arm::Control), tag(Arm::Treatment)],
            name,
            state: Mutex::new(experiment),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Experiment> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether requests on `control` (the slot's load) go through the experiment: it is running and
    /// the ensemble's active version is still the control.
    pub fn routes(&self, control: &LoadedEnsemble) -> bool {
        self.routing.load(Ordering::Relaxed) && control.config.version == self.control_version
    }

    /// A request's arm and, for the treatment, the load it runs on.
    pub fn route(&self, routing_key: Option<&str>) -> (Arm, Option<Arc<LoadedEnsemble>>) {
        match self.arm_for(routing_key) {
            Arm::Treatment => match self.treatment.load_full() {
                Some(load) => (Arm::Treatment, Some(load)),
                // Ended meanwhile: the control serves.
                None => (Arm::Control, None),
            },
            Arm::Control => (Arm::Control, None),
        }
    }

    /// The arm of a request: its routing key's bucket against the split (a counter's without a key).
    fn arm_for(&self, routing_key: Option<&str>) -> Arm {
        let split = self.split.load(Ordering::Relaxed);
        if split == 0 {
            return Arm::Control;
        }
        let b = match routing_key {
            Some(key) => bucket(self.seed, key.as_bytes()),
            None => bucket(self.seed, &self.sequence.fetch_add(1, Ordering::Relaxed).to_le_bytes()),
        };
        if b < split {
            Arm::Treatment
        } else {
            Arm::Control
        }
    }

    /// The control's dense rows in the treatment's feature order (borrowed when it is the same).
    pub fn treatment_rows<'a>(&self, dense: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        match &self.remap {
            None => std::borrow::Cow::Borrowed(dense),
            Some(indices) => {
                let mut out = Vec::with_capacity(dense.len() / self.control_width.max(1) * indices.len());
                crate::features::gather(dense, self.control_width, indices, &mut out);
                std::borrow::Cow::Owned(out)
            }
        }
    }

    /// Counts a request of `arm` for the guardrails; returns the tag its prediction carries.
    pub fn observe<T>(&self, arm: Arm, result: &Result<T>, degraded: bool, started: Instant) -> ExperimentArm {
        self.arms[arm as usize].observe(result, degraded, started.elapsed());
        self.tags[arm as usize].clone()
    }

    /// Whether request `id` was made while the experiment was paused (so the experiment did not route it).
    pub fn was_paused_at(&self, id: u64) -> bool {
        let paused = self.paused_ids.lock().unwrap_or_else(|p| p.into_inner());
        paused.since.is_some_and(|from| id >= from) || paused.past.iter().any(|&(from, to)| (from..to).contains(&id))
    }

    /// Notes a pause's start or end at the engine's next request id.
    pub fn mark_pause(&self, action: Action, next_id: u64) {
        let mut paused = self.paused_ids.lock().unwrap_or_else(|p| p.into_inner());
        match (action, paused.since) {
            (Action::Paused, None) => paused.since = Some(next_id),
            (Action::Resumed, Some(from)) => {
                paused.past.push((from, next_id));
                paused.since = None;
            }
            _ => {}
        }
    }

    pub fn status(&self) -> ExperimentStatus {
        let mut status = self.lock().status();
        for (arm, counters) in [(&mut status.arms.control, &self.arms[0]), (&mut status.arms.treatment, &self.arms[1])]
        {
            let c = counters.counts();
            arm.requests = Some(c.requests);
            arm.errors = Some(c.errors);
            arm.degraded = Some(c.degraded);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_p95_falls_in_the_bucket_holding_the_95th_percentile() {
        let counters = ArmCounters::default();
        let before = counters.counts();
        for i in 0..100u64 {
            let latency = if i < 90 { Duration::from_micros(100) } else { Duration::from_millis(200) };
            counters.observe(&Ok::<(), Error>(()), false, latency);
        }
        counters.observe(&Err::<(), Error>(Error::Internal("x".into())), false, Duration::from_micros(100));
        let w = window(&counters.counts(), &before);
        assert_eq!((w.requests, w.errors), (101, 1));
        let p95 = w.p95_ms.unwrap();
        assert!((200.0..250.0).contains(&p95), "{p95}");
    }
}
