//! Meta-learners fitted in Rust on members' walk-forward predictions: stacking (logistic regression
//! by IRLS for classification, ridge regression in closed form for regression) and blending (convex
//! weights on the simplex).
//!
//! Both learn only from rows whose outcome is already known when they are refitted: a [`MetaLearner`] sees row t's outcome through `observe` after row t was predicted, keeps the most
//! recent `window` rows, and is refitted every `refit_every` observations. The members were trained before
//! the first row they ever see, so every training row is out-of-fold and nothing comes from the future
//! (unlike scikit-learn's shuffled K-fold stacking, which mixes time).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::registry::Task;

/// Refit schedule and window of a meta-learner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetaOptions {
    /// Rows kept for fitting: the most recent ones (default 250, about a trading year).
    pub window: usize,
    /// Refit after this many new outcomes (default 20).
    pub refit_every: usize,
    /// Until this many rows are known the learner falls back to equal weights (default 60).
    pub min_rows: usize,
    /// L2 penalty (default 1.0 for stacking; not applied to the intercept).
    pub l2: f64,
}

impl Default for MetaOptions {
    fn default() -> Self {
        MetaOptions { window: 250, refit_every: 20, min_rows: 60, l2: 1.0 }
    }
}

const EPS: f64 = 1e-6;

fn logit(p: f64) -> f64 {
    let p = p.clamp(EPS, 1.0 - EPS);
    (p / (1.0 - p)).ln()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Solves `a x = b` for a small symmetric positive-definite `a` (Cholesky). `None` if not SPD.
fn solve_spd(a: &[f64], b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = a[i * n + i] - sum;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - sum) / l[j * n + j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[i * n + k] * y[k]).sum::<f64>()) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[k * n + i] * x[k]).sum::<f64>()) / l[i * n + i];
    }
    Some(x)
}

/// Logistic regression `P(y=1) = σ(b0 + Σ b_k x_k)` by iteratively reweighted least squares with an L2
/// penalty on the slopes. `rows` are feature vectors (without the intercept).
pub fn fit_logistic(rows: &[Vec<f64>], y: &[f64], l2: f64) -> Option<Vec<f64>> {
    let k = rows.first()?.len() + 1;
    let mut beta = vec![0.0; k];
    for _ in 0..50 {
        let mut hessian = vec![0.0; k * k];
        let mut gradient = vec![0.0; k];
        for (x, &target) in rows.iter().zip(y) {
            let z = beta[0] + x.iter().zip(&beta[1..]).map(|(a, b)| a * b).sum::<f64>();
            let p = sigmoid(z);
            let w = (p * (1.0 - p)).max(1e-9);
            let xi = |j: usize| if j == 0 { 1.0 } else { x[j - 1] };
            for a in 0..k {
                gradient[a] += (target - p) * xi(a);
                for b in 0..=a {
                    hessian[a * k + b] += w * xi(a) * xi(b);
                }
            }
        }
        for a in 0..k {
            for b in 0..a {
                hessian[b * k + a] = hessian[a * k + b];
            }
            if a > 0 {
                hessian[a * k + a] += l2;
                gradient[a] -= l2 * beta[a];
            }
        }
        let step = solve_spd(&hessian, &gradient)?;
        let size: f64 = step.iter().map(|s| s.abs()).fold(0.0, f64::max);
        beta.iter_mut().zip(&step).for_each(|(b, s)| *b += s);
        if size < 1e-8 {
            break;
        }
    }
    beta.iter().all(|b| b.is_finite()).then_some(beta)
}

/// Ridge regression `y = b0 + Σ b_k x_k` in closed form (intercept unpenalised).
pub fn fit_ridge(rows: &[Vec<f64>], y: &[f64], l2: f64) -> Option<Vec<f64>> {
    let k = rows.first()?.len() + 1;
    let mut gram = vec![0.0; k * k];
    let mut rhs = vec![0.0; k];
    for (x, &target) in rows.iter().zip(y) {
        let xi = |j: usize| if j == 0 { 1.0 } else { x[j - 1] };
        for a in 0..k {
            rhs[a] += xi(a) * target;
            for b in 0..k {
                gram[a * k + b] += xi(a) * xi(b);
            }
        }
    }
    for a in 1..k {
        gram[a * k + a] += l2;
    }
    solve_spd(&gram, &rhs)
}

