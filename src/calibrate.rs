//! Calibrators for static quantization: the range `[rmin, rmax]` each activation is quantized over,
//! computed from its values on caller-supplied data, as ONNX Runtime's `calibrate.py` computes them.
//!
//! * **MinMax**: the smallest and largest value seen.
//! * **Percentile** (99.999, symmetric): a 2048-bin histogram of |x|; the threshold is the first bin
//!   edge whose cumulative share reaches the percentile; the range `[-t, t]` is then clipped to the
//!   values seen.
//! * **Entropy** (KL divergence, TensorRT's method): a histogram of x over `[-max|x|, max|x|]`; for
//!   each candidate window around zero, the clipped distribution `p` is compared with its
//!   `quantized_bins`-level quantization `q`, and the window with the least KL(p‖q) wins; clipped to
//!   the values seen. ONNX Runtime's defaults are 128 bins and 128 quantized bins (which leaves a single
//!   window: the full range); [`Calibrator::Entropy`] keeps them so results match the reference.
//!
//! ONNX Runtime folds each calibration batch into running histograms (re-binning when the range
//! grows); quorum histograms all the values at once, so bin edges can differ slightly.

use serde::Serialize;

/// How activation ranges are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum Calibrator {
    /// The range is the smallest and largest value seen.
    MinMax,
    /// The range covers a percentile of the values' magnitudes.
    Percentile {
        /// The percentile, e.g. 99.999.
        percentile: f64,
        /// Histogram bins.
        bins: usize,
    },
    /// The range that minimises the KL divergence between the values and their quantized form.
    Entropy {
        /// Histogram bins.
        bins: usize,
        /// Bins after quantization.
        quantized_bins: usize,
    },
}

impl Calibrator {
    /// ONNX Runtime's defaults for each method.
    pub const MIN_MAX: Calibrator = Calibrator::MinMax;
    /// ONNX Runtime's percentile default (99.999th percentile over 2048 bins).
    pub const PERCENTILE: Calibrator = Calibrator::Percentile { percentile: 99.999, bins: 2048 };
    /// ONNX Runtime's entropy default (128 bins, 128 quantized bins).
    pub const ENTROPY: Calibrator = Calibrator::Entropy { bins: 128, quantized_bins: 128 };

    /// `minmax`, `percentile` or `entropy`.
    pub fn name(&self) -> &'static str {
        match self {
            Calibrator::MinMax => "minmax",
            Calibrator::Percentile { .. } => "percentile",
            Calibrator::Entropy { .. } => "entropy",
        }
    }

    /// The range of `values` (NaN ignored); `(0, 0)` when there is none.
    pub fn range(&self, values: &[f32]) -> (f32, f32) {
        let finite: Vec<f32> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        let Some((lo, hi)) = min_max(&finite) else { return (0.0, 0.0) };
        let (rmin, rmax) = match *self {
            Calibrator::MinMax => (lo, hi),
            Calibrator::Percentile { percentile, bins } => {
                let t = percentile_threshold(&finite, percentile, bins);
                (-t, t)
            }
            Calibrator::Entropy { bins, quantized_bins } => entropy_threshold(&finite, lo, hi, bins, quantized_bins),
        };
        (rmin.max(lo), rmax.min(hi))
    }
}

fn min_max(values: &[f32]) -> Option<(f32, f32)> {
    let first = *values.first()?;
    Some(values.iter().fold((first, first), |(lo, hi), v| (lo.min(*v), hi.max(*v))))
}

/// numpy.histogram over `[lo, hi]` with `bins` equal bins (the last one closed); returns counts and edges.
fn histogram(values: &[f32], lo: f32, hi: f32, bins: usize) -> (Vec<u64>, Vec<f32>) {
    let (lo64, hi64) = (f64::from(lo), f64::from(hi));
    let (lo64, hi64) = if lo64 == hi64 { (lo64 - 0.5, hi64 + 0.5) } else { (lo64, hi64) };
    let width = (hi64 - lo64) / bins as f64;
    let mut counts = vec![0u64; bins];
    for &v in values {
        let v = f64::from(v);
        if v < lo64 || v > hi64 {
            continue;
        }
        let index = (((v - lo64) / width) as usize).min(bins - 1);
        counts[index] += 1;
    }
    let edges = (0..=bins).map(|i| (lo64 + width * i as f64) as f32).collect();
    (counts, edges)
}

fn percentile_threshold(values: &[f32], percentile: f64, bins: usize) -> f32 {
    let abs: Vec<f32> = values.iter().map(|v| v.abs()).collect();
    let Some((lo, hi)) = min_max(&abs) else { return 0.0 };
    let (counts, edges) = histogram(&abs, lo, hi, bins.max(1));
    let total: u64 = counts.iter().sum();
    let target = percentile / 100.0;
    let mut cumulative = 0.0;
    for (i, c) in counts.iter().enumerate() {
        cumulative += *c as f64 / total as f64;
        // numpy.searchsorted(cdf, target): the first index whose cdf ≥ target.
        if cumulative >= target {
            return edges[i];
        }
    }
    edges[counts.len()]
}

