//! How members' predictions become one: the [`Strategy`] trait and the voting strategies.
//!
//! # Confidence
//!
//! Confidence is in `[0, 1]` and is the product of two things a trader cares about:
//!
//! * **decisiveness**: how far the ensemble's answer is from a coin flip. Classification: `|2p − 1|`
//!   for the combined probability `p` (soft vote) or the weighted vote share (majority).
//!   Regression: 1 (a value has no coin-flip point).
//! * **agreement**: `1 − d`, where `d` is the members' weighted standard deviation around the combined
//!   answer, scaled to `[0, 1]`. Classification divides by 0.5, the largest standard deviation values in
//!   `[0, 1]` can have; regression uses `d = σ / (σ + mean |member value|)`.
//!
//! So every member saying 0.99 gives ≈ 0.98; members split 0 / 1 with equal weight give 0 (p = 0.5
//! and maximal disagreement); every member at 0.5 gives 0; a single member gives its decisiveness.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::registry::Task;

/// The combined answer for one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Combined {
    /// Classification: probability of the positive class (soft vote) or weighted vote share for it
    /// (majority). Regression: the value.
    pub prediction: f32,
    /// How sure the ensemble is, in `[0, 1]` (see the module docs).
    pub confidence: f32,
}

/// A way to combine members. Implementations must be cheap: `combine` runs once per row.
///
/// `values[i]` is member `i`'s prediction (a probability for classification), `weights[i]` its
/// weight; weights are non-negative and sum to 1 over the members that answered.
pub trait Strategy: Send + Sync + fmt::Debug {
    /// The strategy's name in configurations and predictions.
    fn name(&self) -> &'static str;
    /// Combines one row: the members' predictions and their (normalised) weights.
    fn combine(&self, task: Task, values: &[f32], weights: &[f32]) -> Combined;
}

/// Built-in strategies, as named in ensemble configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Weighted mean of member probabilities (classification) or values (regression).
    #[default]
    SoftVote,
    /// Weighted majority of member classes; classification only.
    Majority,
    /// Soft vote with Fixed-Share weights at AdaHedge's learning rate, updated at every outcome.
    Hedge,
    /// Soft vote with Bernstein Online Aggregation weights (parameter-free), updated at every outcome.
    Boa,
    /// Soft vote with ML-Poly weights (parameter-free), updated at every outcome.
    Mlpol,
    /// Soft vote with exponentially weighted average weights, η calibrated online on a grid.
    Ewa,
    /// A logistic (or ridge) meta-model on member predictions, refitted walk-forward.
    Stacking,
    /// Soft vote with convex weights fitted on the most recent outcomes, refitted on a schedule.
    Blending,
}

impl std::str::FromStr for StrategyKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "soft-vote" | "soft_vote" | "soft" => Ok(StrategyKind::SoftVote),
            "majority" | "hard-vote" | "hard_vote" => Ok(StrategyKind::Majority),
            "hedge" => Ok(StrategyKind::Hedge),
            "boa" => Ok(StrategyKind::Boa),
            "mlpol" | "ml-poly" | "ml_poly" => Ok(StrategyKind::Mlpol),
            "ewa" => Ok(StrategyKind::Ewa),
            "stacking" => Ok(StrategyKind::Stacking),
            "blending" => Ok(StrategyKind::Blending),
            other => Err(Error::Config(format!(
                "unknown strategy {other:?}; expected soft-vote, majority, hedge, boa, mlpol, ewa, stacking or blending"
            ))),
        }
    }
}

impl StrategyKind {
    /// The name used in configuration and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::SoftVote => "soft-vote",
            StrategyKind::Majority => "majority",
            StrategyKind::Hedge => "hedge",
            StrategyKind::Boa => "boa",
            StrategyKind::Mlpol => "mlpol",
            StrategyKind::Ewa => "ewa",
            StrategyKind::Stacking => "stacking",
            StrategyKind::Blending => "blending",
        }
    }

    /// Whether the strategy learns from outcomes.
    pub fn is_adaptive(self) -> bool {
        !matches!(self, StrategyKind::SoftVote | StrategyKind::Majority)
    }

    pub(crate) fn check_task(self, task: Task) -> Result<()> {
        if self == StrategyKind::Majority && task == Task::Regression {
            return Err(Error::Config(
                "majority voting needs classification members; use soft-vote for regression".into(),
            ));
        }
        Ok(())
    }
}

/// Weighted mean.
#[derive(Debug, Clone, Copy, Default)]
pub struct SoftVote;

