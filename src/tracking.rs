//! Outcome tracking: join realised outcomes with logged predictions, and keep per-member,
//! per-ensemble and per-regime metrics over all time, over the last `window` outcomes and over the last
//! `window_duration`; rank members; watch each member's loss stream for drift (Page-Hinkley).
//!
//! Pending predictions live in a fixed ring indexed by request id, so memory is bounded no matter how
//! many outcomes never arrive: a prediction is forgotten when `capacity` newer ones have been made or
//! when it is older than the time-to-live. Recording a prediction locks one ring slot (uncontended:
//! request ids are consecutive) and reuses that slot's buffer, so it does not allocate once warm.

use smallvec::SmallVec;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::adaptive::Learning;
use crate::error::{Error, Result};
use crate::regime::Regime;
use crate::registry::Task;
use crate::telemetry::Histogram;

/// Bounds of the tracker.
#[derive(Debug, Clone, Copy)]
pub struct TrackingOptions {
    /// Predictions kept waiting for an outcome (default 65 536).
    pub pending_capacity: usize,
    /// How long a prediction waits for its outcome (default 24 h).
    pub pending_ttl: Duration,
    /// Outcomes in the sliding window by count (default 500).
    pub window: usize,
    /// Age of the outcomes in the sliding window by time (default 1 h), kept in 60 slices: see
    /// [`TIME_WINDOW_BUCKETS`] for the memory and the accuracy.
    pub window_duration: Duration,
    /// Drift detection on each member's loss stream.
    pub drift: DriftOptions,
}

impl Default for TrackingOptions {
    fn default() -> Self {
        TrackingOptions {
            pending_capacity: 1 << 16,
            pending_ttl: Duration::from_secs(24 * 3600),
            window: 500,
            window_duration: Duration::from_secs(3600),
            drift: DriftOptions::default(),
        }
    }
}

/// Page-Hinkley test for an increase in a member's mean loss (squared error).
///
/// With `x̄ₜ` the running mean loss, `mₜ = Σ (xᵢ − x̄ᵢ − δ)` and `Mₜ = min mᵢ`, drift is signalled when
/// `mₜ − Mₜ > λ` after at least `min_observations`; the test then restarts. Defaults: δ = 0.005,
/// λ = 5 (a squared error is in [0, 1] for probabilities: a member whose loss rises by 0.25 is flagged
/// within about 20 outcomes), 30 observations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftOptions {
    /// δ: the loss increase tolerated before it counts towards drift.
    pub delta: f64,
    /// λ: the statistic above which drift is signalled.
    pub threshold: f64,
    /// Outcomes needed before drift can be signalled.
    pub min_observations: u64,
}

impl Default for DriftOptions {
    fn default() -> Self {
        DriftOptions { delta: 0.005, threshold: 5.0, min_observations: 30 }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct PageHinkley {
    count: u64,
    mean: f64,
    cumulative: f64,
    minimum: f64,
}

impl PageHinkley {
    /// Adds one loss; `Some(statistic)` when drift is detected (and the test restarts).
    fn add(&mut self, loss: f64, options: &DriftOptions) -> Option<f64> {
        self.count += 1;
        self.mean += (loss - self.mean) / self.count as f64;
        self.cumulative += loss - self.mean - options.delta;
        self.minimum = self.minimum.min(self.cumulative);
        let statistic = self.cumulative - self.minimum;
        if self.count >= options.min_observations && statistic > options.threshold {
            *self = PageHinkley::default();
            return Some(statistic);
        }
        None
    }
}

/// A member whose loss rose significantly.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftEvent {
    /// The ensemble's name.
    pub ensemble: String,
    /// The ensemble version.
    pub version: u32,
    /// The member whose loss drifted.
    pub member: String,
    /// Outcomes this member had been scored on in this ensemble version when drift was detected.
    pub observations: u64,
    /// The Page-Hinkley statistic that crossed the threshold.
    pub statistic: f64,
    /// Mean squared error over the member's count window when detected.
    pub window_loss: f64,
}

/// Classification or regression metrics over some set of outcomes. Fields that do not apply to the
/// task, or that are undefined (precision with no positive prediction), are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Metrics {
    /// Outcomes counted.
    pub count: u64,
    /// Classification: share of labels that matched the outcome.
    pub accuracy: Option<f64>,
    /// Classification: share of positive labels that were right.
    pub precision: Option<f64>,
    /// Classification: share of positive outcomes labelled positive.
    pub recall: Option<f64>,
    /// Classification: harmonic mean of precision and recall.
    pub f1_score: Option<f64>,
    /// Mean binary cross-entropy (probabilities clipped to [1e-6, 1 − 1e-6]).
    pub log_loss: Option<f64>,
    /// Mean squared error of the probability.
    pub brier: Option<f64>,
    /// Regression: mean absolute error, in outcome units.
    pub mae: Option<f64>,
    /// Regression: root mean squared error, in outcome units.
    pub rmse: Option<f64>,
}

