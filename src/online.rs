//! Online aggregation: member weights that follow each member's live losses, updated once per
//! realised outcome in O(members) (EWA: O(members × grid)).
//!
//! The rules follow the R package `opera` (Gaillard & Goude), the reference for aggregating
//! forecasters online, on the square loss:
//!
//! * [`Boa`] (`boa`): Bernstein Online Aggregation, opera's current `BOA.R` (Wintenberger 2017):
//!   per-member learning rates `eta_inv2 += 2.2 r²` and the second-order regret `r − r²/√eta_inv2`.
//!   Parameter-free.
//! * [`Mlpol`] (`mlpol`): ML-Poly (Gaillard, Stoltz & van Erven 2014), opera's `MLpol.R`: weights
//!   ∝ ηᵢ·(Rᵢ)₊ with per-member rates `ηᵢ ← 1/(1/ηᵢ + rᵢ² + B_new − B)`, B the largest r² seen.
//!   Parameter-free.
//! * [`Ewa`] (`ewa`): the exponentially weighted average with its learning rate calibrated online
//!   on a grid, opera's `ewaCalib.R`: every η of the grid runs alongside, the one with the smallest
//!   cumulative square loss so far predicts, and the grid grows by γ = 2 (three points) whenever the
//!   best η is at an end. With `eta` set, a single fixed η (opera's `ewa.R`).
//! * [`Hedge`] (`hedge`): Fixed-Share (Herbster & Warmuth 1998; opera's `fixedshare.R`) so weight can
//!   flow back to a member after a regime switch, with AdaHedge's learning rate (de Rooij, van
//!   Erven, Grünwald & Koolen 2014): `η = ln N / Δ`, Δ the cumulative mixability gap. That rate
//!   scales with the losses, so no hand tuning is needed at any outcome scale. With `eta` set, a
//!   fixed η (then exactly opera's `fixedshare`).
//!
//! # Losses, scale and the log domain
//!
//! Every rule sees round t as the instantaneous regret of each member against the served
//! prediction p̂: with the gradient trick (`gradient: true`, opera's default `loss.gradient`),
//! `rᵢ = 2(p̂ − y)(p̂ − xᵢ)`, the square loss linearised at p̂; without it `rᵢ = (p̂ − y)² − (xᵢ − y)²`.
//! A member that did not answer has `rᵢ = 0` (opera's sleeping experts). Weights are computed as a
//! softmax of log-weights with the largest subtracted, so nothing underflows at any scale and no rule
//! ever resets silently; where opera clamps with `truncate1` (to `exp(±700)`), quorum is exact.
//! `hedge`, `boa` and `mlpol` are scale-free: multiplying outcomes and predictions by c leaves their
//! weights unchanged (`tests/online_reference.rs` checks it at c = 10⁴).
//!
//! # Prior and floor
//!
//! The ensemble's configured weights are the prior: BOA's, EWA's and Hedge's w₀ (opera's `w0`).
//! ML-Poly has no prior in opera; quorum serves the prior while no member has a positive regret
//! (where opera serves uniform weights), which is opera exactly for equal weights.
//!
//! `floor` (default 0.01) is the smallest weight a member that answers is served, before
//! renormalisation, so none is starved forever. The floor applies **before** the gradient: the loss
//! is linearised at the prediction actually served (floored weights), so the rule learns from what
//! it did. With `floor: 0`, `boa`, `mlpol`, `ewa` and `hedge` with a fixed `eta` are opera's
//! `BOA`, `MLpol`, `ewaCalib` (`ewa` with a fixed η) and `fixedshare`, round for round (to 1e-9
//! relative in f64, checked against direct transcriptions of the R sources in
//! `tests/online_reference.rs`); the adaptive `hedge`, which opera lacks, against a direct
//! implementation of its definition above.
//!
//! Where quorum departs from opera, and why:
//! * `ewa` starts its grid after the first round with a non-zero regret at η = 1/mean|Rᵢ| (opera:
//!   at round 1, 1/mean|R.w0|, which also averages in the log prior, a unitless term, and is
//!   infinite when round 1 has no regret); and a new η added to the grid is replayed over the last
//!   [`EWA_REPLAY_ROUNDS`] outcomes (opera replays them all; the same while fewer have been seen).
//!   The grid holds at most [`EWA_MAX_GRID`] rates: growing past that at one end drops the rates
//!   farthest from the best at the other (opera's grid grows without bound, and so does its cost);
//!   and it stops growing once a further η would serve practically the same prediction (η × the spread of the
//!   regrets beyond [`EWA_ONE_HOT`] or below [`EWA_FLAT`]), where opera grows it at every round
//!   (with tied losses, as for exchangeable members, opera's best η falls toward 0 for ever).
//! * ML-Poly starts from the prior (above).
//! * Non-uniform priors enter EWA as `ln w₀ + η R` at every η (opera adds `ln(w₀)/η` once, with
//!   the η of its placeholder grid).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::strategy::StrategyKind;

