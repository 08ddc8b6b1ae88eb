//! Market regimes computed online: realised volatility from an EWMA of squared returns (RiskMetrics,
//! λ = 0.94), bucketed by running percentiles of its own history into low / normal / high.
//!
//! The percentiles are P² estimates (Jain & Chlamtac, 1985): O(1) memory and time per observation, no
//! stored history. Until `warmup` observations have been seen the regime is `normal`. Each observation
//! uses only the value of the row being predicted, which is known when it is predicted.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A volatility regime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Regime {
    /// Realised volatility below the low threshold.
    Low,
    /// Between the thresholds.
    Normal,
    /// Above the high threshold.
    High,
}

impl Regime {
    /// Every regime, low to high.
    pub const ALL: [Regime; 3] = [Regime::Low, Regime::Normal, Regime::High];

    /// `low`, `normal` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Regime::Low => "low",
            Regime::Normal => "normal",
            Regime::High => "high",
        }
    }

    /// 0, 1 or 2, low to high.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Regime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How regimes are detected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegimeOptions {
    /// The request feature holding the period's return (e.g. `ret_1d`).
    pub feature: String,
    /// EWMA decay of squared returns (default 0.94).
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    /// Volatility percentile below which the regime is low (default 1/3).
    #[serde(default = "default_low")]
    pub low_quantile: f64,
    /// Volatility percentile above which the regime is high (default 2/3).
    #[serde(default = "default_high")]
    pub high_quantile: f64,
    /// Observations before leaving `normal` (default 20).
    #[serde(default = "default_warmup")]
    pub warmup: usize,
}

fn default_lambda() -> f64 {
    0.94
}
fn default_low() -> f64 {
    1.0 / 3.0
}
fn default_high() -> f64 {
    2.0 / 3.0
}
fn default_warmup() -> usize {
    20
}

impl RegimeOptions {
    /// Detection from the return feature `feature`, with default thresholds and decay.
    pub fn new(feature: impl Into<String>) -> RegimeOptions {
        RegimeOptions {
            feature: feature.into(),
            lambda: default_lambda(),
            low_quantile: default_low(),
            high_quantile: default_high(),
            warmup: default_warmup(),
        }
    }

    /// Checks the options.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) (code `config`) naming the invalid setting.
    pub fn validate(&self) -> crate::Result<()> {
        let ok = (0.0..1.0).contains(&self.lambda)
            && 0.0 < self.low_quantile
            && self.low_quantile < self.high_quantile
            && self.high_quantile < 1.0;
        if !ok {
            return Err(crate::Error::Config(format!(
                "regime options: need 0 ≤ lambda < 1 and 0 < low_quantile < high_quantile < 1, got {self:?}"
            )));
        }
        Ok(())
    }
}

/// The P² running estimate of one quantile.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct P2 {
    p: f64,
    heights: [f64; 5],
    positions: [f64; 5],
    desired: [f64; 5],
    increments: [f64; 5],
    count: usize,
}

impl P2 {
    fn new(p: f64) -> P2 {
        P2 {
            p,
            heights: [0.0; 5],
            positions: [1.0, 2.0, 3.0, 4.0, 5.0],
            desired: [1.0, 1.0 + 2.0 * p, 1.0 + 4.0 * p, 3.0 + 2.0 * p, 5.0],
            increments: [0.0, p / 2.0, p, (1.0 + p) / 2.0, 1.0],
            count: 0,
        }
    }

    fn add(&mut self, x: f64) {
        if self.count < 5 {
            self.heights[self.count] = x;
            self.count += 1;
            if self.count == 5 {
                self.heights.sort_by(f64::total_cmp);
            }
            return;
        }
        self.count += 1;
        let h = &mut self.heights;
        let k = if x < h[0] {
            h[0] = x;
            0
        } else if x >= h[4] {
            h[4] = x;
            3
        } else {
            (0..4).find(|&i| x < h[i + 1]).unwrap_or(3)
        };
        for i in k + 1..5 {
            self.positions[i] += 1.0;
        }
        for i in 0..5 {
            self.desired[i] += self.increments[i];
        }
        for i in 1..4 {
            let d = self.desired[i] - self.positions[i];
            let (n, q) = (&mut self.positions, &mut self.heights);
            if (d >= 1.0 && n[i + 1] - n[i] > 1.0) || (d <= -1.0 && n[i - 1] - n[i] < -1.0) {
                let s = d.signum();
                let parabolic = q[i]
                    + s / (n[i + 1] - n[i - 1])
                        * ((n[i] - n[i - 1] + s) * (q[i + 1] - q[i]) / (n[i + 1] - n[i])
                            + (n[i + 1] - n[i] - s) * (q[i] - q[i - 1]) / (n[i] - n[i - 1]));
                q[i] = if q[i - 1] < parabolic && parabolic < q[i + 1] {
                    parabolic
                } else {
                    let j = if s > 0.0 { i + 1 } else { i - 1 };
                    q[i] + s * (q[j] - q[i]) / (n[j] - n[i])
                };
                n[i] += s;
            }
        }
    }

