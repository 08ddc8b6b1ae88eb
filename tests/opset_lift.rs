//! Opset lifting (issue 21): each adapter, on a model built at the old opset
//! (`scripts/make_lift_fixtures.py`), answers in ONNX Runtime exactly as the original; an ensemble
//! whose members come from different exporters and opsets fuses into one session and answers as
//! its members do; a member that cannot be lifted runs beside the fused call.

mod common;

use ort::session::Session;
use ort::value::TensorRef;
use quorum::onnx::Opsets;
use quorum::{EnsembleConfig, InferenceEngine, MemberSpec, ModelRegistration, Runtime, RuntimeOptions};

fn run(runtime: &Runtime, bytes: &[u8], shape: &[usize], x: &[f32]) -> Vec<f32> {
    let mut session = Session::builder(runtime.environment()).unwrap().commit_from_memory(bytes).unwrap();
    let outputs = session.run(ort::inputs![TensorRef::from_array_view((shape.to_vec(), x)).unwrap()]).unwrap();
    outputs["Y"].try_extract_tensor::<f32>().unwrap().1.to_vec()
}

#[test]
fn every_adapter_answers_as_the_model_at_its_old_opset() {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let dir = common::repo().join("tests/fixtures/lift");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let models = manifest["models"].as_array().unwrap();
    assert!(models.len() >= 15);
    for m in models {
        let file = m["file"].as_str().unwrap();
        let target = m["target"].as_i64().unwrap();
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let lifted = quorum::onnx::lift(&bytes, Opsets { default: Some(target), ml: None })
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let model = quorum::onnx::decode(&lifted).unwrap();
        assert_eq!(Opsets::of(&model).default, Some(target), "{file}");
        // Five rows, values of both signs and a tie (Hardmax, TopK).
        let dims: Vec<usize> = m["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .map(|d| if d < 0 { 5 } else { d as usize })
            .collect();
        let shape: Vec<usize> = std::iter::once(5).chain(dims[1..].iter().copied()).collect();
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
        let (before, after) = (run(&runtime, &bytes, &shape, &x), run(&runtime, &lifted, &shape, &x));
        assert_eq!(before.len(), after.len(), "{file}");
        for (i, (a, b)) in before.iter().zip(&after).enumerate() {
            assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{file}[{i}]: {a} before, {b} after");
        }
    }
}

#[test]
fn a_model_already_at_the_target_is_returned_unchanged() {
    let bytes = std::fs::read(common::model_file("technical")).unwrap();
    let model = quorum::onnx::decode(&bytes).unwrap();
    assert_eq!(quorum::onnx::lift(&bytes, Opsets::of(&model)).unwrap(), bytes);
}

#[test]
fn a_node_without_an_adapter_is_refused_naming_it() {
    // Scatter 10 → 11 has no adapter here (ONNX rewrites it into ScatterElements).
    let bytes = std::fs::read(common::repo().join("tests/fixtures/lift/mlp_8.onnx")).unwrap();
    let mut model = quorum::onnx::decode(&bytes).unwrap();
    let graph = model.graph.as_mut().unwrap();
    graph.node[3] = quorum::onnx::node("Scatter", &["R", "indices", "updates"], &["Y"], "sc");
    graph.initializer.push(quorum::onnx::f32_tensor("updates", &[1, 1], &[0.5]));
    model.opset_import[0].version = Some(10);
    let err = quorum::onnx::lift(&quorum::onnx::encode(&model), Opsets { default: Some(13), ml: None }).unwrap_err();
    assert_eq!(quorum::Error::from(err.clone()).code(), "optimize");
    assert!(err.to_string().contains("Scatter") && err.to_string().contains("10 to 11"), "{err}");
}

const NATIVE_FEATURES: usize = 8;

fn int64s(name: &str, values: &[i64]) -> quorum::onnx::proto::TensorProto {
    quorum::onnx::proto::TensorProto {
        name: Some(name.into()),
        dims: vec![values.len() as i64],
        data_type: Some(quorum::onnx::proto::tensor_proto::DataType::Int64 as i32),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn native_fixture(name: &str) -> std::path::PathBuf {
    common::repo().join(format!("tests/fixtures/native/{name}.onnx"))
}

/// An engine on ONNX Runtime alone (native plans would leave nothing to fuse), with the three
/// models of three exporters and opsets: LightGBM from onnxmltools (ai.onnx 9, ai.onnx.ml 1), a
/// sklearn MLP (14) and a logistic regression (22) from skl2onnx.
fn mixed_engine(home: &std::path::Path, fusion: bool) -> InferenceEngine {
    let engine =
        InferenceEngine::builder(home).without_persistence().with_native(false).with_fusion(fusion).build().unwrap();
    let features: Vec<String> = (0..NATIVE_FEATURES).map(|i| format!("f{i}")).collect();
    for name in ["lightgbm", "mlp_opset14", "logreg_opset22"] {
        if engine.registry().versions(name).map_or(true, |v| v.is_empty()) {
            engine.register_model(ModelRegistration::new(name, native_fixture(name), features.clone())).unwrap();
        }
    }
    if engine.ensemble("mixed").is_err() {
        let members = ["lightgbm", "mlp_opset14", "logreg_opset22"].map(|m| m.parse::<MemberSpec>().unwrap());
        engine.create_ensemble(EnsembleConfig::new("mixed", members)).unwrap();
    }
    engine
}

fn rows(n: usize) -> Vec<f32> {
    (0..n * NATIVE_FEATURES).map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0).collect()
}

#[test]
fn three_exporters_at_three_opsets_fuse_into_one_session_and_answer_as_their_members() {
    let home = tempfile::tempdir().unwrap();
    let fused = mixed_engine(home.path(), true).ensemble("mixed").unwrap();
    let status = fused.fusion();
    assert!(status.fused, "{status:?}");
    assert_eq!(status.members, ["lightgbm", "mlp_opset14", "logreg_opset22"]);
    assert_eq!(status.opsets.get("ai.onnx"), Some(&22));
    assert_eq!(status.opsets.get("ai.onnx.ml"), Some(&1));
    assert!(status.left_out.is_empty(), "{status:?}");
    let separate = mixed_engine(home.path(), false).ensemble("mixed").unwrap();
    let names = fused.feature_names();
    let values = rows(64);
    let batch = quorum::Batch::row_major(&names, &values).unwrap();
    let (a, b) = (fused.predict_batch(&batch).unwrap(), separate.predict_batch(&batch).unwrap());
    assert!(a.fused && !b.fused);
    for (i, (x, y)) in a.member_predictions.iter().zip(&b.member_predictions).enumerate() {
        assert!((x - y).abs() < 1e-6, "value {i}: fused {x}, separate {y}");
    }
    let one = fused.predict_row(&values[..NATIVE_FEATURES]).unwrap();
    assert!(one.fused);
    assert!((one.prediction - b.predictions[0]).abs() < 1e-6);
}

#[test]
fn a_member_that_cannot_be_lifted_runs_beside_the_fused_call() {
    let home = tempfile::tempdir().unwrap();
    let engine = mixed_engine(home.path(), true);
    // The MLP again, stamped 10, its probabilities passed through a Scatter that writes column 0
    // back onto itself (no adapter from 10 to 11: ONNX rewrites Scatter into ScatterElements).
    let bytes = std::fs::read(native_fixture("mlp_opset14")).unwrap();
    let mut model = quorum::onnx::decode(&bytes).unwrap();
    model.opset_import.iter_mut().filter(|o| o.domain().is_empty()).for_each(|o| o.version = Some(10));
    let graph = model.graph.as_mut().unwrap();
    let producer = graph.node.iter_mut().find(|n| n.output.iter().any(|o| o == "probabilities")).unwrap();
    producer.output[0] = "before".into();
    graph.initializer.push(int64s("zero", &[0]));
    graph.initializer.push(int64s("one", &[1]));
    graph.initializer.push(quorum::onnx::f32_tensor("nothing", &[], &[0.0]));
    graph.node.push(quorum::onnx::node("Slice", &["before", "zero", "one", "one"], &["column0"], "first"));
    graph.node.push(quorum::onnx::node("Mul", &["column0", "nothing"], &["zeros"], "zeros"));
    let mut cast = quorum::onnx::node("Cast", &["zeros"], &["indices"], "indices");
    cast.attribute.push(quorum::onnx::int_attribute("to", 7));
    graph.node.push(cast);
    let mut scatter = quorum::onnx::node("Scatter", &["before", "indices", "column0"], &["probabilities"], "sc");
    scatter.attribute.push(quorum::onnx::int_attribute("axis", 1));
    graph.node.push(scatter);
    let file = home.path().join("upsampled.onnx");
    std::fs::write(&file, quorum::onnx::encode(&model)).unwrap();
    let features: Vec<String> = (0..NATIVE_FEATURES).map(|i| format!("f{i}")).collect();
    engine.register_model(ModelRegistration::new("upsampled", &file, features)).unwrap();
    let members = ["lightgbm", "upsampled", "logreg_opset22"].map(|m| m.parse::<MemberSpec>().unwrap());
    engine.create_ensemble(EnsembleConfig::new("partial", members)).unwrap();
    let handle = engine.ensemble("partial").unwrap();
    let status = handle.fusion();
    assert!(status.fused, "{status:?}");
    assert_eq!(status.members, ["lightgbm", "logreg_opset22"]);
    let why = &status.left_out["upsampled"];
    assert!(why.contains("Scatter"), "{why}");
    let names = handle.feature_names();
    let values = rows(16);
    let answer = handle.predict_batch(&quorum::Batch::row_major(&names, &values).unwrap()).unwrap();
    assert!(answer.fused && answer.members.iter().all(|m| m.error.is_none()), "{:?}", answer.members);
    let mlp = engine.ensemble("mixed").unwrap();
    let reference = mlp.predict_batch(&quorum::Batch::row_major(&names, &values).unwrap()).unwrap();
    for r in 0..16 {
        // Member 1 (the MLP through its identity Scatter) answers as the MLP (member 1 of "mixed").
        assert!((answer.member_predictions[r * 3 + 1] - reference.member_predictions[r * 3 + 1]).abs() < 1e-6);
    }
}

#[test]
fn every_native_fixture_fuses_beside_a_member_at_another_opset() {
    // The exporters' models at every opset from 9 to 22 (skl2onnx, torch, onnxmltools), each fused
    // with a partner stamped differently: every node they contain lifts, and the fused answers are
    // the members' own.
    let dir = common::repo().join("tests/fixtures/native");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let build = |fusion: bool| {
        InferenceEngine::builder(home.path())
            .without_persistence()
            .with_native(false)
            .with_fusion(fusion)
            .build()
            .unwrap()
    };
    let engine = build(true);
    let features: Vec<String> = (0..NATIVE_FEATURES).map(|i| format!("f{i}")).collect();
    let mut pairs = Vec::new();
    for (i, m) in manifest["models"].as_array().unwrap().iter().enumerate() {
        let file = m["file"].as_str().unwrap();
        let name = format!("m{i}");
        let mut output = m["output"].as_str().unwrap().to_string();
        if let Some(c) = m["column"].as_u64() {
            output = format!("{output}:{c}");
        }
        let task = m["task"].as_str().unwrap();
        let registration = ModelRegistration::new(&name, dir.join(file), features.clone())
            .with_output(output.parse().unwrap())
            .with_task(task.parse().unwrap());
        engine.register_model(registration).unwrap_or_else(|e| panic!("{file}: {e}"));
        let partner = match (task, file) {
            ("regression", "linear_regressor.onnx") => "boosting_regressor",
            ("regression", _) => "linear_regressor",
            (_, "logreg_opset22.onnx") => "mlp_opset9",
            _ => "logreg_opset22",
        };
        pairs.push((name, file.to_string(), partner));
    }
    // Partners under their own names (registered once more, so each pair has two distinct members).
    for partner in ["boosting_regressor", "linear_regressor", "mlp_opset9", "logreg_opset22"] {
        let task = if partner.contains("regressor") { "regression" } else { "classification" };
        let output = if task == "regression" { "variable" } else { "probabilities:1" };
        let registration = ModelRegistration::new(partner, dir.join(format!("{partner}.onnx")), features.clone())
            .with_output(output.parse().unwrap())
            .with_task(task.parse().unwrap());
        engine.register_model(registration).unwrap();
    }
    for (name, _, partner) in &pairs {
        let members = [name.as_str(), partner].map(|m| m.parse::<MemberSpec>().unwrap());
        engine.create_ensemble(EnsembleConfig::new(format!("{name}_pair"), members)).unwrap();
    }
    let separate = build(false);
    let values = rows(16);
    for (name, file, partner) in &pairs {
        let fused = engine.ensemble(&format!("{name}_pair")).unwrap();
        let status = fused.fusion();
        assert!(status.fused && status.left_out.is_empty(), "{file} with {partner}: {status:?}");
        if *partner == "logreg_opset22" {
            assert_eq!(status.opsets["ai.onnx"], 22, "{file}");
        }
        let names = fused.feature_names();
        let batch = quorum::Batch::row_major(&names, &values).unwrap();
        let a = fused.predict_batch(&batch).unwrap();
        let b = separate.ensemble(&format!("{name}_pair")).unwrap().predict_batch(&batch).unwrap();
        assert!(a.fused, "{file}");
        for (x, y) in a.member_predictions.iter().zip(&b.member_predictions) {
            assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{file} with {partner}: fused {x}, separate {y}");
        }
    }
}
