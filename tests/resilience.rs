//! Degraded operation: injected failures, panics and slow calls, per-model circuit breakers, fallback
//! models, and the degraded/skipped report on every prediction.

mod common;

use std::time::{Duration, Instant};

use quorum::{
    BreakerOptions, BreakerState, EnsembleConfig, Error, Fault, InferenceEngine, MemberSpec, ModelRegistration,
};

fn engine_with(home: &std::path::Path, breaker: BreakerOptions) -> InferenceEngine {
    common::market_engine(home);
    InferenceEngine::builder(home).with_circuit_breaker(breaker).build().unwrap()
}

#[test]
fn a_failing_or_panicking_member_is_skipped_and_reported() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine_with(home.path(), BreakerOptions::default());
    let f = &common::holdout_features(1)[0];
    let healthy = engine.predict("market", f).unwrap();
    assert!(!healthy.degraded && healthy.skipped.is_empty());
    for fault in [Fault::Fail, Fault::Panic] {
        engine.inject_fault("sentiment", Some(fault));
        let p = engine.predict("market", f).unwrap();
        assert!(p.degraded, "{fault:?}");
        assert_eq!(p.skipped.iter().map(|s| &**s).collect::<Vec<_>>(), ["sentiment"]);
        let sentiment = &p.model_contributions[2];
        assert_eq!((sentiment.prediction, sentiment.weight), (None, 0.0));
        assert!(sentiment.error.as_deref().unwrap().contains(if fault == Fault::Panic {
            "panicked"
        } else {
            "injected"
        }));
        let w: Vec<f32> = p.model_contributions.iter().map(|c| c.weight).collect();
        assert_eq!(w, vec![0.5, 0.5, 0.0], "0.4/0.4 renormalised");
    }
    engine.inject_fault("sentiment", None);
    // Nothing is poisoned: the pool, the engine and other threads carry on.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (engine, f) = (engine.clone(), f.clone());
            std::thread::spawn(move || {
                (0..50).map(|_| engine.predict("market", &f).unwrap().prediction).collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap().iter().all(|p| *p == healthy.prediction));
    }
}

#[test]
fn the_breaker_opens_skips_calls_and_closes_after_good_trials() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine_with(home.path(), common::quick_breaker());
    let f = &common::holdout_features(1)[0];
    engine.predict("market", f).unwrap();
    engine.inject_fault("technical", Some(Fault::Fail));
    for _ in 0..5 {
        engine.predict("market", f).unwrap();
    }
    assert_eq!(engine.breaker_state("technical"), vec![(1, BreakerState::Open)]);
    // While open the model is not called at all: a slow fault costs nothing.
    engine.inject_fault("technical", Some(Fault::Slow(Duration::from_millis(200))));
    let started = Instant::now();
    let p = engine.predict("market", f).unwrap();
    assert!(started.elapsed() < Duration::from_millis(150), "{:?}", started.elapsed());
    assert!(p.model_contributions[0].error.as_deref().unwrap().contains("circuit breaker is open"));
    engine.inject_fault("technical", None);
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(engine.breaker_state("technical"), vec![(1, BreakerState::HalfOpen)]);
    for _ in 0..2 {
        assert!(!engine.predict("market", f).unwrap().degraded);
    }
    assert_eq!(engine.breaker_state("technical"), vec![(1, BreakerState::Closed)]);
}

#[test]
fn slow_calls_open_the_breaker() {
    let home = tempfile::tempdir().unwrap();
    let breaker = BreakerOptions { slow_call_duration: Duration::from_millis(2), ..common::quick_breaker() };
    let engine = engine_with(home.path(), breaker);
    let f = &common::holdout_features(1)[0];
    // Injected before the model is loaded: applied when it loads.
    engine.inject_fault("fundamental", Some(Fault::Slow(Duration::from_millis(5))));
    for _ in 0..5 {
        assert!(!engine.predict("market", f).unwrap().degraded, "slow calls still answer");
    }
    assert_eq!(engine.breaker_state("fundamental"), vec![(1, BreakerState::Open)]);
    assert!(engine.predict("market", f).unwrap().degraded);
}

#[test]
fn a_fallback_model_stands_in() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine_with(home.path(), BreakerOptions::default());
    let features = common::features_of("technical");
    engine
        .register_model(ModelRegistration::new("technical-backup", common::model_file("technical"), features))
        .unwrap();
    let mut technical: MemberSpec = "technical".parse().unwrap();
    technical.fallback = Some("technical-backup".into());
    let members = vec![technical, "fundamental".parse().unwrap(), "sentiment".parse().unwrap()];
    engine.create_ensemble(EnsembleConfig::new("backed", members).with_weights(vec![0.4, 0.4, 0.2])).unwrap();
    let f = &common::holdout_features(1)[0];
    let normal = engine.predict("backed", f).unwrap();
    engine.inject_fault("technical", Some(Fault::Fail));
    let p = engine.predict("backed", f).unwrap();
    assert!(p.degraded && p.skipped.is_empty());
    let c = &p.model_contributions[0];
    assert_eq!(c.fallback.as_deref(), Some("technical-backup"));
    assert_eq!(c.prediction, normal.model_contributions[0].prediction, "the same model, registered twice");
    assert_eq!(c.weight, 0.4, "the fallback carries the member's weight");
    assert_eq!(p.prediction, normal.prediction);
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["degraded"], true);
    assert_eq!(json["model_contributions"]["technical"]["fallback"], "technical-backup");
}

#[test]
fn below_quorum_the_request_fails_clearly() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine_with(home.path(), BreakerOptions::default());
    let f = &common::holdout_features(1)[0];
    engine.predict("market", f).unwrap();
    engine.inject_fault("technical", Some(Fault::Fail));
    engine.inject_fault("fundamental", Some(Fault::Panic));
    match engine.predict("market", f).unwrap_err() {
        Error::QuorumNotReached { succeeded: 1, required: 2, first_failure, .. } => {
            assert!(first_failure.contains("technical"))
        }
        other => panic!("{other}"),
    }
    assert!(matches!(
        BreakerOptions { half_open_calls: 0, ..common::quick_breaker() }.validate(),
        Err(Error::Config(_))
    ));
}
