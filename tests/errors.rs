//! Every bad input gets a typed error, never a panic.

mod common;

use quorum::{Batch, EnsembleConfig, Error, Features, MemberSpec, ModelRegistration, OutputSpec};

fn market() -> (tempfile::TempDir, quorum::InferenceEngine) {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    (home, engine)
}

#[test]
fn missing_feature_names_the_feature_and_the_model() {
    let (_home, engine) = market();
    let f = Features::new().with("ret_1d", 0.1);
    match engine.predict("market", &f).unwrap_err() {
        Error::MissingFeature { feature, model } => {
            assert_eq!((feature.as_str(), model.as_str()), ("ret_5d", "technical"))
        }
        other => panic!("{other}"),
    }
}

#[test]
fn unknown_ensemble_and_unknown_member_model() {
    let (_home, engine) = market();
    let f = common::holdout_features(1).remove(0);
    assert!(matches!(engine.predict("nope", &f), Err(Error::NotFound { what: "ensemble", .. })));
    let ghost = EnsembleConfig::new("ghosts", ["ghost".parse::<MemberSpec>().unwrap()]);
    assert!(matches!(engine.create_ensemble(ghost), Err(Error::NotFound { .. })));
    let bad_version = EnsembleConfig::new("v9", ["technical@9".parse::<MemberSpec>().unwrap()]);
    assert!(matches!(engine.create_ensemble(bad_version), Err(Error::NotFound { .. })));
}

#[test]
fn nan_and_infinities_are_refused_by_default() {
    let (_home, engine) = market();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut f = common::holdout_features(1).remove(0);
        f.insert("vix", bad);
        match engine.predict("market", &f).unwrap_err() {
            Error::NonFinite { feature, .. } => assert_eq!(feature, "vix"),
            other => panic!("{other}"),
        }
    }
}

#[test]
fn real_bad_rows_from_market_data_are_refused_cleanly() {
    // 2018-01-09/10: NASDAQ reported zero volume, so log-volume change is -inf/+inf.
    let (_home, engine) = market();
    let fixture = common::repo().join("tests/fixtures/replay_with_bad_rows.csv");
    let table = quorum::replay::Table::read(&fixture).unwrap();
    let report = quorum::replay::replay_table(
        &engine,
        "market",
        &table,
        &quorum::ReplayOptions { outcome: "next_day_up".into() },
    )
    .unwrap();
    assert_eq!((report.rows, report.refused), (5, 2));
    assert!(report.first_refusal.unwrap().contains("nasdaq_log_volume_chg"));
}

#[test]
fn wrong_row_width_and_empty_batches() {
    let (_home, engine) = market();
    let handle = engine.ensemble("market").unwrap();
    assert!(matches!(handle.predict_row(&[0.0; 3]), Err(Error::InvalidInput(_))));
    let names = handle.feature_names().to_vec();
    assert!(matches!(Batch::row_major(&names, &[0.0; 5]), Err(Error::InvalidInput(_))));
    assert!(matches!(Batch::row_major(&names, &[]), Err(Error::InvalidInput(_))));
    let empty: [(&str, &[f32]); 0] = [];
    assert!(matches!(Batch::columnar(&empty), Err(Error::InvalidInput(_))));
    let ragged: [(&str, &[f32]); 2] = [("a", &[1.0, 2.0]), ("b", &[1.0])];
    assert!(matches!(Batch::columnar(&ragged), Err(Error::InvalidInput(_))));
    let partial: [(&str, &[f32]); 1] = [("ret_1d", &[1.0])];
    let batch = Batch::columnar(&partial).unwrap();
    assert!(matches!(handle.predict_batch(&batch), Err(Error::MissingFeature { .. })));
    assert!(matches!(Features::from_pairs([("a", 1.0), ("a", 2.0)]), Err(Error::InvalidInput(_))));
    assert!(matches!(Features::from_json("{\"a\": \"x\"}"), Err(Error::InvalidInput(_))));
    assert!(matches!(Features::from_json("{\"a\": 1e300}"), Err(Error::InvalidInput(_))));
    assert!(matches!(Features::from_json("[1,2]"), Err(Error::Json { .. })));
}

