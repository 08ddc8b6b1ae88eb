//! The three-model example ensemble through the engine versus the same three models called directly
//! through ort with the same arithmetic, single row and 1024-row batch, in one run.
//!
//! `cargo bench --bench ensemble` (or `make bench`). Goal: engine overhead over direct ort ≤ 10% at the
//! median. The `threads/*` group measures the session threading choice (see src/runtime.rs).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/direct.rs"]
mod direct;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use direct::{rows, Direct};
use quorum::{Batch, InferenceEngine, RuntimeOptions};

fn bench(c: &mut Criterion) {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let handle = engine.ensemble("market").unwrap();
    let schema = handle.feature_names().to_vec();
    let mut direct = Direct::new(&engine, &schema);
    let features = common::holdout_features(1).remove(0);
    let one = rows(1, &schema);
    let batch_values = rows(1024, &schema);
    let batch = Batch::row_major(&schema, &batch_values).unwrap();
    let mut out = Vec::new();
    // The example models run on native plans by default; the same ensemble on ONNX Runtime, fused
    // into one call, and with the members run one by one.
    assert!(!handle.fusion().native.is_empty());
    let ort = |fusion: bool| {
        let engine = InferenceEngine::builder(home.path()).with_native(false).with_fusion(fusion).without_persistence();
        engine.build().unwrap().ensemble("market").unwrap()
    };
    let (fused, unfused) = (ort(true), ort(false));
    assert!(fused.fusion().fused && !unfused.fusion().fused);

    // The engine and the baseline must compute the same thing.
    direct.predict(&one, 1, &mut out);
    let engine_one = handle.predict_row(&one).unwrap();
    assert!((engine_one.prediction - out[0].0).abs() < 1e-6 && (engine_one.confidence - out[0].1).abs() < 1e-6);

    let mut single = c.benchmark_group("single_row");
    single.throughput(Throughput::Elements(1));
    single.bench_function("direct_ort", |b| b.iter(|| direct.predict(black_box(&one), 1, &mut out)));
    single
        .bench_function("engine_predict_named", |b| b.iter(|| engine.predict("market", black_box(&features)).unwrap()));
    single.bench_function("engine_handle_predict_row", |b| b.iter(|| handle.predict_row(black_box(&one)).unwrap()));
    single.bench_function("engine_onnxruntime_fused_predict_row", |b| {
        b.iter(|| fused.predict_row(black_box(&one)).unwrap())
    });
    single.bench_function("engine_unfused_predict_row", |b| b.iter(|| unfused.predict_row(black_box(&one)).unwrap()));
    single.finish();

    let mut batched = c.benchmark_group("batch_1024");
    batched.throughput(Throughput::Elements(1024));
    batched.bench_function("direct_ort", |b| b.iter(|| direct.predict(black_box(&batch_values), 1024, &mut out)));
    batched.bench_function("engine_predict_batch", |b| b.iter(|| handle.predict_batch(black_box(&batch)).unwrap()));
    batched.bench_function("engine_onnxruntime_fused_predict_batch", |b| {
        b.iter(|| fused.predict_batch(black_box(&batch)).unwrap())
    });
    batched.bench_function("engine_unfused_predict_batch", |b| {
        b.iter(|| unfused.predict_batch(black_box(&batch)).unwrap())
    });
    batched.finish();

    // Threading: one caller, the engine's choice (1 intra-op thread, no spinning) against a 2-thread
    // spinning pool per session (ORT's usual setup on this 2-core machine).
    let mut threads = c.benchmark_group("threads");
    for (label, intra, spin) in [("intra1_nospin", 1, false), ("intra2_spin", 2, true), ("intra2_nospin", 2, false)] {
        let engine = InferenceEngine::builder(home.path())
            .with_native(false)
            .with_runtime_options(RuntimeOptions::default().with_intra_threads(intra).with_spinning(spin))
            .without_tracking()
            .without_persistence()
            .build()
            .unwrap();
        let handle = engine.ensemble("market").unwrap();
        threads.bench_with_input(BenchmarkId::new("single_row", label), &one, |b, row| {
            b.iter(|| handle.predict_row(row).unwrap())
        });
        threads.bench_with_input(BenchmarkId::new("batch_1024", label), &batch, |b, batch| {
            b.iter(|| handle.predict_batch(batch).unwrap())
        });
    }
    threads.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1)).sample_size(60);
    targets = bench
}
criterion_main!(benches);
