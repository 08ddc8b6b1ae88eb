//! Ensemble fusion: the members run as one ONNX model when they can, with the same answers as when
//! they run one by one, and the members' own path whenever one of them is in trouble.

mod common;

use std::time::Duration;

use quorum::{Batch, EnsembleConfig, Fault, InferenceEngine, MemberSpec, ModelOptions, ModelRegistration, Prediction};

fn contributions(p: &Prediction) -> Vec<(Option<f32>, f32)> {
    p.model_contributions.iter().map(|c| (c.prediction, c.weight)).collect()
}

#[test]
fn fused_members_answer_exactly_as_separate_ones() {
    let home = tempfile::tempdir().unwrap();
    let fused = common::onnxruntime_market_engine(home.path());
    let separate = InferenceEngine::builder(home.path())
        .with_native(false)
        .with_fusion(false)
        .without_persistence()
        .build()
        .unwrap();
    let (f, s) = (fused.ensemble("market").unwrap(), separate.ensemble("market").unwrap());
    let status = f.fusion();
    assert!(status.fused && status.reason.is_none() && status.sessions >= 1, "{status:?}");
    assert!(!s.fusion().fused);
    assert!(s.fusion().reason.unwrap().contains("with_fusion"));

    let rows = common::holdout_features(200);
    for row in &rows {
        let (a, b) = (f.predict(row).unwrap(), s.predict(row).unwrap());
        assert!(a.fused && !b.fused && !a.degraded);
        assert_eq!((a.prediction, a.confidence), (b.prediction, b.confidence));
        assert_eq!(contributions(&a), contributions(&b));
    }
    let names = f.feature_names();
    let values: Vec<f32> = rows.iter().flat_map(|r| names.iter().map(|n| r.get(n).unwrap())).collect();
    let batch = Batch::row_major(&names, &values).unwrap();
    let (a, b) = (f.predict_batch(&batch).unwrap(), s.predict_batch(&batch).unwrap());
    assert!(a.fused && !b.fused);
    assert_eq!(a.predictions, b.predictions);
    assert_eq!(a.member_predictions, b.member_predictions);
}

#[test]
fn a_member_in_trouble_sends_calls_to_the_members_own_path() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::onnxruntime_market_engine(home.path());
    let row = &common::holdout_features(1)[0];
    assert!(engine.predict("market", row).unwrap().fused);
    engine.inject_fault("sentiment", Some(Fault::Fail));
    let p = engine.predict("market", row).unwrap();
    assert!(!p.fused && p.degraded);
    assert_eq!(p.skipped.iter().map(|s| &**s).collect::<Vec<_>>(), ["sentiment"]);
    engine.inject_fault("sentiment", None);
    assert!(engine.predict("market", row).unwrap().fused);

    // A real failure inside the fused model (NaN from one member): the members run one by one and
    // only the one that failed is left out.
    let fragile = common::repo().join("tests/fixtures/fragile.onnx");
    engine.register_model(ModelRegistration::new("fragile", fragile, ["vix_chg_1d"])).unwrap();
    let members = ["technical", "fundamental", "fragile"].map(|m| m.parse::<MemberSpec>().unwrap());
    engine.create_ensemble(EnsembleConfig::new("tolerant", members)).unwrap();
    let handle = engine.ensemble("tolerant").unwrap();
    assert!(handle.fusion().fused, "{:?}", handle.fusion());
    let mut f = row.clone();
    f.insert("vix_chg_1d", 0.04);
    assert!(handle.predict(&f).unwrap().fused);
    f.insert("vix_chg_1d", -0.04);
    let p = handle.predict(&f).unwrap();
    assert!(!p.fused && p.degraded);
    assert!(p.model_contributions[2].error.as_deref().unwrap().contains("NaN"));
    assert!(p.model_contributions[..2].iter().all(|c| c.prediction.is_some()));
}

