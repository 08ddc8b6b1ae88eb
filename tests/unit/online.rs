//! Unit tests of `src/online.rs` (its private items), kept out of `src/` so that the published
//! crate stays within its size budget (`make package`).

use super::*;

fn run(rule: &mut dyn OnlineWeights, rounds: usize, good: usize) -> Vec<f64> {
    // Member `good` predicts the outcome well; the others are noise around the wrong side.
    let mut w = vec![0.0; 3];
    for t in 0..rounds {
        let y = (t % 2) as f64;
        let preds: Vec<Option<f64>> = (0..3).map(|i| Some(if i == good { 0.9 * y + 0.05 } else { 1.0 - y })).collect();
        rule.update(&preds, y);
    }
    rule.weights(&[true; 3], &mut w);
    w
}

fn all_rules(options: OnlineOptions) -> Vec<Box<dyn OnlineWeights>> {
    vec![
        Box::new(Hedge::new(3, options)),
        Box::new(Boa::new(3, options)),
        Box::new(Mlpol::new(3, options)),
        Box::new(Ewa::new(3, options)),
    ]
}

#[test]
fn every_rule_moves_weight_to_the_good_member() {
    for mut rule in all_rules(OnlineOptions::default()) {
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
fn a_member_that_does_not_answer_gets_no_regret() {
    let options = OnlineOptions { floor: 0.0, ..OnlineOptions::default() };
    let mut w = [0.0; 2];
    let mut boa = Boa::new(2, options);
    boa.update(&[None, Some(0.2)], 1.0);
    assert_eq!((boa.eta_inv2[0], boa.regret[0]), (0.0, 0.0));
    boa.weights(&[false, true], &mut w);
    assert_eq!(w, [0.0, 1.0]);
    let mut mlpol = Mlpol::new(2, options);
    mlpol.update(&[None, Some(0.2)], 1.0);
    assert_eq!(mlpol.regret[0], 0.0);
}

#[test]
fn learner_state_survives_json_with_a_zero_prior_weight() {
    let options = OnlineOptions { alpha: 0.0, ..OnlineOptions::default() };
    for kind in [StrategyKind::Hedge, StrategyKind::Boa, StrategyKind::Mlpol, StrategyKind::Ewa] {
        let mut rule = OnlineRule::new(kind, &[1.0, 0.0, 1.0], options).unwrap();
        for t in 0..50 {
            let y = (t % 3) as f64;
            rule.rule_mut().update(&[Some(y + 0.1), Some(y - 1.0), (t % 5 != 0).then_some(2.0)], y);
        }
        let json = serde_json::to_string(&rule).unwrap();
        let back: OnlineRule = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{kind:?}: {e}: {json}"));
        let (mut a, mut b) = ([0.0; 3], [0.0; 3]);
        rule.rule().weights(&[true; 3], &mut a);
        back.rule().weights(&[true; 3], &mut b);
        assert_eq!(a, b, "{kind:?}");
        assert!(a.iter().all(|w| w.is_finite()));
    }
}

#[test]
fn options_merge_and_validate() {
    let o = OnlineOptions::default().merged(r#"{"eta": 0.5, "floor": 0}"#).unwrap();
    assert_eq!((o.eta, o.floor, o.alpha), (Some(0.5), 0.0, 0.01));
    assert_eq!(o.merged(r#"{"eta": null}"#).unwrap().eta, None);
    for bad in [r#"{"etta": 1}"#, r#"{"alpha": 2}"#, r#"{"eta": -1}"#, "[1]", "{", r#"{"floor": 1}"#] {
        assert!(OnlineOptions::default().merged(bad).is_err(), "{bad}");
    }
}