/// An online weighting rule.
pub trait OnlineWeights: Send + std::fmt::Debug {
    /// The rule's name in reports (`hedge`, `boa`, `mlpol`, `ewa`).
    fn name(&self) -> &'static str;
    /// The weights served now over the members that answer (`answered[i]`), floored and normalised
    /// over those; writes 0 for the others.
    fn weights(&self, answered: &[bool], out: &mut [f64]);
    /// Learns from one round: `predictions[i]` is member `i`'s prediction (`None` if it did not
    /// answer), `outcome` the realised value. The rule linearises the loss at the prediction its
    /// [`OnlineWeights::weights`] served for these members.
    fn update(&mut self, predictions: &[Option<f64>], outcome: f64);
}

/// Settings shared by the online rules (the `online` object of an ensemble configuration).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnlineOptions {
    /// A fixed learning rate for `hedge` and `ewa`, in 1/(outcome units)²; `None` (the default)
    /// adapts it: AdaHedge's rate for `hedge`, the calibrated grid for `ewa`. `boa` and `mlpol`
    /// have per-member rates of their own and ignore it.
    pub eta: Option<f64>,
    /// Fixed-Share mixing rate of `hedge`, in [0, 1] (opera's `alpha`).
    pub alpha: f64,
    /// Minimum weight served to a member that answers, before renormalisation, in [0, 1).
    pub floor: f64,
    /// Decay of the recent-loss average the engine shows in explanations (0.95 ≈ the last 20 outcomes).
    pub loss_decay: f64,
    /// Learn from the square loss linearised at the served prediction (opera's `loss.gradient`,
    /// the default) rather than from the square loss itself.
    pub gradient: bool,
}

impl Default for OnlineOptions {
    fn default() -> Self {
        OnlineOptions { eta: None, alpha: 0.01, floor: 0.01, loss_decay: 0.95, gradient: true }
    }
}

impl OnlineOptions {
    /// Checks the ranges.
    ///
    /// # Errors
    /// `config` naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if let Some(eta) = self.eta.filter(|e| !(e.is_finite() && *e > 0.0)) {
            return Err(Error::Config(format!("online option eta is {eta}: it must be a finite number > 0")));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::Config(format!("online option alpha is {}: it must be in [0, 1]", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.floor) {
            return Err(Error::Config(format!("online option floor is {}: it must be in [0, 1)", self.floor)));
        }
        if !(0.0..1.0).contains(&self.loss_decay) {
            return Err(Error::Config(format!(
                "online option loss_decay is {}: it must be in [0, 1)",
                self.loss_decay
            )));
        }
        Ok(())
    }

    /// Applies a JSON object of options over these (`{"eta": 0.5, "floor": 0}`); unknown keys are
    /// an error. `null` for `eta` restores the adaptive rate.
    ///
    /// # Errors
    /// `config` for a malformed document, an unknown key or a value out of range.
    pub fn merged(self, json: &str) -> Result<OnlineOptions> {
        let mut value = serde_json::to_value(self).map_err(|e| Error::json("online options", e))?;
        let patch: serde_json::Value =
            serde_json::from_str(json).map_err(|e| Error::Config(format!("strategy options are not JSON: {e}")))?;
        let serde_json::Value::Object(patch) = patch else {
            return Err(Error::Config("strategy options must be a JSON object, like {\"floor\": 0}".into()));
        };
        for (k, v) in patch {
            value[k] = v;
        }
        let options: OnlineOptions =
            serde_json::from_value(value).map_err(|e| Error::Config(format!("strategy options: {e}")))?;
        options.validate()?;
        Ok(options)
    }
}

