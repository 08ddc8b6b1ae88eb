//! Feature `gpu`: a 16→1024→1024→2 MLP (ReLU, ReLU, softmax) at batch 4,096 on the native GPU
//! executor in float32 and float16, against the native CPU plan and ONNX Runtime on the CPU (one
//! intra-op thread and every core), in one run; copies to and from the GPU included. Prints a table
//! and the largest difference of each GPU answer from the CPU plan's.
//!
//! `cargo run --release --features gpu --example gpu_mlp` (prints why and exits when no GPU answers).

use std::time::Instant;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use quorum::native::gpu::Precision;
use quorum::native::NativeModel;
use quorum::onnx::proto::tensor_shape_proto::{dimension, Dimension};
use quorum::onnx::proto::{
    type_proto, GraphProto, ModelProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

const WIDTHS: [usize; 4] = [16, 1024, 1024, 2];
const ROWS: usize = 4096;

fn value_info(name: &str, width: i64) -> ValueInfoProto {
    let dim = |v: dimension::Value| Dimension { value: Some(v), ..Default::default() };
    let shape = TensorShapeProto {
        dim: vec![dim(dimension::Value::DimParam("batch".into())), dim(dimension::Value::DimValue(width))],
    };
    let tensor = type_proto::Tensor { elem_type: Some(1), shape: Some(shape) };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() }),
        ..Default::default()
    }
}

/// The MLP as torch.onnx.export writes `nn.Linear` layers: Gemm with transB, then the activation.
fn mlp() -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut random = move |scale: f32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
    };
    let mut graph = GraphProto { name: Some("mlp".into()), ..Default::default() };
    graph.input.push(value_info("x", WIDTHS[0] as i64));
    let mut previous = "x".to_string();
    for (i, pair) in WIDTHS.windows(2).enumerate() {
        let (k, m) = (pair[0], pair[1]);
        let scale = (2.0 / k as f32).sqrt();
        let w: Vec<f32> = (0..m * k).map(|_| random(scale)).collect();
        let b: Vec<f32> = (0..m).map(|_| random(0.1)).collect();
        graph.initializer.push(quorum::onnx::f32_tensor(&format!("w{i}"), &[m as i64, k as i64], &w));
        graph.initializer.push(quorum::onnx::f32_tensor(&format!("b{i}"), &[m as i64], &b));
        let mut gemm = quorum::onnx::node(
            "Gemm",
            &[&previous, &format!("w{i}"), &format!("b{i}")],
            &[&format!("g{i}")],
            &format!("gemm{i}"),
        );
        gemm.attribute.push(quorum::onnx::int_attribute("transB", 1));
        graph.node.push(gemm);
        let last = i + 2 == WIDTHS.len();
        let act = if last { "Softmax" } else { "Relu" };
        let out = if last { "y".to_string() } else { format!("a{i}") };
        graph.node.push(quorum::onnx::node(act, &[&format!("g{i}")], &[&out], &format!("act{i}")));
        previous = out;
    }
    graph.output.push(value_info("y", *WIDTHS.last().unwrap() as i64));
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(17) }],
        producer_name: Some("quorum gpu_mlp".into()),
        graph: Some(graph),
        ..Default::default()
    };
    quorum::onnx::encode(&model)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2] * 1e3
}

fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    let bytes = mlp();
    let plan = NativeModel::compile(&bytes, "y", WIDTHS[0]).expect("plan");
    let input: Vec<f32> = (0..ROWS * WIDTHS[0]).map(|i| ((i * 2_654_435_761) % 2000) as f32 / 1000.0 - 1.0).collect();
    let mut arena = Vec::new();
    let reference = plan.run(&input, ROWS, &mut arena).to_vec();
    let mut rows: Vec<(String, f64, Option<f32>)> = Vec::new();
    rows.push((
        "native CPU plan (1 thread)".into(),
        time(10, || {
            std::hint::black_box(plan.run(&input, ROWS, &mut arena));
        }),
        None,
    ));
    let runtime = quorum::Runtime::new(quorum::RuntimeOptions::default()).expect("ONNX Runtime");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, cores] {
        let mut session = Session::builder(runtime.environment())
            .unwrap()
            .with_intra_threads(threads)
            .unwrap()
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .unwrap()
            .commit_from_memory(&bytes)
            .unwrap();
        let mut worst = 0f32;
        let ms = time(10, || {
            let tensor = TensorRef::from_array_view(([ROWS, WIDTHS[0]], input.as_slice())).unwrap();
            let outputs = session.run(ort::inputs![tensor]).unwrap();
            let (_, y) = outputs["y"].try_extract_tensor::<f32>().unwrap();
            worst = y.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
        });
        rows.push((format!("ONNX Runtime CPU ({threads} intra-op threads)"), ms, Some(worst)));
    }
    for precision in [Precision::F32, Precision::F16] {
        match plan.gpu(0, precision) {
            Ok(mut gpu) => {
                let mut out = Vec::new();
                let ms = time(50, || gpu.run(&input, ROWS, &mut out).expect("gpu run"));
                let worst = out.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                rows.push((format!("native GPU {precision:?} (copies included)"), ms, Some(worst)));
            }
            Err(why) => {
                println!("no GPU run ({precision:?}): {why}");
            }
        }
    }
    println!("16→1024→1024→2 MLP, batch {ROWS}; cpu: {}", cpu_model());
    println!("| executor | median ms | rows/s | largest difference from the CPU plan |");
    println!("|---|---:|---:|---:|");
    for (name, ms, worst) in rows {
        let diff = worst.map_or("—".to_string(), |w| format!("{w:.2e}"));
        println!("| {name} | {ms:.3} | {:.0} | {diff} |", ROWS as f64 / (ms / 1e3));
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
