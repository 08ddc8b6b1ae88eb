//! Outcome tracking: join realised outcomes with logged predictions, and keep per-member and
//! per-ensemble metrics over all time and over a sliding window.
//!
//! Pending predictions live in a fixed ring indexed by request id, so memory is bounded no matter how
//! many outcomes never arrive: a prediction is forgotten when `capacity` newer ones have been made or
//! when it is older than the time-to-live. Recording a prediction locks one ring slot (uncontended:
//! request ids are consecutive) and reuses that slot's buffer, so it does not allocate once warm.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::registry::Task;

/// Bounds of the tracker.
#[derive(Debug, Clone, Copy)]
pub struct TrackingOptions {
    /// Predictions kept waiting for an outcome (default 65 536).
    pub pending_capacity: usize,
    /// How long a prediction waits for its outcome (default 24 h).
    pub pending_ttl: Duration,
    /// Outcomes in the sliding window (default 500).
    pub window: usize,
}

impl Default for TrackingOptions {
    fn default() -> Self {
        TrackingOptions { pending_capacity: 1 << 16, pending_ttl: Duration::from_secs(24 * 3600), window: 500 }
    }
}

/// Classification or regression metrics over some set of outcomes. Fields that do not apply to the
/// task, or that are undefined (precision with no positive prediction), are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Metrics {
    pub count: u64,
    pub accuracy: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1_score: Option<f64>,
    pub mae: Option<f64>,
    pub rmse: Option<f64>,
}

/// Running sums from which [`Metrics`] follow.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsAccumulator {
    tp: u64,
    fp: u64,
    tn: u64,
    fn_: u64,
    count: u64,
    abs_error: f64,
    sq_error: f64,
}

impl MetricsAccumulator {
    /// Adds one (prediction, outcome). Classification predictions are probabilities: class = p ≥ 0.5.
    pub fn add(&mut self, prediction: f32, outcome: f32) {
        self.apply(prediction, outcome, 1);
    }

    fn remove(&mut self, prediction: f32, outcome: f32) {
        self.apply(prediction, outcome, -1);
    }

    fn apply(&mut self, prediction: f32, outcome: f32, sign: i64) {
        let step = |n: &mut u64| *n = n.wrapping_add_signed(sign);
        let (predicted, actual) = (prediction >= 0.5, outcome >= 0.5);
        match (predicted, actual) {
            (true, true) => step(&mut self.tp),
            (true, false) => step(&mut self.fp),
            (false, false) => step(&mut self.tn),
            (false, true) => step(&mut self.fn_),
        }
        step(&mut self.count);
        let error = f64::from(prediction) - f64::from(outcome);
        self.abs_error += sign as f64 * error.abs();
        self.sq_error += sign as f64 * error * error;
    }

    pub fn metrics(&self, task: Task) -> Metrics {
        let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
        let mut m = Metrics { count: self.count, ..Metrics::default() };
        if self.count == 0 {
            return m;
        }
        match task {
            Task::Classification => {
                m.accuracy = ratio(self.tp + self.tn, self.count);
                m.precision = ratio(self.tp, self.tp + self.fp);
                m.recall = ratio(self.tp, self.tp + self.fn_);
                m.f1_score = ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_);
            }
            Task::Regression => {
                let n = self.count as f64;
                m.mae = Some(self.abs_error.max(0.0) / n);
                m.rmse = Some((self.sq_error.max(0.0) / n).sqrt());
            }
        }
        m
    }
}

/// All-time and sliding-window metrics of one predictor (a member or the ensemble).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrackedMetrics {
    pub all_time: Metrics,
    pub window: Metrics,
}

#[derive(Debug, Clone)]
struct Track {
    all_time: MetricsAccumulator,
    window: MetricsAccumulator,
    recent: VecDeque<(f32, f32)>,
}

impl Track {
    fn new(window: usize) -> Track {
        Track {
            all_time: MetricsAccumulator::default(),
            window: MetricsAccumulator::default(),
            recent: VecDeque::with_capacity(window),
        }
    }

    fn add(&mut self, prediction: f32, outcome: f32, window: usize) {
        self.all_time.add(prediction, outcome);
        self.window.add(prediction, outcome);
        self.recent.push_back((prediction, outcome));
        if self.recent.len() > window {
            if let Some((p, o)) = self.recent.pop_front() {
                self.window.remove(p, o);
            }
        }
    }

