//! Monte Carlo runs of an experiment's decision rules on simulated outcomes, to see before a real
//! experiment how often it would decide wrongly (A/A: identical arms) and how fast it catches a
//! worse treatment — next to a naive two-sample z-test looked at after every outcome, whose error
//! rate peeking inflates.
//!
//! The model: each request's arm is drawn with the current step's share; its outcome is
//! y ~ Bernoulli(q) with q ~ Uniform(0.25, 0.75); the control predicts q (calibrated) and the
//! treatment σ(logit q + ε), ε ~ N(0, `treatment_logit_noise`²) (0: an A/A test). Each outcome's
//! log-loss goes through [`Experiment::record`], exactly as the engine feeds it.

use serde::Serialize;

use super::{Action, Arm, Experiment, ExperimentConfig, ExperimentState, Metric};
use crate::error::{Error, Result};
use crate::registry::Task;

/// What to simulate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Standard deviation of the noise on the treatment's logit (0: the arms are identical).
    pub treatment_logit_noise: f64,
    /// Experiments to run.
    pub runs: usize,
    /// The random seed (a run is reproducible).
    pub seed: u64,
}

/// The outcome of [`simulate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimulationReport {
    /// Experiments run.
    pub runs: usize,
    /// Of those, how many rolled back.
    pub rolled_back: usize,
    /// Of those, how many were promoted.
    pub promoted: usize,
    /// Of those, how many concluded no difference.
    pub no_difference: usize,
    /// Runs in which a two-sample z-test at level α, checked after every outcome (from 30 per arm),
    /// crossed its critical value at least once.
    pub naive_decisions: usize,
    /// Median outcomes (both arms) until the rules decided to roll back or promote, over the runs
    /// that did.
    pub median_outcomes_to_decision: Option<u64>,
    /// The treatment's mean log-loss minus the control's, over every simulated outcome (δ).
    pub delta_log_loss: f64,
}

impl SimulationReport {
    /// Runs that rolled back or promoted.
    pub fn decided(&self) -> usize {
        self.rolled_back + self.promoted
    }
}

/// splitmix64: a small, seedable generator (no dependency for a simulation).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// The two-sided critical value z with P(|Z| > z) = α, by bisection on the normal tail.
pub fn two_sided_critical_value(alpha: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if erfc(mid / std::f64::consts::SQRT_2) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The complementary error function (Numerical Recipes' erfcc, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Runs `scenario.runs` experiments of `config` (its metric must be log-loss, the default for
/// classification) until each decides or reaches `max_outcomes`.
///
/// # Errors
///
/// `config` for an invalid configuration.
pub fn simulate(config: &ExperimentConfig, scenario: &Scenario) -> Result<SimulationReport> {
    if config.metric.is_some_and(|m| m != Metric::LogLoss) {
        return Err(Error::Config("the simulation compares log-loss".into()));
    }
    let mut rng = Rng(scenario.seed);
    let critical = two_sided_critical_value(config.alpha);
    let mut report = SimulationReport {
        runs: scenario.runs,
        rolled_back: 0,
        promoted: 0,
        no_difference: 0,
        naive_decisions: 0,
        median_outcomes_to_decision: None,
        delta_log_loss: 0.0,
    };
    let mut to_decision = Vec::new();
    let (mut delta_sum, mut delta_n) = (0.0, 0u64);
    for _ in 0..scenario.runs {
        let mut e = Experiment::new(config.clone(), Task::Classification)?;
        let mut naive = super::msprt::Moments::default();
        let mut naive_control = super::msprt::Moments::default();
        let mut naive_crossed = false;
        while e.state == ExperimentState::Running {
            let q = 0.25 + 0.5 * rng.uniform();
            let y = if rng.uniform() < q { 1.0 } else { 0.0 };
            let control_loss = Metric::LogLoss.value(q as f32, y, None).unwrap_or(0.0);
            let logit = (q / (1.0 - q)).ln() + scenario.treatment_logit_noise * rng.normal();
            let treated = 1.0 / (1.0 + (-logit).exp());
            let treatment_loss = Metric::LogLoss.value(treated as f32, y, None).unwrap_or(0.0);
            delta_sum += treatment_loss - control_loss;
            delta_n += 1;
            let arm = if rng.uniform() * 100.0 < e.split_percent() { Arm::Treatment } else { Arm::Control };
            let value = if arm == Arm::Treatment { treatment_loss } else { control_loss };
            let action = e.record(arm, value);
            if arm == Arm::Treatment { &mut naive } else { &mut naive_control }.add(value);
            if !naive_crossed && naive.count >= 30 && naive_control.count >= 30 {
                let s2 = naive.variance() / naive.count as f64 + naive_control.variance() / naive_control.count as f64;
                naive_crossed = s2 > 0.0 && ((naive.mean - naive_control.mean) / s2.sqrt()).abs() > critical;
            }
            match action {
                Some(Action::RolledBack) => report.rolled_back += 1,
                Some(Action::Promoted) => report.promoted += 1,
                Some(Action::NoDifference) => report.no_difference += 1,
                _ => continue,
            }
            if matches!(action, Some(Action::RolledBack | Action::Promoted)) {
                to_decision.push(e.arms[0].count + e.arms[1].count);
            }
        }
        report.naive_decisions += usize::from(naive_crossed);
    }
    to_decision.sort_unstable();
    report.median_outcomes_to_decision = to_decision.get(to_decision.len() / 2).copied();
    report.delta_log_loss = if delta_n > 0 { delta_sum / delta_n as f64 } else { 0.0 };
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_critical_value_for_five_percent_is_1_96() {
        assert!((two_sided_critical_value(0.05) - 1.959_964).abs() < 1e-5);
        assert!((two_sided_critical_value(0.01) - 2.575_829).abs() < 1e-5);
    }
}
