//! The status page's history: the engine sampled every `status_sample_ms` (latency percentiles,
//! throughput, errors, accuracy and weights per ensemble and member; the last 720 points) so that a
//! page opened at 3 a.m. shows the last hour at once. The page and its document are in
//! `api/monitoring.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quorum::telemetry::{Snapshot, LATENCY_BOUNDS_NS};
use quorum::InferenceEngine;
use serde::Serialize;

const POINTS_KEPT: usize = 720;

/// One ensemble at one sample.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EnsemblePoint {
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p95_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    /// Requests per second since the previous sample.
    pub(crate) rps: f64,
    pub(crate) errors_per_s: f64,
    pub(crate) accuracy: Option<f64>,
    pub(crate) weights: BTreeMap<String, f32>,
    pub(crate) member_accuracy: BTreeMap<String, Option<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Point {
    /// Seconds since the Unix epoch.
    pub(crate) t: f64,
    pub(crate) ensembles: BTreeMap<String, EnsemblePoint>,
}

/// The sampled history.
#[derive(Debug, Default)]
pub struct StatusHistory {
    points: Mutex<VecDeque<Point>>,
    last: Mutex<Option<Snapshot>>,
}

impl StatusHistory {
    pub(crate) fn lock_points(&self) -> MutexGuard<'_, VecDeque<Point>> {
        self.points.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one sample (the first only primes the counters).
    fn sample(&self, engine: &InferenceEngine) {
        let now = engine.telemetry_snapshot();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let Some(before) = last.replace(now.clone()) else { return };
        let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let mut ensembles = BTreeMap::new();
        for e in &now.ensembles {
            let earlier = before.ensembles.iter().find(|b| b.name == e.name);
            let window = earlier.map_or(e.duration.clone(), |b| e.duration.since(&b.duration));
            let q = |q: f64| window.quantile(LATENCY_BOUNDS_NS, q).map(|ns| ns / 1e6);
            let requests = e.requests.saturating_sub(earlier.map_or(0, |b| b.requests));
            let errors = e.errors.saturating_sub(earlier.map_or(0, |b| b.errors));
            let weights = engine
                .ensemble(&e.name)
                .map(|h| h.current_weights().regimes.into_values().next().unwrap_or_default())
                .unwrap_or_default();
            ensembles.insert(
                e.name.clone(),
                EnsemblePoint {
                    p50_ms: q(0.5),
                    p95_ms: q(0.95),
                    p99_ms: q(0.99),
                    rps: requests as f64 / seconds,
                    errors_per_s: errors as f64 / seconds,
                    accuracy: e.accuracy,
                    weights: weights.into_iter().collect(),
                    member_accuracy: e.members.iter().cloned().collect(),
                },
            );
        }
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let mut points = self.lock_points();
        if points.len() == POINTS_KEPT {
            points.pop_front();
        }
        points.push_back(Point { t, ensembles });
    }
}

/// Samples every `every` while the server's state lives.
pub fn start(engine: InferenceEngine, history: &Arc<StatusHistory>, every: Duration) {
    crate::periodic::every(engine, history, every, |engine, history| history.sample(engine));
}