    fn metrics(&self, task: Task) -> TrackedMetrics {
        TrackedMetrics { all_time: self.all_time.metrics(task), window: self.window.metrics(task) }
    }
}

/// Metrics of one ensemble version and each of its members.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnsembleMetrics {
    pub ensemble: String,
    pub version: u32,
    pub metrics: TrackedMetrics,
    pub members: Vec<(String, TrackedMetrics)>,
}

struct Stats {
    task: Task,
    members: Vec<Arc<str>>,
    ensemble: Track,
    member_tracks: Vec<Track>,
}

/// Which ensemble version a pending prediction belongs to, with its member names (so an outcome can
/// be scored even after the engine moved on to a newer version). Identity is name + version.
#[derive(Debug, Clone)]
pub(crate) struct EnsembleKey {
    pub name: Arc<str>,
    pub version: u32,
    pub members: Arc<[Arc<str>]>,
}

impl PartialEq for EnsembleKey {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.version == other.version
    }
}

impl Eq for EnsembleKey {}

impl std::hash::Hash for EnsembleKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.version.hash(state);
    }
}

struct Pending {
    request_id: u64,
    at: Instant,
    key: Option<EnsembleKey>,
    task: Task,
    prediction: f32,
    /// NaN marks a member that did not answer (it is not scored).
    members: Vec<f32>,
}

