//! The online rules against their published definitions: hand-computed first rounds, and round by
//! round against direct transcriptions of opera's R sources (`BOA.R`, `MLpol.R`, `ewa.R`,
//! `ewaCalib.R`, `fixedshare.R`, with `loss.R`'s gradient trick) written here in the R code's own
//! style (plain `exp`, no log domain), with the floor at 0. Plus: scale-freedom, and learning at
//! the scale of outcomes in the tens of thousands.

use quorum::online::{Boa, Ewa, Hedge, Mlpol, OnlineOptions, OnlineWeights, EWA_FLAT, EWA_MAX_GRID, EWA_ONE_HOT};

fn opera() -> OnlineOptions {
    OnlineOptions { floor: 0.0, ..OnlineOptions::default() }
}

/// Serves a round: the rule's weights over the members that answered and its prediction.
fn serve(rule: &dyn OnlineWeights, x: &[Option<f64>]) -> (Vec<f64>, f64) {
    let answered: Vec<bool> = x.iter().map(Option::is_some).collect();
    let mut w = vec![0.0; x.len()];
    rule.weights(&answered, &mut w);
    let p = w.iter().zip(x).filter_map(|(w, x)| x.map(|x| w * x)).sum();
    (w, p)
}

/// Runs `rule` over the rounds and returns its prediction at each.
fn predictions(rule: &mut dyn OnlineWeights, experts: &[Vec<Option<f64>>], y: &[f64]) -> Vec<f64> {
    experts
        .iter()
        .zip(y)
        .map(|(x, &y)| {
            let (_, p) = serve(rule, x);
            rule.update(x, y);
            p
        })
        .collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-300)
}

fn assert_same(name: &str, ours: &[f64], reference: &[f64]) {
    assert_eq!(ours.len(), reference.len());
    for (t, (a, b)) in ours.iter().zip(reference).enumerate() {
        assert!(close(*a, *b, 1e-9), "{name}: round {t}: quorum {a} vs reference {b}");
    }
}

/// A deterministic stream in [0, 1).
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Three experts of a noisy signal: a good one, a biased one, a noisy one whose quality switches
/// half way; each asleep (did not answer) 5% of the time when `sleepy`.
fn data(rounds: usize, scale: f64, sleepy: bool, seed: u64) -> (Vec<Vec<Option<f64>>>, Vec<f64>) {
    let mut s = Stream(seed);
    let (mut experts, mut y) = (Vec::new(), Vec::new());
    for t in 0..rounds {
        let signal = (t as f64 * 0.05).sin() + 0.5 * (s.next() - 0.5);
        let noise = if t < rounds / 2 { 1.0 } else { 0.1 };
        let x = [signal + 0.1 * (s.next() - 0.5), signal + 0.3, signal + noise * (s.next() - 0.5) * 2.0];
        let row = x.iter().map(|&v| if sleepy && s.next() < 0.05 { None } else { Some(v * scale) }).collect::<Vec<_>>();
        let row = if row.iter().all(Option::is_none) { vec![Some(x[0] * scale), None, None] } else { row };
        experts.push(row);
        y.push((signal + 0.05 * (s.next() - 0.5)) * scale);
    }
    (experts, y)
}

/// R's `experts[idx.na] <- 0; awake[idx.na] <- 0`.
fn unpack(x: &[Option<f64>]) -> (Vec<f64>, Vec<f64>) {
    (x.iter().map(|v| v.unwrap_or(0.0)).collect(), x.iter().map(|v| f64::from(u8::from(v.is_some()))).collect())
}

