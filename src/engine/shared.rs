//! Several processes, one ensemble (a shared PostgreSQL state): outcomes go into one ordered log
//! instead of straight into the learners, and a consumer thread applies the log in order — the
//! outcomes this process received and every other replica's alike — so learnt weights and tracked
//! metrics are a function of the log alone and equal on every replica. Registrations and ensemble
//! changes go into a change feed the same thread follows.
//!
//! An outcome is joined with its prediction where it arrives: from this process's pending ring, or
//! from the inference log written by whichever replica predicted it. The log entry carries the
//! member values, so applying it needs nothing else.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{EngineInner, InferenceEngine};
use crate::error::{Error, Result};
use crate::registry::Task;
use crate::state::{Change, LoggedPrediction, OutcomeEntry, SharedLog};
use crate::telemetry::Counter;

/// How long an outcome waits for its prediction to reach the inference log (written in batches by
/// the replica that made it), and for this process to apply it.
const JOIN_WAIT: Duration = Duration::from_secs(3);
/// Entries applied per read of the log.
const READ_LIMIT: usize = 2_000;
/// The consumer polls at least this often even without a notification.
const POLL: Duration = Duration::from_millis(500);

/// Where this process stands in the shared logs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharedStatus {
    /// This process's instance number (request ids start at `instance << 40`).
    pub instance: u32,
    /// The last outcome log position applied here.
    pub applied_position: i64,
    /// The log's last position when this process started: ready once applied up to it.
    pub start_position: i64,
    /// Whether this process has applied the log up to `start_position` (ready to serve).
    pub caught_up: bool,
    /// Entries applied since start.
    pub applied: u64,
    /// Entries not applicable here (their ensemble version is not the one loaded, or unknown).
    pub skipped: u64,
    /// Failed reads of the logs (retried).
    pub read_errors: u64,
}

pub(super) struct Shared {
    pub log: Arc<dyn SharedLog>,
    applied: Mutex<i64>,
    applied_changed: Condvar,
    start_position: i64,
    applied_count: Counter,
    skipped: Counter,
    read_errors: Counter,
    change_position: Mutex<i64>,
}

impl Shared {
    /// Reads where the logs stand now: changes before this are already in the home this process
    /// loads; outcomes are all replayed.
    pub fn new(log: Arc<dyn SharedLog>) -> Result<Shared> {
        let start_position = log.head()?;
        let change_position = log.changes_after(0)?.last().map_or(0, |c| c.position);
        Ok(Shared {
            log,
            applied: Mutex::new(0),
            applied_changed: Condvar::new(),
            start_position,
            applied_count: Counter::default(),
            skipped: Counter::default(),
            read_errors: Counter::default(),
            change_position: Mutex::new(change_position),
        })
    }

    fn applied(&self) -> i64 {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_applied(&self, position: i64) {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = position;
        self.applied_changed.notify_all();
    }

    /// Waits until `position` is applied here (read-your-writes for the caller), at most `timeout`.
    fn wait_applied(&self, position: i64, timeout: Duration) {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.applied_changed.wait_timeout_while(applied, timeout, |a| *a < position);
    }

    pub fn status(&self) -> SharedStatus {
        let applied_position = self.applied();
        SharedStatus {
            instance: self.log.instance(),
            applied_position,
            start_position: self.start_position,
            caught_up: applied_position >= self.start_position,
            applied: self.applied_count.get(),
            skipped: self.skipped.get(),
            read_errors: self.read_errors.get(),
        }
    }
}

/// Applies the logs in order until the engine is dropped.
pub(super) fn spawn_consumer(engine: Weak<EngineInner>, shared: Arc<Shared>) -> Result<()> {
    std::thread::Builder::new()
        .name("quorum-outcome-log".into())
        .spawn(move || loop {
            let Some(inner) = engine.upgrade() else { return };
            let engine_now = InferenceEngine { inner };
            let progressed = engine_now.consume(&shared);
            drop(engine_now);
            if !progressed {
                shared.log.wait(POLL);
            }
        })
        .map(drop)
        .map_err(|e| Error::io("starting the outcome log consumer", e))
}

impl InferenceEngine {
    fn shared(&self) -> Option<&Arc<Shared>> {
        self.inner.shared.as_ref()
    }

    /// Where this process stands in the shared outcome log (a PostgreSQL state), else `None`.
    pub fn shared_status(&self) -> Option<SharedStatus> {
        self.shared().map(|s| s.status())
    }

    /// One pass over both logs; whether anything was read.
    fn consume(&self, shared: &Shared) -> bool {
        let mut progressed = false;
        match shared.log.outcomes_after(shared.applied(), READ_LIMIT) {
            Ok(entries) => {
                for entry in &entries {
                    self.apply_entry(shared, entry);
                    shared.set_applied(entry.position);
                }
                progressed |= !entries.is_empty();
            }
            Err(_) => {
                shared.read_errors.inc();
                std::thread::sleep(POLL);
            }
        }
        let from = *shared.change_position.lock().unwrap_or_else(|p| p.into_inner());
        match shared.log.changes_after(from) {
            Ok(changes) => {
                for change in &changes {
                    if change.instance != shared.log.instance() {
                        self.apply_change(change);
                    }
                    *shared.change_position.lock().unwrap_or_else(|p| p.into_inner()) = change.position;
                }
                progressed |= !changes.is_empty();
            }
            Err(_) => shared.read_errors.inc(),
        }
        progressed
    }

