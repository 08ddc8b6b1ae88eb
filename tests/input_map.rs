//! Models with several inputs (issue 22): skl2onnx's one `[N, 1]` input per DataFrame column
//! (float64 and int64 columns, a ZipMap output) registers by its input names; a graph whose inputs
//! take groups of features registers with an explicit map. The stored model takes one
//! `[batch, features]` input, answers as ONNX Runtime does on the separate inputs (single rows and
//! batches, alone and beside the example models), and fuses. Fixtures:
//! `scripts/make_input_map_fixtures.py`.

mod common;

use ort::session::Session;
use ort::value::Tensor;
use quorum::{
    EnsembleConfig, InferenceEngine, InputMap, MemberSpec, ModelRegistration, Runtime, RuntimeOptions, VersionSpec,
};

const FEATURES: [&str; 3] = ["ret_1d", "ret_5d", "vix"];
const GROUPED: &str = "x1=ret_1d,ret_5d;x2=vix";

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo().join(format!("tests/fixtures/exporters/{name}.onnx"))
}

/// `n` held-out rows of `names`, row-major.
fn rows(n: usize, names: &[&str]) -> Vec<f32> {
    common::holdout_features(n).iter().flat_map(|f| names.iter().map(|name| f.get(name).unwrap())).collect()
}

fn column(values: &[f32], width: usize, c: usize) -> Vec<f32> {
    values.chunks(width).map(|r| r[c]).collect()
}

/// Class 1's probability from ONNX Runtime over the original inputs, fed separately.
fn reference(name: &str, values: &[f32]) -> Vec<f32> {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let mut session = Session::builder(runtime.environment()).unwrap().commit_from_file(fixture(name)).unwrap();
    let n = values.len() / 3;
    let f64s = |c: usize| {
        Tensor::from_array(([n, 1], column(values, 3, c).iter().map(|&v| f64::from(v)).collect::<Vec<_>>())).unwrap()
    };
    let outputs = match name {
        "frame_pipeline_plain" => {
            // ONNX Round: halves to even.
            let vix: Vec<i64> = column(values, 3, 2).iter().map(|v| v.round_ties_even() as i64).collect();
            let vix = Tensor::from_array(([n, 1], vix)).unwrap();
            session.run(ort::inputs!["ret_1d" => f64s(0), "ret_5d" => f64s(1), "vix" => vix]).unwrap()
        }
        "grouped_inputs" => {
            let x1: Vec<f32> = values.chunks(3).flat_map(|r| [r[0], r[1]]).collect();
            let x1 = Tensor::from_array(([n, 2], x1)).unwrap();
            let x2 = Tensor::from_array(([n], column(values, 3, 2))).unwrap();
            session.run(ort::inputs!["x1" => x1, "x2" => x2]).unwrap()
        }
        other => unreachable!("{other}"),
    };
    // The float64 pipeline answers in float64.
    let value = &outputs["probabilities"];
    match value.try_extract_tensor::<f32>() {
        Ok((_, p)) => (0..n).map(|r| p[r * 2 + 1]).collect(),
        Err(_) => {
            let (_, p) = value.try_extract_tensor::<f64>().unwrap();
            (0..n).map(|r| p[r * 2 + 1] as f32).collect()
        }
    }
}

fn fresh_engine(home: &std::path::Path) -> InferenceEngine {
    InferenceEngine::builder(home).without_persistence().build().unwrap()
}

fn register(
    engine: &InferenceEngine,
    name: &str,
    features: &[&str],
    inputs: Option<&str>,
) -> quorum::Result<quorum::ModelMetadata> {
    let mut registration = ModelRegistration::new(name, fixture(name), features.iter().copied());
    if let Some(map) = inputs {
        registration = registration.with_inputs(map.parse::<InputMap>()?);
    }
    engine.register_model(registration)
}