/// How many past outcomes [`Ewa`] keeps to replay when its grid grows.
pub const EWA_REPLAY_ROUNDS: usize = 2048;
/// [`Ewa`] stops growing its grid upward once η × (the spread of the regrets) reaches this: the
/// weights are one-hot to within e⁻³⁰.
pub const EWA_ONE_HOT: f64 = 30.0;
/// ... and downward once η × spread falls to this: the weights are the prior to within 1e-3.
pub const EWA_FLAT: f64 = 1e-3;

/// The most learning rates [`Ewa`]'s grid holds (a range of 2¹⁵): when it grows past this at one
/// end, the rates farthest from the best are dropped at the other, so an update costs at most
/// O(members × 16) however far the best rate moves.
pub const EWA_MAX_GRID: usize = 16;

/// One of the online rules, as the engine and the backtest hold it (serialised with the learner state).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "lowercase")]
pub enum OnlineRule {
    /// Hedge: exponential weights on the members' losses.
    Hedge(Hedge),
    /// BOA: Bernstein online aggregation (second-order).
    Boa(Boa),
    /// ML-Poly: polynomial potential with per-member learning rates.
    Mlpol(Mlpol),
    /// Exponentially weighted average over a grid of learning rates.
    Ewa(Ewa),
}

impl OnlineRule {
    /// The rule of an online strategy, starting from the prior `prior` (non-negative, any sum);
    /// `None` for a strategy that is not an online rule.
    pub fn new(kind: StrategyKind, prior: &[f64], options: OnlineOptions) -> Option<OnlineRule> {
        Some(match kind {
            StrategyKind::Hedge => OnlineRule::Hedge(Hedge::with_prior(prior, options)),
            StrategyKind::Boa => OnlineRule::Boa(Boa::with_prior(prior, options)),
            StrategyKind::Mlpol => OnlineRule::Mlpol(Mlpol::with_prior(prior, options)),
            StrategyKind::Ewa => OnlineRule::Ewa(Ewa::with_prior(prior, options)),
            _ => return None,
        })
    }

    /// The rule, to read its weights.
    pub fn rule(&self) -> &dyn OnlineWeights {
        match self {
            OnlineRule::Hedge(r) => r,
            OnlineRule::Boa(r) => r,
            OnlineRule::Mlpol(r) => r,
            OnlineRule::Ewa(r) => r,
        }
    }

    /// The rule, to update it.
    pub fn rule_mut(&mut self) -> &mut dyn OnlineWeights {
        match self {
            OnlineRule::Hedge(r) => r,
            OnlineRule::Boa(r) => r,
            OnlineRule::Mlpol(r) => r,
            OnlineRule::Ewa(r) => r,
        }
    }
}

/// ln w, with `f64::MIN` for a weight of 0: the same weight (its exponential is 0 beside any real
/// member), but finite, so the learner state survives JSON (which has no −∞).
fn log_weight(w: f64) -> f64 {
    if w > 0.0 {
        w.ln()
    } else {
        f64::MIN
    }
}

/// The prior normalised to sum to 1 (equal weights when it sums to zero or is not finite).
fn normalised(prior: &[f64]) -> Vec<f64> {
    let total: f64 = prior.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
    if total > 0.0 && total.is_finite() {
        prior.iter().map(|&w| if w.is_finite() && w > 0.0 { w / total } else { 0.0 }).collect()
    } else {
        vec![1.0 / prior.len().max(1) as f64; prior.len()]
    }
}

/// Softmax of `logit(i)` over the members that answered (0 for the others), then the floor.
/// A logit of +∞ takes all the weight (shared among such members); all −∞ gives equal weights.
fn softmax_floored(logit: impl Fn(usize) -> f64, answered: &[bool], floor: f64, out: &mut [f64]) {
    let max = (0..out.len()).filter(|&i| answered[i]).map(&logit).fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    for (i, o) in out.iter_mut().enumerate() {
        *o = if !answered[i] {
            0.0
        } else if max == f64::INFINITY {
            f64::from(u8::from(logit(i) == f64::INFINITY))
        } else if max == f64::NEG_INFINITY || max.is_nan() {
            1.0
        } else {
            (logit(i) - max).exp()
        };
        total += *o;
    }
    if total > 0.0 {
        out.iter_mut().for_each(|o| *o /= total);
    }
    apply_floor(out, answered, floor);
}