/// Running sums from which [`Metrics`] follow.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct MetricsAccumulator {
    tp: u64,
    fp: u64,
    tn: u64,
    fn_: u64,
    count: u64,
    abs_error: f64,
    sq_error: f64,
    log_loss: f64,
}

impl MetricsAccumulator {
    /// Adds one (prediction, outcome). Classification predictions are probabilities: class = p ≥ 0.5.
    pub fn add(&mut self, prediction: f32, outcome: f32) {
        self.apply(prediction, outcome, 1);
    }

    fn remove(&mut self, prediction: f32, outcome: f32) {
        self.apply(prediction, outcome, -1);
    }

    /// Adds another accumulator's sums to these.
    fn merge(&mut self, other: &MetricsAccumulator) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.tn += other.tn;
        self.fn_ += other.fn_;
        self.count += other.count;
        self.abs_error += other.abs_error;
        self.sq_error += other.sq_error;
        self.log_loss += other.log_loss;
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
        let p = f64::from(prediction).clamp(1e-6, 1.0 - 1e-6);
        let y = f64::from(outcome).clamp(0.0, 1.0);
        self.log_loss -= sign as f64 * (y * p.ln() + (1.0 - y) * (1.0 - p).ln());
    }

    /// The metrics of the outcomes counted so far.
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
                let n = self.count as f64;
                m.log_loss = Some(self.log_loss.max(0.0) / n);
                m.brier = Some(self.sq_error.max(0.0) / n);
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
    /// Every outcome recorded.
    pub all_time: Metrics,
    /// The last `window` outcomes.
    pub window: Metrics,
    /// Outcomes recorded within the last `window_duration`.
    pub recent: Metrics,
}

/// Slices of the time window: its memory is this many sums whatever the outcome rate.
pub const TIME_WINDOW_BUCKETS: u32 = 60;

/// The time window's sums in [`TIME_WINDOW_BUCKETS`] slices of `window_duration / 60`: the oldest
/// slice leaves whole, so `recent` covers the last `window_duration` to within one slice (between
/// 59/60 and all of it), in a fixed ~4 KB instead of one entry per outcome (94 bytes each: 3.5 GB
/// an hour at 10 000 outcomes/s).
#[derive(Debug, Clone, Default)]
struct TimeBuckets {
    origin: Option<Instant>,
    /// (slice number since `origin`, its sums), oldest first, at most [`TIME_WINDOW_BUCKETS`].
    slices: VecDeque<(u64, MetricsAccumulator)>,
}