/// The model's member predictions over `values` (in `features` order) through a one-member ensemble,
/// as one batch and row by row.
fn predictions(engine: &InferenceEngine, name: &str, features: &[&str], values: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let ensemble = format!("{name}_alone");
    engine.create_ensemble(EnsembleConfig::new(&ensemble, [name.parse::<MemberSpec>().unwrap()])).unwrap();
    let handle = engine.ensemble(&ensemble).unwrap();
    let names: Vec<String> = features.iter().map(|f| f.to_string()).collect();
    let batch = handle.predict_batch(&quorum::Batch::row_major(&names, values).unwrap()).unwrap().member_predictions;
    let single = values
        .chunks(features.len())
        .map(|row| handle.predict_batch(&quorum::Batch::row_major(&names, row).unwrap()).unwrap().member_predictions[0])
        .collect();
    (batch, single)
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (r, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-6, "{what}, row {r}: {g} vs {w}");
    }
}

#[test]
fn a_dataframe_export_registers_by_its_input_names_and_answers_as_onnxruntime() {
    let home = tempfile::tempdir().unwrap();
    let engine = fresh_engine(home.path());
    let meta = register(&engine, "frame_pipeline", &FEATURES, None).unwrap();
    assert_eq!(meta.metadata["inputs"], "ret_1d=ret_1d;ret_5d=ret_5d;vix=vix");
    let note = meta.metadata["exported"].as_str().unwrap();
    assert!(note.contains("joined into one [batch, 3] input") && note.contains("ZipMap"), "{note}");
    assert_eq!(meta.input_type, quorum::input_type::InputType::Float32);
    let values = rows(40, &FEATURES);
    let expected = reference("frame_pipeline_plain", &values);
    let (batch, single) = predictions(&engine, "frame_pipeline", &FEATURES, &values);
    assert_close(&batch, &expected, "batch");
    assert_close(&single, &expected, "single rows");
}

#[test]
fn features_declared_in_another_order_still_reach_their_inputs() {
    let home = tempfile::tempdir().unwrap();
    let engine = fresh_engine(home.path());
    let order = ["vix", "ret_5d", "ret_1d", "unused"];
    let meta = register(&engine, "frame_pipeline", &order, None).unwrap();
    assert!(meta.metadata["exported"].as_str().unwrap().contains("does not read unused"));
    let values = rows(10, &FEATURES);
    let shuffled: Vec<f32> = values.chunks(3).flat_map(|r| [r[2], r[1], r[0], 123.0]).collect();
    let (batch, _) = predictions(&engine, "frame_pipeline", &order, &shuffled);
    assert_close(&batch, &reference("frame_pipeline_plain", &values), "reordered");
}

#[test]
fn grouped_inputs_need_a_map_and_then_answer_as_onnxruntime() {
    let home = tempfile::tempdir().unwrap();
    let engine = fresh_engine(home.path());
    let err = register(&engine, "grouped_inputs", &FEATURES, None).unwrap_err();
    assert_eq!(err.code(), "model_load");
    assert!(err.to_string().contains("x1, x2") && err.to_string().contains("--inputs"), "{err}");

    let meta = register(&engine, "grouped_inputs", &FEATURES, Some(GROUPED)).unwrap();
    assert_eq!(meta.metadata["inputs"], GROUPED);
    let values = rows(33, &FEATURES);
    let (batch, single) = predictions(&engine, "grouped_inputs", &FEATURES, &values);
    let expected = reference("grouped_inputs", &values);
    assert_close(&batch, &expected, "batch");
    assert_close(&single, &expected, "single rows");
    // Gather, Unsqueeze, Concat, MatMul, Add and Softmax: the joined graph runs natively.
    let replica = engine.replicas(None).into_iter().find(|r| r.model == "grouped_inputs").unwrap();
    assert!(replica.executor.is_native(), "{:?}", replica.executor);
}

