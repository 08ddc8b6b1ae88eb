//! Online aggregation: member weights that follow each member's live losses, updated once per
//! realised outcome in O(members).
//!
//! * [`Hedge`]: the exponentially weighted average forecaster with Fixed-Share mixing (Herbster &
//!   Warmuth, 1998), so weight can flow back to a member after a regime switch. Loss: squared error
//!   (the Brier score for probabilities, bounded in [0, 1]). Defaults: η = 2, α = 0.01.
//! * [`Boa`]: Bernstein Online Aggregation as implemented in the R package `opera` (`BOA.R`): square
//!   loss with the gradient trick, per-member adaptive learning rates (`eta_inv2 += 2.2 r²`), and the
//!   second-order regret `r − r²/√eta_inv2`. Parameter-free.
//!
//! Both take a weight floor (default 0.01): every member that answers keeps at least that share before
//! renormalisation, so none is starved forever. A member with no prediction in a round (failed,
//! skipped) is neither scored nor updated in that round.

/// An online weighting rule.
pub trait OnlineWeights: Send + std::fmt::Debug {
    /// The rule's name in reports (`hedge`, `boa`).
    fn name(&self) -> &'static str;
    /// The weights to use now over the members that answer (`None` = did not answer), floored and
    /// normalised over those; writes 0 for the others.
    fn weights(&self, answered: &[bool], out: &mut [f64]);
    /// Learns from one round: `predictions[i]` is member `i`'s prediction (`None` if it did not
    /// answer), `outcome` the realised value.
    fn update(&mut self, predictions: &[Option<f64>], outcome: f64);
}

/// Settings shared by the online rules.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct OnlineOptions {
    /// Hedge's learning rate.
    pub eta: f64,
    /// Fixed-Share mixing rate.
    pub alpha: f64,
    /// Minimum weight of a member that answers, before renormalisation.
    pub floor: f64,
    /// Decay of the recent-loss average the engine shows in explanations (0.95 ≈ the last 20 outcomes).
    pub loss_decay: f64,
}

impl Default for OnlineOptions {
    fn default() -> Self {
        OnlineOptions { eta: 2.0, alpha: 0.01, floor: 0.01, loss_decay: 0.95 }
    }
}

fn floored(raw: &[f64], answered: &[bool], floor: f64, out: &mut [f64]) {
    let total: f64 = raw.iter().zip(answered).filter(|(_, a)| **a).map(|(w, _)| *w).sum();
    let live = answered.iter().filter(|a| **a).count();
    for ((o, &w), &a) in out.iter_mut().zip(raw).zip(answered) {
        *o = if !a {
            0.0
        } else if total > 0.0 && total.is_finite() {
            (w / total).max(floor)
        } else {
            1.0 / live as f64
        };
    }
    let sum: f64 = out.iter().sum();
    if sum > 0.0 {
        out.iter_mut().for_each(|o| *o /= sum);
    }
}

/// Exponentially weighted average forecaster with Fixed-Share.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Hedge {
    options: OnlineOptions,
    weights: Vec<f64>,
}

impl Hedge {
    pub fn new(members: usize, options: OnlineOptions) -> Hedge {
        Hedge { options, weights: vec![1.0 / members as f64; members] }
    }

    /// Starts from given (non-negative) weights, e.g. the configured static ones.
    pub fn with_prior(prior: &[f64], options: OnlineOptions) -> Hedge {
        let total: f64 = prior.iter().sum();
        let mut h = Hedge::new(prior.len(), options);
        if total > 0.0 {
            h.weights = prior.iter().map(|w| w / total).collect();
        }
        h
    }

    /// The raw (unfloored) weights, summing to 1.
    pub fn raw_weights(&self) -> &[f64] {
        &self.weights
    }
}

impl OnlineWeights for Hedge {
    fn name(&self) -> &'static str {
        "hedge"
    }

    fn weights(&self, answered: &[bool], out: &mut [f64]) {
        floored(&self.weights, answered, self.options.floor, out);
    }

    fn update(&mut self, predictions: &[Option<f64>], outcome: f64) {
        let awake: Vec<usize> = (0..predictions.len()).filter(|&i| predictions[i].is_some()).collect();
        if awake.is_empty() {
            return;
        }
        // Only the members that answered exchange weight; the others keep theirs untouched.
        let mass: f64 = awake.iter().map(|&i| self.weights[i]).sum();
        let mut updated: Vec<f64> = awake
            .iter()
            .map(|&i| {
                let loss = (predictions[i].unwrap_or(outcome) - outcome).powi(2);
                self.weights[i] * (-self.options.eta * loss).exp()
            })
            .collect();
        let total: f64 = updated.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            updated.iter_mut().for_each(|u| *u = 1.0 / awake.len() as f64);
        } else {
            updated.iter_mut().for_each(|u| *u /= total);
        }
        let share = self.options.alpha / awake.len() as f64;
        for (&i, &u) in awake.iter().zip(&updated) {
            self.weights[i] = mass * (share + (1.0 - self.options.alpha) * u);
        }
    }
}

