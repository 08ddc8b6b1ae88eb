//! Classifiers as their exporters write them by default (issue 22): a ZipMap output (a map per row)
//! is cut back at registration to the probability tensor that fed it, the class read from it is
//! resolved from the ZipMap's labels (integer or string), and the stored model answers exactly as
//! the same model exported without ZipMap. Fixtures: `scripts/make_zipmap_fixtures.py`.

mod common;

use ort::session::Session;
use ort::value::TensorRef;
use quorum::{
    EnsembleConfig, Error, InferenceEngine, MemberSpec, ModelRegistration, OutputSpec, Runtime, RuntimeOptions,
    VersionSpec,
};

const FEATURES: [&str; 3] = ["ret_1d", "ret_5d", "vix"];

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo().join(format!("tests/fixtures/exporters/{name}.onnx"))
}

fn features() -> Vec<String> {
    FEATURES.map(String::from).to_vec()
}

fn rows(n: usize) -> Vec<f32> {
    common::holdout_features(n).iter().flat_map(|f| FEATURES.map(|name| f.get(name).unwrap())).collect()
}

/// Column `column` of the plain export's `probabilities`, straight from ONNX Runtime.
fn reference(plain: &str, column: usize, values: &[f32]) -> Vec<f32> {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let mut session = Session::builder(runtime.environment()).unwrap().commit_from_file(fixture(plain)).unwrap();
    let n = values.len() / 3;
    let outputs = session.run(ort::inputs![TensorRef::from_array_view(([n, 3], values)).unwrap()]).unwrap();
    let (shape, p) = outputs["probabilities"].try_extract_tensor::<f32>().unwrap();
    let classes = shape[1] as usize;
    (0..n).map(|r| p[r * classes + column]).collect()
}

fn fresh_engine(home: &std::path::Path) -> InferenceEngine {
    InferenceEngine::builder(home).without_persistence().build().unwrap()
}

fn register(engine: &InferenceEngine, name: &str, output: Option<&str>) -> quorum::Result<quorum::ModelMetadata> {
    let mut registration = ModelRegistration::new(name, fixture(name), features());
    if let Some(output) = output {
        registration = registration.with_output(output.parse::<OutputSpec>()?);
    }
    engine.register_model(registration)
}

/// The model's member predictions over `values` through a one-member ensemble.
fn predictions(engine: &InferenceEngine, name: &str, values: &[f32]) -> Vec<f32> {
    let ensemble = format!("{name}_alone");
    engine.create_ensemble(EnsembleConfig::new(&ensemble, [name.parse::<MemberSpec>().unwrap()])).unwrap();
    let handle = engine.ensemble(&ensemble).unwrap();
    let batch = quorum::Batch::row_major(&handle.feature_names(), values).unwrap();
    handle.predict_batch(&batch).unwrap().member_predictions
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (r, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-6, "{what}, row {r}: {g} vs {w}");
    }
}

