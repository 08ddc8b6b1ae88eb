//! The engine's metrics read out: the Prometheus exposition (`counters.rs`' counters plus what is
//! read at scrape time: replicas, breakers, tracked accuracy, weights, experiments, the process,
//! GPUs), the snapshot alert rules judge, and what alerts act with (scale-up, forced fallbacks).

use std::sync::Arc;
use std::time::Instant;

use super::counters::EnsembleTelemetry;
use super::member::LoadedModel;
use super::{EngineInner, InferenceEngine};
use crate::breaker::BreakerState;
use crate::error::{Error, Result};
use crate::telemetry::{
    EnsembleReading, Exposition, Kind, ModelReading, ProcessStats, Snapshot, LATENCY_BOUNDS_NS, ROW_BOUNDS,
};
use crate::tracking::Metrics;

/// Tracked metrics exposed per ensemble and per member: (suffix, help, getter).
type TrackedGauge = (&'static str, &'static str, fn(&Metrics) -> Option<f64>);

const TRACKED: &[TrackedGauge] = &[
    ("accuracy", "Share of correct predictions", |m| m.accuracy),
    ("precision", "Precision of the positive class", |m| m.precision),
    ("recall", "Recall of the positive class", |m| m.recall),
    ("f1_score", "F1 score of the positive class", |m| m.f1_score),
    ("log_loss", "Mean binary cross-entropy", |m| m.log_loss),
    ("brier_score", "Mean squared error of the probability", |m| m.brier),
    ("mae", "Mean absolute error", |m| m.mae),
    ("rmse", "Root mean squared error", |m| m.rmse),
];