/// Bernstein Online Aggregation (opera's `BOA`, square loss, gradient trick).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Boa {
    options: OnlineOptions,
    prior: Vec<f64>,
    eta_inv2: Vec<f64>,
    regret: Vec<f64>,
}

impl Boa {
    pub fn new(members: usize, options: OnlineOptions) -> Boa {
        Boa { options, prior: vec![1.0; members], eta_inv2: vec![0.0; members], regret: vec![0.0; members] }
    }

    /// opera's weights before masking: members with no loss yet keep their prior weight; the others
    /// share their prior mass in proportion to η·w0·exp(η·R.reg), with η = 1/√eta_inv2.
    fn raw(&self, answered: &[bool]) -> Vec<f64> {
        let mut w = self.prior.clone();
        let learned: Vec<usize> = (0..w.len()).filter(|&i| self.eta_inv2[i] > 0.0).collect();
        if learned.is_empty() {
            return w;
        }
        let aux: Vec<f64> = learned
            .iter()
            .map(|&i| -self.eta_inv2[i].ln() / 2.0 + self.prior[i].ln() + self.regret[i] / self.eta_inv2[i].sqrt())
            .collect();
        let max = aux.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let normaliser: f64 = aux.iter().map(|a| (a - max).exp()).sum();
        let mass: f64 = learned.iter().filter(|&&i| answered[i]).map(|&i| self.prior[i]).sum();
        for (&i, a) in learned.iter().zip(&aux) {
            if answered[i] {
                w[i] = mass * (a - max).exp() / normaliser;
            }
        }
        w
    }
}

impl OnlineWeights for Boa {
    fn name(&self) -> &'static str {
        "boa"
    }

    fn weights(&self, answered: &[bool], out: &mut [f64]) {
        floored(&self.raw(answered), answered, self.options.floor, out);
    }

    fn update(&mut self, predictions: &[Option<f64>], outcome: f64) {
        let answered: Vec<bool> = predictions.iter().map(Option::is_some).collect();
        if !answered.iter().any(|a| *a) {
            return;
        }
        // The aggregated prediction with opera's (unfloored) weights: the point the loss is linearised at.
        let raw = self.raw(&answered);
        let total: f64 = raw.iter().zip(&answered).filter(|(_, a)| **a).map(|(w, _)| w).sum();
        let pred: f64 = predictions.iter().zip(&raw).filter_map(|(p, w)| p.map(|p| p * w)).sum::<f64>()
            / total.max(f64::MIN_POSITIVE);
        let gradient = 2.0 * (pred - outcome);
        for (i, p) in predictions.iter().enumerate() {
            let Some(x) = p else { continue };
            let r = gradient * (pred - x);
            self.eta_inv2[i] += 2.2 * r * r;
            if self.eta_inv2[i] > 0.0 {
                self.regret[i] += r - r * r / self.eta_inv2[i].sqrt();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rule: &mut dyn OnlineWeights, rounds: usize, good: usize) -> Vec<f64> {
        // Member `good` predicts the outcome well; the others are noise around the wrong side.
        let mut w = vec![0.0; 3];
        for t in 0..rounds {
            let y = (t % 2) as f64;
            let preds: Vec<Option<f64>> =
                (0..3).map(|i| Some(if i == good { 0.9 * y + 0.05 } else { 1.0 - y })).collect();
            rule.update(&preds, y);
        }
        rule.weights(&[true; 3], &mut w);
        w
    }

    #[test]
    fn both_rules_move_weight_to_the_good_member() {
        for mut rule in [
            Box::new(Hedge::new(3, OnlineOptions::default())) as Box<dyn OnlineWeights>,
            Box::new(Boa::new(3, OnlineOptions::default())),
        ] {
            let w = run(rule.as_mut(), 200, 1);
            assert!(w[1] > 0.9, "{}: {w:?}", rule.name());
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(w.iter().all(|x| *x >= 0.0099 / 1.03), "floor keeps everyone alive: {w:?}");
        }
    }

    #[test]
    fn fixed_share_lets_weight_come_back_after_a_switch() {
        let mut hedge = Hedge::new(3, OnlineOptions::default());
        run(&mut hedge, 300, 0);
        let w = run(&mut hedge, 60, 2);
        assert!(w[2] > 0.8, "weight returns to the new best member: {w:?}");
    }

    #[test]
    fn a_member_that_does_not_answer_is_not_updated() {
        let mut hedge = Hedge::new(2, OnlineOptions::default());
        let before = hedge.raw_weights().to_vec();
        hedge.update(&[None, Some(0.0)], 1.0);
        assert_eq!(hedge.raw_weights(), before.as_slice(), "a single awake member keeps its own mass");
        let mut w = [0.0; 2];
        hedge.weights(&[false, true], &mut w);
        assert_eq!(w, [0.0, 1.0]);
        let mut boa = Boa::new(2, OnlineOptions::default());
        boa.update(&[None, Some(0.2)], 1.0);
        assert_eq!((boa.eta_inv2[0], boa.regret[0]), (0.0, 0.0));
    }
}