#[test]
fn default_exports_register_as_they_are_and_read_the_positive_class() {
    let values = rows(64);
    for (name, label) in [("zipmap_int", "1"), ("zipmap_str", "up"), ("zipmap_lightgbm", "1")] {
        let home = tempfile::tempdir().unwrap();
        let engine = fresh_engine(home.path());
        // No --output: the default `probabilities:1` names the ZipMap's input (skl2onnx) or its
        // output (onnxmltools).
        let meta = register(&engine, name, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((meta.output.column, meta.output.label.as_deref()), (Some(1), Some(label)), "{name}");
        assert!(meta.metadata["exported"].as_str().unwrap().contains("ZipMap"), "{name}: {:?}", meta.metadata);
        // The stored model has no ZipMap left.
        let stored = engine.registry().read_verified(&meta).unwrap();
        let graph = quorum::onnx::decode(&stored).unwrap().graph.unwrap();
        assert!(graph.node.iter().all(|n| n.op_type() != "ZipMap"), "{name}");
        let plain = format!("{name}_plain");
        assert_close(&predictions(&engine, name, &values), &reference(&plain, 1, &values), name);
    }
}

#[test]
fn a_class_label_or_an_integer_label_picks_its_column() {
    let values = rows(32);
    let home = tempfile::tempdir().unwrap();
    let engine = fresh_engine(home.path());
    let cases = [
        ("zipmap_str", "output_probability:down", 0),
        ("zipmap_int", "output_probability:1", 1),
        ("zipmap_three", "output_probability:flat", 1),
        ("zipmap_three", "output_probability:up", 2),
    ];
    for (i, (name, output, column)) in cases.into_iter().enumerate() {
        let alias = format!("{name}_{i}");
        let registration =
            ModelRegistration::new(&alias, fixture(name), features()).with_output(output.parse().unwrap());
        let meta = engine.register_model(registration).unwrap_or_else(|e| panic!("{output}: {e}"));
        assert_eq!(meta.output.column, Some(column), "{output}");
        let plain = format!("{name}_plain");
        assert_close(&predictions(&engine, &alias, &values), &reference(&plain, column, &values), output);
    }
    // A label on a plain classifier output resolves from the classifier's own labels.
    let registration = ModelRegistration::new("plain_up", fixture("zipmap_str_plain"), features())
        .with_output("probabilities:up".parse().unwrap());
    assert_eq!(engine.register_model(registration).unwrap().output.column, Some(1));
}

#[test]
fn an_unknown_class_or_a_missing_one_among_three_is_refused_with_the_classes() {
    let home = tempfile::tempdir().unwrap();
    let engine = fresh_engine(home.path());
    let e = register(&engine, "zipmap_str", Some("output_probability:sideways")).unwrap_err();
    assert!(matches!(e, Error::ModelLoad { .. }), "{e:?}");
    assert!(e.to_string().contains("no class \"sideways\" (classes: down, up)"), "{e}");
    let e = register(&engine, "zipmap_three", Some("output_probability")).unwrap_err();
    assert!(e.to_string().contains("3 classes (down, flat, up)") && e.to_string().contains(":CLASS"), "{e}");
    assert!("output:".parse::<OutputSpec>().is_err());
}

#[test]
fn a_cut_member_fuses_with_the_example_models_and_runs_natively_where_it_can() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::onnxruntime_market_engine(home.path());
    register(&engine, "zipmap_int", None).unwrap();
    let (handle, answer) = common::beside_examples(&engine, "zipmap_int", 20);
    assert!(handle.fusion().fused, "{:?}", handle.fusion());
    assert!(answer.fused);
    let expected = reference("zipmap_int_plain", 1, &rows(20));
    let got: Vec<f32> = (0..20).map(|r| answer.member_predictions[r * 4 + 3]).collect();
    assert_close(&got, &expected, "fused");

    // With native executors on, the cut logistic regression runs on its native plan.
    let home = tempfile::tempdir().unwrap();
    let native = fresh_engine(home.path());
    register(&native, "zipmap_int", None).unwrap();
    native.create_ensemble(EnsembleConfig::new("one", ["zipmap_int".parse::<MemberSpec>().unwrap()])).unwrap();
    let replica = native.replicas(None).into_iter().find(|r| r.model == "zipmap_int").unwrap();
    assert!(replica.executor.is_native(), "{:?}", replica.executor);
    let meta = native.registry().resolve("zipmap_int", VersionSpec::Default).unwrap();
    assert_eq!(meta.output.name, "probabilities");
}