/// Normalises non-negative `out` over the answered members and lifts each to at least `floor`.
fn apply_floor(out: &mut [f64], answered: &[bool], floor: f64) {
    if floor <= 0.0 {
        return;
    }
    let mut total = 0.0;
    for (o, &a) in out.iter_mut().zip(answered) {
        if a {
            *o = o.max(floor);
            total += *o;
        }
    }
    if total > 0.0 {
        out.iter_mut().for_each(|o| *o /= total);
    }
}

/// Non-negative linear weights in `out`, normalised over the answered members (0 for the others),
/// then floored: opera's `awake·w / sum(awake·w)`.
fn mask_normalise(out: &mut [f64], answered: &[bool], floor: f64) {
    let mut total = 0.0;
    for (o, &a) in out.iter_mut().zip(answered) {
        if !a {
            *o = 0.0;
        }
        total += *o;
    }
    if total > 0.0 && total.is_finite() {
        out.iter_mut().for_each(|o| *o /= total);
    } else {
        let live = answered.iter().filter(|a| **a).count().max(1) as f64;
        out.iter_mut().zip(answered).for_each(|(o, &a)| *o = if a { 1.0 / live } else { 0.0 });
    }
    apply_floor(out, answered, floor);
}

/// Σ wᵢ·xᵢ over the members that answered.
fn mixture(weights: &[f64], predictions: &[Option<f64>]) -> f64 {
    weights.iter().zip(predictions).filter_map(|(w, x)| x.map(|x| w * x)).sum()
}

/// Member i's instantaneous regret against the served prediction `served` (0 when it did not answer).
fn regret(gradient: bool, served: f64, x: Option<f64>, y: f64) -> f64 {
    match x {
        None => 0.0,
        Some(x) if gradient => 2.0 * (served - y) * (served - x),
        Some(x) => (served - y).powi(2) - (x - y).powi(2),
    }
}

/// Buffers reused across rounds so an update allocates nothing.
#[derive(Debug, Clone, Default)]
struct Scratch {
    answered: Vec<bool>,
    weights: Vec<f64>,
    regrets: Vec<f64>,
}

impl Scratch {
    fn load(&mut self, predictions: &[Option<f64>]) {
        self.answered.clear();
        self.answered.extend(predictions.iter().map(Option::is_some));
        self.weights.resize(predictions.len(), 0.0);
        self.regrets.resize(predictions.len(), 0.0);
    }
}

/// Fixed-Share with AdaHedge's learning rate (or a fixed one).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hedge {
    options: OnlineOptions,
    /// Log-weights after the last mixing step (normalised: their exponentials sum to 1).
    log_weights: Vec<f64>,
    /// Δ, the cumulative mixability gap.
    gap: f64,
    #[serde(skip)]
    scratch: Scratch,
}

impl Hedge {
    /// Equal weights over `members` members.
    pub fn new(members: usize, options: OnlineOptions) -> Hedge {
        Hedge::with_prior(&vec![1.0; members], options)
    }

    /// Starts from the prior (non-negative weights, any sum), e.g. the configured ones.
    pub fn with_prior(prior: &[f64], options: OnlineOptions) -> Hedge {
        let log_weights = normalised(prior).iter().map(|&w| log_weight(w)).collect();
        Hedge { options, log_weights, gap: 0.0, scratch: Scratch::default() }
    }

    /// The learning rate now: the fixed one, or `ln N / Δ` (∞ while Δ = 0: follow the leader).
    pub fn eta(&self) -> f64 {
        if let Some(eta) = self.options.eta {
            return eta;
        }
        let n = self.log_weights.len();
        if n <= 1 {
            0.0
        } else if self.gap > 0.0 {
            (n as f64).ln() / self.gap
        } else {
            f64::INFINITY
        }
    }
}

