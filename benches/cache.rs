//! Prediction cache: the map's hit latency for quick_cache against moka with 1 and 2 threads (how
//! the backing crate was chosen), and an engine prediction served from the cache against one computed.
//! `cargo bench --bench cache`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use quorum::{CacheOptions, InferenceEngine};

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    ensemble: u64,
    epoch: u64,
    values: Box<[u64]>,
}

fn keys() -> Vec<Key> {
    (0..1000u64).map(|i| Key { ensemble: 1, epoch: 0, values: (0..21).map(|j| i * 31 + j).collect() }).collect()
}

/// Mean time per `get` on this thread while `threads - 1` other threads do the same.
fn contended(threads: usize, iters: u64, get: impl Fn(&Key) -> bool + Sync, keys: &[Key]) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let get = &get;
            s.spawn(move || {
                for i in 0..iters as usize {
                    assert!(get(black_box(&keys[(i * 7 + t) % keys.len()])));
                }
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let quick: quick_cache::sync::Cache<Key, Arc<Vec<f32>>> = quick_cache::sync::Cache::new(10_000);
    let moka: moka::sync::Cache<Key, Arc<Vec<f32>>> =
        moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(60)).build();
    for k in &keys {
        quick.insert(k.clone(), Arc::new(vec![0.5; 3]));
        moka.insert(k.clone(), Arc::new(vec![0.5; 3]));
    }
    let mut group = c.benchmark_group("cache_hit");
    for threads in [1, 2] {
        group.bench_function(format!("quick_cache/{threads}_threads"), |b| {
            b.iter_custom(|iters| contended(threads, iters, |k| quick.get(k).is_some(), &keys))
        });
        group.bench_function(format!("moka/{threads}_threads"), |b| {
            b.iter_custom(|iters| contended(threads, iters, |k| moka.get(k).is_some(), &keys))
        });
    }
    group.finish();

    let home = tempfile::tempdir().unwrap();
    common::market_engine(home.path());
    let engine = InferenceEngine::builder(home.path())
        .with_prediction_cache(CacheOptions { ttl: Duration::from_secs(3600), ..CacheOptions::default() })
        .without_tracking()
        .without_persistence()
        .build()
        .unwrap();
    let uncached = InferenceEngine::builder(home.path()).without_tracking().without_persistence().build().unwrap();
    let f = common::holdout_features(1).remove(0);
    assert!(!engine.predict("market", &f).unwrap().cached && engine.predict("market", &f).unwrap().cached);
    let mut group = c.benchmark_group("engine_predict");
    group.bench_function("cache_hit", |b| b.iter(|| engine.predict("market", black_box(&f)).unwrap()));
    group.bench_function("no_cache", |b| b.iter(|| uncached.predict("market", black_box(&f)).unwrap()));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(40);
    targets = bench
}
criterion_main!(benches);
