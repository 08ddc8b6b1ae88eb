//! The engine end to end on the three real example models.

mod common;

use std::sync::Arc;

use quorum::{Batch, EnsembleConfig, Error, Features, InferenceEngine, MemberSpec, NonFinitePolicy, StrategyKind};

#[test]
fn engine_is_send_sync_and_cheap_to_clone() {
    fn assert_shareable<T: Send + Sync + Clone + 'static>() {}
    assert_shareable::<InferenceEngine>();
    assert_shareable::<quorum::EnsembleHandle>();
}

#[test]
fn single_prediction_has_contributions_confidence_and_story_field_names() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let features = &common::holdout_features(1)[0];
    let p = engine.predict("market", features).unwrap();
    assert_eq!(&*p.ensemble, "market");
    assert_eq!(p.ensemble_version, 1);
    assert!((0.0..=1.0).contains(&p.prediction));
    assert!((0.0..=1.0).contains(&p.confidence));
    assert_eq!(p.label, Some(u8::from(p.prediction >= 0.5)));
    assert_eq!(p.model_contributions.len(), 3);
    let weighted: f32 = p.model_contributions.iter().map(|c| c.weight * c.prediction.unwrap()).sum();
    assert!((weighted - p.prediction).abs() < 1e-5, "soft vote is the weighted mean of members");
    let weights: Vec<f32> = p.model_contributions.iter().map(|c| c.weight).collect();
    assert_eq!(weights, vec![0.4, 0.4, 0.2]);
    let json = serde_json::to_value(&p).unwrap();
    for key in ["prediction", "confidence", "model_contributions", "latency_ms", "request_id"] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert!(json["model_contributions"]["technical"]["weight"].is_number());
}

#[test]
fn member_predictions_match_onnxruntime_run_directly() {
    // The engine must hand each model exactly its own columns in its declared order: compare with the
    // model run on its own through a one-member ensemble built from the same features.
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    for name in ["technical", "fundamental", "sentiment"] {
        let solo = EnsembleConfig::new(format!("solo-{name}"), [name.parse::<MemberSpec>().unwrap()]);
        engine.create_ensemble(solo).unwrap();
    }
    for features in common::holdout_features(20) {
        let p = engine.predict("market", &features).unwrap();
        for c in &p.model_contributions {
            let solo = engine.predict(&format!("solo-{}", c.model), &features).unwrap();
            assert_eq!(solo.prediction, c.prediction.unwrap());
        }
    }
}

#[test]
fn batch_matches_single_rows_in_both_layouts() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let handle = engine.ensemble("market").unwrap();
    let names = handle.feature_names().to_vec();
    let rows = common::holdout_features(64);
    let matrix: Vec<f32> = rows.iter().flat_map(|f| names.iter().map(|n| f.get(n).unwrap())).collect();
    let batch = Batch::row_major(&names, &matrix).unwrap();
    let batched = engine.predict_batch("market", &batch).unwrap();
    let columns: Vec<Vec<f32>> = names.iter().map(|n| rows.iter().map(|f| f.get(n).unwrap()).collect()).collect();
    // Columns in reverse order: the engine maps by name, not position.
    let named: Vec<(&str, &[f32])> =
        names.iter().zip(&columns).rev().map(|(n, c)| (n.as_str(), c.as_slice())).collect();
    let columnar = engine.predict_batch("market", &Batch::columnar(&named).unwrap()).unwrap();
    assert_eq!(batched.len(), 64);
    for ((features, b), c) in rows.iter().zip(batched.rows()).zip(columnar.rows()) {
        let single = engine.predict("market", features).unwrap();
        assert!((single.prediction - b.prediction).abs() < 1e-6);
        assert!((single.prediction - c.prediction).abs() < 1e-6);
        assert!((single.confidence - b.confidence).abs() < 1e-6);
    }
    let ids: Vec<u64> = batched.rows().map(|p| p.request_id).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "a batch gets consecutive request ids");
    assert_eq!(batched.row(5).model_contributions.len(), 3);
    let json = serde_json::to_value(&batched).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 64, "a batch serialises as its rows");
    assert_eq!(json[3]["prediction"], serde_json::to_value(batched.predictions[3]).unwrap());
    // Outcomes join with batch rows like with single predictions.
    engine.record_outcome(batched.request_id(10), 1.0).unwrap();
}

