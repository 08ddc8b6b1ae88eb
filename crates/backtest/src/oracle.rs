//! Hindsight oracles of a backtest: the best single member and the best constant convex
//! combination (opera's `bestConvex`), both by squared error over every scored row. They are chosen
//! after seeing all outcomes, so they bound what a rule could have done, not what it should have.

use std::collections::BTreeMap;

use serde::Serialize;

use super::MethodMetrics;

/// One oracle: its constant weights, its predictions and its metrics (filled by the caller).
#[derive(Debug, Clone, Serialize)]
pub struct Oracle {
    /// Always true: chosen with every outcome known.
    pub hindsight: bool,
    /// Member → weight (summing to 1).
    pub weights: BTreeMap<String, f64>,
    /// Its metrics over every scored row.
    pub metrics: MethodMetrics,
    /// Its prediction at each scored row (in the report's timeline).
    #[serde(skip)]
    pub predictions: Vec<f64>,
}

/// The oracles over `rows` (row-major, one prediction per member, failures filled in) and `outcomes`.
pub(super) fn oracles(members: &[String], rows: &[f64], outcomes: &[f64]) -> Vec<(String, Oracle)> {
    let m = members.len();
    if m == 0 || outcomes.is_empty() {
        return Vec::new();
    }
    let squared = |w: &[f64]| -> f64 { rows.chunks_exact(m).zip(outcomes).map(|(x, y)| (dot(x, w) - y).powi(2)).sum() };
    let one_hot = |i: usize| -> Vec<f64> { (0..m).map(|j| f64::from(u8::from(i == j))).collect() };
    let best =
        (0..m).map(|i| (i, squared(&one_hot(i)))).fold((0, f64::INFINITY), |b, c| if c.1 < b.1 { c } else { b }).0;
    let convex = best_convex(rows, outcomes, m, &one_hot(best));
    [("best-member", one_hot(best)), ("best-convex", convex)]
        .into_iter()
        .map(|(name, w)| {
            let oracle = Oracle {
                hindsight: true,
                weights: members.iter().cloned().zip(w.iter().copied()).collect(),
                metrics: MethodMetrics::default(),
                predictions: rows.chunks_exact(m).map(|x| dot(x, &w)).collect(),
            };
            (name.to_string(), oracle)
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// argmin over the simplex of Σ (xₜ·w − yₜ)², by accelerated projected gradient (FISTA) on the
/// m×m normal equations, started from `start`. Never worse than `start`.
fn best_convex(rows: &[f64], outcomes: &[f64], m: usize, start: &[f64]) -> Vec<f64> {
    // Normalise by the scale so the step size is well conditioned at any outcome scale.
    let n = outcomes.len() as f64;
    let mut gram = vec![0.0; m * m];
    let mut cross = vec![0.0; m];
    for (x, y) in rows.chunks_exact(m).zip(outcomes) {
        for i in 0..m {
            cross[i] += x[i] * y / n;
            for j in 0..m {
                gram[i * m + j] += x[i] * x[j] / n;
            }
        }
    }
    let objective = |w: &[f64]| -> f64 {
        let quad: f64 = (0..m).map(|i| w[i] * (0..m).map(|j| gram[i * m + j] * w[j]).sum::<f64>()).sum();
        quad - 2.0 * dot(&cross, w)
    };
    // The gradient's Lipschitz constant is 2·λmax(G) ≤ 2·trace(G).
    let lipschitz = 2.0 * (0..m).map(|i| gram[i * m + i]).sum::<f64>();
    if !(lipschitz > 0.0 && lipschitz.is_finite()) {
        return start.to_vec();
    }
    let (mut w, mut z, mut t) = (start.to_vec(), start.to_vec(), 1.0f64);
    let mut next = vec![0.0; m];
    for _ in 0..20_000 {
        for i in 0..m {
            let grad = 2.0 * ((0..m).map(|j| gram[i * m + j] * z[j]).sum::<f64>() - cross[i]);
            next[i] = z[i] - grad / lipschitz;
        }
        project_simplex(&mut next);
        let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
        let moved: f64 = next.iter().zip(&w).map(|(a, b)| (a - b).abs()).sum();
        for i in 0..m {
            z[i] = next[i] + (t - 1.0) / t_next * (next[i] - w[i]);
        }
        w.copy_from_slice(&next);
        t = t_next;
        if moved < 1e-13 {
            break;
        }
    }
    if objective(&w) <= objective(start) {
        w
    } else {
        start.to_vec()
    }
}

/// Euclidean projection onto the probability simplex (Duchi et al. 2008).
fn project_simplex(v: &mut [f64]) {
    let mut sorted = v.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let (mut cumulative, mut theta) = (0.0, 0.0);
    for (k, u) in sorted.iter().enumerate() {
        cumulative += u;
        let candidate = (cumulative - 1.0) / (k + 1) as f64;
        if u - candidate > 0.0 {
            theta = candidate;
        }
    }
    v.iter_mut().for_each(|x| *x = (*x - theta).max(0.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_convex_finds_the_mixture_that_generated_the_outcome() {
        // y = 0.3 a + 0.7 b exactly; c is noise: the oracle must recover (0.3, 0.7, 0).
        let mut rows = Vec::new();
        let mut ys = Vec::new();
        for t in 0..200 {
            let (a, b, c) = ((t as f64 * 0.37).sin(), (t as f64 * 0.11).cos() * 2.0, (t as f64 * 1.7).sin() * 3.0);
            rows.extend([a, b, c]);
            ys.push(0.3 * a + 0.7 * b);
        }
        let names = ["a", "b", "c"].map(String::from);
        let o = oracles(&names, &rows, &ys);
        let convex = &o[1].1.weights;
        assert!((convex["a"] - 0.3).abs() < 1e-6 && (convex["b"] - 0.7).abs() < 1e-6, "{convex:?}");
        assert!(convex["c"].abs() < 1e-6);
        assert_eq!(o[0].1.weights["b"], 1.0, "b alone is the closest single member");
    }

    #[test]
    fn projection_lands_on_the_simplex() {
        let mut v = [0.5, 2.0, -1.0];
        project_simplex(&mut v);
        assert_eq!(v, [0.0, 1.0, 0.0]);
        let mut v = [0.2, 0.2, 0.2];
        project_simplex(&mut v);
        assert!(v.iter().all(|x| (x - 1.0 / 3.0).abs() < 1e-12));
    }
}