/// The mixability gap of weights `v` (over the members with `v > 0`) on regrets `r` at rate `eta`:
/// `(1/η) ln Σ vᵢ exp(η(rᵢ − r̄))`, r̄ = Σ vᵢrᵢ; `max rᵢ − r̄` at η = ∞. Never negative.
fn mixability_gap(v: &[f64], r: &[f64], eta: f64) -> f64 {
    let mean: f64 = v.iter().zip(r).map(|(v, r)| v * r).sum();
    let top = v.iter().zip(r).filter(|(v, _)| **v > 0.0).map(|(_, r)| r - mean).fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        return 0.0;
    }
    if eta.is_infinite() {
        return top.max(0.0);
    }
    let sum: f64 = v.iter().zip(r).filter(|(v, _)| **v > 0.0).map(|(v, r)| v * (eta * (r - mean - top)).exp()).sum();
    (top + sum.ln() / eta).max(0.0)
}

impl OnlineWeights for Hedge {
    fn name(&self) -> &'static str {
        "hedge"
    }

    fn weights(&self, answered: &[bool], out: &mut [f64]) {
        softmax_floored(|i| self.log_weights[i], answered, self.options.floor, out);
    }

    fn update(&mut self, predictions: &[Option<f64>], outcome: f64) {
        let mut s = std::mem::take(&mut self.scratch);
        s.load(predictions);
        if s.answered.iter().any(|a| *a) {
            self.weights(&s.answered, &mut s.weights);
            let served = mixture(&s.weights, predictions);
            for (r, &x) in s.regrets.iter_mut().zip(predictions) {
                *r = regret(self.options.gradient, served, x, outcome);
            }
            if self.options.eta.is_none() {
                // The gap of the rule's own (unfloored) weights over the members that answered.
                softmax_floored(|i| self.log_weights[i], &s.answered, 0.0, &mut s.weights);
                self.gap += mixability_gap(&s.weights, &s.regrets, self.eta());
            }
            let eta = self.eta();
            if eta.is_finite() {
                for (lw, r) in self.log_weights.iter_mut().zip(&s.regrets) {
                    *lw += eta * r;
                }
                // Fixed-Share: mix α of the mass uniformly over all members (opera's alpha/N).
                let n = self.log_weights.len() as f64;
                s.answered.iter_mut().for_each(|a| *a = true);
                softmax_floored(|i| self.log_weights[i], &s.answered, 0.0, &mut s.weights);
                for (lw, v) in self.log_weights.iter_mut().zip(&s.weights) {
                    *lw = log_weight(self.options.alpha / n + (1.0 - self.options.alpha) * v);
                }
            }
        }
        self.scratch = s;
    }
}

/// Bernstein Online Aggregation (opera's current `BOA.R`, gradient trick).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Boa {
    options: OnlineOptions,
    /// w₀, summing to 1.
    prior: Vec<f64>,
    eta_inv2: Vec<f64>,
    /// The regularised regret R.reg.
    regret: Vec<f64>,
    #[serde(skip)]
    scratch: Scratch,
}

impl Boa {
    /// Equal weights over `members` members.
    pub fn new(members: usize, options: OnlineOptions) -> Boa {
        Boa::with_prior(&vec![1.0; members], options)
    }

    /// Starts from the prior w₀ (non-negative weights, any sum), e.g. the configured ones.
    pub fn with_prior(prior: &[f64], options: OnlineOptions) -> Boa {
        let m = prior.len();
        Boa {
            options,
            prior: normalised(prior),
            eta_inv2: vec![0.0; m],
            regret: vec![0.0; m],
            scratch: Scratch::default(),
        }
    }

    /// opera's weights before masking, written to `out`: members with no loss yet keep their prior
    /// weight; the answering others share their prior mass in proportion to
    /// exp(−ln(eta_inv2)/2 + ln w₀ + R.reg/√eta_inv2), normalised over every member with a loss.
    fn raw(&self, answered: &[bool], out: &mut [f64]) {
        out.copy_from_slice(&self.prior);
        let aux =
            |i: usize| -self.eta_inv2[i].ln() / 2.0 + self.prior[i].ln() + self.regret[i] / self.eta_inv2[i].sqrt();
        let learned = |i: usize| self.eta_inv2[i] > 0.0;
        let n = out.len();
        let max = (0..n).filter(|&i| learned(i)).map(aux).fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() {
            return;
        }
        let normaliser: f64 = (0..n).filter(|&i| learned(i)).map(|i| (aux(i) - max).exp()).sum();
        let mass: f64 = (0..n).filter(|&i| learned(i) && answered[i]).map(|i| self.prior[i]).sum();
        for (i, o) in out.iter_mut().enumerate() {
            if learned(i) && answered[i] {
                *o = mass * (aux(i) - max).exp() / normaliser;
            }
        }
    }
}

