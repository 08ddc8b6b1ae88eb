//! Always-on instruments the engine counts with — atomic counters and fixed-bucket histograms, cheap
//! enough for every prediction (one relaxed atomic add per count, on the calling thread's stripe; no
//! lock, no allocation) — and the Prometheus text exposition they are read out in. Low in the crate so that the batching queues,
//! breakers and the engine may all count.
//!
//! Why not `prometheus-client`: its `Histogram::observe` takes a write lock on every observation
//! (`inner: Arc<RwLock<Inner>>`), and the hot path may not lock. The text format is small and is
//! checked by `promtool check metrics` in the tests.

mod gpu;
mod process;
mod snapshot;
mod text;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use gpu::{GpuReading, Gpus};
pub use process::ProcessStats;
pub use snapshot::{EnsembleReading, ModelReading, Snapshot};
pub use text::{Exposition, Kind};

/// Latency bucket bounds in nanoseconds: 1 µs to 10 s in 1–2.5–5 steps, so that microsecond calls
/// and the story's 100 ms (an exact bound) both resolve, and `histogram_quantile` interpolates within
/// a factor of 2.5.
pub const LATENCY_BOUNDS_NS: &[u64] = &[
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Latency bounds four per octave (19% apart) from about 1.2 µs to about 67 s, in nanoseconds: for
/// percentiles that must be tight (experiment guardrails, the server's per-model p95) rather than
/// exported.
pub fn fine_latency_bounds() -> &'static [u64] {
    static BOUNDS: std::sync::OnceLock<Box<[u64]>> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| (1..=104).map(|i| ((f64::from(i) / 4.0).exp2() * 1e3).round() as u64).collect())
}

/// Row-count bounds (batch sizes): powers of two up to 4096.
pub const ROW_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Stripes per instrument: each thread adds to one of them (see [`stripe`]), and a reading sums
/// them. A count that every request on every core adds to in one place would move its cache line
/// between the cores on every add (measured, `examples/load.rs`, 2 cores: 4 such adds per request
/// took ~5% of a queued prediction).
const STRIPES: usize = 8;

/// One cache line of counts, so that two stripes never share a line.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Line([AtomicU64; 8]);

/// The calling thread's stripe: threads take stripes round-robin on their first count.
#[inline]
fn stripe() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(i);
        }
        i
    })
}

/// A monotonically increasing count (its stripes on the heap, so that a struct of counters stays
/// small).
#[derive(Debug, Default)]
pub struct Counter(Box<[Line; STRIPES]>);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0[stripe()].0[0].fetch_add(n, Ordering::Relaxed);
    }

    /// The count now.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|line| line.0[0].load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }
}

/// A histogram over fixed bounds (an observation `v` counts in the first bucket with `v <= bound`,
/// the last bucket is `+Inf`), with the sum of observations, in integer units (ns or rows). Striped
/// as [`Counter`]: each stripe holds its buckets and its sum on lines of its own.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// `STRIPES` runs of `per_stripe` lines: a stripe's buckets, then its sum.
    lines: Box<[Line]>,
    per_stripe: usize,
}

/// A histogram's counts at one moment (per bucket, not cumulative), to difference over a window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramSnapshot {
    /// Observations per bucket (the last bucket: above every bound).
    pub buckets: Vec<u64>,
    /// Sum of the observed values.
    pub sum: u64,
}

impl Histogram {
    /// A histogram with these upper bounds (inclusive, increasing).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        // The buckets (one more than the bounds) and the sum.
        let per_stripe = (bounds.len() + 2).div_ceil(8);
        Histogram { bounds, lines: (0..STRIPES * per_stripe).map(|_| Line::default()).collect(), per_stripe }
    }

    /// A latency histogram ([`LATENCY_BOUNDS_NS`]).
    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BOUNDS_NS)
    }

    /// Cell `i` of stripe `stripe`: buckets `0..=bounds.len()`, then the sum.
    #[inline]
    fn cell(&self, stripe: usize, i: usize) -> &AtomicU64 {
        &self.lines[stripe * self.per_stripe + i / 8].0[i % 8]
    }

    /// Counts one value.
    #[inline]
    pub fn observe(&self, value: u64) {
        let index = self.bounds.partition_point(|&b| b < value);
        let stripe = stripe();
        self.cell(stripe, index).fetch_add(1, Ordering::Relaxed);
        self.cell(stripe, self.bounds.len() + 1).fetch_add(value, Ordering::Relaxed);
    }

    /// Counts a duration, in nanoseconds.
    #[inline]
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The buckets' upper bounds.
    pub fn bounds(&self) -> &'static [u64] {
        self.bounds
    }

    /// The counts now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let total = |i: usize| (0..STRIPES).map(|s| self.cell(s, i).load(Ordering::Relaxed)).fold(0, u64::wrapping_add);
        HistogramSnapshot { buckets: (0..=self.bounds.len()).map(total).collect(), sum: total(self.bounds.len() + 1) }
    }
}