#[test]
fn output_that_is_not_the_declared_shape() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::engine(home.path());
    let features = common::features_of("technical");
    let reg = |output: &str| {
        ModelRegistration::new("technical", common::model_file("technical"), features.clone())
            .with_output(output.parse::<OutputSpec>().unwrap())
    };
    for (output, expect) in [
        ("probabilities:2", "OutputShape"),
        ("probabilities", "OutputShape"),
        ("label", "OutputShape"),
        ("nope", "ModelLoad"),
    ] {
        let err = engine.register_model(reg(output)).unwrap_err();
        let kind = match err {
            Error::OutputShape { .. } => "OutputShape",
            Error::ModelLoad { .. } => "ModelLoad",
            ref other => panic!("{output}: {other}"),
        };
        assert_eq!(kind, expect, "{output}: {err}");
    }
}

#[test]
fn truncated_model_is_refused_at_registration() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::engine(home.path());
    let bytes = std::fs::read(common::model_file("fundamental")).unwrap();
    let truncated = home.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = engine
        .register_model(ModelRegistration::new("fundamental", &truncated, common::features_of("fundamental")))
        .unwrap_err();
    assert!(matches!(err, Error::ModelLoad { .. }), "{err}");
    assert!(engine.registry().list().unwrap().is_empty(), "nothing half-registered");
}

#[test]
fn input_width_must_match_declared_features() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::engine(home.path());
    let mut features = common::features_of("sentiment");
    features.pop();
    let err = engine
        .register_model(ModelRegistration::new("sentiment", common::model_file("sentiment"), features))
        .unwrap_err();
    assert!(err.to_string().contains("takes 5 features but 4 were declared"), "{err}");
}

#[test]
fn checksum_mismatch_is_an_error_on_load() {
    let home = tempfile::tempdir().unwrap();
    common::market_engine(home.path());
    let path = home.path().join("models/sentiment/1/model.onnx");
    // Same size, one byte changed: still parses as ONNX, but is not what was registered.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let fresh = common::engine(home.path());
    let err = fresh.predict("market", &common::holdout_features(1)[0]).unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
}

#[test]
fn invalid_names_are_refused_before_touching_the_disk() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::engine(home.path());
    for name in ["../x", "/abs", "", "a\u{7}b", "a/b", "..", ".hidden"] {
        let err = engine
            .register_model(ModelRegistration::new(
                name,
                common::model_file("sentiment"),
                common::features_of("sentiment"),
            ))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{name:?}: {err}");
        assert!(matches!(
            EnsembleConfig::new(name, ["sentiment".parse::<MemberSpec>().unwrap()]).validate(),
            Err(Error::InvalidName { .. })
        ));
    }
    assert!("../x@1".parse::<MemberSpec>().is_err());
    assert!("x@0".parse::<MemberSpec>().is_err());
    assert!("x@latest".parse::<MemberSpec>().is_err());
    // Nothing was written: no models folder, or an empty one.
    assert!(std::fs::read_dir(home.path().join("models")).map_or(true, |mut entries| entries.next().is_none()));
}

#[test]
fn bad_ensemble_configurations() {
    let (_home, engine) = market();
    let members = || ["technical", "fundamental"].map(|m| m.parse::<MemberSpec>().unwrap());
    for config in [
        EnsembleConfig::new("e", members()).with_weights(vec![1.0]),
        EnsembleConfig::new("e", members()).with_weights(vec![-1.0, 2.0]),
        EnsembleConfig::new("e", members()).with_weights(vec![0.0, 0.0]),
        EnsembleConfig::new("e", members()).with_min_members(3),
        EnsembleConfig::new("e", Vec::new()),
        EnsembleConfig::new("e", ["technical", "technical"].map(|m| m.parse::<MemberSpec>().unwrap())),
    ] {
        assert!(matches!(engine.create_ensemble(config.clone()), Err(Error::Config(_))), "{config:?}");
    }
    assert!(matches!(EnsembleConfig::from_json(b"{\"name\": \"e\"}"), Err(Error::Json { .. })));
    assert!(matches!(
        EnsembleConfig::from_json(b"{\"name\":\"e\",\"members\":[{\"model\":\"a\"}],\"bogus\":1}"),
        Err(Error::Json { .. })
    ));
}

