//! The always-valid test an experiment decides with: the mixture sequential probability ratio test
//! (mSPRT) of Johari, Koomen, Pekelis & Walsh, "Peeking at A/B tests" (KDD 2017), with a normal
//! mixture and plug-in variances.
//!
//! Two arms' per-outcome metric values (control `y`, treatment `x`) give the estimate
//! θ̂ = x̄ − ȳ of θ = E\[x\] − E\[y\] and its plug-in variance s² = Var(x)/n_x + Var(y)/n_y. With a
//! normal mixing distribution N(0, τ²) over θ, the mixture likelihood ratio of θ against 0 is
//!
//! ```text
//! Λ = √(s² / (s² + τ²)) · exp(τ² θ̂² / (2 s² (s² + τ²)))
//! ```
//!
//! which for equal arms of n outcomes and V = Var(x) + Var(y) is the paper's
//! `√(V/(V+nτ²)) · exp(n²τ²(x̄−ȳ)² / (2V(V+nτ²)))`. The test rejects θ = 0 once Λ ≥ 1/α; the
//! always-valid p-value is the running minimum of 1/Λ, and the confidence sequence is
//! θ̂ ± √(s²(s²+τ²)/τ² · (2 ln(1/α) + ln((s²+τ²)/s²))), each valid at every look at once.
//!
//! **Unequal arms.** The arms get different traffic shares, and the shares change as the
//! experiment advances. The general form above holds for any allocation: with independent arms,
//! Cov(θ̂ⱼ, θ̂ₖ) = Var(θ̂ₖ) for an earlier look j, so S = θ̂/s² is a Brownian motion with drift θ in
//! the "intrinsic time" I = 1/s² (the canonical joint distribution of group-sequential theory), and
//! Λ is the normal-mixture martingale `(1+τ²I)^(-1/2) · exp(τ²S²/(2(1+τ²I)))` — the same boundary as
//! the normal mixture of Howard et al. (PyPI `confseq`, `normal_mixture_bound` with ρ = 1/τ²),
//! whose published reference values a unit test below reproduces.
//!
//! **τ².** Set on the scale of the metric, as τ = `mixing_sd` × σ, where σ² is the two arms' pooled
//! per-outcome variance (Var(x) + Var(y))/2: `mixing_sd` is the standardized effect size the test is
//! most sensitive to (default 0.1, a tenth of a standard deviation per outcome; the boundary is then
//! tightest after about 1 500 outcomes per arm). Both σ and s² are plug-in estimates, so the guarantee
//! is asymptotic; [`MIN_ARM_OUTCOMES`] outcomes per arm are required before the test speaks.

use serde::{Deserialize, Serialize};

/// Outcomes each arm needs before the plug-in variances are trusted and the test looks.
pub const MIN_ARM_OUTCOMES: u64 = 30;

/// Running count, mean and sum of squared deviations of one arm's metric (Welford).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Values counted.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Σ (x − mean)².
    pub m2: f64,
}

impl Moments {
    /// Counts one value.
    pub fn add(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// The sample variance (0 below two values).
    pub fn variance(&self) -> f64 {
        if self.count > 1 {
            self.m2 / (self.count - 1) as f64
        } else {
            0.0
        }
    }
}

/// One look of the test: the estimate of treatment − control, its confidence sequence and Λ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Look {
    /// θ̂ = treatment mean − control mean.
    pub estimate: f64,
    /// The always-valid (1 − α) confidence sequence for θ at this look.
    pub lower: f64,
    /// See `lower`.
    pub upper: f64,
    /// The mixture likelihood ratio Λ (against θ = 0).
    pub likelihood_ratio: f64,
    /// The plug-in variance s² of θ̂.
    pub variance: f64,
    /// The mixing variance τ².
    pub tau2: f64,
}

impl Look {
    /// 1/Λ capped at 1: this look's p-value (the always-valid one is the running minimum).
    pub fn p_value(&self) -> f64 {
        (1.0 / self.likelihood_ratio).min(1.0)
    }
}

/// The test's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Msprt {
    /// The error rate the test is valid at, for every look at once.
    pub alpha: f64,
    /// τ in units of the pooled per-outcome standard deviation (see the module documentation).
    pub mixing_sd: f64,
}

