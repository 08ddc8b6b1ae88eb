//! Native executors against ONNX Runtime: every example, test and exporter model (skl2onnx,
//! onnxmltools, torch-style graphs, ai.onnx opsets 9 to 22) either compiles into a plan that agrees
//! with ONNX Runtime on probe rows and on property-tested random rows (NaN included where the trees
//! track missing values), or keeps ONNX Runtime with a reason.

mod common;

use proptest::prelude::*;
use quorum::native::{self, NativeModel};
use quorum::runtime::{Runtime, RuntimeOptions};

fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions::default()).expect("runtime")
}

/// (file, output, features, expected native) for the example and test models.
fn project_models() -> Vec<(String, &'static str, usize, bool)> {
    let repo = common::repo();
    let path = |p: &str| repo.join(p).to_string_lossy().into_owned();
    vec![
        (path("examples/models/technical.onnx"), "probabilities", 8, true),
        (path("examples/models/fundamental.onnx"), "probabilities", 8, true),
        (path("examples/models/sentiment.onnx"), "probabilities", 5, true),
        (path("examples/models/wide.onnx"), "probabilities", 16, true),
        (path("examples/volatility/garch.onnx"), "variable", 1, true),
        (path("examples/volatility/ewma.onnx"), "variable", 1, true),
        (path("examples/volatility/har.onnx"), "variable", 3, true),
        (path("tests/fixtures/dense.onnx"), "probabilities", 8, true),
        (path("tests/fixtures/linear.onnx"), "variable", 2, true),
        (path("tests/fixtures/fragile.onnx"), "probabilities", 1, true),
        (path("tests/fixtures/slow.onnx"), "probabilities", 1, false),
    ]
}

/// The exporter models `scripts/make_native_fixtures.py` wrote: (file, output).
fn exporter_models() -> Vec<(String, String)> {
    let dir = common::repo().join("tests/fixtures/native");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("manifest")).expect("json");
    manifest["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| {
            let file = dir.join(m["file"].as_str().expect("file")).to_string_lossy().into_owned();
            (file, m["output"].as_str().expect("output").to_string())
        })
        .collect()
}

fn features_in(file: &str) -> usize {
    let name = std::path::Path::new(file).file_stem().unwrap().to_string_lossy().into_owned();
    let from_manifest = common::example_models().into_iter().find(|m| m.0 == name).map(|m| m.2.len());
    from_manifest.unwrap_or(8)
}

#[test]
fn example_and_test_models_run_natively_and_agree_except_the_slow_fixture() {
    let rt = runtime();
    for (file, output, features, expect_native) in project_models() {
        let bytes = std::fs::read(&file).expect("model");
        let result = native::verified(&rt, "m", &bytes, output, features, None);
        match (result, expect_native) {
            (Ok(plan), true) => assert_eq!(plan.input_width(), features, "{file}"),
            (Err(why), false) => assert!(why.contains("has no native kernel"), "{file}: {why}"),
            (Ok(_), false) => panic!("{file} was expected to keep ONNX Runtime"),
            (Err(why), true) => panic!("{file} did not run natively: {why}"),
        }
    }
}

#[test]
fn every_exporter_model_at_every_opset_runs_natively_and_agrees() {
    let rt = runtime();
    let models = exporter_models();
    assert!(models.len() >= 50, "{} exporter models", models.len());
    let mut opsets = std::collections::BTreeSet::new();
    for (file, output) in models {
        let bytes = std::fs::read(&file).expect("model");
        if let Err(why) = native::verified(&rt, "m", &bytes, &output, 8, None) {
            panic!("{file}: {why}");
        }
        if let Some(v) = file.split("opset").nth(1).and_then(|s| s.trim_end_matches(".onnx").parse::<u32>().ok()) {
            opsets.insert(v);
        }
    }
    assert_eq!(opsets, (9..=22).collect(), "ai.onnx opsets covered");
}

#[test]
fn unsupported_operators_and_attributes_are_named_in_the_reason() {
    let bytes = std::fs::read(common::repo().join("tests/fixtures/slow.onnx")).expect("model");
    let why = NativeModel::compile(&bytes, "probabilities", 1).unwrap_err();
    assert!(why.starts_with("node") && why.contains("ReduceSum has no native kernel"), "{why}");
    let garbage = NativeModel::compile(b"not a model", "y", 4).unwrap_err();
    assert!(garbage.contains("not an ONNX model"), "{garbage}");
    let technical = std::fs::read(common::model_file("technical")).expect("model");
    let label = NativeModel::compile(&technical, "label", 8).unwrap_err();
    assert!(label.contains("ArgMax") || label.contains("Cast"), "{label}");
}

/// Random rows of `width` values: wide ranges, exact zeros, and (when `nan`) missing values.
fn rows(width: usize, nan: bool) -> impl Strategy<Value = Vec<f32>> {
    let value = prop_oneof![
        6 => -5.0f32..5.0,
        1 => Just(0.0f32),
        1 => -1e3f32..1e3,
        if nan { 1 } else { 0 } => Just(f32::NAN),
    ];
    (1usize..40).prop_flat_map(move |n| proptest::collection::vec(value.clone(), n * width))
}