#[test]
fn a_failing_member_is_left_out_while_a_quorum_remains() {
    // fragile.onnx returns NaN for a negative input: a real run-time failure inside a member.
    let (_home, engine) = market();
    let fragile = common::repo().join("tests/fixtures/fragile.onnx");
    engine.register_model(ModelRegistration::new("fragile", fragile, ["vix_chg_1d"])).unwrap();
    let members = || ["technical", "fundamental", "fragile"].map(|m| m.parse::<MemberSpec>().unwrap());
    engine.create_ensemble(EnsembleConfig::new("tolerant", members()).with_weights(vec![0.25, 0.25, 0.5])).unwrap();
    engine.create_ensemble(EnsembleConfig::new("strict", members()).with_min_members(3)).unwrap();

    let mut f = common::holdout_features(1).remove(0);
    f.insert("vix_chg_1d", 0.04);
    let healthy = engine.predict("tolerant", &f).unwrap();
    assert!(healthy.model_contributions.iter().all(|c| c.error.is_none()));

    f.insert("vix_chg_1d", -0.04);
    let degraded = engine.predict("tolerant", &f).unwrap();
    let failed = &degraded.model_contributions[2];
    assert_eq!((failed.prediction, failed.weight), (None, 0.0));
    assert!(failed.error.as_deref().unwrap().contains("NaN"), "{failed:?}");
    let live: Vec<f32> = degraded.model_contributions[..2].iter().map(|c| c.weight).collect();
    assert_eq!(live, vec![0.5, 0.5], "the survivors' weights are renormalised");
    let mean = (degraded.model_contributions[0].prediction.unwrap()
        + degraded.model_contributions[1].prediction.unwrap())
        / 2.0;
    assert!((degraded.prediction - mean).abs() < 1e-6);

    match engine.predict("strict", &f).unwrap_err() {
        Error::QuorumNotReached { succeeded: 2, required: 3, first_failure, .. } => {
            assert!(first_failure.contains("fragile"))
        }
        other => panic!("{other}"),
    }
}

#[test]
fn a_non_finite_value_in_a_batch_names_its_row() {
    let (_home, engine) = market();
    let handle = engine.ensemble("market").unwrap();
    let names = handle.feature_names().to_vec();
    let mut values: Vec<f32> = common::holdout_features(5)
        .iter()
        .flat_map(|f| names.iter().map(|n| f.get(n).unwrap()).collect::<Vec<_>>())
        .collect();
    let vix = names.iter().position(|n| n == "vix").unwrap();
    values[3 * names.len() + vix] = f32::NAN;
    let batch = Batch::row_major(&names, &values).unwrap();
    match handle.predict_batch(&batch).unwrap_err() {
        Error::NonFinite { feature, row, .. } => assert_eq!((feature.as_str(), row), ("vix", Some(3))),
        other => panic!("{other}"),
    }
}

#[test]
fn a_second_onnxruntime_library_in_one_process_is_refused() {
    let (_home, _engine) = market();
    let other = common::repo().join(".ort/1.30.0/libonnxruntime.so.1.30.0");
    let loaded = quorum::Runtime::library_path().unwrap().to_path_buf();
    assert_ne!(loaded, other);
    let err = quorum::Runtime::new(quorum::RuntimeOptions::default().with_dylib_path(&other)).unwrap_err();
    assert!(matches!(err, Error::Config(_)) && err.to_string().contains("already loaded"), "{err}");
    quorum::Runtime::new(quorum::RuntimeOptions::default().with_dylib_path(&loaded)).unwrap();
}