impl OnlineWeights for Boa {
    fn name(&self) -> &'static str {
        "boa"
    }

    fn weights(&self, answered: &[bool], out: &mut [f64]) {
        self.raw(answered, out);
        mask_normalise(out, answered, self.options.floor);
    }

    fn update(&mut self, predictions: &[Option<f64>], outcome: f64) {
        let mut s = std::mem::take(&mut self.scratch);
        s.load(predictions);
        if s.answered.iter().any(|a| *a) {
            self.weights(&s.answered, &mut s.weights);
            let served = mixture(&s.weights, predictions);
            for (i, &x) in predictions.iter().enumerate() {
                let r = regret(self.options.gradient, served, x, outcome);
                self.eta_inv2[i] += 2.2 * r * r;
                if self.eta_inv2[i] > 0.0 {
                    self.regret[i] += r - r * r / self.eta_inv2[i].sqrt();
                }
            }
        }
        self.scratch = s;
    }
}

/// ML-Poly (opera's `MLpol.R`, gradient trick).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mlpol {
    options: OnlineOptions,
    prior: Vec<f64>,
    /// The cumulative regret R.
    regret: Vec<f64>,
    /// Per-member learning rates (opera starts them at exp(700)).
    eta: Vec<f64>,
    /// B, the largest squared regret seen.
    bound: f64,
    #[serde(skip)]
    scratch: Scratch,
}

/// opera's "infinite" initial learning rate.
const MLPOL_ETA0: f64 = 1.014_232_054_735_004_4e304; // exp(700)

impl Mlpol {
    /// Equal weights over `members` members.
    pub fn new(members: usize, options: OnlineOptions) -> Mlpol {
        Mlpol::with_prior(&vec![1.0; members], options)
    }

    /// Served while no member has a positive regret (opera: uniform).
    pub fn with_prior(prior: &[f64], options: OnlineOptions) -> Mlpol {
        let m = prior.len();
        Mlpol {
            options,
            prior: normalised(prior),
            regret: vec![0.0; m],
            eta: vec![MLPOL_ETA0; m],
            bound: 0.0,
            scratch: Scratch::default(),
        }
    }
}

impl OnlineWeights for Mlpol {
    fn name(&self) -> &'static str {
        "mlpol"
    }

    fn weights(&self, answered: &[bool], out: &mut [f64]) {
        let positive = (0..out.len()).any(|i| answered[i] && self.regret[i] > 0.0);
        if positive {
            // ηᵢ·(Rᵢ)₊ in the log domain: ηᵢ may be near 1e304 while Rᵢ is large.
            let logit = |i: usize| {
                if self.regret[i] > 0.0 {
                    self.eta[i].ln() + self.regret[i].ln()
                } else {
                    f64::NEG_INFINITY
                }
            };
            softmax_floored(logit, answered, self.options.floor, out);
        } else {
            out.copy_from_slice(&self.prior);
            mask_normalise(out, answered, self.options.floor);
        }
    }

    fn update(&mut self, predictions: &[Option<f64>], outcome: f64) {
        let mut s = std::mem::take(&mut self.scratch);
        s.load(predictions);
        if s.answered.iter().any(|a| *a) {
            self.weights(&s.answered, &mut s.weights);
            let served = mixture(&s.weights, predictions);
            let mut largest = self.bound;
            for (r, &x) in s.regrets.iter_mut().zip(predictions) {
                *r = regret(self.options.gradient, served, x, outcome);
                largest = largest.max(*r * *r);
            }
            for ((eta, total), r) in self.eta.iter_mut().zip(&mut self.regret).zip(&s.regrets) {
                *total += r;
                *eta = 1.0 / (1.0 / *eta + r * r + largest - self.bound);
            }
            self.bound = largest;
        }
        self.scratch = s;
    }
}

