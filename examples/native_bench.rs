//! Native executors against ONNX Runtime, measured in the same run, call by call interleaved so
//! that machine noise hits both alike (medians):
//! - the example ensemble at 1 and 1,024 rows: three direct ONNX Runtime calls plus the soft vote
//!   (the `ensemble` bench's baseline), the engine on native plans, the engine on ONNX Runtime
//!   (fused), and the three native plans alone;
//! - 500-tree LightGBM classifiers at batch 100 (`make native-bench-model` trains them): at most 31
//!   leaves per tree (LightGBM's default; 32-bit leaf sets) and at most 63 (64-bit), each native
//!   plan against its ONNX Runtime session, and at 1 row.
//!
//! `cargo run --release --example native_bench`
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../benches/support/direct.rs"]
mod direct;

use std::time::Instant;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use quorum::native::NativeModel;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2] * 1e6
}

fn main() {
    if std::env::var("QUORUM_BENCH_ONLY").as_deref() == Ok("engine") {
        // The native engine's 1,024-row batch alone (for a profiler).
        let home = tempfile::tempdir().unwrap();
        let engine = common::market_engine(home.path());
        let handle = engine.ensemble("market").unwrap();
        let schema = handle.feature_names().to_vec();
        let values = direct::rows(1024, &schema);
        let batch = quorum::Batch::row_major(&schema, &values).unwrap();
        let mut samples = Vec::new();
        for _ in 0..3000 {
            let t = Instant::now();
            std::hint::black_box(handle.predict_batch(&batch).unwrap());
            samples.push(t.elapsed().as_secs_f64());
        }
        println!("engine, native, 1,024 rows: {:.1} µs", median(samples));
        return;
    }
    if let Ok(model) = std::env::var("QUORUM_BENCH_ONLY") {
        // One model's line alone (for a profiler).
        let home = tempfile::tempdir().unwrap();
        let engine = common::market_engine(home.path());
        let schema = engine.ensemble("market").unwrap().feature_names().to_vec();
        let runtime = quorum::Runtime::new(quorum::RuntimeOptions::default()).unwrap();
        let bytes = std::fs::read(common::model_file(&model)).unwrap();
        let features = common::features_of(&model);
        let idx: Vec<usize> = features.iter().map(|f| schema.iter().position(|s| s == f).unwrap()).collect();
        let values = direct::rows(1024, &schema);
        let input: Vec<f32> = values.chunks_exact(schema.len()).flat_map(|r| idx.iter().map(|&i| r[i])).collect();
        compare_one(&runtime, &model, &bytes, &features, &input, 1024);
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let native = common::market_engine(home.path());
    let handle = native.ensemble("market").unwrap();
    assert!(native.replicas(None).iter().all(|r| r.executor.is_native()), "every example model runs natively");
    let onnxruntime =
        quorum::InferenceEngine::builder(home.path()).with_native(false).without_persistence().build().unwrap();
    let fused = onnxruntime.ensemble("market").unwrap();
    let schema = handle.feature_names().to_vec();
    let mut direct = direct::Direct::new(&native, &schema);
    let plans: Vec<(NativeModel, Vec<usize>)> = direct::MODELS
        .iter()
        .map(|m| {
            let bytes = std::fs::read(common::model_file(m)).unwrap();
            let features = common::features_of(m);
            let idx = features.iter().map(|f| schema.iter().position(|s| s == f).unwrap()).collect();
            (NativeModel::compile(&bytes, "probabilities", features.len()).unwrap(), idx)
        })
        .collect();
    println!("cpu: {}", cpu_model());
    println!("| rows | direct ONNX Runtime ×3 (µs) | engine, native (µs) | engine, ONNX Runtime fused (µs) | 3 native plans alone (µs) | engine native / direct |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for rows in [1usize, 1024] {
        let values = direct::rows(rows, &schema);
        let batch = quorum::Batch::row_major(&schema, &values).unwrap();
        let mut out = Vec::new();
        let (mut arena, mut input) = (Vec::new(), Vec::new());
        let mut samples: [Vec<f64>; 4] = Default::default();
        let n = (300_000 / rows).max(300);
        for _ in 0..n {
            let t = Instant::now();
            direct.predict(&values, rows, &mut out);
            samples[0].push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            std::hint::black_box(handle.predict_batch(&batch).unwrap());
            samples[1].push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            std::hint::black_box(fused.predict_batch(&batch).unwrap());
            samples[2].push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            for (plan, idx) in &plans {
                input.clear();
                for row in values.chunks_exact(schema.len()) {
                    input.extend(idx.iter().map(|&i| row[i]));
                }
                std::hint::black_box(plan.run(&input, rows, &mut arena));
            }
            samples[3].push(t.elapsed().as_secs_f64());
        }
        let [d, e, f, p] = samples.map(median);
        println!("| {rows} | {d:.2} | {e:.2} | {f:.2} | {p:.2} | {:.3} |", e / d);
    }
    per_model(&schema);
    lightgbm();
}

/// Each example model alone at 1,024 rows: its native plan against its ONNX Runtime session.
fn per_model(schema: &[String]) {
    let runtime = quorum::Runtime::new(quorum::RuntimeOptions::default()).unwrap();
    for m in direct::MODELS {
        let bytes = std::fs::read(common::model_file(m)).unwrap();
        let features = common::features_of(m);
        let idx: Vec<usize> = features.iter().map(|f| schema.iter().position(|s| s == f).unwrap()).collect();
        let values = direct::rows(1024, schema);
        let input: Vec<f32> = values.chunks_exact(schema.len()).flat_map(|r| idx.iter().map(|&i| r[i])).collect();
        compare_one(&runtime, m, &bytes, &features, &input, 1024);
    }
}

fn compare_one(runtime: &quorum::Runtime, name: &str, bytes: &[u8], features: &[String], input: &[f32], rows: usize) {
    let width = features.len();
    let plan = NativeModel::compile(bytes, "probabilities", width).unwrap();
    let mut session = Session::builder(runtime.environment())
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .with_intra_op_spinning(false)
        .unwrap()
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .unwrap()
        .commit_from_memory(bytes)
        .unwrap();
    let mut arena = Vec::new();
    let (mut ort_s, mut nat_s) = (Vec::new(), Vec::new());
    let mut worst = 0f32;
    let runs = std::env::var("QUORUM_BENCH_RUNS").map_or(1000, |n| n.parse().unwrap());
    for _ in 0..runs {
        let t = Instant::now();
        let tensor = TensorRef::from_array_view(([rows, width], input)).unwrap();
        let outputs = session.run(ort::inputs![tensor]).unwrap();
        let (_, expected) = outputs["probabilities"].try_extract_tensor::<f32>().unwrap();
        ort_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let got = plan.run(input, rows, &mut arena);
        nat_s.push(t.elapsed().as_secs_f64());
        worst = got.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
    }
    let (o, n) = (median(ort_s), median(nat_s));
    println!(
        "{name} batch {rows}: ONNX Runtime {o:.1} µs | native {n:.1} µs | speed-up {:.2}× | largest difference {worst:.2e}",
        o / n
    );
}

/// The 500-tree LightGBM models at batch 100 and at 1 row, when `make native-bench-model` has
/// written them.
fn lightgbm() {
    for name in ["lightgbm500", "lightgbm500-63"] {
        let dir = common::repo().join("target/quorum-models");
        let Ok(bytes) = std::fs::read(dir.join(format!("{name}.onnx"))) else {
            println!("{name}: skipped (run `make native-bench-model` to train it)");
            continue;
        };
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
        let features: Vec<String> =
            meta["features"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
        let width = features.len();
        let runtime = quorum::Runtime::new(quorum::RuntimeOptions::default()).unwrap();
        // Real rows: held-out days of the features it was trained on.
        let rows = 100;
        let values: Vec<f32> = common::holdout_features(rows)
            .iter()
            .flat_map(|f| features.iter().map(|n| f.get(n).unwrap()).collect::<Vec<f32>>())
            .collect();
        assert_eq!(values.len(), rows * width);
        compare_one(&runtime, name, &bytes, &features, &values, rows);
        compare_one(&runtime, name, &bytes, &features, &values[..width], 1);
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