#[test]
fn without_a_declared_output_registration_picks_the_only_float_output_or_asks() {
    let home = tempfile::tempdir().unwrap();
    let engine = fresh_engine(home.path());
    // A regressor as skl2onnx writes it: `variable` [N, 1], no probabilities.
    let registration = ModelRegistration::new("regressor", fixture("regressor_default"), features())
        .with_task(quorum::Task::Regression);
    let meta = engine.register_model(registration).unwrap();
    assert_eq!((meta.output.name.as_str(), meta.output.column), ("variable", None));
    assert!(meta.metadata["exported"].as_str().unwrap().contains("no output was declared"), "{:?}", meta.metadata);
    let values = rows(16);
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let mut session =
        Session::builder(runtime.environment()).unwrap().commit_from_file(fixture("regressor_default")).unwrap();
    let outputs = session.run(ort::inputs![TensorRef::from_array_view(([16, 3], values.as_slice())).unwrap()]).unwrap();
    let (_, expected) = outputs["variable"].try_extract_tensor::<f32>().unwrap();
    assert_close(&predictions(&engine, "regressor", &values), expected, "regressor");
    // Three classes and nothing declared: the classes are listed, nothing is guessed.
    let e = register(&engine, "zipmap_three", None).unwrap_err();
    assert!(e.to_string().contains("3 classes (down, flat, up)"), "{e}");
}

#[test]
fn each_contribution_reports_the_class_as_the_model_labels_it() {
    let home = tempfile::tempdir().unwrap();
    let engine = fresh_engine(home.path());
    // A cut ZipMap (string labels, the positive class picked), a declared label, and a plain
    // classifier whose column 1 is class "up".
    register(&engine, "zipmap_str", None).unwrap();
    register(&engine, "zipmap_three", Some("output_probability:flat")).unwrap();
    register(&engine, "zipmap_str_plain", Some("probabilities:1")).unwrap();
    let members = ["zipmap_str", "zipmap_three", "zipmap_str_plain"].map(|m| m.parse::<MemberSpec>().unwrap());
    engine.create_ensemble(EnsembleConfig::new("labelled", members)).unwrap();
    let handle = engine.ensemble("labelled").unwrap();
    let (names, values) = (handle.feature_names(), rows(2));
    let batch = quorum::Batch::row_major(&names, &values).unwrap();
    let answer = handle.predict_batch(&batch).unwrap();
    let classes: Vec<Option<&str>> = answer.members.iter().map(|m| m.class.as_deref()).collect();
    assert_eq!(classes, [Some("up"), Some("flat"), Some("up")]);
    let row = answer.row(1);
    let json = serde_json::to_value(&row).unwrap();
    assert_eq!(json["model_contributions"]["zipmap_three"]["class"], "flat");
    assert_eq!(row.model_contributions[0].class.as_deref(), Some("up"));
}

#[test]
fn onnxmltools_xgboost_defaults_register_without_an_output_and_answer_as_onnxruntime() {
    // onnxmltools writes XGBoost classifiers without a ZipMap: `probabilities` is picked, and the
    // tree ensemble's integer labels name the class.
    let file = common::repo().join("tests/fixtures/native/xgboost.onnx");
    let features: Vec<String> = (0..8).map(|i| format!("f{i}")).collect();
    let home = tempfile::tempdir().unwrap();
    let engine = InferenceEngine::builder(home.path()).without_persistence().with_native(false).build().unwrap();
    let meta = engine.register_model(ModelRegistration::new("xgboost", &file, features.clone())).unwrap();
    assert_eq!(
        (meta.output.name.as_str(), meta.output.column, meta.output.label.as_deref()),
        ("probabilities", Some(1), Some("1"))
    );
    let values: Vec<f32> = (0..16 * 8).map(|i| ((i * 37 % 101) as f32 / 25.0) - 2.0).collect();
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let mut session = Session::builder(runtime.environment()).unwrap().commit_from_file(&file).unwrap();
    let outputs = session.run(ort::inputs![TensorRef::from_array_view(([16usize, 8], &values[..])).unwrap()]).unwrap();
    let (_, p) = outputs["probabilities"].try_extract_tensor::<f32>().unwrap();
    let expected: Vec<f32> = (0..16).map(|r| p[r * 2 + 1]).collect();
    assert_close(&predictions(&engine, "xgboost", &values), &expected, "xgboost");
}