impl HistogramSnapshot {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds what `other` (a histogram with the same bounds) counted: one view of several.
    pub fn add(&mut self, other: &HistogramSnapshot) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.wrapping_add(*b);
        }
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// What was observed since `before` (a snapshot of the same histogram taken earlier).
    pub fn since(&self, before: &HistogramSnapshot) -> HistogramSnapshot {
        let buckets = if before.buckets.len() == self.buckets.len() {
            self.buckets.iter().zip(&before.buckets).map(|(a, b)| a.saturating_sub(*b)).collect()
        } else {
            self.buckets.clone()
        };
        HistogramSnapshot { buckets, sum: self.sum.saturating_sub(before.sum) }
    }

    /// The `q` quantile, interpolated linearly within its bucket as Prometheus's
    /// `histogram_quantile` does (the `+Inf` bucket answers its lower bound); `None` when empty.
    pub fn quantile(&self, bounds: &[u64], q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &count) in self.buckets.iter().enumerate() {
            if count == 0 || ((seen + count) as f64) < rank {
                seen += count;
                continue;
            }
            let Some(&upper) = bounds.get(i) else {
                return Some(bounds.last().copied().unwrap_or(0) as f64);
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] as f64 };
            let within = (rank - seen as f64) / count as f64;
            return Some(lower + (upper as f64 - lower) * within);
        }
        bounds.last().map(|&b| b as f64)
    }

    /// The share of observations above `bound` (exact when `bound` is one of `bounds`); `None` when
    /// empty.
    pub fn fraction_above(&self, bounds: &[u64], bound: u64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let at_or_below: u64 = self.buckets.iter().zip(bounds).filter(|(_, &b)| b <= bound).map(|(c, _)| c).sum();
        Some((total - at_or_below) as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_snapshots_sums_their_buckets_and_sums() {
        let (a, b) = (Histogram::new(ROW_BOUNDS), Histogram::new(ROW_BOUNDS));
        a.observe(1);
        b.observe(1);
        b.observe(1_000_000);
        let mut total = a.snapshot();
        total.add(&b.snapshot());
        assert_eq!(total.count(), 3);
        assert_eq!(total.sum, 1_000_002);
        assert_eq!(total.buckets[0], 2);
        assert_eq!(*total.buckets.last().unwrap(), 1);
        // An empty snapshot (no buckets yet) takes the other's.
        let mut empty = HistogramSnapshot::default();
        empty.add(&total);
        assert_eq!(empty, total);
    }

    #[test]
    fn counts_from_more_threads_than_stripes_all_add_up() {
        let (counter, h) = (Counter::default(), Histogram::new(ROW_BOUNDS));
        std::thread::scope(|s| {
            for t in 0..(STRIPES as u64 + 3) {
                let (counter, h) = (&counter, &h);
                s.spawn(move || {
                    for _ in 0..1000 {
                        counter.add(2);
                        h.observe(t);
                    }
                });
            }
        });
        let threads = STRIPES as u64 + 3;
        assert_eq!(counter.get(), 2000 * threads);
        let snapshot = h.snapshot();
        assert_eq!(snapshot.count(), 1000 * threads);
        assert_eq!(snapshot.sum, 1000 * (0..threads).sum::<u64>());
        // Values 0 and 1 fall in the first bucket (`<= 1`), 2 in the second, 3 and 4 in the third.
        assert_eq!(&snapshot.buckets[..3], &[2000, 1000, 2000]);
    }

    #[test]
    fn an_observation_on_a_bound_counts_in_that_bound_and_the_quantile_interpolates() {
        let h = Histogram::latency();
        h.observe(100_000_000); // exactly 100 ms
        h.observe(100_000_001);
        let s = h.snapshot();
        let at = LATENCY_BOUNDS_NS.iter().position(|&b| b == 100_000_000).unwrap();
        assert_eq!(s.buckets[at], 1);
        assert_eq!(s.buckets[at + 1], 1);
        assert_eq!(s.count(), 2);
        assert_eq!(s.fraction_above(LATENCY_BOUNDS_NS, 100_000_000), Some(0.5));
        // Rank 1 of 2 is the top of the 50–100 ms bucket.
        assert_eq!(s.quantile(LATENCY_BOUNDS_NS, 0.5), Some(100_000_000.0));
        let p = s.quantile(LATENCY_BOUNDS_NS, 0.75).unwrap();
        assert!(p > 100_000_000.0 && p < 250_000_000.0, "{p}");
    }

    #[test]
    fn a_window_is_the_difference_of_two_snapshots() {
        let h = Histogram::new(ROW_BOUNDS);
        h.observe(3);
        let before = h.snapshot();
        h.observe(64);
        h.observe(10_000);
        let window = h.snapshot().since(&before);
        assert_eq!(window.count(), 2);
        assert_eq!(window.sum, 10_064);
        assert_eq!(*window.buckets.last().unwrap(), 1);
        assert_eq!(HistogramSnapshot::default().quantile(ROW_BOUNDS, 0.5), None);
    }
}
