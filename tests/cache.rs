//! The prediction cache: hits, keys that follow versions and weights, rounding, TTL, tracking.

mod common;

use std::time::Duration;

use quorum::{CacheOptions, EnsembleConfig, InferenceEngine, MemberSpec, StrategyKind};

fn cached_engine(home: &std::path::Path, options: CacheOptions) -> InferenceEngine {
    common::market_engine(home);
    InferenceEngine::builder(home).with_prediction_cache(options).build().unwrap()
}

#[test]
fn a_repeated_request_is_served_from_the_cache_and_still_tracked() {
    let home = tempfile::tempdir().unwrap();
    let engine = cached_engine(home.path(), CacheOptions::default());
    let f = &common::holdout_features(1)[0];
    let first = engine.predict("market", f).unwrap();
    let second = engine.predict("market", f).unwrap();
    assert!(!first.cached && second.cached);
    assert_ne!(first.request_id, second.request_id);
    assert_eq!((first.prediction, first.confidence), (second.prediction, second.confidence));
    assert_eq!(engine.cache_stats().map(|s| (s.hits, s.misses, s.entries)), Some((1, 1, 1)));
    engine.record_outcome(second.request_id, 1.0).unwrap();
    assert_eq!(engine.metrics("market").unwrap().metrics.all_time.count, 1);
    let other = &common::holdout_features(2)[1];
    assert!(!engine.predict("market", other).unwrap().cached, "other features: a miss");
    let handle = engine.ensemble("market").unwrap();
    let row: Vec<f32> = handle.feature_names().iter().map(|n| f.get(n).unwrap()).collect();
    assert!(handle.predict_row(&row).unwrap().cached, "same values by row: a hit");
}

#[test]
fn new_versions_and_new_weights_change_the_key() {
    let home = tempfile::tempdir().unwrap();
    let engine = cached_engine(home.path(), CacheOptions::default());
    let f = &common::holdout_features(1)[0];
    engine.predict("market", f).unwrap();
    let members = ["technical", "fundamental", "sentiment"].map(|m| m.parse::<MemberSpec>().unwrap());
    engine.create_ensemble(EnsembleConfig::new("market", members.clone())).unwrap();
    let v2 = engine.predict("market", f).unwrap();
    assert!(!v2.cached && v2.ensemble_version == 2);
    engine.create_ensemble(EnsembleConfig::new("adaptive", members).with_strategy(StrategyKind::Hedge)).unwrap();
    let p = engine.predict("adaptive", f).unwrap();
    assert!(engine.predict("adaptive", f).unwrap().cached);
    engine.record_outcome(p.request_id, 1.0).unwrap();
    let after = engine.predict("adaptive", f).unwrap();
    assert!(!after.cached, "the weights changed");
    assert_eq!(after.weights_epoch, 1);
}

#[test]
fn rounding_and_expiry() {
    let home = tempfile::tempdir().unwrap();
    let options = CacheOptions { precision: Some(2), ttl: Duration::from_millis(100), ..CacheOptions::default() };
    let engine = cached_engine(home.path(), options);
    let mut f = common::holdout_features(1).remove(0);
    f.insert("vix", 13.501);
    engine.predict("market", &f).unwrap();
    f.insert("vix", 13.5012);
    assert!(engine.predict("market", &f).unwrap().cached, "equal to 2 decimals");
    f.insert("vix", 13.52);
    assert!(!engine.predict("market", &f).unwrap().cached);
    std::thread::sleep(Duration::from_millis(150));
    assert!(!engine.predict("market", &f).unwrap().cached, "expired");
    assert!(InferenceEngine::builder(home.path())
        .with_prediction_cache(CacheOptions { capacity: 0, ..CacheOptions::default() })
        .build()
        .is_err());
}

#[test]
fn a_byte_bound_keeps_the_cache_within_it() {
    let home = tempfile::tempdir().unwrap();
    // Each entry weighs several hundred bytes: 40 kB holds far fewer than the 300 rows predicted,
    // although the entry count (10 000 by default) would hold them all.
    let options = CacheOptions { max_bytes: Some(40_000), ttl: Duration::from_secs(60), ..CacheOptions::default() };
    let engine = cached_engine(home.path(), options);
    for f in common::holdout_features(300) {
        engine.predict("market", &f).unwrap();
    }
    let entries = engine.cache_stats().unwrap().entries;
    assert!(entries > 0 && entries < 100, "{entries} entries");
    let err = InferenceEngine::builder(home.path())
        .with_prediction_cache(CacheOptions { max_bytes: Some(0), ..CacheOptions::default() })
        .build()
        .unwrap_err();
    assert!(matches!(err, quorum::Error::Config(_)), "{err}");
}
