//! Issue 22's goals, measured in one run (`make exporters-bench`):
//!
//! 1. A classifier exported with its ZipMap costs what the same model exported without it: each pair
//!    (skl2onnx logistic regression, onnxmltools LightGBM) as a one-member ensemble, single row and
//!    batch 64, timed call by call in alternation, on ONNX Runtime and on the engine's default
//!    executor (native where the model compiles).
//! 2. A model whose batch is fixed to one row, under 64 concurrent single-row callers with batching
//!    on (the queue splits every batch into one-row calls), against the same model called inline by
//!    as many threads as the machine has cores, batching off: throughput, p99 and failures.
//!
//! Figures are medians (part 1) or totals over a fixed count (part 2); compare them only within one
//! run.
#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use quorum::{
    Batch, BatchingOptions, EnsembleConfig, EnsembleHandle, InferenceEngine, MemberSpec, ModelOptions,
    ModelRegistration,
};

const FEATURES: [&str; 3] = ["ret_1d", "ret_5d", "vix"];
const PAIRS: [(&str, &str); 2] = [("zipmap_int", "zipmap_int_plain"), ("zipmap_lightgbm", "zipmap_lightgbm_plain")];

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo().join(format!("tests/fixtures/exporters/{name}.onnx"))
}

fn rows(n: usize) -> Vec<f32> {
    common::holdout_features(n).iter().flat_map(|f| FEATURES.map(|name| f.get(name).unwrap())).collect()
}

/// An engine over `home` (models already registered there) with one one-member ensemble per model.
fn alone(engine: &InferenceEngine, name: &str) -> EnsembleHandle {
    let ensemble = format!("{name}_alone");
    if engine.ensemble(&ensemble).is_err() {
        engine.create_ensemble(EnsembleConfig::new(&ensemble, [name.parse::<MemberSpec>().unwrap()])).unwrap();
    }
    engine.ensemble(&ensemble).unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn zipmap_vs_plain(home: &std::path::Path) {
    let names: Vec<String> = FEATURES.map(String::from).to_vec();
    for (executor, native) in [("onnxruntime", false), ("default executor", true)] {
        let engine = InferenceEngine::builder(home).without_persistence().with_native(native).build().unwrap();
        for rows_per_call in [1usize, 64] {
            let values = rows(rows_per_call);
            let batch = Batch::row_major(&names, &values).unwrap();
            for (zipmap, plain) in PAIRS {
                let (z, p) = (alone(&engine, zipmap), alone(&engine, plain));
                let (mut zs, mut ps) = (Vec::new(), Vec::new());
                let n = (100_000 / rows_per_call).clamp(2_000, 20_000);
                for _ in 0..n {
                    let t = Instant::now();
                    std::hint::black_box(z.predict_batch(&batch).unwrap());
                    zs.push(t.elapsed().as_secs_f64() * 1e6);
                    let t = Instant::now();
                    std::hint::black_box(p.predict_batch(&batch).unwrap());
                    ps.push(t.elapsed().as_secs_f64() * 1e6);
                }
                let (zm, pm) = (median(zs), median(ps));
                println!(
                    "zipmap vs plain, {executor}, {rows_per_call} row(s): {zipmap} {zm:.2} µs | {plain} {pm:.2} µs | ratio {:.3}",
                    zm / pm
                );
            }
        }
    }
}

/// Runs `calls` single-row predictions spread over `threads` threads; (rows/s, p99 ms, failures).
fn hammer(handle: &EnsembleHandle, threads: usize, calls: usize, values: &Arc<Vec<f32>>) -> (f64, f64, usize) {
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let latencies: Vec<f64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (handle, values, failures) = (handle.clone(), Arc::clone(values), Arc::clone(&failures));
                s.spawn(move || {
                    let rows = values.len() / 3;
                    let mut latencies = Vec::with_capacity(calls / threads + 1);
                    for i in (t..calls).step_by(threads) {
                        let row = &values[(i % rows) * 3..(i % rows) * 3 + 3];
                        let t0 = Instant::now();
                        if handle.predict_row(row).is_err() {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        latencies.push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                    latencies
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
    (sorted.len() as f64 / elapsed, p99, failures.load(Ordering::Relaxed))
}

fn fixed_batch_under_concurrency(home: &std::path::Path) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let values = Arc::new(rows(256));
    let calls = 200_000;
    // Batching off, called inline by one thread per core: the baseline.
    let inline = InferenceEngine::builder(home).without_persistence().with_native(false).build().unwrap();
    let inline = alone(&inline, "fixed_batch1");
    let batching = ModelOptions::default().with_batching(BatchingOptions::default());
    let queued = InferenceEngine::builder(home)
        .without_persistence()
        .with_native(false)
        .with_default_model_options(batching)
        .build()
        .unwrap();
    let queued = alone(&queued, "fixed_batch1");
    hammer(&inline, cores, 10_000, &values); // warm-up
    hammer(&queued, 64, 10_000, &values);
    let (base, base_p99, base_failed) = hammer(&inline, cores, calls, &values);
    let (rate, p99, failed) = hammer(&queued, 64, calls, &values);
    println!(
        "fixed batch 1 on onnxruntime: inline on {cores} threads {base:.0} rows/s (p99 {base_p99:.3} ms, {base_failed} failed) | \
         64 callers, batching on {rate:.0} rows/s (p99 {p99:.3} ms, {failed} failed) | ratio {:.3}",
        rate / base
    );
}

fn main() {
    let home = tempfile::tempdir().unwrap();
    let engine = InferenceEngine::builder(home.path()).without_persistence().build().unwrap();
    for (zipmap, plain) in PAIRS {
        for name in [zipmap, plain] {
            engine.register_model(ModelRegistration::new(name, fixture(name), FEATURES)).unwrap();
        }
    }
    engine.register_model(ModelRegistration::new("fixed_batch1", fixture("fixed_batch1"), FEATURES)).unwrap();
    drop(engine);
    let part = std::env::args().nth(1).unwrap_or_default();
    if part.is_empty() || part == "zipmap" {
        zipmap_vs_plain(home.path());
    }
    if part.is_empty() || part == "fixed-batch" {
        fixed_batch_under_concurrency(home.path());
    }
}