fn entropy_threshold(values: &[f32], lo: f32, hi: f32, bins: usize, quantized_bins: usize) -> (f32, f32) {
    let threshold = lo.abs().max(hi.abs());
    let bins = bins.max(2);
    let (hist, edges) = histogram(values, -threshold, threshold, bins);
    let zero = bins / 2;
    let half = (quantized_bins / 2).max(1);
    if half > zero {
        return (edges[0], edges[bins]);
    }
    let mut best = (f64::INFINITY, (edges[0], edges[bins]));
    for i in half..=zero {
        let start = zero - i;
        let end = (zero + i + 1).min(bins);
        let sliced = &hist[start..end];
        let mut p: Vec<f64> = sliced.iter().map(|c| *c as f64).collect();
        p[0] += hist[..start].iter().sum::<u64>() as f64;
        let last = p.len() - 1;
        p[last] += hist[end..].iter().sum::<u64>() as f64;
        let nonzero: Vec<bool> = p.iter().map(|v| *v != 0.0).collect();
        let merged = (sliced.len() / quantized_bins).max(1);
        let mut quantized = vec![0f64; quantized_bins];
        for (index, q) in quantized.iter_mut().enumerate() {
            let s = index * merged;
            *q = sliced.iter().skip(s).take(merged).map(|c| *c as f64).sum();
        }
        let tail_start = (quantized_bins * merged).min(sliced.len());
        quantized[quantized_bins - 1] += sliced[tail_start..].iter().map(|c| *c as f64).sum::<f64>();
        let mut q = vec![0f64; p.len()];
        for (index, total) in quantized.iter().enumerate() {
            let s = (index * merged).min(p.len());
            let e = (s + merged).min(p.len());
            let norm = nonzero[s..e].iter().filter(|n| **n).count();
            if norm != 0 {
                // numpy assigns the float quotient into an int64 array: truncated.
                let value = (total / norm as f64).trunc();
                q[s..e].iter_mut().for_each(|x| *x = value);
            }
        }
        let divergence = match (smooth(&p), smooth(&q)) {
            (Some(p), Some(q)) => kl(&p, &q),
            _ => f64::INFINITY,
        };
        if divergence < best.0 {
            best = (divergence, (edges[start], edges[end]));
        }
    }
    best.1
}

/// ONNX Runtime's `smooth_distribution`: zeros become eps, taken off the non-zero entries.
fn smooth(p: &[f64]) -> Option<Vec<f64>> {
    const EPS: f64 = 0.0001;
    let zeros = p.iter().filter(|v| **v == 0.0).count();
    let nonzeros = p.len() - zeros;
    if nonzeros == 0 {
        return None;
    }
    let eps1 = EPS * zeros as f64 / nonzeros as f64;
    Some(p.iter().map(|v| if *v == 0.0 { EPS } else { v - eps1 }).collect())
}

/// scipy.stats.entropy(p, q): KL divergence of the normalised distributions.
fn kl(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    p.iter()
        .zip(q)
        .map(|(a, b)| {
            let (a, b) = (a / sp, b / sq);
            if a > 0.0 {
                a * (a / b).ln()
            } else {
                0.0
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic standard-normal sample (Box–Muller over a xorshift stream).
    fn gaussian(n: usize) -> Vec<f32> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (uniform(), uniform());
                ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn minmax_is_the_extremes() {
        assert_eq!(Calibrator::MIN_MAX.range(&[0.5, -2.0, 3.0, f32::NAN]), (-2.0, 3.0));
        assert_eq!(Calibrator::MIN_MAX.range(&[]), (0.0, 0.0));
    }

    #[test]
    fn percentile_ignores_rare_outliers() {
        let mut values = gaussian(200_000);
        values.extend([100.0, -80.0]);
        let (lo, hi) = Calibrator::PERCENTILE.range(&values);
        // 99.999% of |N(0, 1)| lies below ~4.4; the outliers at 100 and -80 are cut off.
        assert!(hi > 3.5 && hi < 6.0, "{hi}");
        assert_eq!(lo, -hi);
    }

    #[test]
    fn entropy_with_fine_bins_clips_a_long_tail_and_with_onnx_runtime_defaults_keeps_the_range() {
        let mut values = gaussian(100_000);
        values.extend([40.0, -40.0]);
        let fine = Calibrator::Entropy { bins: 2048, quantized_bins: 128 };
        let (lo, hi) = fine.range(&values);
        assert!(hi < 20.0 && lo > -20.0, "({lo}, {hi})");
        assert!(hi > 2.0, "({lo}, {hi})");
        // 128 bins and 128 quantized bins leave one candidate window: the full (clipped) range.
        assert_eq!(Calibrator::ENTROPY.range(&values), (-40.0, 40.0));
    }
}