impl Strategy for SoftVote {
    fn name(&self) -> &'static str {
        "soft-vote"
    }

    fn combine(&self, task: Task, values: &[f32], weights: &[f32]) -> Combined {
        let mean = weighted_mean(values, weights);
        let spread = weighted_std(values, weights, mean);
        let confidence = match task {
            Task::Classification => decisiveness(mean) * (1.0 - (spread / 0.5).min(1.0)),
            Task::Regression => {
                let scale = weighted_mean_abs(values, weights);
                if spread == 0.0 {
                    1.0
                } else {
                    1.0 - spread / (spread + scale)
                }
            }
        };
        Combined { prediction: mean as f32, confidence: clamp_unit(confidence) }
    }
}

/// Weighted majority of `value ≥ 0.5` votes. A tie (vote share exactly 0.5) is broken by the soft vote.
#[derive(Debug, Clone, Copy, Default)]
pub struct MajorityVote;

impl Strategy for MajorityVote {
    fn name(&self) -> &'static str {
        "majority"
    }

    fn combine(&self, _task: Task, values: &[f32], weights: &[f32]) -> Combined {
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let yes: f64 = values.iter().zip(weights).filter(|(v, _)| **v >= 0.5).map(|(_, &w)| f64::from(w)).sum();
        let mut share = if total > 0.0 { yes / total } else { 0.5 };
        if share == 0.5 {
            // Nudge toward the soft vote's side so the class is decided, without claiming confidence.
            let soft = weighted_mean(values, weights);
            share += (soft - 0.5).signum() * f64::from(f32::EPSILON);
        }
        let votes: Vec<f64> = values.iter().map(|&v| if v >= 0.5 { 1.0 } else { 0.0 }).collect();
        let spread = weighted_std_f64(&votes, weights, share);
        Combined {
            prediction: share as f32,
            confidence: clamp_unit(decisiveness(share) * (1.0 - (spread / 0.5).min(1.0))),
        }
    }
}

fn decisiveness(p: f64) -> f64 {
    (2.0 * p - 1.0).abs()
}

fn clamp_unit(x: f64) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0) as f32
    }
}

fn weighted_mean(values: &[f32], weights: &[f32]) -> f64 {
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let sum: f64 = values.iter().zip(weights).map(|(&v, &w)| f64::from(v) * f64::from(w)).sum();
    if total > 0.0 {
        sum / total
    } else {
        f64::NAN
    }
}

fn weighted_mean_abs(values: &[f32], weights: &[f32]) -> f64 {
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    values.iter().zip(weights).map(|(&v, &w)| f64::from(v).abs() * f64::from(w)).sum::<f64>() / total
}

fn weighted_std(values: &[f32], weights: &[f32], mean: f64) -> f64 {
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let var: f64 =
        values.iter().zip(weights).map(|(&v, &w)| f64::from(w) * (f64::from(v) - mean).powi(2)).sum::<f64>() / total;
    var.max(0.0).sqrt()
}

fn weighted_std_f64(values: &[f64], weights: &[f32], mean: f64) -> f64 {
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let var: f64 = values.iter().zip(weights).map(|(&v, &w)| f64::from(w) * (v - mean).powi(2)).sum::<f64>() / total;
    var.max(0.0).sqrt()
}

/// Stacking's combination: `σ(intercept + Σ cᵢ·logit(pᵢ))` for classification, `intercept + Σ cᵢ·vᵢ`
/// for regression, where `weights` are the meta-model's coefficients. Confidence is decisiveness times
/// the members' agreement (their unweighted spread), as for the votes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stacking {
    /// The meta-model's intercept.
    pub intercept: f32,
}

impl Strategy for Stacking {
    fn name(&self) -> &'static str {
        "stacking"
    }

    fn combine(&self, task: Task, values: &[f32], weights: &[f32]) -> Combined {
        let equal = vec![1.0 / values.len().max(1) as f32; values.len()];
        let mean = weighted_mean(values, &equal);
        let spread = weighted_std(values, &equal, mean);
        let z: f64 = f64::from(self.intercept)
            + values
                .iter()
                .zip(weights)
                .map(|(&v, &c)| {
                    let x = match task {
                        Task::Classification => {
                            let p = f64::from(v).clamp(1e-6, 1.0 - 1e-6);
                            (p / (1.0 - p)).ln()
                        }
                        Task::Regression => f64::from(v),
                    };
                    f64::from(c) * x
                })
                .sum::<f64>();
        match task {
            Task::Classification => {
                let p = 1.0 / (1.0 + (-z).exp());
                Combined {
                    prediction: p as f32,
                    confidence: clamp_unit(decisiveness(p) * (1.0 - (spread / 0.5).min(1.0))),
                }
            }
            Task::Regression => {
                let scale = weighted_mean_abs(values, &equal);
                let confidence = if spread == 0.0 { 1.0 } else { 1.0 - spread / (spread + scale) };
                Combined { prediction: z as f32, confidence: clamp_unit(confidence) }
            }
        }
    }
}