    /// Scores and learns from one entry, exactly as [`InferenceEngine::record_outcome`] does in one
    /// process. Refits run here, synchronously, so they happen at the same point of the log on every
    /// replica.
    fn apply_entry(&self, shared: &Shared, entry: &OutcomeEntry) {
        let p = &entry.prediction;
        let Some(tracker) = self.inner.tracker.as_ref() else { return };
        let Ok(handle) = self.ensemble(&p.ensemble) else {
            shared.skipped.inc();
            return;
        };
        // The version that predicted: the current one, or the treatment of the experiment this
        // process runs on the ensemble.
        let mut loaded = handle.slot.load_full();
        if loaded.key.version != p.version {
            let treatment = handle.slot.experiment.load_full().and_then(|r| r.treatment.load_full());
            if let Some(t) = treatment.filter(|t| t.key.version == p.version) {
                loaded = t;
            }
        }
        let key = &loaded.key;
        if key.version != p.version || key.members.len() != p.members.len() {
            shared.skipped.inc();
            return;
        }
        tracker.score(key, loaded.task, p.regime, p.prediction, &p.members, entry.outcome as f32);
        if key.learning.learn(p.regime, &p.members, entry.outcome) {
            key.learning.refit();
        }
        shared.applied_count.inc();
        // An experiment runs per process: it is credited with the outcomes of its own predictions
        // (their ids carry this instance), wherever the outcome was posted.
        if entry.request_id >> 40 == u64::from(shared.log.instance()) {
            let credited = self.inner.credit_experiment(
                entry.request_id,
                &p.ensemble,
                p.version,
                p.prediction,
                entry.outcome as f32,
                entry.business_value,
            );
            if credited.is_err() {
                // Saving the experiment's state failed: counted with the other failed state writes.
                self.inner.flush_errors.inc();
            }
        }
    }

    /// Another replica changed the shared home: reload what it names.
    fn apply_change(&self, change: &Change) {
        // Failures leave this replica on what it had; the next change or a restart retries.
        let _ = match (change.kind.as_str(), change.version) {
            ("model", Some(version)) => self.set_default_version_local(&change.name, version).map(drop),
            ("ensemble", Some(version)) => self.set_default_ensemble_version_local(&change.name, version).map(drop),
            ("ensemble", None) => self.load_ensemble(&change.name).map(drop),
            _ => Ok(()),
        };
    }

    /// Tells the other replicas about a change made here (no-op without a shared state).
    pub(super) fn announce(&self, kind: &str, name: &str, version: Option<u32>) -> Result<()> {
        match self.shared() {
            Some(shared) => shared.log.append_change(kind, name, version),
            None => Ok(()),
        }
    }

    /// [`InferenceEngine::record_outcome_valued`] with a shared state: the outcome joins the log.
    pub(super) fn record_outcome_shared(
        &self,
        shared: &Shared,
        request_id: u64,
        outcome: f64,
        business_value: Option<f64>,
    ) -> Result<()> {
        let tracker = self.inner.tracker()?;
        if !outcome.is_finite() {
            return Err(Error::Outcome(format!("outcome {outcome} for request {request_id} is not finite")));
        }
        let (prediction, task) = match tracker.peek(request_id) {
            Some((pending, task)) => {
                let logged = LoggedPrediction {
                    ensemble: pending.key.name.to_string(),
                    version: pending.key.version,
                    regime: pending.regime,
                    prediction: pending.prediction,
                    members: pending.members,
                };
                (logged, task)
            }
            None => {
                let logged = self.find_logged(shared, request_id)?;
                let task = self.ensemble(&logged.ensemble)?.task();
                (logged, task)
            }
        };
        if task == Task::Classification && outcome != 0.0 && outcome != 1.0 {
            return Err(Error::Outcome(format!(
                "outcome {outcome} for request {request_id}: a classification outcome is 0 or 1"
            )));
        }
        let Some(position) = shared.log.append_outcome(request_id, &prediction, outcome, business_value)? else {
            return Err(Error::Outcome(format!("the outcome of request {request_id} is already recorded (once each)")));
        };
        shared.log.wake();
        shared.wait_applied(position, JOIN_WAIT);
        Ok(())
    }

    /// A prediction another replica made, from the inference log; it may still be in that replica's
    /// write queue, so this waits for it a little.
    fn find_logged(&self, shared: &Shared, request_id: u64) -> Result<LoggedPrediction> {
        let started = Instant::now();
        // This replica's own prediction gone from its ring (expired or overwritten) is in the inference
        // log already or never will be, and an id no instance can have issued never will: no reason to
        // wait (nor to let a bogus id hold a thread).
        let instance = request_id >> 40;
        let hopeless =
            instance == u64::from(shared.log.instance()) || instance == 0 || instance > crate::state::MAX_INSTANCE;
        loop {
            if let Some(found) = shared.log.find_prediction(request_id)? {
                return Ok(found);
            }
            if hopeless || started.elapsed() >= JOIN_WAIT {
                return Err(Error::Outcome(format!(
                    "unknown request id {request_id}: it is neither pending on this replica nor in the inference log \
                     (outcomes for a replica's predictions reach other replicas through the inference log)"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