fn breaker_label(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

impl InferenceEngine {
    /// Every metric the engine keeps, in the Prometheus text format (0.0.4), for an embedder to serve
    /// on its own endpoint (`quorum serve` serves it at `/metrics`). The names, types and labels are
    /// listed in docs/metrics.md.
    pub fn metrics_text(&self) -> String {
        let mut e = Exposition::new();
        self.inner.write_ensembles(&mut e);
        self.inner.write_models(&mut e);
        self.inner.write_tracking(&mut e);
        self.inner.write_experiments(&mut e);
        self.inner.write_engine(&mut e);
        write_process(&mut e, &ProcessStats::read());
        e.finish()
    }

    /// The engine's live figures now, for alert conditions ([`crate::alerts::Alerting::evaluate`]).
    pub fn telemetry_snapshot(&self) -> Snapshot {
        let inner = &self.inner;
        let mut ensembles = Vec::new();
        for l in inner.loads() {
            let t = &l.telemetry;
            let tracked = inner.tracker.as_ref().and_then(|tr| tr.metrics(&l.config.name).pop());
            ensembles.push(EnsembleReading {
                name: l.config.name.clone(),
                requests: t.requests.get(),
                errors: t.errors_total(),
                duration: t.duration.snapshot(),
                accuracy: tracked.as_ref().and_then(|m| m.metrics.window.accuracy),
                window_outcomes: tracked.as_ref().map_or(0, |m| m.metrics.window.count),
                members: tracked
                    .map(|m| m.members.into_iter().map(|(name, metrics)| (name, metrics.window.accuracy)).collect())
                    .unwrap_or_default(),
            });
        }
        let mut models: Vec<ModelReading> = Vec::new();
        for m in inner.lock_models().live() {
            let (calls, errors) = (m.telemetry.calls.get(), m.telemetry.errors.get());
            match models.iter_mut().find(|r| *r.name == *m.name) {
                Some(r) => {
                    r.calls += calls;
                    r.errors += errors;
                }
                None => models.push(ModelReading { name: m.name.to_string(), calls, errors }),
            }
        }
        models.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            at: Instant::now(),
            ensembles,
            models,
            process: ProcessStats::read(),
            gpus: inner.gpus.as_ref().map(crate::telemetry::Gpus::read).unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Adds one replica to the pool of each member model of `ensemble` (within each pool's max):
    /// what the latency alert's `scale_up_inference_workers` does. Returns `(model, replicas after,
    /// grew)` per member.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown ensemble.
    pub fn scale_up(&self, ensemble: &str) -> Result<Vec<(String, usize, bool)>> {
        let handle = self.ensemble(ensemble)?;
        let ens = handle.slot.load_full();
        ens.members
            .iter()
            .map(|m| {
                let grew = m.model.pool.grow()?;
                Ok((m.model.name.to_string(), m.model.pool.status().replicas, grew))
            })
            .collect()
    }

    /// Sends every call of `model` (all versions, loaded now or later) to the fallback its ensembles
    /// configure, or (`forced = false`) lets it answer again: what the model-failure alert's
    /// `activate_fallback_model` does. Returns the ensembles whose member has a fallback to take
    /// over; when none configures one, nothing is forced (the model would only stop answering).
    pub fn force_fallback(&self, model: &str, forced: bool) -> Vec<String> {
        let covered: Vec<String> = self
            .inner
            .loads()
            .iter()
            .filter(|l| l.members.iter().any(|m| &*m.model.name == model && m.fallback.is_some()))
            .map(|l| l.config.name.clone())
            .collect();
        if forced && covered.is_empty() {
            return covered;
        }
        let mut models = self.inner.lock_models();
        if forced {
            models.forced_fallback.insert(model.to_string());
        } else {
            models.forced_fallback.remove(model);
        }
        for loaded in models.live().into_iter().filter(|m| &*m.name == model) {
            loaded.forced_fallback.store(forced, std::sync::atomic::Ordering::Relaxed);
        }
        covered
    }

    /// The names of the ensembles loaded now, sorted.
    pub fn loaded_ensembles(&self) -> Vec<String> {
        self.inner.loads().iter().map(|l| l.config.name.clone()).collect()
    }

    /// Models an alert sent to their fallbacks now.
    pub fn forced_fallbacks(&self) -> Vec<String> {
        let mut list: Vec<String> = self.inner.lock_models().forced_fallback.iter().cloned().collect();
        list.sort();
        list
    }
}

impl EngineInner {
    pub(super) fn loads(&self) -> Vec<Arc<super::loaded::LoadedEnsemble>> {
        let ensembles = self.ensembles.read().unwrap_or_else(|p| p.into_inner());
        let mut loads: Vec<_> = ensembles.values().map(|slot| slot.load_full()).collect();
        loads.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        loads
    }

    fn write_ensembles(&self, e: &mut Exposition) {
        let loads = self.loads();
        let each =
            |e: &mut Exposition, name: &str, kind: Kind, help: &str, value: &dyn Fn(&EnsembleTelemetry) -> u64| {
                e.family(name, kind, help);
                for l in &loads {
                    e.sample(name, &[("ensemble", &l.config.name)], value(&l.telemetry) as f64);
                }
            };
        e.family("quorum_ensemble_info", Kind::Gauge, "The loaded version of each ensemble (always 1).");
        for l in &loads {
            let version = l.config.version.to_string();
            let fused = if l.fused.is_ok() { "true" } else { "false" };
            let labels = [("ensemble", &*l.config.name), ("version", &version), ("fused", fused)];
            e.sample("quorum_ensemble_info", &labels, 1.0);
        }
        each(e, "quorum_requests_total", Kind::Counter, "Prediction requests that ended (a batch is one).", &|t| {
            t.requests.get()
        });
        each(e, "quorum_predictions_total", Kind::Counter, "Rows answered with a prediction.", &|t| t.rows());
        each(e, "quorum_degraded_predictions_total", Kind::Counter, "Rows answered without every member.", &|t| {
            t.degraded.get()
        });
        each(e, "quorum_stale_predictions_total", Kind::Counter, "Last good answers served below quorum.", &|t| {
            t.stale.get()
        });
        each(e, "quorum_cached_predictions_total", Kind::Counter, "Predictions answered from the cache.", &|t| {
            t.cached.get()
        });
        each(e, "quorum_fallbacks_total", Kind::Counter, "Failed members answered by their fallback model.", &|t| {
            t.fallbacks.get()
        });
        e.family("quorum_queue_depth", Kind::Gauge, "Requests queued for the ensemble's dispatchers.");
        let versions: Vec<String> = loads.iter().map(|l| l.config.version.to_string()).collect();
        for (l, version) in loads.iter().zip(&versions) {
            let labels = [("ensemble", &*l.config.name), ("version", version)];
            e.sample("quorum_queue_depth", &labels, l.queues.queued() as f64);
        }
        let histograms: Vec<_> = loads.iter().map(|l| l.queues.histograms()).collect();
        e.family("quorum_queue_batch_rows", Kind::Histogram, "Requests per batch the ensemble's dispatchers ran.");
        for ((l, version), (rows, _)) in loads.iter().zip(&versions).zip(&histograms) {
            let labels = [("ensemble", &*l.config.name), ("version", version)];
            e.histogram("quorum_queue_batch_rows", &labels, rows, ROW_BOUNDS, 1.0);
        }
        e.family("quorum_queue_wait_seconds", Kind::Histogram, "From a queued request's start to its batch running.");
        for ((l, version), (_, wait)) in loads.iter().zip(&versions).zip(&histograms) {
            let labels = [("ensemble", &*l.config.name), ("version", version)];
            e.histogram("quorum_queue_wait_seconds", &labels, wait, LATENCY_BOUNDS_NS, 1e9);
        }
        e.family("quorum_prediction_errors_total", Kind::Counter, "Failed prediction requests by error code.");
        for l in &loads {
            for (code, count) in Error::CODES.iter().zip(l.telemetry.errors.iter()) {
                if count.get() > 0 {
                    e.sample(
                        "quorum_prediction_errors_total",
                        &[("ensemble", &l.config.name), ("code", code)],
                        count.get() as f64,
                    );
                }
            }
        }
        e.family(
            "quorum_ensemble_calls_total",
            Kind::Counter,
            "How requests reached the members: fused, members or queued.",
        );
        for l in &loads {
            for (path, count) in ["fused", "members", "queued"].iter().zip(&l.telemetry.paths) {
                e.sample(
                    "quorum_ensemble_calls_total",
                    &[("ensemble", &l.config.name), ("path", path)],
                    count.get() as f64,
                );
            }
        }
        e.family("quorum_request_duration_seconds", Kind::Histogram, "Prediction request latency inside the engine.");
        for l in &loads {
            let labels = [("ensemble", &*l.config.name)];
            e.histogram(
                "quorum_request_duration_seconds",
                &labels,
                &l.telemetry.duration.snapshot(),
                LATENCY_BOUNDS_NS,
                1e9,
            );
        }
        e.family("quorum_request_rows", Kind::Histogram, "Rows per prediction request.");
        for l in &loads {
            let labels = [("ensemble", &*l.config.name)];
            e.histogram("quorum_request_rows", &labels, &l.telemetry.request_rows(), ROW_BOUNDS, 1.0);
        }
        e.family("quorum_member_weight", Kind::Gauge, "The weight each member's prediction gets now, per regime.");
        for l in &loads {
            let published = l.key.learning.published();
            let regimes: Vec<&str> = if l.key.learning.has_regimes() {
                crate::regime::Regime::ALL.iter().map(|r| r.as_str()).collect()
            } else {
                vec!["all"]
            };
            for (regime, weights) in regimes.iter().zip(&published.regimes) {
                for (model, w) in l.key.members.iter().zip(&weights.weights) {
                    let labels = [("ensemble", &*l.config.name), ("model", &**model), ("regime", *regime)];
                    e.sample("quorum_member_weight", &labels, f64::from(*w));
                }
            }
        }
    }

    fn write_models(&self, e: &mut Exposition) {
        let mut models = self.lock_models().live();
        models.sort_by(|a, b| (&a.name, a.meta.version).cmp(&(&b.name, b.meta.version)));
        let versions: Vec<String> = models.iter().map(|m| m.meta.version.to_string()).collect();
        let labelled: Vec<(&LoadedModel, [(&str, &str); 2])> =
            models.iter().zip(&versions).map(|(m, v)| (&**m, [("model", &*m.name), ("version", v.as_str())])).collect();
        let counter = |e: &mut Exposition, name: &str, help: &str, value: &dyn Fn(&LoadedModel) -> f64, kind: Kind| {
            e.family(name, kind, help);
            for (m, labels) in &labelled {
                e.sample(name, labels, value(m));
            }
        };
        counter(
            e,
            "quorum_model_calls_total",
            "ONNX Runtime calls each model version took part in (fused ones included).",
            &|m| m.telemetry.calls.get() as f64,
            Kind::Counter,
        );
        counter(
            e,
            "quorum_model_errors_total",
            "Calls that failed: errors, timeouts, panics, open breaker, injected faults.",
            &|m| m.telemetry.errors.get() as f64,
            Kind::Counter,
        );
        e.family(
            "quorum_model_call_duration_seconds",
            Kind::Histogram,
            "One call of the model on its own (inline, queued, fallback); fused calls are counted, not timed, per model.",
        );
        for (m, labels) in &labelled {
            e.histogram(
                "quorum_model_call_duration_seconds",
                labels,
                &m.telemetry.duration.snapshot(),
                LATENCY_BOUNDS_NS,
                1e9,
            );
        }
        let status: Vec<_> = labelled.iter().map(|(m, _)| m.pool.status()).collect();
        let gauge =
            |e: &mut Exposition, name: &str, help: &str, value: &dyn Fn(&crate::replicas::ReplicaStatus) -> f64| {
                e.family(name, Kind::Gauge, help);
                for ((_, labels), s) in labelled.iter().zip(&status) {
                    e.sample(name, labels, value(s));
                }
            };
        gauge(e, "quorum_model_replicas", "Sessions loaded for the model version.", &|s| s.replicas as f64);
        gauge(e, "quorum_model_replicas_busy", "Sessions running a call now.", &|s| s.in_flight as f64);
        gauge(e, "quorum_model_replicas_min", "The pool's lower bound.", &|s| s.min as f64);
        gauge(e, "quorum_model_replicas_max", "The pool's upper bound.", &|s| s.max as f64);
        gauge(e, "quorum_model_waiting_calls", "Callers waiting for a free session.", &|s| s.waiting as f64);
        gauge(e, "quorum_model_estimated_memory_bytes", "The model file's size times its sessions.", &|s| {
            s.estimated_bytes as f64
        });
        e.family("quorum_breaker_state", Kind::Gauge, "1 for the state each model version's circuit breaker is in.");
        for (m, labels) in &labelled {
            let now = m.breaker.state();
            for state in [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen] {
                let l = [labels[0], labels[1], ("state", breaker_label(state))];
                e.sample("quorum_breaker_state", &l, f64::from(u8::from(state == now)));
            }
        }
        e.family(
            "quorum_breaker_transitions_total",
            Kind::Counter,
            "Circuit breaker transitions by the state entered.",
        );
        for (m, labels) in &labelled {
            let counts = m.breaker.transitions();
            for (state, count) in ["open", "half_open", "closed"].iter().zip(counts) {
                let l = [labels[0], labels[1], ("state", *state)];
                e.sample("quorum_breaker_transitions_total", &l, count as f64);
            }
        }
        counter(
            e,
            "quorum_model_forced_fallback",
            "1 while an alert sends the model's calls to its fallback.",
            &|m| f64::from(u8::from(m.forced_fallback.load(std::sync::atomic::Ordering::Relaxed))),
            Kind::Gauge,
        );
        counter(
            e,
            "quorum_model_fault_injected",
            "1 while a fault is injected into the model (tests, drills).",
            &|m| f64::from(u8::from(m.has_fault())),
            Kind::Gauge,
        );
    }

    fn write_tracking(&self, e: &mut Exposition) {
        let Some(tracker) = &self.tracker else { return };
        let loads = self.loads();
        let tracked: Vec<_> = loads.iter().filter_map(|l| tracker.metrics(&l.config.name).pop()).collect();
        e.family(
            "quorum_outcomes_total",
            Kind::Counter,
            "Outcomes joined with the ensemble's current version's predictions.",
        );
        for m in &tracked {
            e.sample("quorum_outcomes_total", &[("ensemble", &m.ensemble)], m.metrics.all_time.count as f64);
        }
        e.family(
            "quorum_tracked_window_outcomes",
            Kind::Gauge,
            "Outcomes in the count window the tracked metrics are computed over.",
        );
        for m in &tracked {
            e.sample("quorum_tracked_window_outcomes", &[("ensemble", &m.ensemble)], m.metrics.window.count as f64);
        }
        for (suffix, help, get) in TRACKED {
            let name = format!("quorum_ensemble_{suffix}");
            e.family(&name, Kind::Gauge, &format!("{help} of the ensemble over the count window."));
            for m in &tracked {
                if let Some(v) = get(&m.metrics.window) {
                    e.sample(&name, &[("ensemble", &m.ensemble)], v);
                }
            }
            let name = format!("quorum_model_{suffix}");
            e.family(&name, Kind::Gauge, &format!("{help} of each member within its ensemble over the count window."));
            for m in &tracked {
                for (model, metrics) in &m.members {
                    if let Some(v) = get(&metrics.window) {
                        e.sample(&name, &[("ensemble", &m.ensemble), ("model", model)], v);
                    }
                }
            }
        }
        e.family("quorum_drift_events_total", Kind::Counter, "Page-Hinkley drift alarms on a member's loss.");
        for ((ensemble, model), count) in tracker.drift_counts() {
            e.sample("quorum_drift_events_total", &[("ensemble", &ensemble), ("model", &model)], count as f64);
        }
        e.family(
            "quorum_outcome_join_lag_seconds",
            Kind::Histogram,
            "From a prediction to its outcome being recorded.",
        );
        e.histogram("quorum_outcome_join_lag_seconds", &[], &tracker.join_lag(), LATENCY_BOUNDS_NS, 1e9);
    }

    fn write_experiments(&self, e: &mut Exposition) {
        let statuses: Vec<_> = self.lock_experiments().iter().map(|r| r.status()).collect();
        e.family(
            "quorum_experiment_info",
            Kind::Gauge,
            "Experiments this engine took up, with their state (always 1).",
        );
        for s in &statuses {
            let labels = [("experiment", &*s.name), ("ensemble", &*s.ensemble), ("state", s.state.as_str())];
            e.sample("quorum_experiment_info", &labels, 1.0);
        }
        e.family("quorum_experiment_treatment_share", Kind::Gauge, "The treatment's share of traffic now (0 to 1).");
        for s in &statuses {
            e.sample("quorum_experiment_treatment_share", &[("experiment", &s.name)], s.split_percent / 100.0);
        }
        let arms = |s: &crate::experiment::ExperimentStatus| {
            [("control", s.arms.control.clone()), ("treatment", s.arms.treatment.clone())]
        };
        let per_arm = |e: &mut Exposition,
                       name: &str,
                       kind: Kind,
                       help: &str,
                       value: &dyn Fn(&crate::experiment::ArmStatus) -> Option<f64>| {
            e.family(name, kind, help);
            for s in &statuses {
                for (arm, status) in arms(s) {
                    if let Some(v) = value(&status) {
                        e.sample(name, &[("experiment", &s.name), ("arm", arm)], v);
                    }
                }
            }
        };
        per_arm(
            e,
            "quorum_experiment_requests_total",
            Kind::Counter,
            "Requests routed to each arm since this process took the experiment up.",
            &|a| a.requests.map(|v| v as f64),
        );
        per_arm(e, "quorum_experiment_errors_total", Kind::Counter, "Failed requests per arm.", &|a| {
            a.errors.map(|v| v as f64)
        });
        per_arm(
            e,
            "quorum_experiment_outcomes",
            Kind::Gauge,
            "Outcomes counted for the experiment's metric per arm.",
            &|a| Some(a.outcomes as f64),
        );
        per_arm(e, "quorum_experiment_metric_mean", Kind::Gauge, "The experiment metric's mean per arm.", &|a| a.mean);
        e.family("quorum_experiment_p_value", Kind::Gauge, "The always-valid p-value of treatment against control.");
        for s in &statuses {
            e.sample("quorum_experiment_p_value", &[("experiment", &s.name)], s.p_value);
        }
    }

    fn write_engine(&self, e: &mut Exposition) {
        if let Some(cache) = &self.cache {
            let stats = cache.stats();
            e.family("quorum_cache_hits_total", Kind::Counter, "Prediction cache hits.");
            e.sample("quorum_cache_hits_total", &[], stats.hits as f64);
            e.family("quorum_cache_misses_total", Kind::Counter, "Prediction cache misses.");
            e.sample("quorum_cache_misses_total", &[], stats.misses as f64);
            e.family("quorum_cache_entries", Kind::Gauge, "Predictions held in the cache.");
            e.sample("quorum_cache_entries", &[], stats.entries as f64);
        }
        let gpus = self.gpus.as_ref().map(crate::telemetry::Gpus::read).unwrap_or_default();
        if !gpus.is_empty() {
            e.family(
                "quorum_gpu_utilization_ratio",
                Kind::Gauge,
                "Share of the last sample period a kernel ran on the GPU (NVML).",
            );
            for g in &gpus {
                e.sample("quorum_gpu_utilization_ratio", &[("gpu", &g.device)], g.utilization);
            }
            e.family("quorum_gpu_memory_used_bytes", Kind::Gauge, "GPU memory allocated (NVML).");
            for g in &gpus {
                e.sample("quorum_gpu_memory_used_bytes", &[("gpu", &g.device)], g.memory_used_bytes as f64);
            }
            e.family("quorum_gpu_memory_total_bytes", Kind::Gauge, "GPU memory installed (NVML).");
            for g in &gpus {
                e.sample("quorum_gpu_memory_total_bytes", &[("gpu", &g.device)], g.memory_total_bytes as f64);
            }
        }
        e.family(
            "quorum_state_flush_errors_total",
            Kind::Counter,
            "Failed writes of learnt weights and tracked metrics to the state store.",
        );
        e.sample("quorum_state_flush_errors_total", &[], self.flush_errors.get() as f64);
        if let Some(log) = &self.inference_log {
            let s = log.stats();
            e.family("quorum_inference_log_rows_total", Kind::Counter, "Inference log rows by what became of them.");
            e.sample("quorum_inference_log_rows_total", &[("result", "written")], s.written as f64);
            e.sample("quorum_inference_log_rows_total", &[("result", "dropped")], s.dropped as f64);
            e.family(
                "quorum_inference_log_write_errors_total",
                Kind::Counter,
                "Failed inference log writes (each retried).",
            );
            e.sample("quorum_inference_log_write_errors_total", &[], s.write_errors as f64);
            e.family("quorum_inference_log_waiting_rows", Kind::Gauge, "Inference log rows waiting for the database.");
            e.sample("quorum_inference_log_waiting_rows", &[], s.waiting as f64);
        }
        if let Some(shared) = &self.shared {
            let s = shared.status();
            e.family(
                "quorum_outcome_log_applied_position",
                Kind::Gauge,
                "The last shared outcome log position applied.",
            );
            e.sample("quorum_outcome_log_applied_position", &[], s.applied_position as f64);
            e.family(
                "quorum_outcome_log_entries_total",
                Kind::Counter,
                "Shared outcome log entries by what became of them.",
            );
            e.sample("quorum_outcome_log_entries_total", &[("result", "applied")], s.applied as f64);
            e.sample("quorum_outcome_log_entries_total", &[("result", "skipped")], s.skipped as f64);
            e.family(
                "quorum_outcome_log_read_errors_total",
                Kind::Counter,
                "Failed reads of the shared logs (retried).",
            );
            e.sample("quorum_outcome_log_read_errors_total", &[], s.read_errors as f64);
            e.family("quorum_instance", Kind::Gauge, "This process's instance number in the shared state.");
            e.sample("quorum_instance", &[], f64::from(s.instance));
        }
    }
}

fn write_process(e: &mut Exposition, p: &ProcessStats) {
    let mut one = |name: &str, kind: Kind, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            e.family(name, kind, help);
            e.sample(name, &[], v);
        }
    };
    one("process_cpu_seconds_total", Kind::Counter, "Total user and system CPU time spent in seconds.", p.cpu_seconds);
    one(
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory size in bytes.",
        p.resident_bytes.map(|v| v as f64),
    );
    one(
        "process_virtual_memory_bytes",
        Kind::Gauge,
        "Virtual memory size in bytes.",
        p.virtual_bytes.map(|v| v as f64),
    );
    one("process_open_fds", Kind::Gauge, "Number of open file descriptors.", p.open_fds.map(|v| v as f64));
    one("process_threads", Kind::Gauge, "Number of OS threads in the process.", p.threads.map(|v| v as f64));
    one(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds,
    );
}
