//! Small statistics over latency samples, shared by the replay, the optimizer's benchmarks and the
//! replica pools' p95: low in the crate so that any layer may use it.

use serde::Serialize;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyPercentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Nearest-rank percentiles (0 when empty).
pub fn percentiles(samples: &mut [f64]) -> LatencyPercentiles {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let rank = (q * samples.len() as f64).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1]
    };
    LatencyPercentiles { p50: at(0.50), p95: at(0.95), p99: at(0.99) }
}
