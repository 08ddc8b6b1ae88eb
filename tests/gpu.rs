//! Feature `gpu`: MLP plans on the GPU agree with the CPU plan (float32 within 1e-5, float16 within
//! 2e-2 absolute on these sigmoid outputs); plans that are not MLPs are refused with the reason. On a
//! machine without a GPU the GPU half is skipped with a message.

mod common;

use quorum::native::gpu::Precision;
use quorum::native::NativeModel;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(common::repo().join("tests/fixtures/native").join(name)).expect("fixture")
}

#[test]
fn plans_that_are_not_mlps_are_refused_with_the_reason() {
    let forest = NativeModel::compile(&fixture("forest_ml1.onnx"), "probabilities", 8).unwrap();
    let why = forest.gpu(0, Precision::F32).unwrap_err();
    assert!(why.contains("MLP"), "{why}");
}

#[test]
fn gpu_plans_agree_with_the_cpu_plan_at_every_opset() {
    let rows = 3000;
    let input: Vec<f32> = (0..rows * 8).map(|i| ((i * 7919) % 2000) as f32 / 500.0 - 2.0).collect();
    for opset in 9..=22 {
        let plan = NativeModel::compile(&fixture(&format!("torch_mlp_opset{opset}.onnx")), "output", 8).unwrap();
        let mut arena = Vec::new();
        let reference = plan.run(&input, rows, &mut arena).to_vec();
        for (precision, bound) in [(Precision::F32, 1e-5f32), (Precision::F16, 2e-2)] {
            let mut gpu = match plan.gpu(0, precision) {
                Ok(gpu) => gpu,
                Err(why) if why.contains("library path") => {
                    eprintln!("skipped: no GPU here ({why})");
                    return;
                }
                Err(why) => panic!("opset {opset}: {why}"),
            };
            let mut out = Vec::new();
            gpu.run(&input, rows, &mut out).unwrap();
            let worst = out.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= bound, "opset {opset} {precision:?}: largest difference {worst}");
        }
    }
}

#[test]
fn an_engine_runs_large_batches_of_a_native_mlp_on_the_gpu_and_small_ones_on_the_cpu() {
    use quorum::native::GpuOptions;
    use quorum::{Batch, EnsembleConfig, InferenceEngine, MemberSpec, ModelOptions, ModelRegistration};
    let home = tempfile::tempdir().unwrap();
    let features: Vec<String> = (0..8).map(|i| format!("f{i}")).collect();
    let file = common::repo().join("tests/fixtures/native/torch_mlp_opset17.onnx");
    let cpu = InferenceEngine::builder(home.path()).build().unwrap();
    cpu.register_model(ModelRegistration::new("mlp", file, features.clone()).with_output("output".parse().unwrap()))
        .unwrap();
    cpu.create_ensemble(EnsembleConfig::new("one", ["mlp".parse::<MemberSpec>().unwrap()])).unwrap();
    let rows = 1024;
    let values: Vec<f32> = (0..rows * 8).map(|i| ((i * 7919) % 2000) as f32 / 500.0 - 2.0).collect();
    let batch = Batch::row_major(&features, &values).unwrap();
    let expected = cpu.ensemble("one").unwrap().predict_batch(&batch).unwrap().predictions;
    drop(cpu);

    let gpu_options = GpuOptions { device: 0, precision: Precision::F32, min_rows: 256 };
    let engine = InferenceEngine::builder(home.path())
        .with_model_options("mlp", ModelOptions::default().with_native_gpu(gpu_options))
        .build()
        .unwrap();
    let handle = engine.ensemble("one").unwrap();
    let placed = engine.replicas(Some("mlp"))[0].executor.gpu.clone().unwrap();
    if placed.contains("library path") {
        eprintln!("skipped: no GPU here ({placed})");
        return;
    }
    assert!(placed.starts_with("cuda:0 F32"), "{placed}");
    let got = handle.predict_batch(&batch).unwrap().predictions;
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() <= 1e-5, "{g} vs {e}");
    }
    // One row stays on the CPU plan and answers as before.
    let one = Batch::row_major(&features, &values[..8]).unwrap();
    assert!((handle.predict_batch(&one).unwrap().predictions[0] - expected[0]).abs() <= 1e-6);
}