/// Convex weights minimising the mean log-loss (classification) or squared error (regression) of the
/// weighted mean on the simplex, by exponentiated gradient descent (which stays on the simplex).
pub fn fit_simplex(rows: &[Vec<f64>], y: &[f64], task: Task) -> Option<Vec<f64>> {
    let k = rows.first()?.len();
    let mut w = vec![1.0 / k as f64; k];
    let n = rows.len() as f64;
    let rate = 0.5;
    for _ in 0..300 {
        let mut gradient = vec![0.0; k];
        for (x, &target) in rows.iter().zip(y) {
            let p: f64 = x.iter().zip(&w).map(|(a, b)| a * b).sum();
            let d = match task {
                Task::Classification => {
                    let p = p.clamp(EPS, 1.0 - EPS);
                    (p - target) / (p * (1.0 - p))
                }
                Task::Regression => 2.0 * (p - target),
            };
            gradient.iter_mut().zip(x).for_each(|(g, xi)| *g += d * xi / n);
        }
        let max = gradient.iter().map(|g| g.abs()).fold(0.0, f64::max).max(1e-12);
        // Normalised step: robust to the loss's scale.
        w.iter_mut().zip(&gradient).for_each(|(wi, g)| *wi *= (-rate * g / max).exp());
        let total: f64 = w.iter().sum();
        w.iter_mut().for_each(|wi| *wi /= total);
    }
    w.iter().all(|x| x.is_finite()).then_some(w)
}

/// Walk-forward history of (member predictions, outcome) with a refit schedule.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct History {
    options: MetaOptions,
    rows: VecDeque<(Vec<f64>, f64)>,
    since_fit: usize,
    seen: usize,
}

impl History {
    fn new(options: MetaOptions) -> History {
        History { options, rows: VecDeque::with_capacity(options.window), since_fit: usize::MAX / 2, seen: 0 }
    }

    /// Adds a row; true when it is time to refit.
    fn push(&mut self, members: Vec<f64>, outcome: f64) -> bool {
        self.rows.push_back((members, outcome));
        if self.rows.len() > self.options.window {
            self.rows.pop_front();
        }
        self.seen += 1;
        self.since_fit = self.since_fit.saturating_add(1);
        if self.rows.len() >= self.options.min_rows && self.since_fit >= self.options.refit_every {
            self.since_fit = 0;
            return true;
        }
        false
    }

    fn split(&self, transform: impl Fn(f64) -> f64) -> (Vec<Vec<f64>>, Vec<f64>) {
        self.rows.iter().map(|(x, y)| (x.iter().map(|v| transform(*v)).collect(), *y)).unzip()
    }
}

/// What a fitted meta-learner was fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitWindow {
    /// Observations seen when the current fit was made.
    pub fitted_at: usize,
    /// Rows the fit used.
    pub rows: usize,
}

/// Which meta-model a [`MetaLearner`] fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaKind {
    /// A logistic (classification) or ridge (regression) model on member predictions; classification
    /// works on the members' logits, so the coefficients read as log-odds weights.
    Stacking,
    /// Convex member weights.
    Blending,
}

/// A walk-forward meta-learner: keeps the most recent rows, refits on schedule.
///
/// `observe` only stores the row (O(members)) and says whether a refit is due; the fit itself
/// (`refit`, or `prepare` → [`PreparedFit::fit`] → `install` to run it elsewhere, e.g. off the outcome
/// path) costs O(window × members²).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetaLearner {
    kind: MetaKind,
    task: Task,
    history: History,
    /// Stacking: intercept then one coefficient per member. Blending: one weight per member.
    params: Option<Vec<f64>>,
    window: Option<FitWindow>,
}

/// The data of one fit, detached from the learner.
#[derive(Debug, Clone)]
pub struct PreparedFit {
    kind: MetaKind,
    task: Task,
    x: Vec<Vec<f64>>,
    y: Vec<f64>,
    l2: f64,
    window: FitWindow,
}

/// The result of [`PreparedFit::fit`].
#[derive(Debug, Clone)]
pub struct Fitted {
    params: Vec<f64>,
    window: FitWindow,
}

impl PreparedFit {
    /// Fits the meta-model on the prepared rows (`None` when the fit does not converge).
    pub fn fit(self) -> Option<Fitted> {
        let params = match (self.kind, self.task) {
            (MetaKind::Stacking, Task::Classification) => fit_logistic(&self.x, &self.y, self.l2),
            (MetaKind::Stacking, Task::Regression) => fit_ridge(&self.x, &self.y, self.l2),
            (MetaKind::Blending, task) => fit_simplex(&self.x, &self.y, task),
        }?;
        Some(Fitted { params, window: self.window })
    }
}

impl MetaLearner {
    /// A stacking learner (logistic or ridge regression on the members' predictions).
    pub fn stacking(task: Task, options: MetaOptions) -> MetaLearner {
        MetaLearner { kind: MetaKind::Stacking, task, history: History::new(options), params: None, window: None }
    }

    /// A blending learner (weights on the simplex fitted to the members' predictions).
    pub fn blending(task: Task, options: MetaOptions) -> MetaLearner {
        MetaLearner { kind: MetaKind::Blending, task, history: History::new(options), params: None, window: None }
    }

    /// Stacking or blending.
    pub fn kind(&self) -> MetaKind {
        self.kind
    }