#[test]
fn a_map_that_does_not_fit_the_model_is_refused_naming_the_mismatch() {
    let home = tempfile::tempdir().unwrap();
    let engine = fresh_engine(home.path());
    let cases = [
        ("x1=ret_1d;x2=vix", "takes 2 columns and is given 1"),
        ("x1=ret_1d,ret_5d", "does not map the model's input \"x2\""),
        ("x1=ret_1d,ret_5d;x2=vix;x3=vix", "\"x3\", which is not an input"),
        ("x1=ret_1d,ret_5d;x2=vix,ret_1d", "is [batch] (one feature) and is given 2"),
        ("x1=ret_1d,volume;x2=vix", "feature \"volume\""),
    ];
    for (map, expected) in cases {
        let err = register(&engine, "grouped_inputs", &FEATURES, Some(map)).unwrap_err();
        assert_eq!(err.code(), "model_load", "{map}");
        assert!(err.to_string().contains(expected), "{map}: {err}");
    }
    assert!(engine.registry().list().unwrap().is_empty());
}

#[test]
fn a_string_input_is_refused_with_what_to_change_before_export() {
    let home = tempfile::tempdir().unwrap();
    let engine = fresh_engine(home.path());
    let err = register(&engine, "string_input", &["ret_1d", "sector"], None).unwrap_err();
    assert_eq!(err.code(), "model_load");
    assert!(err.to_string().contains("\"sector\" takes strings") && err.to_string().contains("encode"), "{err}");
}

#[test]
fn joined_members_fuse_with_the_example_models() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::onnxruntime_market_engine(home.path());
    register(&engine, "grouped_inputs", &FEATURES, Some(GROUPED)).unwrap();
    let (handle, answer) = common::beside_examples(&engine, "grouped_inputs", 20);
    assert!(handle.fusion().fused, "{:?}", handle.fusion());
    assert!(answer.fused);
    let got: Vec<f32> = (0..20).map(|r| answer.member_predictions[r * 4 + 3]).collect();
    assert_close(&got, &reference("grouped_inputs", &rows(20, &FEATURES)), "fused");
    let stored = engine.registry().resolve("grouped_inputs", VersionSpec::Default).unwrap();
    assert_eq!(stored.features, FEATURES);
}

#[test]
fn a_dataframe_export_at_another_opset_fuses_with_the_example_models() {
    // skl2onnx stamped opset 21 on it, the examples 17: fusion lifts them all to 21.
    let home = tempfile::tempdir().unwrap();
    let engine = common::onnxruntime_market_engine(home.path());
    register(&engine, "frame_pipeline", &FEATURES, None).unwrap();
    let (handle, answer) = common::beside_examples(&engine, "frame_pipeline", 20);
    let fusion = handle.fusion();
    assert!(fusion.fused && answer.fused, "{fusion:?}");
    assert_eq!(fusion.opsets["ai.onnx"], 21);
    assert_eq!(fusion.members.len(), 4);
    let got: Vec<f32> = (0..20).map(|r| answer.member_predictions[r * 4 + 3]).collect();
    assert_close(&got, &reference("frame_pipeline_plain", &rows(20, &FEATURES)), "beside the examples");
}

#[test]
fn the_optimizer_measures_joined_models_like_any_other() {
    let home = tempfile::tempdir().unwrap();
    let engine = fresh_engine(home.path());
    register(&engine, "grouped_inputs", &FEATURES, Some(GROUPED)).unwrap();
    register(&engine, "frame_pipeline", &FEATURES, None).unwrap();
    let data = common::repo().join("examples/data/holdout.csv");
    let optimizer = quorum::Optimizer::new(&engine);
    for name in ["grouped_inputs", "frame_pipeline"] {
        let bench = optimizer.benchmark(name, VersionSpec::Default, &data, Some("next_day_up")).unwrap();
        assert_eq!(bench.latency.len(), 4, "{name}");
        assert!(bench.accuracy.is_some(), "{name}");
    }
    // The float32 graph quantizes: every candidate is measured on the joined input.
    let report =
        optimizer.optimize("grouped_inputs", VersionSpec::Default, &data, "next_day_up", &Default::default()).unwrap();
    assert!(!report.candidates.is_empty());
    for candidate in &report.candidates {
        assert!(candidate.accepted || candidate.reason.is_some(), "{candidate:?}");
    }
    assert!(report.candidates.iter().any(|c| c.benchmark.is_some()), "{:?}", report.candidates);
}