impl TimeBuckets {
    fn slice_of(&mut self, now: Instant, window: Duration) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let width = (window / TIME_WINDOW_BUCKETS).max(Duration::from_nanos(1));
        (now.saturating_duration_since(origin).as_nanos() / width.as_nanos()) as u64
    }

    fn add(&mut self, prediction: f32, outcome: f32, now: Instant, window: Duration) {
        let slice = self.slice_of(now, window);
        self.expire(slice);
        match self.slices.back_mut() {
            Some((n, sums)) if *n == slice => sums.add(prediction, outcome),
            _ => {
                let mut sums = MetricsAccumulator::default();
                sums.add(prediction, outcome);
                self.slices.push_back((slice, sums));
            }
        }
    }

    /// Drops the slices that ended a whole window before the current one began.
    fn expire(&mut self, current: u64) {
        while self.slices.front().is_some_and(|(n, _)| n + u64::from(TIME_WINDOW_BUCKETS) <= current) {
            self.slices.pop_front();
        }
    }

    fn sums(&mut self, now: Instant, window: Duration) -> MetricsAccumulator {
        if self.origin.is_some() {
            let slice = self.slice_of(now, window);
            self.expire(slice);
        }
        let mut total = MetricsAccumulator::default();
        for (_, sums) in &self.slices {
            total.merge(sums);
        }
        total
    }
}

/// Persisted across restarts: all-time and count-window sums; the time window starts empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Track {
    all_time: MetricsAccumulator,
    window: MetricsAccumulator,
    last: VecDeque<(f32, f32)>,
    #[serde(skip)]
    timed: TimeBuckets,
}

impl Track {
    fn new() -> Track {
        Track {
            all_time: MetricsAccumulator::default(),
            window: MetricsAccumulator::default(),
            last: VecDeque::new(),
            timed: TimeBuckets::default(),
        }
    }

    fn add(&mut self, prediction: f32, outcome: f32, now: Instant, options: &TrackingOptions) {
        self.all_time.add(prediction, outcome);
        self.window.add(prediction, outcome);
        self.last.push_back((prediction, outcome));
        if self.last.len() > options.window {
            if let Some((p, o)) = self.last.pop_front() {
                self.window.remove(p, o);
            }
        }
        self.timed.add(prediction, outcome, now, options.window_duration);
    }

    fn metrics(&mut self, task: Task, now: Instant, options: &TrackingOptions) -> TrackedMetrics {
        TrackedMetrics {
            all_time: self.all_time.metrics(task),
            window: self.window.metrics(task),
            recent: self.timed.sums(now, options.window_duration).metrics(task),
        }
    }
}

/// Metrics of the ensemble and of each member, for one regime or overall.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupMetrics {
    /// The ensemble's own metrics.
    pub metrics: TrackedMetrics,
    /// Each member's metrics, in member order.
    pub members: Vec<(String, TrackedMetrics)>,
}

/// Metrics of one ensemble version and each of its members.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnsembleMetrics {
    /// The ensemble's name.
    pub ensemble: String,
    /// The ensemble version.
    pub version: u32,
    /// The ensemble's own metrics.
    pub metrics: TrackedMetrics,
    /// Each member's metrics, in member order.
    pub members: Vec<(String, TrackedMetrics)>,
    /// Per regime in which outcomes were recorded (ensembles with regimes configured).
    pub regimes: Vec<(Regime, GroupMetrics)>,
    /// Members from best to worst by their count-window loss (log-loss for classification, RMSE for
    /// regression); members with no scored outcome last.
    pub ranking: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Group {
    ensemble: Track,
    members: Vec<Track>,
}

impl Group {
    fn new(members: usize) -> Group {
        Group { ensemble: Track::new(), members: vec![Track::new(); members] }
    }

    fn add(&mut self, prediction: f32, members: &[f32], outcome: f32, now: Instant, options: &TrackingOptions) {
        self.ensemble.add(prediction, outcome, now, options);
        for (track, &value) in self.members.iter_mut().zip(members) {
            if !value.is_nan() {
                track.add(value, outcome, now, options);
            }
        }
    }

