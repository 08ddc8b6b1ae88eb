//! Models whose input is not float32 (issue 22): float64 as skl2onnx writes for sklearn's float64
//! data (with float64 probabilities out, for the MLP), int64 and float16. Registration records the
//! type; single rows and batches answer as ONNX Runtime does on the converted features; fusion
//! leaves them out with the reason; the optimizer benchmarks them. Fixtures:
//! `scripts/make_input_type_fixtures.py`.

mod common;

use ort::session::Session;
use ort::value::Tensor;
use quorum::input_type::InputType;
use quorum::{
    EnsembleConfig, InferenceEngine, MemberSpec, ModelRegistration, Optimizer, Runtime, RuntimeOptions, VersionSpec,
};

const FEATURES: [&str; 3] = ["ret_1d", "ret_5d", "vix"];
const MODELS: [(&str, InputType); 4] = [
    ("logreg_float64", InputType::Float64),
    ("mlp_float64", InputType::Float64),
    ("linear_int64", InputType::Int64),
    ("linear_float16", InputType::Float16),
];

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo().join(format!("tests/fixtures/exporters/{name}.onnx"))
}

fn features() -> Vec<String> {
    FEATURES.map(String::from).to_vec()
}

/// Class 1's probability for each row, straight from ONNX Runtime, the features converted as
/// documented (float64 exactly, float16 to nearest, int64 rounded).
fn reference(name: &str, ty: InputType, rows: &[f32]) -> Vec<f32> {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let mut session = Session::builder(runtime.environment()).unwrap().commit_from_file(fixture(name)).unwrap();
    let n = rows.len() / 3;
    let outputs = match ty {
        InputType::Float64 => {
            let x: Vec<f64> = rows.iter().map(|&v| f64::from(v)).collect();
            session.run(ort::inputs![Tensor::from_array(([n, 3], x)).unwrap()]).unwrap()
        }
        InputType::Int64 => {
            let x: Vec<i64> = rows.iter().map(|&v| v.round() as i64).collect();
            session.run(ort::inputs![Tensor::from_array(([n, 3], x)).unwrap()]).unwrap()
        }
        InputType::Float16 => {
            let x: Vec<half::f16> = rows.iter().map(|&v| half::f16::from_f32(v)).collect();
            session.run(ort::inputs![Tensor::from_array(([n, 3], x)).unwrap()]).unwrap()
        }
        InputType::Float32 => unreachable!("the fixtures take other types"),
    };
    let value = &outputs["probabilities"];
    match value.try_extract_tensor::<f32>() {
        Ok((_, p)) => (0..n).map(|r| p[r * 2 + 1]).collect(),
        Err(_) => {
            let (_, p) = value.try_extract_tensor::<f64>().unwrap();
            (0..n).map(|r| p[r * 2 + 1] as f32).collect()
        }
    }
}

/// `n` rows of the three features from the held-out data; VIX scaled down for the int64 model's
/// sake would hide rounding, so it stays as is (int64 rounds every feature).
fn rows(n: usize) -> Vec<f32> {
    common::holdout_features(n).iter().flat_map(|f| FEATURES.map(|name| f.get(name).unwrap())).collect()
}

fn engine(home: &std::path::Path) -> InferenceEngine {
    let engine = InferenceEngine::builder(home).without_persistence().build().unwrap();
    for (name, _) in MODELS {
        engine.register_model(ModelRegistration::new(name, fixture(name), features())).unwrap();
        let member = [name.parse::<MemberSpec>().unwrap()];
        engine.create_ensemble(EnsembleConfig::new(format!("{name}_alone"), member)).unwrap();
    }
    engine
}

#[test]
fn registration_records_the_input_type_and_float32_stays_implicit() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path());
    for (name, ty) in MODELS {
        let meta = engine.registry().resolve(name, VersionSpec::Default).unwrap();
        assert_eq!(meta.input_type, ty, "{name}");
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(json["input_type"], serde_json::to_value(ty).unwrap(), "{name}");
    }
    engine
        .register_model(ModelRegistration::new(
            "sentiment",
            common::model_file("sentiment"),
            common::features_of("sentiment"),
        ))
        .unwrap();
    let plain = engine.registry().resolve("sentiment", VersionSpec::Default).unwrap();
    assert_eq!(plain.input_type, InputType::Float32);
    assert!(serde_json::to_value(&plain).unwrap().get("input_type").is_none());
}

#[test]
fn single_rows_and_batches_answer_as_onnxruntime_does_on_the_converted_features() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path());
    let values = rows(64);
    for (name, ty) in MODELS {
        let expected = reference(name, ty, &values);
        let handle = engine.ensemble(&format!("{name}_alone")).unwrap();
        let names = handle.feature_names();
        for n in [1usize, 5, 64] {
            let batch = quorum::Batch::row_major(&names, &values[..n * 3]).unwrap();
            let answer = handle.predict_batch(&batch).unwrap_or_else(|e| panic!("{name}, {n} rows: {e}"));
            for (r, want) in expected.iter().take(n).enumerate() {
                let got = answer.member_predictions[r];
                assert!((got - want).abs() < 1e-6, "{name}, row {r} of {n}: {got} vs {want}");
            }
        }
        let single = handle.predict(&common::holdout_features(1)[0]).unwrap();
        assert!((single.prediction - expected[0]).abs() < 1e-6, "{name}");
    }
}

#[test]
fn a_float64_member_runs_beside_the_fused_example_models() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::onnxruntime_market_engine(home.path());
    engine.register_model(ModelRegistration::new("mlp_float64", fixture("mlp_float64"), features())).unwrap();
    let (handle, answer) = common::beside_examples(&engine, "mlp_float64", 30);
    let fusion = handle.fusion();
    assert!(fusion.fused && answer.fused, "{fusion:?}");
    assert!(fusion.left_out["mlp_float64"].contains("not float32"), "{fusion:?}");
    assert!(answer.members.iter().all(|m| m.error.is_none()), "{:?}", answer.members);
    let expected = reference("mlp_float64", InputType::Float64, &rows(30));
    for (r, want) in expected.iter().enumerate() {
        assert!((answer.member_predictions[r * 4 + 3] - want).abs() < 1e-6);
    }
}

#[test]
fn the_optimizer_benchmarks_models_of_every_input_type() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path());
    let data = common::repo().join("examples/data/holdout.csv");
    for (name, _) in MODELS {
        let bench = Optimizer::new(&engine)
            .benchmark(name, VersionSpec::Default, &data, Some("next_day_up"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(bench.latency.len(), 4, "{name}");
        assert!(bench.accuracy.is_some(), "{name}");
    }
}
