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
    native::verified(&rt, "m", &bytes, output, width, Some(rows)).map(|_| ()).map_err(|why| TestCaseError::fail(format!("{file}: {why}")))
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