#[test]
fn members_that_cannot_be_fused_say_why() {
    let home = tempfile::tempdir().unwrap();
    common::onnxruntime_market_engine(home.path());
    let timed = InferenceEngine::builder(home.path())
        .with_native(false)
        .with_model_options("fundamental", ModelOptions::default().with_timeout(Duration::from_millis(50)))
        .build()
        .unwrap();
    // The member with a timeout runs on its own; the other two share the fused session.
    let fusion = timed.ensemble("market").unwrap().fusion();
    assert!(fusion.fused, "{fusion:?}");
    assert_eq!(fusion.members, ["technical", "sentiment"]);
    assert!(fusion.left_out["fundamental"].contains("timeout"), "{fusion:?}");
    let p = timed.predict("market", &common::holdout_features(1)[0]).unwrap();
    assert!(p.fused && !p.degraded);
    drop(timed);
    // With two of three left out, nothing is fused, and the reason names both.
    let two = InferenceEngine::builder(home.path())
        .with_native(false)
        .with_model_options("fundamental", ModelOptions::default().with_timeout(Duration::from_millis(50)))
        .with_model_options("sentiment", ModelOptions::default().with_timeout(Duration::from_millis(50)))
        .build()
        .unwrap();
    let reason = two.ensemble("market").unwrap().fusion().reason.unwrap();
    assert!(reason.contains("fundamental") && reason.contains("sentiment") && reason.contains("timeout"), "{reason}");
    let p = two.predict("market", &common::holdout_features(1)[0]).unwrap();
    assert!(!p.fused && !p.degraded);
    drop(two);

    let engine = common::engine(home.path());
    let alone = ["technical".parse::<MemberSpec>().unwrap()];
    engine.create_ensemble(EnsembleConfig::new("alone", alone)).unwrap();
    assert!(engine.ensemble("alone").unwrap().fusion().reason.unwrap().contains("one member"));
}

#[test]
fn concurrent_callers_share_a_bounded_pool_of_fused_sessions() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::onnxruntime_market_engine(home.path());
    let rows = common::holdout_features(50);
    let expected: Vec<f32> = rows.iter().map(|r| engine.predict("market", r).unwrap().prediction).collect();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (engine, rows, expected) = (engine.clone(), rows.clone(), expected.clone());
            std::thread::spawn(move || {
                for _ in 0..20 {
                    for (row, want) in rows.iter().zip(&expected) {
                        let p = engine.predict("market", row).unwrap();
                        assert_eq!(p.prediction, *want);
                        assert!(!p.degraded);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let status = engine.ensemble("market").unwrap().fusion();
    let cap = quorum::RuntimeOptions::default().sessions_per_model();
    assert!(status.sessions >= 1 && status.sessions <= cap, "{status:?} (cap {cap})");
}

#[test]
fn a_row_resolved_from_a_lookup_predicts_like_named_features() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::onnxruntime_market_engine(home.path());
    let handle = engine.ensemble("market").unwrap();
    let features = &common::holdout_features(1)[0];
    let row = handle.resolve_row(|name| Ok(features.get(name))).unwrap();
    let names = handle.feature_names();
    assert_eq!(row.values(), names.iter().map(|n| features.get(n).unwrap()).collect::<Vec<_>>());
    let a = handle.predict_resolved(&row, None).unwrap();
    let b = handle.predict(features).unwrap();
    assert_eq!((a.prediction, a.confidence), (b.prediction, b.confidence));
    // Missing names and the caller's own errors come back as typed errors.
    let missing = handle.resolve_row(|name| Ok((name != "vix").then(|| features.get(name).unwrap())));
    assert!(matches!(missing, Err(quorum::Error::MissingFeature { feature, .. }) if feature == "vix"));
    let refused = handle.resolve_row(|_| Err(quorum::Error::InvalidInput("not a number".into())));
    assert!(matches!(refused, Err(quorum::Error::InvalidInput(_))));
    let past = std::time::Instant::now() - Duration::from_millis(1);
    assert!(matches!(handle.predict_resolved(&row, Some(past)), Err(quorum::Error::DeadlineExceeded { .. })));
}

#[test]
fn a_cached_schema_is_checked_against_the_ensemble_as_loaded_now() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::onnxruntime_market_engine(home.path());
    let handle = engine.ensemble("market").unwrap();
    let features = &common::holdout_features(1)[0];
    let (id, names) = (handle.schema_id(), handle.feature_names());
    let row: Vec<f32> = names.iter().map(|n| features.get(n).unwrap()).collect();
    let p = handle.predict_row_for_schema(id, &row, None, None).unwrap().unwrap();
    assert_eq!(p.prediction, handle.predict_row(&row).unwrap().prediction);
    // A hot swap to the same features keeps the id; a version with other features changes it.
    engine.load_ensemble("market").unwrap();
    assert_eq!(handle.schema_id(), id);
    let members = ["sentiment", "technical"].map(|m| m.parse::<MemberSpec>().unwrap());
    engine.create_ensemble(EnsembleConfig::new("market", members)).unwrap();
    assert_ne!(handle.schema_id(), id);
    assert!(handle.predict_row_for_schema(id, &row, None, None).unwrap().is_none());
}