    /// The meta-model's prediction, or `None` before the first fit.
    pub fn predict(&self, members: &[f64]) -> Option<f64> {
        let params = self.params.as_ref()?;
        Some(match self.kind {
            MetaKind::Stacking => {
                let logits = self.task == Task::Classification;
                let z = params[0]
                    + members
                        .iter()
                        .zip(&params[1..])
                        .map(|(x, b)| b * if logits { logit(*x) } else { *x })
                        .sum::<f64>();
                if logits {
                    sigmoid(z)
                } else {
                    z
                }
            }
            MetaKind::Blending => members.iter().zip(params).map(|(x, w)| x * w).sum(),
        })
    }

    /// Stores row t's outcome (after row t was predicted); true when a refit is due.
    pub fn observe(&mut self, members: &[f64], outcome: f64) -> bool {
        self.history.push(members.to_vec(), outcome)
    }

    /// Copies out the data of a fit on the current window.
    pub fn prepare(&self) -> PreparedFit {
        let (x, y) = match (self.kind, self.task) {
            (MetaKind::Stacking, Task::Classification) => self.history.split(logit),
            _ => self.history.split(|v| v),
        };
        let window = FitWindow { fitted_at: self.history.seen, rows: x.len() };
        PreparedFit { kind: self.kind, task: self.task, x, y, l2: self.history.options.l2, window }
    }

    /// Makes a fit the current one (unless a newer fit is already installed).
    pub fn install(&mut self, fitted: Fitted) {
        if self.window.is_none_or(|w| w.fitted_at <= fitted.window.fitted_at) {
            self.params = Some(fitted.params);
            self.window = Some(fitted.window);
        }
    }

    /// Fits now, on the current window.
    pub fn refit(&mut self) {
        if let Some(fitted) = self.prepare().fit() {
            self.install(fitted);
        }
    }

    /// Stacking: intercept first, then one coefficient per member. Blending: the member weights.
    pub fn params(&self) -> Option<&[f64]> {
        self.params.as_deref()
    }

    /// The rows the current fit was made on, once fitted.
    pub fn fit_window(&self) -> Option<FitWindow> {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random stream (xorshift), so tests need no RNG crate.
    fn noise(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn logistic_recovers_known_coefficients() {
        let mut seed = 42;
        let (b0, b1, b2) = (-0.5, 1.5, -2.0);
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for _ in 0..20_000 {
            let (x1, x2) = (noise(&mut seed) * 4.0 - 2.0, noise(&mut seed) * 4.0 - 2.0);
            let p = sigmoid(b0 + b1 * x1 + b2 * x2);
            y.push(f64::from(noise(&mut seed) < p));
            rows.push(vec![x1, x2]);
        }
        let beta = fit_logistic(&rows, &y, 0.0).unwrap();
        for (got, want) in beta.iter().zip([b0, b1, b2]) {
            assert!((got - want).abs() < 0.1, "{beta:?}");
        }
    }

    #[test]
    fn ridge_matches_least_squares_without_penalty() {
        let rows: Vec<Vec<f64>> = (0..50).map(|i| vec![i as f64, (i * i % 7) as f64]).collect();
        let y: Vec<f64> = rows.iter().map(|x| 3.0 + 2.0 * x[0] - 0.5 * x[1]).collect();
        let beta = fit_ridge(&rows, &y, 0.0).unwrap();
        for (got, want) in beta.iter().zip([3.0, 2.0, -0.5]) {
            assert!((got - want).abs() < 1e-6, "{beta:?}");
        }
    }

    #[test]
    fn simplex_weights_pick_the_informative_member() {
        let mut seed = 7;
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for _ in 0..500 {
            let outcome = f64::from(noise(&mut seed) < 0.5);
            let good = if outcome == 1.0 { 0.8 } else { 0.2 };
            rows.push(vec![good, noise(&mut seed)]);
            y.push(outcome);
        }
        let w = fit_simplex(&rows, &y, Task::Classification).unwrap();
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9 && w.iter().all(|x| *x >= 0.0));
        assert!(w[0] > 0.9, "{w:?}");
    }

    #[test]
    fn learners_wait_for_enough_rows_and_refit_on_schedule() {
        let options = MetaOptions { window: 100, refit_every: 10, min_rows: 30, l2: 1.0 };
        let mut stacker = MetaLearner::stacking(Task::Classification, options);
        let mut blender = MetaLearner::blending(Task::Classification, options);
        let mut seed = 3;
        for t in 0..29 {
            let y = f64::from(t % 2 == 0);
            let row = [0.5 + 0.3 * (y - 0.5), noise(&mut seed)];
            assert!(!stacker.observe(&row, y));
            assert!(!blender.observe(&row, y));
        }
        assert!(stacker.predict(&[0.6, 0.5]).is_none() && blender.params().is_none());
        assert!(stacker.observe(&[0.65, 0.5], 1.0), "a refit is due at min_rows");
        assert!(blender.observe(&[0.65, 0.5], 1.0));
        stacker.refit();
        blender.refit();
        assert_eq!(stacker.fit_window(), Some(FitWindow { fitted_at: 30, rows: 30 }));
        assert!(stacker.predict(&[0.65, 0.5]).unwrap() > 0.5);
        assert!(blender.params().unwrap()[0] > 0.5);
    }
}