fn agree_on(file: &str, output: &str, width: usize, rows: &[f32]) -> Result<(), TestCaseError> {
    let rt = runtime();
    let bytes = std::fs::read(file).expect("model");
    native::verified(&rt, "m", &bytes, output, width, Some(rows))
        .map(|_| ())
        .map_err(|why| TestCaseError::fail(format!("{file}: {why}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn example_models_agree_with_onnxruntime_on_random_rows(batch in rows(8, false)) {
        for name in ["technical", "fundamental"] {
            let file = common::model_file(name).to_string_lossy().into_owned();
            agree_on(&file, "probabilities", 8, &batch)?;
        }
    }

    #[test]
    fn tree_models_agree_with_onnxruntime_on_random_rows_with_missing_values(batch in rows(8, true)) {
        for (file, output) in exporter_models() {
            let trees = ["forest", "tree", "boosting", "lightgbm", "xgboost", "extra_trees"];
            if trees.iter().any(|t| file.contains(t)) {
                agree_on(&file, &output, 8, &batch)?;
            }
        }
    }

    #[test]
    fn dense_and_linear_models_agree_with_onnxruntime_on_random_rows(batch in rows(8, false)) {
        for (file, output) in exporter_models() {
            let dense = ["mlp_opset9", "mlp_opset22", "torch_mlp_opset11", "logreg", "normalized", "linear_regressor", "imputed"];
            if dense.iter().any(|t| file.contains(t)) {
                agree_on(&file, &output, features_in(&file), &batch)?;
            }
        }
    }
}

#[test]
fn a_fully_native_ensemble_answers_as_onnxruntime_does_without_loading_a_session() {
    let home = tempfile::tempdir().unwrap();
    let native = common::market_engine(home.path());
    let onnxruntime =
        quorum::InferenceEngine::builder(home.path()).with_native(false).without_persistence().build().unwrap();
    let (n, o) = (native.ensemble("market").unwrap(), onnxruntime.ensemble("market").unwrap());
    let status = n.fusion();
    assert!(!status.fused && status.reason.as_deref().unwrap().contains("native"), "{status:?}");
    assert_eq!(status.native, ["technical", "fundamental", "sentiment"]);
    assert!(o.fusion().fused && o.fusion().native.is_empty());
    for row in common::holdout_features(300) {
        let (a, b) = (n.predict(&row).unwrap(), o.predict(&row).unwrap());
        assert!(!a.degraded && !a.fused && b.fused);
        assert!((a.prediction - b.prediction).abs() <= 1e-5, "{} vs {}", a.prediction, b.prediction);
        for (x, y) in a.model_contributions.iter().zip(&b.model_contributions) {
            assert!((x.prediction.unwrap() - y.prediction.unwrap()).abs() <= 1e-5, "{x:?} vs {y:?}");
        }
    }
    for status in native.replicas(None) {
        assert!(status.executor.is_native(), "{status:?}");
        assert_eq!((status.replicas, status.calls), (0, 300), "no ONNX Runtime session: {status:?}");
    }
    for status in onnxruntime.replicas(None) {
        assert_eq!(status.executor.kind, "onnxruntime");
        assert!(status.executor.reason.as_deref().unwrap().contains("with_native"), "{status:?}");
    }
}

#[test]
fn native_members_keep_faults_breakers_async_calls_and_partial_fusion() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let row = common::holdout_features(1).remove(0);
    engine.inject_fault("technical", Some(quorum::Fault::Fail));
    let p = engine.predict("market", &row).unwrap();
    assert!(p.degraded && p.skipped.iter().any(|s| &**s == "technical"), "{p:?}");
    engine.inject_fault("technical", None);
    let handle = engine.ensemble("market").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let queued = runtime.block_on(handle.predict_async(&row)).unwrap();
    let inline = handle.predict(&row).unwrap();
    assert!(!queued.degraded && (queued.prediction - inline.prediction).abs() <= 1e-6);

    // Two ONNX Runtime members fuse; the native one runs beside the fused call.
    let slow = common::repo().join("tests/fixtures/slow.onnx");
    for name in ["slow_a", "slow_b"] {
        engine.register_model(quorum::ModelRegistration::new(name, &slow, ["x"])).unwrap();
    }
    let members = ["technical", "slow_a", "slow_b"].map(|m| m.parse::<quorum::MemberSpec>().unwrap());
    // slow.onnx spends ~170 ms: a budget it fits in.
    let config = quorum::EnsembleConfig::new("mixed", members).with_latency_budget(std::time::Duration::from_secs(10));
    engine.create_ensemble(config).unwrap();
    let mixed = engine.ensemble("mixed").unwrap();
    let status = mixed.fusion();
    assert!(status.fused && status.native == ["technical"], "{status:?}");
    let p = mixed.predict(&row.clone().with("x", 0.5)).unwrap();
    assert!(p.fused && !p.degraded, "{p:?}");
    assert!(p.model_contributions.iter().all(|c| c.prediction.is_some()), "{p:?}");
}