/// Joins outcomes with predictions. Shared by an engine's clones.
pub(crate) struct Tracker {
    options: TrackingOptions,
    pending: Box<[Mutex<Pending>]>,
    stats: Mutex<HashMap<EnsembleKey, Stats>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every guarded value stays consistent across a panic (plain field updates), so poison is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tracker {
    pub fn new(options: TrackingOptions) -> Result<Tracker> {
        if options.pending_capacity == 0 || options.window == 0 {
            return Err(Error::Config("tracking capacity and window must be at least 1".into()));
        }
        let now = Instant::now();
        let pending = (0..options.pending_capacity)
            .map(|_| {
                Mutex::new(Pending {
                    request_id: u64::MAX,
                    at: now,
                    key: None,
                    task: Task::Classification,
                    prediction: 0.0,
                    members: Vec::new(),
                })
            })
            .collect();
        Ok(Tracker { options, pending, stats: Mutex::new(HashMap::new()) })
    }

    fn slot(&self, request_id: u64) -> &Mutex<Pending> {
        &self.pending[(request_id % self.pending.len() as u64) as usize]
    }

    /// Logs a prediction; `members[i]` is NaN where member `i` did not answer.
    pub fn record_prediction(
        &self,
        request_id: u64,
        at: Instant,
        key: &EnsembleKey,
        task: Task,
        prediction: f32,
        members: &[f32],
    ) {
        let mut slot = lock(self.slot(request_id));
        slot.request_id = request_id;
        slot.at = at;
        let same = slot.key.as_ref().is_some_and(|k| Arc::ptr_eq(&k.name, &key.name) && k.version == key.version);
        if !same {
            slot.key = Some(key.clone());
        }
        slot.task = task;
        slot.prediction = prediction;
        slot.members.clear();
        slot.members.extend_from_slice(members);
    }

    /// Scores a logged prediction against its realised outcome (for classification, 0 or 1).
    pub fn record_outcome(&self, request_id: u64, outcome: f32) -> Result<()> {
        if !outcome.is_finite() {
            return Err(Error::Outcome(format!("outcome {outcome} for request {request_id} is not finite")));
        }
        let (key, task, prediction, members) = {
            let mut slot = lock(self.slot(request_id));
            let expired = slot.at.elapsed() > self.options.pending_ttl;
            if slot.request_id != request_id || slot.key.is_none() || expired {
                return Err(Error::Outcome(format!(
                    "unknown or expired request id {request_id}: outcomes are joined with the last {} predictions made within {:?}, once each",
                    self.pending.len(),
                    self.options.pending_ttl
                )));
            }
            if slot.task == Task::Classification && outcome != 0.0 && outcome != 1.0 {
                return Err(Error::Outcome(format!(
                    "outcome {outcome} for request {request_id}: a classification outcome is 0 or 1"
                )));
            }
            slot.request_id = u64::MAX; // an outcome is counted once
            let key = slot.key.clone().ok_or_else(|| Error::Outcome("slot without ensemble".into()))?;
            (key, slot.task, slot.prediction, slot.members.clone())
        };
        let window = self.options.window;
        let mut stats = lock(&self.stats);
        let s = stats.entry(key.clone()).or_insert_with(|| Stats {
            task,
            member_tracks: vec![Track::new(window); key.members.len()],
            members: key.members.to_vec(),
            ensemble: Track::new(window),
        });
        s.ensemble.add(prediction, outcome, window);
        for (track, &value) in s.member_tracks.iter_mut().zip(&members) {
            if !value.is_nan() {
                track.add(value, outcome, window);
            }
        }
        Ok(())
    }

    /// Metrics of every tracked version of `ensemble`, oldest version first.
    pub fn metrics(&self, ensemble: &str) -> Vec<EnsembleMetrics> {
        let stats = lock(&self.stats);
        let mut out: Vec<EnsembleMetrics> = stats
            .iter()
            .filter(|(k, _)| &*k.name == ensemble)
            .map(|(k, s)| EnsembleMetrics {
                ensemble: k.name.to_string(),
                version: k.version,
                metrics: s.ensemble.metrics(s.task),
                members: s
                    .members
                    .iter()
                    .zip(&s.member_tracks)
                    .map(|(n, t)| (n.to_string(), t.metrics(s.task)))
                    .collect(),
            })
            .collect();
        out.sort_by_key(|m| m.version);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_metrics_match_hand_count() {
        let mut acc = MetricsAccumulator::default();
        // tp, tp, fp, tn, fn
        for (p, o) in [(0.9, 1.0), (0.6, 1.0), (0.7, 0.0), (0.2, 0.0), (0.1, 1.0)] {
            acc.add(p, o);
        }
        let m = acc.metrics(Task::Classification);
        assert_eq!(m.count, 5);
        assert_eq!(m.accuracy, Some(3.0 / 5.0));
        assert_eq!(m.precision, Some(2.0 / 3.0));
        assert_eq!(m.recall, Some(2.0 / 3.0));
        assert_eq!(m.f1_score, Some(4.0 / 6.0));
        assert_eq!(m.mae, None);
    }

    #[test]
    fn regression_metrics_and_window() {
        let key =
            EnsembleKey { name: "e".into(), version: 1, members: Arc::from(vec![Arc::from("a"), Arc::from("b")]) };
        let tracker = Tracker::new(TrackingOptions { window: 2, ..TrackingOptions::default() }).unwrap();
        for (id, (p, o)) in [(1.0f32, 0.0f32), (2.0, 2.0), (3.0, 1.0)].into_iter().enumerate() {
            tracker.record_prediction(id as u64, Instant::now(), &key, Task::Regression, p, &[p, f32::NAN]);
            tracker.record_outcome(id as u64, o).unwrap();
        }
        let m = &tracker.metrics("e")[0];
        assert_eq!(m.metrics.all_time.mae, Some(1.0));
        assert_eq!(m.metrics.window.count, 2);
        assert_eq!(m.metrics.window.mae, Some(1.0));
        assert!((m.metrics.window.rmse.unwrap() - 2f64.sqrt()).abs() < 1e-9);
        assert_eq!(m.members[1].1.all_time.count, 0, "a member that did not answer is not scored");
    }

    #[test]
    fn unknown_expired_and_repeated_outcomes_are_errors() {
        let key = EnsembleKey { name: "e".into(), version: 1, members: Arc::from(vec![Arc::from("m")]) };
        let tracker = Tracker::new(TrackingOptions { pending_capacity: 2, ..TrackingOptions::default() }).unwrap();
        assert!(tracker.record_outcome(7, 1.0).is_err(), "never predicted");
        for id in 0..3 {
            tracker.record_prediction(id, Instant::now(), &key, Task::Classification, 0.7, &[0.7]);
        }
        assert!(tracker.record_outcome(0, 1.0).is_err(), "evicted by newer predictions");
        assert!(tracker.record_outcome(2, 0.5).is_err(), "not a class");
        tracker.record_outcome(2, 1.0).unwrap();
        assert!(tracker.record_outcome(2, 1.0).is_err(), "counted twice");
    }
}