/// `loss(x, y, pred, "square", loss.gradient = TRUE)`: 2 (pred − y) x.
fn grad_loss(x: f64, y: f64, pred: f64) -> f64 {
    2.0 * (pred - y) * x
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// opera `BOA.R` (current), w0 given (normalised by the caller, as `mixture` passes coefficients).
fn reference_boa(experts: &[Vec<Option<f64>>], y: &[f64], w0: &[f64]) -> Vec<f64> {
    let n = w0.len();
    let (mut r_reg, mut eta_inv2) = (vec![0.0; n], vec![0.0; n]);
    let mut out = Vec::new();
    for (x, &yt) in experts.iter().zip(y) {
        let (x, awake) = unpack(x);
        let mut w = w0.to_vec();
        let nonzero: Vec<usize> = (0..n).filter(|&i| eta_inv2[i] > 0.0).collect();
        if !nonzero.is_empty() {
            let aux: Vec<f64> = nonzero
                .iter()
                .map(|&i| -f64::ln(eta_inv2[i]) / 2.0 + w0[i].ln() + r_reg[i] / f64::sqrt(eta_inv2[i]))
                .collect();
            let max = aux.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let norm: f64 = aux.iter().map(|a| (a - max).exp()).sum();
            let mass: f64 = nonzero.iter().filter(|&&i| awake[i] > 0.0).map(|&i| w0[i]).sum();
            for (&i, a) in nonzero.iter().zip(&aux) {
                if awake[i] > 0.0 {
                    w[i] = mass * (a - max).exp() / norm;
                }
            }
        }
        let total: f64 = (0..n).map(|i| awake[i] * w[i]).sum();
        let p: Vec<f64> = (0..n).map(|i| awake[i] * w[i] / total).collect();
        let pred = dot(&x, &p);
        out.push(pred);
        let lpred = grad_loss(pred, yt, pred);
        for i in 0..n {
            let r = awake[i] * (lpred - grad_loss(x[i], yt, pred));
            eta_inv2[i] += 2.2 * r * r;
            if eta_inv2[i] > 0.0 {
                r_reg[i] += r - r * r / eta_inv2[i].sqrt();
            }
        }
    }
    out
}

/// opera `MLpol.R` (with B).
fn reference_mlpol(experts: &[Vec<Option<f64>>], y: &[f64], n: usize) -> Vec<f64> {
    let (mut r_cum, mut eta, mut b) = (vec![0.0; n], vec![700f64.exp(); n], 0.0f64);
    let mut out = Vec::new();
    for (x, &yt) in experts.iter().zip(y) {
        let (x, awake) = unpack(x);
        let positive = (0..n).map(|i| awake[i] * r_cum[i]).fold(f64::NEG_INFINITY, f64::max) > 0.0;
        let w: Vec<f64> = if positive {
            let s: f64 = (0..n).map(|i| eta[i] * r_cum[i].max(0.0)).sum();
            (0..n).map(|i| eta[i] * r_cum[i].max(0.0) / s).collect()
        } else {
            vec![1.0; n]
        };
        let total: f64 = (0..n).map(|i| awake[i] * w[i]).sum();
        let p: Vec<f64> = (0..n).map(|i| awake[i] * w[i] / total).collect();
        let pred = dot(&x, &p);
        out.push(pred);
        let lpred = grad_loss(pred, yt, pred);
        let r: Vec<f64> = (0..n).map(|i| awake[i] * (lpred - grad_loss(x[i], yt, pred))).collect();
        let new_b = r.iter().map(|r| r * r).fold(b, f64::max);
        for i in 0..n {
            r_cum[i] += r[i];
            eta[i] = 1.0 / (1.0 / eta[i] + r[i] * r[i] + new_b - b);
        }
        b = new_b;
    }
    out
}

/// opera `ewa.R`: returns the predictions, the final regrets R (without log w0/η) and the cumulative loss.
fn reference_ewa(experts: &[Vec<Option<f64>>], y: &[f64], eta: f64, w0: &[f64]) -> (Vec<f64>, Vec<f64>, f64) {
    let n = w0.len();
    let mut r_w0: Vec<f64> = w0.iter().map(|w| w.ln() / eta).collect();
    let (mut out, mut cumulative) = (Vec::new(), 0.0);
    for (x, &yt) in experts.iter().zip(y) {
        let (x, awake) = unpack(x);
        let raw: Vec<f64> = (0..n).map(|i| (eta * r_w0[i]).exp() * awake[i]).collect();
        let s: f64 = raw.iter().sum();
        let pred = dot(&x, &raw.iter().map(|w| w / s).collect::<Vec<_>>());
        out.push(pred);
        cumulative += (pred - yt).powi(2);
        let lpred = grad_loss(pred, yt, pred);
        for i in 0..n {
            r_w0[i] += awake[i] * (lpred - grad_loss(x[i], yt, pred));
        }
    }
    let r = (0..n).map(|i| r_w0[i] - w0[i].ln() / eta).collect();
    (out, r, cumulative)
}

/// opera `ewaCalib.R` (current, `grid.eta = NULL`, `gamma = 2`, `w0 = rep(1, N)`): the grid is set to
/// 1/mean|R.w0| after round 1 and grows by three points where the best η is at an end, each new
/// η replayed with `ewa` over the whole history; quorum's additions, documented: past `max_grid`
/// rates, those at the far end are dropped, and the grid stops growing where η × (the spread of
/// the regrets) is beyond `EWA_ONE_HOT` or below `EWA_FLAT`.
fn reference_ewa_calib(experts: &[Vec<Option<f64>>], y: &[f64], n: usize, max_grid: usize) -> Vec<f64> {
    let w0 = vec![1.0; n];
    let gamma = 2f64;
    let mut grid = vec![1.0];
    let mut best = 0usize; // floor(1)/2 + 1 = 1.5 → R index 1
    let mut cumulative = vec![0.0];
    let mut r_w0: Vec<Vec<f64>> = vec![vec![0.0; n]]; // log(1)/η = 0
    let mut out = Vec::new();
    for t in 0..y.len() {
        let (x, awake) = unpack(&experts[t]);
        let weta = |r: &[f64], eta: f64| -> Vec<f64> {
            let aux: Vec<f64> = r.iter().map(|r| eta * r).collect();
            let max = aux.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = aux.iter().map(|a| (a - max).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        let mix = |w: &[f64]| -> f64 {
            let s: f64 = (0..n).map(|i| w[i] * awake[i]).sum();
            (0..n).map(|i| x[i] * w[i] * awake[i] / s).sum()
        };
        out.push(mix(&weta(&r_w0[best], grid[best])));
        for k in 0..grid.len() {
            let pred = mix(&weta(&r_w0[k], grid[k]));
            cumulative[k] += (pred - y[t]).powi(2);
            let lpred = grad_loss(pred, y[t], pred);
            for i in 0..n {
                r_w0[k][i] += awake[i] * (lpred - grad_loss(x[i], y[t], pred));
            }
        }
        if t == 0 {
            grid[0] = 1.0 / (r_w0[0].iter().map(|r| r.abs()).sum::<f64>() / n as f64);
        }
        best = (0..cumulative.len()).fold(0, |b, k| if cumulative[k] < cumulative[b] { k } else { b });
        let reach = |k: usize, r: &[Vec<f64>], grid: &[f64]| {
            let max = r[k].iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let min = r[k].iter().copied().fold(f64::INFINITY, f64::min);
            grid[k] * (max - min)
        };
        if best == grid.len() - 1 && reach(best, &r_w0, &grid) < EWA_ONE_HOT {
            let top = grid[best];
            for k in 1..=3 {
                let eta = top * gamma.powi(k);
                let (_, r, loss) = reference_ewa(&experts[..=t], &y[..=t], eta, &w0);
                grid.push(eta);
                cumulative.push(loss);
                r_w0.push(r);
            }
            while grid.len() > max_grid {
                grid.remove(0);
                cumulative.remove(0);
                r_w0.remove(0);
                best -= 1;
            }
        }
        if best == 0 && reach(0, &r_w0, &grid) > EWA_FLAT {
            let bottom = grid[0];
            for k in 1..=3 {
                let eta = bottom / gamma.powi(k);
                let (_, r, loss) = reference_ewa(&experts[..=t], &y[..=t], eta, &w0);
                grid.insert(0, eta);
                cumulative.insert(0, loss);
                r_w0.insert(0, r);
            }
            best += 3;
            grid.truncate(max_grid);
            cumulative.truncate(max_grid);
            r_w0.truncate(max_grid);
        }
    }
    out
}

/// opera `fixedshare.R` with a fixed η and α.
fn reference_fixed_share(experts: &[Vec<Option<f64>>], y: &[f64], eta: f64, alpha: f64, w0: &[f64]) -> Vec<f64> {
    let n = w0.len();
    let mut r_cum: Vec<f64> = w0.iter().map(|w| w.ln() / eta).collect();
    let mut out = Vec::new();
    for (x, &yt) in experts.iter().zip(y) {
        let (x, awake) = unpack(x);
        let raw: Vec<f64> = (0..n).map(|i| (eta * r_cum[i]).exp() * awake[i]).collect();
        let s: f64 = raw.iter().sum();
        let pred = dot(&x, &raw.iter().map(|w| w / s).collect::<Vec<_>>());
        out.push(pred);
        let lpred = grad_loss(pred, yt, pred);
        for i in 0..n {
            r_cum[i] += awake[i] * (lpred - grad_loss(x[i], yt, pred));
        }
        let e: Vec<f64> = r_cum.iter().map(|r| (eta * r).exp()).collect();
        let s: f64 = e.iter().sum();
        for i in 0..n {
            r_cum[i] = (alpha / n as f64 + (1.0 - alpha) * e[i] / s).ln() / eta;
        }
    }
    out
}

/// quorum's `hedge` by its definition (module docs of `quorum::online`): Fixed-Share whose η is
/// AdaHedge's ln N / Δ, Δ the cumulative mixability gap, written without the log domain.
fn reference_ada_fixed_share(experts: &[Vec<Option<f64>>], y: &[f64], alpha: f64, w0: &[f64]) -> Vec<f64> {
    let n = w0.len();
    let mut w: Vec<f64> = w0.to_vec();
    let mut gap = 0.0f64;
    let mut out = Vec::new();
    for (x, &yt) in experts.iter().zip(y) {
        let (x, awake) = unpack(x);
        let s: f64 = (0..n).map(|i| w[i] * awake[i]).sum();
        let v: Vec<f64> = (0..n).map(|i| w[i] * awake[i] / s).collect();
        let pred = dot(&x, &v);
        out.push(pred);
        let r: Vec<f64> = (0..n).map(|i| awake[i] * (2.0 * (pred - yt) * (pred - x[i]))).collect();
        let eta = if gap > 0.0 { (n as f64).ln() / gap } else { f64::INFINITY };
        let mean = dot(&v, &r);
        gap += if eta.is_infinite() {
            (0..n).filter(|&i| v[i] > 0.0).map(|i| r[i] - mean).fold(f64::NEG_INFINITY, f64::max).max(0.0)
        } else {
            ((0..n).map(|i| v[i] * (eta * (r[i] - mean)).exp()).sum::<f64>().ln() / eta).max(0.0)
        };
        if gap > 0.0 {
            let eta = (n as f64).ln() / gap;
            let e: Vec<f64> = (0..n).map(|i| w[i] * (eta * r[i]).exp()).collect();
            let s: f64 = e.iter().sum();
            w = e.iter().map(|e| alpha / n as f64 + (1.0 - alpha) * e / s).collect();
        }
    }
    out
}

#[test]
fn boa_equals_operas_boa_round_by_round() {
    for (seed, sleepy) in [(1, false), (2, true)] {
        let (experts, y) = data(400, 1.0, sleepy, seed);
        let prior = [0.5, 0.3, 0.2];
        let ours = predictions(&mut Boa::with_prior(&prior, opera()), &experts, &y);
        assert_same("boa", &ours, &reference_boa(&experts, &y, &prior));
    }
}

#[test]
fn mlpol_equals_operas_mlpol_round_by_round() {
    for (seed, sleepy) in [(3, false), (4, true)] {
        let (experts, y) = data(400, 1.0, sleepy, seed);
        let ours = predictions(&mut Mlpol::new(3, opera()), &experts, &y);
        assert_same("mlpol", &ours, &reference_mlpol(&experts, &y, 3));
    }
}

#[test]
fn ewa_with_a_fixed_rate_equals_operas_ewa() {
    let (experts, y) = data(400, 1.0, true, 5);
    let prior = [0.2, 0.2, 0.6];
    let ours = predictions(&mut Ewa::with_prior(&prior, OnlineOptions { eta: Some(3.0), ..opera() }), &experts, &y);
    assert_same("ewa(3)", &ours, &reference_ewa(&experts, &y, 3.0, &prior).0);
}

#[test]
fn calibrated_ewa_equals_operas_ewa_calib_round_by_round() {
    for (seed, sleepy) in [(6, false), (7, true)] {
        let (experts, y) = data(600, 1.0, sleepy, seed);
        let mut rule = Ewa::new(3, opera());
        let ours = predictions(&mut rule, &experts, &y);
        assert_same("ewa", &ours, &reference_ewa_calib(&experts, &y, 3, usize::MAX));
        assert!(rule.grid().0.len() > 7, "the grid grew past its first extension: {:?}", rule.grid());
        assert!(rule.grid().0.len() < EWA_MAX_GRID, "opera's grid, uncapped, in this run");
    }
}

#[test]
fn calibrated_ewa_keeps_its_grid_bounded_where_the_best_rate_runs_away() {
    // Exchangeable experts (the outcome plus independent noise of one size): equal weights are
    // best, so the best η keeps falling toward 0, and opera's grid keeps growing downward.
    let mut s = Stream(12);
    let (mut experts, mut y) = (Vec::new(), Vec::new());
    for t in 0..1500 {
        let v = (t as f64 * 0.1).sin();
        experts.push((0..3).map(|_| Some(v + s.next() - 0.5)).collect::<Vec<_>>());
        y.push(v);
    }
    let mut rule = Ewa::new(3, opera());
    let ours = predictions(&mut rule, &experts, &y);
    assert!(rule.grid().0.len() <= EWA_MAX_GRID, "{:?}", rule.grid());
    assert!(rule.grid().1 > 0.0, "the best rate stops above 0: {:?}", rule.grid());
    assert_same("ewa (capped)", &ours, &reference_ewa_calib(&experts, &y, 3, EWA_MAX_GRID));
}

#[test]
fn hedge_with_a_fixed_rate_equals_operas_fixed_share() {
    let (experts, y) = data(400, 1.0, true, 8);
    let prior = [0.6, 0.2, 0.2];
    let options = OnlineOptions { eta: Some(2.0), alpha: 0.05, ..opera() };
    let ours = predictions(&mut Hedge::with_prior(&prior, options), &experts, &y);
    assert_same("fixedshare", &ours, &reference_fixed_share(&experts, &y, 2.0, 0.05, &prior));
}

#[test]
fn hedge_equals_its_definition_round_by_round() {
    let (experts, y) = data(400, 1.0, true, 9);
    let prior = [0.25, 0.25, 0.5];
    let ours = predictions(&mut Hedge::with_prior(&prior, opera()), &experts, &y);
    assert_same("hedge", &ours, &reference_ada_fixed_share(&experts, &y, 0.01, &prior));
}

/// Experts 1 and 3, outcome 1.5 every round, equal prior, floor 0. Round 1 serves (0.5, 0.5), so
/// p̂ = 2 and the regrets are r = 2(p̂ − y)(p̂ − x) = (1, −1).
#[test]
fn first_rounds_by_hand() {
    let x = [Some(1.0), Some(3.0)];
    let weights_after = |rule: &mut dyn OnlineWeights, rounds: usize| {
        for _ in 0..rounds {
            rule.update(&x, 1.5);
        }
        serve(rule, &x).0
    };
    let near = |a: &[f64], b: [f64; 2]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-12);

    // BOA: eta_inv2 = 2.2 each; R.reg = r − r²/√2.2 = (0.32580..., −1.67419...);
    // w ∝ exp(R.reg/√2.2) (equal −ln(2.2)/2 and ln w0 cancel): w₁ = 1/(1 + exp(−2/√2.2)).
    let w = weights_after(&mut Boa::new(2, opera()), 1);
    let w1 = 1.0 / (1.0 + (-2.0 / 2.2f64.sqrt()).exp());
    assert!(near(&w, [w1, 1.0 - w1]), "boa {w:?}");

    // ML-Poly: R = (1, −1), B = 1, η = 1/(0 + 1 + 1) = 1/2 each → w = (1, 0). Round 2 serves
    // p̂ = 1: r = (0, 2), R = (1, 1), B = 4, η = (1/(2 + 0 + 3), 1/(2 + 4 + 3)) = (1/5, 1/9)
    // → w ∝ (1/5, 1/9) = (9/14, 5/14).
    let mut mlpol = Mlpol::new(2, opera());
    assert!(near(&weights_after(&mut mlpol, 1), [1.0, 0.0]));
    let w = weights_after(&mut mlpol, 1);
    assert!(near(&w, [9.0 / 14.0, 5.0 / 14.0]), "mlpol {w:?}");

    // Hedge: η₁ = ∞, gap = max r − r̄ = 1, η₂ = ln 2; w ∝ 0.5·exp(±ln 2) = (0.8, 0.2); Fixed-Share
    // α = 0.01 → (0.005 + 0.99·0.8, 0.005 + 0.99·0.2) = (0.797, 0.203).
    let w = weights_after(&mut Hedge::new(2, opera()), 1);
    assert!(near(&w, [0.797, 0.203]), "hedge {w:?}");

    // EWA: the grid is placed at 1/mean|R| = 1, is extended both ways (η = 1/8 … 8) and η = 1
    // keeps predicting: w ∝ exp(±1) → w₁ = 1/(1 + e⁻²).
    let mut ewa = Ewa::new(2, opera());
    let w = weights_after(&mut ewa, 1);
    let w1 = 1.0 / (1.0 + (-2.0f64).exp());
    assert!(near(&w, [w1, 1.0 - w1]), "ewa {w:?}");
    assert_eq!(ewa.grid(), (&[0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0][..], 1.0));
}

#[test]
fn hedge_boa_and_mlpol_weights_do_not_depend_on_the_outcome_scale() {
    let (unit, y1) = data(300, 1.0, true, 10);
    let (big, y2) = data(300, 1e4, true, 10);
    let rules: [fn() -> Box<dyn OnlineWeights>; 3] = [
        || Box::new(Hedge::new(3, OnlineOptions::default())),
        || Box::new(Boa::new(3, OnlineOptions::default())),
        || Box::new(Mlpol::new(3, OnlineOptions::default())),
    ];
    for make in rules {
        let (mut a, mut b) = (make(), make());
        for t in 0..y1.len() {
            let (wa, _) = serve(a.as_ref(), &unit[t]);
            let (wb, _) = serve(b.as_ref(), &big[t]);
            for (x, z) in wa.iter().zip(&wb) {
                assert!((x - z).abs() < 1e-9, "{}: round {t}: {wa:?} vs {wb:?}", a.name());
            }
            a.update(&unit[t], y1[t]);
            b.update(&big[t], y2[t]);
        }
    }
}

#[test]
fn every_rule_learns_at_an_outcome_scale_of_tens_of_thousands() {
    // The member that is right moves to the top at any scale: no underflow, no reset to uniform.
    let (experts, y) = data(300, 3e4, false, 11);
    for mut rule in [
        Box::new(Hedge::new(3, OnlineOptions::default())) as Box<dyn OnlineWeights>,
        Box::new(Boa::new(3, OnlineOptions::default())),
        Box::new(Mlpol::new(3, OnlineOptions::default())),
        Box::new(Ewa::new(3, OnlineOptions::default())),
    ] {
        predictions(rule.as_mut(), &experts[..100], &y[..100]);
        let (w, _) = serve(rule.as_ref(), &[Some(1.0); 3]);
        assert!(w[0] > 0.5 && w[0] > w[1] && w[0] > w[2], "{}: {w:?}", rule.name());
        assert!(w.iter().all(|v| v.is_finite()) && (w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