    fn metrics(&mut self, task: Task, names: &[Arc<str>], now: Instant, options: &TrackingOptions) -> GroupMetrics {
        GroupMetrics {
            metrics: self.ensemble.metrics(task, now, options),
            members: names
                .iter()
                .zip(&mut self.members)
                .map(|(n, t)| (n.to_string(), t.metrics(task, now, options)))
                .collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Stats {
    task: Task,
    members: Vec<Arc<str>>,
    overall: Group,
    regimes: std::collections::BTreeMap<Regime, Group>,
    drift: Vec<PageHinkley>,
    /// Changed since the last flush to the state database.
    #[serde(skip)]
    dirty: bool,
}

/// What a prediction logs for outcome tracking besides its id, time and ensemble.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Logged<'a> {
    pub task: Task,
    pub regime: Option<Regime>,
    pub prediction: f32,
    /// NaN where member `i` did not answer.
    pub members: &'a [f32],
}

/// Which ensemble version a pending prediction belongs to, with its member names (so an outcome can
/// be scored even after the engine moved on to a newer version). Identity is name + version.
#[derive(Debug, Clone)]
pub(crate) struct EnsembleKey {
    pub name: Arc<str>,
    pub version: u32,
    pub members: Arc<[Arc<str>]>,
    pub member_versions: Arc<[u32]>,
    pub learning: Arc<Learning>,
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
    regime: Option<Regime>,
    prediction: f32,
    /// NaN marks a member that did not answer (it is not scored). Inline up to four members: the
    /// ring is megabytes, so a slot's fields should sit on its own cache lines.
    members: SmallVec<[f32; 4]>,
}

/// Joins outcomes with predictions. Shared by an engine's clones.
/// (ensemble, member model) names.
pub(crate) type MemberKey = (Arc<str>, Arc<str>);

pub(crate) struct Tracker {
    options: TrackingOptions,
    pending: Box<[Mutex<Pending>]>,
    stats: Mutex<HashMap<EnsembleKey, Stats>>,
    drift_events: Mutex<VecDeque<DriftEvent>>,
    /// Drift events per (ensemble, member) since start: a counter that older events leaving the
    /// ring above do not lower.
    drift_counts: Mutex<HashMap<MemberKey, u64>>,
    /// Time from each prediction to its outcome.
    join_lag: Histogram,
}

/// Drift events kept for [`crate::InferenceEngine::drift_events`]; older ones are dropped.
const DRIFT_EVENTS_KEPT: usize = 1024;

/// A prediction joined with its outcome, handed back so the engine can teach the ensemble's learners.
pub(crate) struct Scored {
    pub key: EnsembleKey,
    pub regime: Option<Regime>,
    /// The ensemble's prediction and its members'.
    pub prediction: f32,
    pub members: Vec<f32>,
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
                    regime: None,
                    prediction: 0.0,
                    members: SmallVec::new(),
                })
            })
            .collect();
        Ok(Tracker {
            options,
            pending,
            stats: Mutex::new(HashMap::new()),
            drift_events: Mutex::new(VecDeque::new()),
            drift_counts: Mutex::new(HashMap::new()),
            join_lag: Histogram::latency(),
        })
    }

    fn slot(&self, request_id: u64) -> &Mutex<Pending> {
        &self.pending[(request_id % self.pending.len() as u64) as usize]
    }

    /// Logs a prediction made at `at` by the ensemble version `key`.
    pub fn record_prediction(&self, request_id: u64, at: Instant, key: &EnsembleKey, record: &Logged<'_>) {
        let Logged { task, regime, prediction, members } = *record;
        let mut slot = lock(self.slot(request_id));
        slot.request_id = request_id;
        slot.at = at;
        let same = slot.key.as_ref().is_some_and(|k| Arc::ptr_eq(&k.name, &key.name) && k.version == key.version);
        if !same {
            slot.key = Some(key.clone());
        }
        slot.task = task;
        slot.regime = regime;
        slot.prediction = prediction;
        slot.members.clear();
        slot.members.extend_from_slice(members);
    }

    /// Scores a logged prediction against its realised outcome (for classification, 0 or 1).
    pub fn record_outcome(&self, request_id: u64, outcome: f64) -> Result<Scored> {
        if !outcome.is_finite() {
            return Err(Error::Outcome(format!("outcome {outcome} for request {request_id} is not finite")));
        }
        let (key, task, regime, prediction, members) = {
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
            self.join_lag.observe_duration(slot.at.elapsed());
            let key = slot.key.clone().ok_or_else(|| Error::Outcome("slot without ensemble".into()))?;
            (key, slot.task, slot.regime, slot.prediction, slot.members.to_vec())
        };
        // Metrics are kept in f32 like the predictions they score; learners get the f64 outcome.
        self.score(&key, task, regime, prediction, &members, outcome as f32);
        Ok(Scored { key, regime, prediction, members })
    }

    /// The prediction `request_id` while it waits for its outcome (not consumed): what an outcome
    /// log entry carries. `None` when unknown here or expired.
    pub fn peek(&self, request_id: u64) -> Option<(Scored, Task)> {
        let slot = lock(self.slot(request_id));
        if slot.request_id != request_id || slot.at.elapsed() > self.options.pending_ttl {
            return None;
        }
        let key = slot.key.clone()?;
        let pending = Scored { key, regime: slot.regime, prediction: slot.prediction, members: slot.members.to_vec() };
        Some((pending, slot.task))
    }

    /// Adds a joined prediction and outcome to the version's metrics and drift tests.
    pub fn score(
        &self,
        key: &EnsembleKey,
        task: Task,
        regime: Option<Regime>,
        prediction: f32,
        members: &[f32],
        outcome: f32,
    ) {
        let now = Instant::now();
        let mut drifted = Vec::new();
        {
            let mut stats = lock(&self.stats);
            let m = key.members.len();
            let s = stats.entry(key.clone()).or_insert_with(|| Stats {
                task,
                members: key.members.to_vec(),
                overall: Group::new(m),
                regimes: std::collections::BTreeMap::new(),
                drift: vec![PageHinkley::default(); m],
                dirty: false,
            });
            s.dirty = true;
            s.overall.add(prediction, members, outcome, now, &self.options);
            if let Some(r) = regime {
                s.regimes.entry(r).or_insert_with(|| Group::new(m)).add(
                    prediction,
                    members,
                    outcome,
                    now,
                    &self.options,
                );
            }
            for (i, &value) in members.iter().enumerate() {
                if value.is_nan() {
                    continue;
                }
                let loss = (f64::from(value) - f64::from(outcome)).powi(2);
                if let Some(statistic) = s.drift[i].add(loss, &self.options.drift) {
                    let track = &s.overall.members[i];
                    *lock(&self.drift_counts)
                        .entry((Arc::clone(&key.name), Arc::clone(&key.members[i])))
                        .or_default() += 1;
                    drifted.push(DriftEvent {
                        ensemble: key.name.to_string(),
                        version: key.version,
                        member: key.members[i].to_string(),
                        observations: track.all_time.count,
                        statistic,
                        window_loss: track.window.sq_error.max(0.0) / track.window.count.max(1) as f64,
                    });
                }
            }
        }
        if !drifted.is_empty() {
            let mut events = lock(&self.drift_events);
            for event in drifted {
                if events.len() == DRIFT_EVENTS_KEPT {
                    events.pop_front();
                }
                events.push_back(event);
            }
        }
    }

    /// Metrics of every tracked version of `ensemble`, oldest version first.
    pub fn metrics(&self, ensemble: &str) -> Vec<EnsembleMetrics> {
        let now = Instant::now();
        let mut stats = lock(&self.stats);
        let mut out: Vec<EnsembleMetrics> = stats
            .iter_mut()
            .filter(|(k, _)| &*k.name == ensemble)
            .map(|(k, s)| {
                let overall = s.overall.metrics(s.task, &s.members, now, &self.options);
                let regimes = s
                    .regimes
                    .iter_mut()
                    .map(|(r, g)| (*r, g.metrics(s.task, &s.members, now, &self.options)))
                    .collect();
                EnsembleMetrics {
                    ensemble: k.name.to_string(),
                    version: k.version,
                    ranking: rank(&overall.members, s.task),
                    metrics: overall.metrics,
                    members: overall.members,
                    regimes,
                }
            })
            .collect();
        out.sort_by_key(|m| m.version);
        out
    }

    /// Serialises the sums of every ensemble version with new outcomes since the last call, and, with
    /// `history`, their current metrics as `model_performance` rows. Returns the keys too, so the
    /// caller can save their learners.
    pub fn take_changes(&self, history: bool) -> (Vec<EnsembleKey>, crate::state::Flush) {
        let now = Instant::now();
        let mut flush = crate::state::Flush::default();
        let mut keys = Vec::new();
        let mut stats = lock(&self.stats);
        for (key, s) in stats.iter_mut().filter(|(_, s)| s.dirty) {
            s.dirty = false;
            keys.push(key.clone());
            if let Ok(state) = serde_json::to_string(&*s) {
                flush.tracking.push((key.name.to_string(), key.version, state));
            }
            if !history {
                continue;
            }
            let group = s.overall.metrics(s.task, &s.members, now, &self.options);
            let predictors = std::iter::once((key.name.to_string(), key.version.to_string(), group.metrics)).chain(
                group.members.iter().zip(key.member_versions.iter()).map(|((n, m), v)| (n.clone(), v.to_string(), *m)),
            );
            for (model_id, model_version, tracked) in predictors {
                for (window, metrics) in [("all_time", tracked.all_time), ("window", tracked.window)] {
                    let conditions = serde_json::json!({"ensemble": &*key.name, "ensemble_version": key.version, "window": window, "count": metrics.count});
                    for (metric, value) in metric_values(&metrics) {
                        flush.performance.push(crate::state::PerformanceRow {
                            model_id: model_id.clone(),
                            model_version: model_version.clone(),
                            metric,
                            value,
                            conditions: conditions.clone(),
                        });
                    }
                }
            }
        }
        (keys, flush)
    }

    /// Marks ensemble versions as changed again (after a failed write).
    pub fn mark_dirty(&self, keys: &[EnsembleKey]) {
        let mut stats = lock(&self.stats);
        for key in keys {
            if let Some(s) = stats.get_mut(key) {
                s.dirty = true;
            }
        }
    }

    /// Puts back sums saved by [`Tracker::take_changes`] (ignored if they do not fit the ensemble).
    pub fn restore(&self, key: &EnsembleKey, state: &str) -> bool {
        let Ok(saved) = serde_json::from_str::<Stats>(state) else { return false };
        if saved.members.len() != key.members.len() || saved.drift.len() != key.members.len() {
            return false;
        }
        lock(&self.stats).entry(key.clone()).or_insert(saved);
        true
    }

    /// Drift events so far (the most recent 1024), oldest first.
    pub fn drift_events(&self) -> Vec<DriftEvent> {
        lock(&self.drift_events).iter().cloned().collect()
    }

    /// Drift events counted per (ensemble, member) since the tracker started.
    pub fn drift_counts(&self) -> Vec<(MemberKey, u64)> {
        let mut counts: Vec<_> = lock(&self.drift_counts).iter().map(|(k, v)| (k.clone(), *v)).collect();
        counts.sort();
        counts
    }

    /// How long outcomes took to arrive after their predictions.
    pub fn join_lag(&self) -> crate::telemetry::HistogramSnapshot {
        self.join_lag.snapshot()
    }
}

fn metric_values(m: &Metrics) -> Vec<(&'static str, f64)> {
    [
        ("accuracy", m.accuracy),
        ("precision", m.precision),
        ("recall", m.recall),
        ("f1_score", m.f1_score),
        ("log_loss", m.log_loss),
        ("brier", m.brier),
        ("mae", m.mae),
        ("rmse", m.rmse),
    ]
    .into_iter()
    .filter_map(|(n, v)| v.map(|v| (n, v)))
    .collect()
}

/// Members from best to worst by windowed loss; unscored members last, in configuration order.
fn rank(members: &[(String, TrackedMetrics)], task: Task) -> Vec<String> {
    let loss = |m: &TrackedMetrics| match task {
        Task::Classification => m.window.log_loss,
        Task::Regression => m.window.rmse,
    };
    let mut order: Vec<&(String, TrackedMetrics)> = members.iter().collect();
    order.sort_by(|a, b| match (loss(&a.1), loss(&b.1)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    order.into_iter().map(|(n, _)| n.clone()).collect()
}

#[cfg(test)]
#[path = "../tests/unit/tracking.rs"]
mod tests;
