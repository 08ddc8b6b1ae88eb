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