/// The exponentially weighted average with online calibration of η on a grid (opera's `ewaCalib.R`),
/// or with a fixed η (opera's `ewa.R`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ewa {
    options: OnlineOptions,
    log_prior: Vec<f64>,
    /// Learning rates, ascending.
    grid: Vec<f64>,
    /// Per grid point, each member's cumulative regret (row-major: `regret[k * members + i]`).
    regret: Vec<f64>,
    /// Per grid point, the cumulative square loss of its own predictions.
    loss: Vec<f64>,
    /// The grid point that predicts.
    best: usize,
    /// Whether the grid has been placed (after the first round with a regret).
    placed: bool,
    /// The last rounds, `members` predictions (`None`: did not answer) then the outcome, for replays.
    history: std::collections::VecDeque<Option<f64>>,
    #[serde(skip)]
    scratch: Scratch,
}

impl Ewa {
    /// Equal weights over `members` members.
    pub fn new(members: usize, options: OnlineOptions) -> Ewa {
        Ewa::with_prior(&vec![1.0; members], options)
    }

    /// Starts from the prior w₀ (non-negative weights, any sum).
    pub fn with_prior(prior: &[f64], options: OnlineOptions) -> Ewa {
        let m = prior.len();
        Ewa {
            options,
            log_prior: normalised(prior).iter().map(|&w| log_weight(w)).collect(),
            grid: vec![options.eta.unwrap_or(1.0)],
            regret: vec![0.0; m],
            loss: vec![0.0],
            best: 0,
            placed: options.eta.is_some(),
            history: std::collections::VecDeque::new(),
            scratch: Scratch::default(),
        }
    }

    /// The grid of learning rates (ascending) and the one in use.
    pub fn grid(&self) -> (&[f64], f64) {
        (&self.grid, self.grid[self.best])
    }

    fn members(&self) -> usize {
        self.log_prior.len()
    }

    /// One round of EWA(η) with regrets `regret`: the served weights' prediction, then the regret
    /// update. Returns the prediction's square loss.
    /// The grid runs this once per η per outcome, so it fuses [`softmax_floored`] and [`mixture`]
    /// into three passes over the members (the same arithmetic).
    fn step(&self, eta: f64, total: &mut [f64], predictions: &[Option<f64>], y: f64, s: &mut Scratch) -> f64 {
        let (log_prior, floor) = (&self.log_prior, self.options.floor);
        let mut max = f64::NEG_INFINITY;
        for ((w, &a), (lp, r)) in s.weights.iter_mut().zip(&s.answered).zip(log_prior.iter().zip(total.iter())) {
            *w = if a { lp + eta * r } else { f64::NEG_INFINITY };
            max = max.max(*w);
        }
        let served = if max.is_finite() {
            let mut sum = 0.0;
            for w in s.weights.iter_mut() {
                *w = (*w - max).exp();
                sum += *w;
            }
            let (mut norm, mut dot) = (0.0, 0.0);
            for (w, x) in s.weights.iter_mut().zip(predictions) {
                if let Some(x) = x {
                    *w = (*w / sum).max(floor);
                    norm += *w;
                    dot += *w * x;
                }
            }
            dot / norm
        } else {
            // No finite logit (a prior of zero everywhere that answered): the general path.
            softmax_floored(|i| log_prior[i] + eta * total[i], &s.answered, floor, &mut s.weights);
            mixture(&s.weights, predictions)
        };
        for (r, &x) in total.iter_mut().zip(predictions) {
            *r += regret(self.options.gradient, served, x, y);
        }
        (served - y).powi(2)
    }

    /// EWA(η) from scratch over the kept history: its regrets and cumulative loss.
    fn replay(&self, eta: f64, s: &mut Scratch) -> (Vec<f64>, f64) {
        let m = self.members();
        let mut regret = vec![0.0; m];
        let mut loss = 0.0;
        let rows: Vec<Option<f64>> = self.history.iter().copied().collect();
        for round in rows.chunks_exact(m + 1) {
            let (predictions, outcome) = round.split_at(m);
            s.load(predictions);
            loss += self.step(eta, &mut regret, predictions, outcome[0].unwrap_or(f64::NAN), s);
        }
        (regret, loss)
    }

