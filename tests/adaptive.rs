//! Adaptive strategies in the engine: weights that learn from outcomes, regimes and explanations
//! (their agreement with the walk-forward backtest is crates/backtest/tests/adaptive.rs).

mod common;

use quorum::adaptive::RegimeConfig;
use quorum::meta::MetaOptions;
use quorum::regime::{Regime, RegimeOptions};
use quorum::{EnsembleConfig, MemberSpec, StrategyKind};

fn members() -> [MemberSpec; 3] {
    ["technical", "fundamental", "sentiment"].map(|m| m.parse().unwrap())
}

#[test]
fn hedge_weights_follow_outcomes_and_are_explained() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    engine.create_ensemble(EnsembleConfig::new("adaptive", members()).with_strategy(StrategyKind::Hedge)).unwrap();
    let rows = common::holdout_features(120);
    let first = engine.predict("adaptive", &rows[0]).unwrap();
    assert_eq!(first.weights_epoch, 0);
    assert!(first.model_contributions.iter().all(|c| (c.weight - 1.0 / 3.0).abs() < 1e-6 && c.recent_loss.is_none()));
    // Outcomes that always agree with the technical model: it must gain weight.
    let mut last = first.clone();
    for f in &rows {
        let p = engine.predict("adaptive", f).unwrap();
        let technical = p.model_contributions[0].prediction.unwrap();
        engine.record_outcome(p.request_id, if technical >= 0.5 { 1.0 } else { 0.0 }).unwrap();
        last = p;
    }
    let after = engine.predict("adaptive", &rows[0]).unwrap();
    assert!(after.weights_epoch > last.weights_epoch.saturating_sub(1) && after.weights_epoch >= 120);
    let w: Vec<f32> = after.model_contributions.iter().map(|c| c.weight).collect();
    assert!(w[0] > 0.6 && w[0] > w[1] && w[0] > w[2], "{w:?}");
    assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert!(w.iter().all(|x| *x > 0.0), "the floor keeps every member in play: {w:?}");
    let losses: Vec<f32> = after.model_contributions.iter().map(|c| c.recent_loss.unwrap()).collect();
    assert!(losses[0] < losses[1] && losses[0] < losses[2], "{losses:?}");
    let json = serde_json::to_value(&after).unwrap();
    assert!(json["model_contributions"]["technical"]["recent_loss"].is_number());
    assert_eq!(json["strategy"], "hedge");
}

#[test]
fn stacking_reports_its_fit_window_once_fitted() {
    let home = tempfile::tempdir().unwrap();
    common::market_engine(home.path());
    let engine = quorum::InferenceEngine::builder(home.path()).with_synchronous_refits().build().unwrap();
    let meta = MetaOptions { window: 100, refit_every: 10, min_rows: 40, l2: 1.0 };
    let config = EnsembleConfig::new("stacked", members()).with_strategy(StrategyKind::Stacking).with_meta(meta);
    engine.create_ensemble(config).unwrap();
    let rows = common::holdout_features(60);
    let before = engine.predict("stacked", &rows[0]).unwrap();
    assert!(before.fit_window.is_none() && before.strategy.starts_with("stacking (unfitted"));
    for (i, f) in rows.iter().enumerate() {
        let p = engine.predict("stacked", f).unwrap();
        engine.record_outcome(p.request_id, (i % 2) as f64).unwrap();
    }
    let after = engine.predict("stacked", &rows[0]).unwrap();
    assert_eq!(after.strategy, "stacking");
    let window = after.fit_window.unwrap();
    assert_eq!((window.fitted_at, window.rows), (60, 60));
}

#[test]
fn regimes_pick_strategies_and_are_tracked() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let mut detector = RegimeOptions::new("ret_1d");
    detector.warmup = 5;
    let regimes = RegimeConfig { detector, strategies: [(Regime::High, StrategyKind::Majority)].into() };
    engine.create_ensemble(EnsembleConfig::new("regimes", members()).with_regimes(regimes)).unwrap();
    let rows = common::holdout_features(200);
    let mut seen = std::collections::BTreeSet::new();
    for (i, f) in rows.iter().enumerate() {
        let p = engine.predict("regimes", f).unwrap();
        let regime = p.regime.unwrap();
        seen.insert(regime);
        let expected = if regime == Regime::High { "majority" } else { "soft-vote" };
        assert_eq!(p.strategy, expected);
        engine.record_outcome(p.request_id, (i % 2) as f64).unwrap();
    }
    assert!(seen.len() >= 2, "{seen:?}");
    let m = engine.metrics("regimes").unwrap();
    let per_regime: u64 = m.regimes.iter().map(|(_, g)| g.metrics.all_time.count).sum();
    assert_eq!(per_regime, 200);
    assert_eq!(m.ranking.len(), 3);
    assert!(m.metrics.all_time.log_loss.is_some() && m.metrics.all_time.brier.is_some());

    let bad = EnsembleConfig::new("bad", members())
        .with_regimes(RegimeConfig { detector: RegimeOptions::new("not_a_feature"), strategies: Default::default() });
    assert!(matches!(engine.create_ensemble(bad), Err(quorum::Error::Config(_))));
}

#[test]
fn every_adaptive_strategy_explains_recent_losses() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let rows = common::holdout_features(10);
    for strategy in [
        StrategyKind::Hedge,
        StrategyKind::Boa,
        StrategyKind::Mlpol,
        StrategyKind::Ewa,
        StrategyKind::Stacking,
        StrategyKind::Blending,
    ] {
        let name = format!("explained-{}", strategy.as_str());
        engine.create_ensemble(EnsembleConfig::new(&name, members()).with_strategy(strategy)).unwrap();
        assert!(engine.predict(&name, &rows[0]).unwrap().model_contributions.iter().all(|c| c.recent_loss.is_none()));
        for (i, f) in rows.iter().enumerate() {
            let p = engine.predict(&name, f).unwrap();
            engine.record_outcome(p.request_id, (i % 2) as f64).unwrap();
        }
        let p = engine.predict(&name, &rows[0]).unwrap();
        assert!(
            p.model_contributions.iter().all(|c| c.recent_loss.is_some_and(|l| (0.0..=1.0).contains(&l))),
            "{strategy:?}"
        );
    }
    let static_vote = engine.predict("market", &rows[0]).unwrap();
    assert!(static_vote.model_contributions.iter().all(|c| c.recent_loss.is_none()), "static weights explain nothing");
}

#[test]
fn background_refits_arrive_after_the_outcome_that_made_them_due() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let meta = MetaOptions { window: 100, refit_every: 10, min_rows: 40, l2: 1.0 };
    engine
        .create_ensemble(EnsembleConfig::new("async", members()).with_strategy(StrategyKind::Blending).with_meta(meta))
        .unwrap();
    let rows = common::holdout_features(40);
    for (i, f) in rows.iter().enumerate() {
        let p = engine.predict("async", f).unwrap();
        engine.record_outcome(p.request_id, (i % 2) as f64).unwrap();
    }
    // The fit due at the 40th outcome runs on the engine's background thread.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let p = engine.predict("async", &rows[0]).unwrap();
        if let Some(window) = p.fit_window {
            assert_eq!((window.fitted_at, window.rows), (40, 40));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the background refit never arrived");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
