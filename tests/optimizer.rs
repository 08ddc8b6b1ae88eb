//! The optimizer's rewrites checked in ONNX Runtime: INT8 dynamic (per tensor and per channel) and
//! FP16 models load, stay close to float32 on real and random inputs, and models with nothing to
//! rewrite get a clear error.

mod common;

use ort::session::Session;
use ort::value::TensorRef;
use quorum::quantize::{self, Granularity};
use quorum::{Error, Runtime, RuntimeOptions};

fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions::default()).unwrap()
}

/// Positive-class probabilities of `rows` (row-major, `width` columns) through a raw session.
fn scores(runtime: &Runtime, model: &[u8], rows: &[f32], width: usize) -> Vec<f32> {
    let mut session = Session::builder(runtime.environment()).unwrap().commit_from_memory(model).unwrap();
    let n = rows.len() / width;
    let input = TensorRef::from_array_view(([n, width], rows)).unwrap();
    let outputs = session.run(ort::inputs![input]).unwrap();
    let (_, p) = outputs["probabilities"].try_extract_tensor::<f32>().unwrap();
    (0..n).map(|r| p[r * 2 + 1]).collect()
}

/// The first 200 finite holdout rows in `model`'s feature order, and as many seeded random rows.
fn inputs(features: &[String]) -> (Vec<f32>, Vec<f32>) {
    let real: Vec<f32> =
        common::holdout_features(200).iter().flat_map(|f| features.iter().map(|n| f.get(n).unwrap())).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let random = (0..real.len())
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Around the real values' scale, a standard-normal-ish spread.
            real[i] + ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * real[i].abs().max(0.1)
        })
        .collect();
    (real, random)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn dense_features() -> Vec<String> {
    ["ret_1d", "ret_5d", "ret_20d", "vol_20d", "hl_range", "rsi_14", "vix", "vix_chg_1d"].map(String::from).to_vec()
}

#[test]
fn int8_dynamic_models_load_and_stay_close_to_float() {
    let runtime = runtime();
    let cases = [
        (std::fs::read(common::model_file("technical")).unwrap(), common::features_of("technical"), 3),
        (std::fs::read(common::repo().join("tests/fixtures/dense.onnx")).unwrap(), dense_features(), 2),
    ];
    for (bytes, features, matmuls) in cases {
        let (real, random) = inputs(&features);
        for granularity in [Granularity::PerTensor, Granularity::PerChannel] {
            let q = quantize::quantize_dynamic(&bytes, granularity).unwrap();
            assert_eq!(q.rewritten_nodes(), matmuls, "{:?}", q.nodes);
            let model = quorum::onnx::decode(&q.bytes).unwrap();
            let ops: Vec<&str> = model.graph.as_ref().unwrap().node.iter().map(|n| n.op_type()).collect();
            assert!(!ops.contains(&"MatMul") && ops.contains(&"MatMulInteger"), "{ops:?}");
            for (label, rows) in [("real", &real), ("random", &random)] {
                let float = scores(&runtime, &bytes, rows, features.len());
                let int8 = scores(&runtime, &q.bytes, rows, features.len());
                let diff = max_diff(&float, &int8);
                assert!(diff < 0.05, "{granularity:?} {label}: max |Δp| {diff}");
            }
        }
    }
}

#[test]
fn gemm_with_transposed_weights_and_bias_is_quantized_correctly() {
    // linear.onnx is not a Gemm; build one: the dense fixture's first layer as Gemm(transB = 1) + C.
    let runtime = runtime();
    let bytes = std::fs::read(common::repo().join("tests/fixtures/dense.onnx")).unwrap();
    let mut model = quorum::onnx::decode(&bytes).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let w1 = graph.initializer.iter_mut().find(|t| t.name() == "w1").unwrap();
    let values = quorum::onnx::float_values(w1).unwrap();
    // Store w1ᵀ ([512, 8]) so that Gemm(transB = 1) computes the same x·w1.
    let transposed: Vec<f32> = (0..512 * 8).map(|i| values[(i % 8) * 512 + i / 8]).collect();
    *w1 = quorum::onnx::f32_tensor("w1", &[512, 8], &transposed);
    graph.initializer.push(quorum::onnx::f32_tensor("c1", &[512], &vec![0.05; 512]));
    let first = &mut graph.node[0];
    first.op_type = Some("Gemm".into());
    first.input.push("c1".into());
    first.attribute.push(quorum::onnx::int_attribute("transB", 1));
    let gemm = quorum::onnx::encode(&model);
    let q = quantize::quantize_dynamic(&gemm, Granularity::PerChannel).unwrap();
    assert_eq!(q.rewritten_nodes(), 2, "{:?}", q.nodes);
    let (real, _) = inputs(&dense_features());
    let diff = max_diff(&scores(&runtime, &gemm, &real, 8), &scores(&runtime, &q.bytes, &real, 8));
    assert!(diff < 0.05, "max |Δp| {diff}");
}

#[test]
fn a_model_without_matmuls_has_nothing_to_quantize() {
    let bytes = std::fs::read(common::model_file("fundamental")).unwrap();
    let err = quantize::quantize_dynamic(&bytes, Granularity::PerTensor).unwrap_err();
    assert!(matches!(err, Error::Optimize(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("nothing to quantize") && text.contains("TreeEnsembleClassifier"), "{text}");
    assert_eq!(err.code(), "optimize");
}

#[test]
fn fp16_models_keep_float32_inputs_and_outputs_and_stay_close() {
    let runtime = runtime();
    for (bytes, features) in [
        (std::fs::read(common::model_file("technical")).unwrap(), common::features_of("technical")),
        (std::fs::read(common::repo().join("tests/fixtures/dense.onnx")).unwrap(), dense_features()),
        (std::fs::read(common::model_file("sentiment")).unwrap(), common::features_of("sentiment")),
    ] {
        let converted = quantize::convert_fp16(&bytes);
        let (real, random) = inputs(&features);
        match converted {
            Ok(half) => {
                for rows in [&real, &random] {
                    let diff = max_diff(
                        &scores(&runtime, &bytes, rows, features.len()),
                        &scores(&runtime, &half.bytes, rows, features.len()),
                    );
                    assert!(diff < 0.01, "max |Δp| {diff}");
                }
                let model = quorum::onnx::decode(&half.bytes).unwrap();
                let graph = model.graph.as_ref().unwrap();
                let float16 = quorum::onnx::proto::tensor_proto::DataType::Float16 as i32;
                assert!(graph.initializer.iter().any(|t| t.data_type == Some(float16)));
                // ai.onnx.ml operators are reported as left in float32.
                assert!(half.nodes.iter().filter(|n| !n.rewritten).all(|n| n
                    .reason
                    .as_deref()
                    .unwrap()
                    .contains("ai.onnx.ml")));
            }
            // sentiment is Scaler + LinearClassifier: ml operators only.
            Err(e) => assert!(e.to_string().contains("nothing to convert"), "{e}"),
        }
    }
}