    /// η × (the spread of the regrets) at grid point `k`: how far its weights are from the prior
    /// (≈ 0) or from one-hot (large). Beyond those, a further η serves practically the same
    /// prediction now (and, as regrets only drift, for a long while).
    fn reach(&self, k: usize) -> f64 {
        let m = self.members();
        let r = &self.regret[k * m..(k + 1) * m];
        let max = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = r.iter().copied().fold(f64::INFINITY, f64::min);
        self.grid[k] * (max - min)
    }

    /// opera's grid extension: three new rates beyond the end where the best one lies (and, past
    /// [`EWA_MAX_GRID`], the same number dropped at the other end).
    fn extend(&mut self, s: &mut Scratch) {
        let m = self.members();
        let gamma: f64 = 2.0;
        if self.best + 1 == self.grid.len() && self.reach(self.best) < EWA_ONE_HOT {
            let top = self.grid[self.best];
            for k in 1..=3 {
                let eta = top * gamma.powi(k);
                let (regret, loss) = self.replay(eta, s);
                self.grid.push(eta);
                self.regret.extend(regret);
                self.loss.push(loss);
            }
            let excess = self.grid.len().saturating_sub(EWA_MAX_GRID);
            self.grid.drain(..excess);
            self.regret.drain(..excess * m);
            self.loss.drain(..excess);
            self.best -= excess;
        }
        if self.best == 0 && self.reach(0) > EWA_FLAT {
            let bottom = self.grid[0];
            let mut regrets = Vec::with_capacity(3 * m);
            let mut losses = Vec::with_capacity(3);
            for k in (1..=3).rev() {
                let eta = bottom / gamma.powi(k);
                let (regret, loss) = self.replay(eta, s);
                regrets.extend(regret);
                losses.push(loss);
                self.grid.insert(3 - k as usize, eta);
            }
            regrets.extend_from_slice(&self.regret);
            self.regret = regrets;
            losses.extend_from_slice(&self.loss);
            self.loss = losses;
            self.best += 3;
            let keep = self.grid.len().min(EWA_MAX_GRID);
            self.grid.truncate(keep);
            self.regret.truncate(keep * m);
            self.loss.truncate(keep);
        }
    }
}

impl OnlineWeights for Ewa {
    fn name(&self) -> &'static str {
        "ewa"
    }

    fn weights(&self, answered: &[bool], out: &mut [f64]) {
        let m = self.members();
        let (eta, regret) = (self.grid[self.best], &self.regret[self.best * m..(self.best + 1) * m]);
        softmax_floored(|i| self.log_prior[i] + eta * regret[i], answered, self.options.floor, out);
    }

    fn update(&mut self, predictions: &[Option<f64>], outcome: f64) {
        let m = self.members();
        let mut s = std::mem::take(&mut self.scratch);
        s.load(predictions);
        if s.answered.iter().any(|a| *a) {
            let mut regret = std::mem::take(&mut self.regret);
            for k in 0..self.grid.len() {
                let loss = self.step(self.grid[k], &mut regret[k * m..(k + 1) * m], predictions, outcome, &mut s);
                self.loss[k] += loss;
            }
            self.regret = regret;
            if self.options.eta.is_none() {
                if self.history.len() == EWA_REPLAY_ROUNDS * (m + 1) {
                    self.history.drain(..m + 1);
                }
                self.history.extend(predictions);
                self.history.push_back(Some(outcome));
                if !self.placed {
                    let scale = self.regret.iter().map(|r| r.abs()).sum::<f64>() / m as f64;
                    if scale > 0.0 && scale.is_finite() {
                        self.grid[0] = 1.0 / scale;
                        self.placed = true;
                    }
                }
                if self.placed {
                    // The first of the smallest cumulative losses (R's `order(...)[1]`).
                    self.best = (0..self.loss.len()).fold(0, |b, k| if self.loss[k] < self.loss[b] { k } else { b });
                    self.extend(&mut s);
                }
            }
        }
        self.scratch = s;
    }
}

#[cfg(test)]
#[path = "../tests/unit/online.rs"]
mod tests;