    fn value(&self) -> Option<f64> {
        match self.count {
            0 => None,
            c if c < 5 => {
                let mut seen = self.heights[..c].to_vec();
                seen.sort_by(f64::total_cmp);
                Some(seen[((c - 1) as f64 * self.p).round() as usize])
            }
            _ => Some(self.heights[2]),
        }
    }
}

/// Online regime detector.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RegimeDetector {
    options: RegimeOptions,
    variance: Option<f64>,
    low: P2,
    high: P2,
    seen: usize,
}

impl RegimeDetector {
    /// A detector with no history yet.
    pub fn new(options: RegimeOptions) -> RegimeDetector {
        RegimeDetector {
            low: P2::new(options.low_quantile),
            high: P2::new(options.high_quantile),
            options,
            variance: None,
            seen: 0,
        }
    }

    /// Its options.
    pub fn options(&self) -> &RegimeOptions {
        &self.options
    }

    /// Feeds one period's return and returns the regime in force for that period. A non-finite
    /// return is ignored (the regime stays what the history says).
    pub fn observe(&mut self, period_return: f64) -> Regime {
        if period_return.is_finite() {
            let sq = period_return * period_return;
            let lambda = self.options.lambda;
            let variance = self.variance.map_or(sq, |v| lambda * v + (1.0 - lambda) * sq);
            self.variance = Some(variance);
            let volatility = variance.sqrt();
            self.low.add(volatility);
            self.high.add(volatility);
            self.seen += 1;
        }
        self.current()
    }

    /// The regime given what has been observed so far.
    pub fn current(&self) -> Regime {
        let (Some(variance), Some(low), Some(high)) = (self.variance, self.low.value(), self.high.value()) else {
            return Regime::Normal;
        };
        if self.seen < self.options.warmup {
            return Regime::Normal;
        }
        let volatility = variance.sqrt();
        if volatility < low {
            Regime::Low
        } else if volatility > high {
            Regime::High
        } else {
            Regime::Normal
        }
    }

    /// Annualised (×√252) EWMA volatility, if any return has been seen.
    pub fn volatility(&self) -> Option<f64> {
        self.variance.map(|v| (v * 252.0).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p2_tracks_quantiles_of_a_uniform_stream() {
        let (mut q1, mut q2) = (P2::new(1.0 / 3.0), P2::new(2.0 / 3.0));
        let mut x: u64 = 12345;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            q1.add(u);
            q2.add(u);
        }
        assert!((q1.value().unwrap() - 1.0 / 3.0).abs() < 0.02, "{:?}", q1.value());
        assert!((q2.value().unwrap() - 2.0 / 3.0).abs() < 0.02, "{:?}", q2.value());
    }

    #[test]
    fn calm_then_stormy_markets_move_from_low_to_high() {
        let mut detector = RegimeDetector::new(RegimeOptions::new("ret_1d"));
        let mut regimes = Vec::new();
        for t in 0..300 {
            let size = match t {
                0..100 => 0.01,
                100..200 => 0.002,
                _ => 0.04,
            };
            regimes.push(detector.observe(if t % 2 == 0 { size } else { -size }));
        }
        assert_eq!(regimes[0], Regime::Normal, "warm-up");
        assert_eq!(regimes[180], Regime::Low, "{:?}", &regimes[170..190]);
        assert_eq!(regimes[260], Regime::High);
        assert_eq!(detector.observe(f64::NAN), Regime::High, "non-finite returns are ignored");
    }
}
