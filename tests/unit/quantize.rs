//! Unit tests of `src/quantize.rs` (its private items), kept out of `src/` so that the published
//! crate stays within its size budget (`make package`).

use super::*;

#[test]
fn scale_and_zero_point_follow_onnx_runtime() {
    // Symmetric int8: scale = absmax / 127, zero point 0; the range always includes 0.
    assert_eq!(scale_zero_point(-0.5, 1.27, -127, 127, true), ((2.54f64 / 254.0) as f32, 0));
    assert_eq!(scale_zero_point(0.2, 1.0, -127, 127, true).1, 0);
    // Asymmetric uint8 over [-1, 3]: scale 4/255, zero point round(0 + 1/scale) = 64.
    let (scale, zp) = scale_zero_point(-1.0, 3.0, 0, 255, false);
    assert!((scale - 4.0 / 255.0).abs() < 1e-9);
    assert_eq!(zp, 64);
    // A range of zeros gets scale 1 (ONNX Runtime's guard against a zero scale).
    assert_eq!(scale_zero_point(0.0, 0.0, -127, 127, true), (1.0, 0));
    // Round half to even.
    assert_eq!(quantize_value(2.5, 1.0, 0, -127, 127), 2);
    assert_eq!(quantize_value(3.5, 1.0, 0, -127, 127), 4);
    assert_eq!(quantize_value(1000.0, 1.0, 0, -127, 127), 127);
}

fn model_at(opset: i64, node: Vec<onnx::proto::NodeProto>, initializer: Vec<TensorProto>) -> Vec<u8> {
    use onnx::proto::{GraphProto, ModelProto, OperatorSetIdProto};
    let import = |domain: &str, version| OperatorSetIdProto { domain: Some(domain.into()), version: Some(version) };
    let graph = GraphProto { node, initializer, ..Default::default() };
    let model = ModelProto {
        ir_version: Some(7),
        opset_import: vec![import("", opset), import("ai.onnx.ml", 1)],
        graph: Some(graph),
        ..Default::default()
    };
    onnx::encode(&model)
}

#[test]
fn a_tree_ensemble_has_nothing_to_quantize_whatever_its_opset() {
    let mut trees = onnx::node("TreeEnsembleClassifier", &["X"], &["label", "probabilities"], "trees");
    trees.domain = Some("ai.onnx.ml".into());
    let error = quantize_dynamic(&model_at(9, vec![trees], vec![]), Granularity::PerTensor).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("nothing to quantize") && !message.contains("opset"), "{message}");
}

#[test]
fn an_old_matmul_model_is_lifted_to_opset_11_unless_a_node_cannot_be_lifted() {
    let weight = || onnx::f32_tensor("W", &[2, 2], &[1.0, -2.0, 0.5, 3.0]);
    let matmul = || onnx::node("MatMul", &["X", "W"], &["Y"], "mm");
    let lifted = quantize_dynamic(&model_at(9, vec![matmul()], vec![weight()]), Granularity::PerTensor).unwrap();
    assert_eq!(onnx::default_opset(&onnx::decode(&lifted.bytes).unwrap()), Some(11));
    assert!(lifted.nodes.iter().any(|n| n.rewritten));
    // Clip's bounds move from attributes to inputs at 11, as ONNX's converter does.
    let mut clip = onnx::node("Clip", &["Y"], &["Z"], "clip");
    clip.attribute.push(crate::onnx::proto::AttributeProto {
        name: Some("max".into()),
        f: Some(6.0),
        r#type: Some(crate::onnx::proto::attribute_proto::AttributeType::Float as i32),
        ..Default::default()
    });
    let lifted = quantize_dynamic(&model_at(9, vec![matmul(), clip], vec![weight()]), Granularity::PerTensor).unwrap();
    let model = onnx::decode(&lifted.bytes).unwrap();
    let clip = model.graph.unwrap().node.into_iter().find(|n| n.op_type() == "Clip").unwrap();
    assert!(clip.attribute.is_empty() && clip.input.len() == 3 && clip.input[1].is_empty(), "{clip:?}");
    // Scatter has no adapter from 10 to 11: refused, naming it.
    let upsample = onnx::node("Scatter", &["Y", "I", "W"], &["Z"], "sc");
    let error = quantize_dynamic(&model_at(9, vec![matmul(), upsample], vec![weight()]), Granularity::PerTensor)
        .unwrap_err()
        .to_string();
    assert!(error.contains("Scatter") && error.contains("version_converter"), "{error}");
}

#[test]
fn per_channel_weights_get_a_scale_per_column() {
    // [2, 2]: column 0 spans ±1, column 1 spans ±10.
    let (q, scales) = quantize_weight(&[1.0, 10.0, -0.5, -5.0], 2, 2, Granularity::PerChannel, 127);
    assert_eq!(scales, vec![1.0 / 127.0, 10.0 / 127.0]);
    assert_eq!(q, vec![127, 127, -64, -64]);
    let (q, scales) = quantize_weight(&[1.0, 10.0, -0.5, -5.0], 2, 2, Granularity::PerTensor, 127);
    assert_eq!(scales, vec![10.0 / 127.0]);
    assert_eq!(q, vec![13, 127, -6, -64]);
}