impl Msprt {
    /// The test after the arms' outcomes so far; `None` until both arms have [`MIN_ARM_OUTCOMES`]
    /// and some variance.
    pub fn look(&self, control: &Moments, treatment: &Moments) -> Option<Look> {
        if control.count < MIN_ARM_OUTCOMES || treatment.count < MIN_ARM_OUTCOMES {
            return None;
        }
        let (vc, vt) = (control.variance(), treatment.variance());
        let variance = vt / treatment.count as f64 + vc / control.count as f64;
        if !(variance > 0.0 && variance.is_finite()) {
            return None;
        }
        let tau2 = self.mixing_sd * self.mixing_sd * (vc + vt) / 2.0;
        let estimate = treatment.mean - control.mean;
        let radius = confidence_radius(variance, tau2, self.alpha);
        Some(Look {
            estimate,
            lower: estimate - radius,
            upper: estimate + radius,
            likelihood_ratio: likelihood_ratio(estimate, variance, tau2),
            variance,
            tau2,
        })
    }
}

/// Λ for an estimate with variance `variance` (s²) under a N(0, `tau2`) mixture (computed in logs,
/// saturating at `f64::MAX`).
pub fn likelihood_ratio(estimate: f64, variance: f64, tau2: f64) -> f64 {
    let total = variance + tau2;
    let log = 0.5 * (variance / total).ln() + tau2 * estimate * estimate / (2.0 * variance * total);
    log.exp().min(f64::MAX)
}

/// Half the width of the (1 − α) confidence sequence: the |θ̂ − θ| at which Λ(θ̂ − θ) = 1/α.
pub fn confidence_radius(variance: f64, tau2: f64, alpha: f64) -> f64 {
    let total = variance + tau2;
    (variance * total / tau2 * (2.0 * (1.0 / alpha).ln() + (total / variance).ln())).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_general_form_is_the_papers_formula_for_equal_arms() {
        // n outcomes per arm, V the variance of one pair's difference, s² = V / n.
        let (n, v, tau2, diff) = (400.0f64, 2.0f64, 0.01f64, 0.07f64);
        let paper = (v / (v + n * tau2)).sqrt() * (n * n * tau2 * diff * diff / (2.0 * v * (v + n * tau2))).exp();
        let ours = likelihood_ratio(diff, v / n, tau2);
        assert!((paper - ours).abs() < 1e-9 * paper, "{paper} vs {ours}");
    }

    #[test]
    fn the_confidence_radius_is_where_the_ratio_reaches_one_over_alpha() {
        let (s2, tau2, alpha) = (0.003, 0.02, 0.05);
        let r = confidence_radius(s2, tau2, alpha);
        assert!((likelihood_ratio(r, s2, tau2) - 1.0 / alpha).abs() < 1e-6);
    }

    /// confseq 0.0.9's own unit test (test/uniform_boundaries_unittest.cpp, TwoSidedNormalMixture):
    /// with v_opt = 100 and alpha_opt = 0.05, best_rho = 12.60056, the log mixture at s = 10,
    /// v = 100 is -0.6510052 and the two-sided bound at v = 100, alpha = 0.05 is 30.35209. In our
    /// terms S = θ̂/s², v = 1/s², ρ = 1/τ².
    #[test]
    fn matches_confseqs_published_normal_mixture_values() {
        let best_rho = |v: f64, alpha: f64| v / (2.0 * (1.0 / alpha).ln() + (1.0 + 2.0 * (1.0 / alpha).ln()).ln());
        let rho = best_rho(100.0, 0.05);
        assert!((rho - 12.60056).abs() < 1e-5, "{rho}");
        let (v, tau2) = (100.0, 1.0 / rho);
        let variance = 1.0 / v;
        let log_mixture = likelihood_ratio(10.0 * variance, variance, tau2).ln();
        assert!((log_mixture - -0.6510052).abs() < 1e-6, "{log_mixture}");
        let bound_on_s = confidence_radius(variance, tau2, 0.05) * v;
        assert!((bound_on_s - 30.35209).abs() < 1e-5, "{bound_on_s}");
    }

    #[test]
    fn moments_match_the_two_pass_variance() {
        let xs = [0.3, 1.7, -2.0, 5.5, 0.25, 0.25];
        let mut m = Moments::default();
        xs.iter().for_each(|&x| m.add(x));
        let mean = xs.iter().sum::<f64>() / 6.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 5.0;
        assert!((m.mean - mean).abs() < 1e-12 && (m.variance() - var).abs() < 1e-12);
    }

    #[test]
    fn no_look_before_each_arm_has_its_minimum() {
        let test = Msprt { alpha: 0.05, mixing_sd: 0.1 };
        let mut a = Moments::default();
        (0..MIN_ARM_OUTCOMES - 1).for_each(|i| a.add(i as f64));
        assert!(test.look(&a, &a).is_none());
        a.add(1.0);
        assert!(test.look(&a, &a).is_some());
    }
}