/// Checks raw configured weights and returns them normalised to sum to 1 (equal when absent).
///
/// # Errors
///
/// `config` when the count differs from `members`, or a weight is negative, not finite, or all are 0.
pub fn normalise_weights(weights: Option<&[f32]>, members: usize) -> Result<Vec<f32>> {
    let Some(weights) = weights else {
        return Ok(vec![1.0 / members as f32; members]);
    };
    if weights.len() != members {
        return Err(Error::Config(format!("{} weights given for {members} members", weights.len())));
    }
    if let Some(w) = weights.iter().find(|w| !w.is_finite() || **w < 0.0) {
        return Err(Error::Config(format!("weight {w} is not a finite non-negative number")));
    }
    let total: f32 = weights.iter().sum();
    if total <= 0.0 {
        return Err(Error::Config("weights sum to zero; at least one member needs a positive weight".into()));
    }
    Ok(weights.iter().map(|w| w / total).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_extremes() {
        let soft = SoftVote;
        let unanimous = soft.combine(Task::Classification, &[1.0, 1.0, 1.0], &[0.2, 0.3, 0.5]);
        assert_eq!(unanimous.prediction, 1.0);
        assert!((unanimous.confidence - 1.0).abs() < 1e-6);
        let split = soft.combine(Task::Classification, &[0.0, 1.0], &[0.5, 0.5]);
        assert_eq!(split.prediction, 0.5);
        assert_eq!(split.confidence, 0.0);
        let coin_flips = soft.combine(Task::Classification, &[0.5, 0.5, 0.5], &[1.0 / 3.0; 3]);
        assert_eq!(coin_flips.confidence, 0.0);
        let agreeing = soft.combine(Task::Classification, &[0.7, 0.7], &[0.5, 0.5]);
        let disagreeing = soft.combine(Task::Classification, &[0.5, 0.9], &[0.5, 0.5]);
        assert!((agreeing.prediction - disagreeing.prediction).abs() < 1e-6);
        assert!(agreeing.confidence > disagreeing.confidence, "disagreement must lower confidence");
    }

    #[test]
    fn regression_confidence_falls_with_spread() {
        let soft = SoftVote;
        let same = soft.combine(Task::Regression, &[2.0, 2.0], &[0.5, 0.5]);
        assert_eq!((same.prediction, same.confidence), (2.0, 1.0));
        let near = soft.combine(Task::Regression, &[1.9, 2.1], &[0.5, 0.5]);
        let far = soft.combine(Task::Regression, &[0.0, 4.0], &[0.5, 0.5]);
        assert!(near.confidence > far.confidence && far.confidence > 0.0);
    }

    #[test]
    fn majority_counts_weighted_votes() {
        let m = MajorityVote;
        let r = m.combine(Task::Classification, &[0.9, 0.6, 0.1], &[0.25, 0.25, 0.5]);
        // A weighted tie: the soft vote (0.425) decides the class, and confidence stays ~0.
        assert!(r.prediction < 0.5 && r.confidence < 1e-3, "{r:?}");
        let unanimous = m.combine(Task::Classification, &[0.9, 0.6, 0.8], &[0.2, 0.3, 0.5]);
        assert_eq!((unanimous.prediction, unanimous.confidence), (1.0, 1.0));
        let two_of_three = m.combine(Task::Classification, &[0.9, 0.6, 0.1], &[1.0 / 3.0; 3]);
        assert!(two_of_three.prediction > 0.6 && two_of_three.prediction < 0.7);
    }

    #[test]
    fn weights_are_validated_and_normalised() {
        assert_eq!(normalise_weights(Some(&[2.0, 2.0]), 2).unwrap(), vec![0.5, 0.5]);
        assert_eq!(normalise_weights(None, 4).unwrap(), vec![0.25; 4]);
        assert!(normalise_weights(Some(&[1.0]), 2).is_err());
        assert!(normalise_weights(Some(&[-1.0, 2.0]), 2).is_err());
        assert!(normalise_weights(Some(&[0.0, 0.0]), 2).is_err());
        assert!(normalise_weights(Some(&[f32::NAN, 1.0]), 2).is_err());
    }
}
