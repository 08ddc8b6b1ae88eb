//! Per-model call counts and latency histograms as the server sees them in every prediction's
//! contributions (fused calls included, which the replica pools do not see), for the performance
//! route's `latency_p95` and `throughput`. Lock-free on the prediction path: each worker thread keeps
//! its own map from model name to the shared counters and only takes the global lock the first time
//! it meets a model.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use quorum::telemetry::{fine_latency_bounds, Counter, Histogram};
use quorum::Prediction;

#[derive(Debug)]
pub struct ModelStat {
    calls: Counter,
    latency: Histogram,
}

impl ModelStat {
    fn new() -> ModelStat {
        ModelStat { calls: Counter::default(), latency: Histogram::new(fine_latency_bounds()) }
    }

    fn record(&self, latency_ms: f64) {
        self.calls.inc();
        self.latency.observe((latency_ms * 1e6) as u64);
    }

    pub fn calls(&self) -> u64 {
        self.calls.get()
    }

    /// Quantile `q` of the calls' latency in ms, interpolated within its bucket (19% wide).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.latency.snapshot().quantile(fine_latency_bounds(), q).map(|ns| ns / 1e6)
    }
}

/// The members of a batch that answered, with their call's latency.
pub fn runs(batch: &quorum::BatchPrediction) -> Vec<(&str, f64)> {
    batch.members.iter().filter(|m| m.answered()).map(|m| (&*m.model, m.latency_ms)).collect()
}

#[derive(Debug, Default)]
pub struct ModelStats {
    models: Mutex<HashMap<String, Arc<ModelStat>>>,
}

thread_local! {
    static LOCAL: RefCell<HashMap<String, Arc<ModelStat>>> = RefCell::new(HashMap::new());
}

impl ModelStats {
    /// Counts every member that answered in `prediction`.
    pub fn record(&self, prediction: &Prediction) {
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            for c in &prediction.model_contributions {
                if c.prediction.is_none() {
                    continue;
                }
                let stat = match local.get(&*c.model) {
                    Some(stat) => Arc::clone(stat),
                    None => {
                        let stat = self.get_or_insert(&c.model);
                        local.insert(c.model.to_string(), Arc::clone(&stat));
                        stat
                    }
                };
                stat.record(c.latency_ms);
            }
        });
    }

    /// Counts a batch: one call per member that answered.
    pub fn record_batch(&self, members: &[(&str, f64)]) {
        for (model, latency_ms) in members {
            self.get_or_insert(model).record(*latency_ms);
        }
    }

    fn get_or_insert(&self, model: &str) -> Arc<ModelStat> {
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(models.entry(model.to_string()).or_insert_with(|| Arc::new(ModelStat::new())))
    }

    pub fn get(&self, model: &str) -> Option<Arc<ModelStat>> {
        self.models.lock().unwrap_or_else(|p| p.into_inner()).get(model).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_right_bucket() {
        let stat = ModelStat::new();
        assert_eq!(stat.quantile_ms(0.95), None);
        for _ in 0..95 {
            stat.record(0.010);
        }
        for _ in 0..5 {
            stat.record(2.0);
        }
        // Within one bucket (19%) of the true values.
        let p95 = stat.quantile_ms(0.95).unwrap();
        assert!((0.010 / 1.2..0.010 * 1.2).contains(&p95), "{p95}");
        let p99 = stat.quantile_ms(0.99).unwrap();
        assert!((2.0 / 1.2..2.0 * 1.2).contains(&p99), "{p99}");
        assert_eq!(stat.calls(), 100);
    }
}