#[test]
fn many_threads_predict_at_once_and_agree_with_one_thread() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let rows = Arc::new(common::holdout_features(50));
    let expected: Vec<f32> = rows.iter().map(|f| engine.predict("market", f).unwrap().prediction).collect();
    let expected = Arc::new(expected);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (engine, rows, expected) = (engine.clone(), Arc::clone(&rows), Arc::clone(&expected));
            std::thread::spawn(move || {
                let handle = engine.ensemble("market").unwrap();
                for i in 0..200 {
                    let k = (i * 7 + t) % rows.len();
                    let p = if i % 2 == 0 { engine.predict("market", &rows[k]) } else { handle.predict(&rows[k]) };
                    assert_eq!(p.unwrap().prediction, expected[k]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn outcomes_are_tracked_per_member_and_ensemble() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let rows = common::holdout_features(30);
    let mut correct = 0;
    for (i, f) in rows.iter().enumerate() {
        let p = engine.predict("market", f).unwrap();
        let outcome = (i % 3 == 0) as u8;
        correct += u32::from(p.label == Some(outcome));
        engine.record_outcome(p.request_id, f64::from(outcome)).unwrap();
    }
    let m = engine.metrics("market").unwrap();
    assert_eq!(m.metrics.all_time.count, 30);
    assert_eq!(m.metrics.all_time.accuracy, Some(f64::from(correct) / 30.0));
    assert_eq!(m.members.len(), 3);
    assert_eq!(m.members[0].0, "technical");
    assert!(m.members.iter().all(|(_, t)| t.all_time.count == 30 && t.all_time.f1_score.is_some()));
    let err = engine.record_outcome(999_999, 1.0).unwrap_err();
    assert!(matches!(err, Error::Outcome(_)), "{err}");
}

#[test]
fn pending_predictions_are_bounded() {
    let home = tempfile::tempdir().unwrap();
    common::market_engine(home.path());
    let engine = InferenceEngine::builder(home.path())
        .with_tracking(quorum::TrackingOptions { pending_capacity: 8, ..Default::default() })
        .build()
        .unwrap();
    let f = &common::holdout_features(1)[0];
    let first = engine.predict("market", f).unwrap().request_id;
    for _ in 0..8 {
        engine.predict("market", f).unwrap();
    }
    let err = engine.record_outcome(first, 1.0).unwrap_err();
    assert!(err.to_string().contains("unknown or expired"), "{err}");
}

#[test]
fn majority_vote_and_imputation() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let members = ["technical", "fundamental", "sentiment"].map(|m| m.parse::<MemberSpec>().unwrap());
    let config = EnsembleConfig::new("market-majority", members.clone()).with_strategy(StrategyKind::Majority);
    engine.create_ensemble(config).unwrap();
    for f in common::holdout_features(10) {
        let p = engine.predict("market-majority", &f).unwrap();
        let yes = p.model_contributions.iter().filter(|c| c.prediction.unwrap() >= 0.5).count();
        assert_eq!(p.label, Some(u8::from(yes >= 2)));
    }
    let imputing = EnsembleConfig::new("market-imputing", members)
        .with_non_finite(NonFinitePolicy::Impute { value: 0.0, per_feature: [("vix".to_string(), 15.0)].into() });
    engine.create_ensemble(imputing).unwrap();
    let mut f = common::holdout_features(1).remove(0);
    f.insert("nasdaq_log_volume_chg", f32::NEG_INFINITY);
    let imputed = engine.predict("market-imputing", &f).unwrap();
    f.insert("nasdaq_log_volume_chg", 0.0);
    assert_eq!(imputed.prediction, engine.predict("market-imputing", &f).unwrap().prediction);
    f.insert("vix", f32::NAN);
    let nan_vix = engine.predict("market-imputing", &f).unwrap();
    f.insert("vix", 15.0);
    assert_eq!(nan_vix.prediction, engine.predict("market-imputing", &f).unwrap().prediction);
}

#[test]
fn ensembles_are_versioned_and_reloaded_from_the_home() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let before = engine.predict("market", &common::holdout_features(1)[0]).unwrap();
    let members = ["technical", "fundamental"].map(|m| m.parse::<MemberSpec>().unwrap());
    let v2 = engine.create_ensemble(EnsembleConfig::new("market", members)).unwrap();
    assert_eq!(v2.version, 2);
    // An outcome that arrives after the switch is scored against the version that predicted.
    engine.record_outcome(before.request_id, 1.0).unwrap();
    let tracked = engine.metrics("market").unwrap();
    assert_eq!((tracked.version, tracked.members.len()), (1, 3));
    let f: Features = common::holdout_features(1).remove(0);
    let p = engine.predict("market", &f).unwrap();
    assert_eq!((p.ensemble_version, p.model_contributions.len()), (2, 2));
    // A second engine (another process, say, reading without writing state: one writer per home)
    // loads the latest saved version on first use.
    let other = InferenceEngine::builder(home.path()).without_persistence().build().unwrap();
    assert_eq!(other.predict("market", &f).unwrap().ensemble_version, 2);
}

#[test]
fn regression_ensembles_average_values_and_track_mae() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::engine(home.path());
    let linear = common::repo().join("tests/fixtures/linear.onnx");
    let register = |name: &str, features: [&str; 2]| {
        let reg = quorum::ModelRegistration::new(name, &linear, features)
            .with_task(quorum::Task::Regression)
            .with_output("variable".parse::<quorum::OutputSpec>().unwrap());
        engine.register_model(reg).unwrap();
    };
    register("ab", ["a", "b"]);
    register("ba", ["b", "a"]);
    let members = ["ab", "ba"].map(|m| m.parse::<MemberSpec>().unwrap());
    let majority = EnsembleConfig::new("vote", members.clone()).with_strategy(StrategyKind::Majority);
    assert!(matches!(engine.create_ensemble(majority), Err(Error::Config(_))), "majority needs classes");
    engine.create_ensemble(EnsembleConfig::new("values", members).with_weights(vec![3.0, 1.0])).unwrap();
    let f = Features::new().with("a", 1.0).with("b", 10.0);
    let p = engine.predict("values", &f).unwrap();
    // ab = 2*1 + 10 = 12, ba = 2*10 + 1 = 21; weights 0.75 / 0.25.
    let members: Vec<f32> = p.model_contributions.iter().map(|c| c.prediction.unwrap()).collect();
    assert_eq!(members, vec![12.0, 21.0]);
    assert!((p.prediction - 14.25).abs() < 1e-5);
    assert_eq!(p.label, None);
    assert!(p.confidence > 0.0 && p.confidence < 1.0);
    engine.record_outcome(p.request_id, 15.25).unwrap();
    let m = engine.metrics("values").unwrap();
    assert_eq!(m.metrics.all_time.mae, Some(1.0));
    assert_eq!(m.members[1].1.all_time.mae, Some(5.75));
    assert_eq!(m.metrics.all_time.accuracy, None);
}

#[test]
fn a_pinned_ensemble_version_survives_a_reload_until_a_new_version_is_saved() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let members = || ["technical", "fundamental"].map(|m| m.parse::<MemberSpec>().unwrap());
    engine.create_ensemble(EnsembleConfig::new("market", members())).unwrap();
    assert_eq!(engine.ensemble("market").unwrap().config().version, 2);

    let handle = engine.set_default_ensemble_version("market", 1).unwrap();
    assert_eq!(handle.config().version, 1);
    assert_eq!(engine.predict("market", &common::holdout_features(1)[0]).unwrap().ensemble_version, 1);
    drop((handle, engine));
    let reopened = InferenceEngine::builder(home.path()).build().unwrap();
    assert_eq!(reopened.ensemble("market").unwrap().config().version, 1, "the pin is kept in the home");
    assert!(matches!(reopened.set_default_ensemble_version("market", 7), Err(Error::NotFound { .. })));

    reopened.create_ensemble(EnsembleConfig::new("market", members())).unwrap();
    assert_eq!(reopened.ensemble_store().get("market").unwrap().version, 3, "a new version is active again");
    assert_eq!(reopened.ensemble("market").unwrap().current_weights().regimes["all"].len(), 2);
}
