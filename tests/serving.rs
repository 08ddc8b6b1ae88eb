//! The production runtime: dynamic batching with deadlines, per-call timeouts, async predictions,
//! elastic replica pools with autoscaling, lazy loading and unloading under a memory budget, hot swap
//! of a member's version, and stale answers below quorum.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorum::engine::AutoscaleSettings;
use quorum::{
    BatchingOptions, EnsembleConfig, Error, ExecutionProvider, Fault, InferenceEngine, LoadPolicy, MemberSpec,
    ModelOptions, ModelRegistration, NonFinitePolicy, ProviderFallback,
};

/// The first `n` finite holdout rows in the market ensemble's schema order.
fn rows(engine: &InferenceEngine, n: usize) -> Vec<Vec<f32>> {
    let names = engine.ensemble("market").unwrap().feature_names();
    common::holdout_features(n).iter().map(|f| names.iter().map(|n| f.get(n).unwrap()).collect()).collect()
}

fn batching() -> ModelOptions {
    ModelOptions::default().with_batching(BatchingOptions { max_batch: 64, ..BatchingOptions::default() })
}

/// The market ensemble on ONNX Runtime replicas (native executors off: these tests are about the
/// replica pools and request queues that ONNX Runtime calls go through).
fn engine_with(home: &std::path::Path, options: ModelOptions) -> InferenceEngine {
    common::market_engine(home);
    InferenceEngine::builder(home)
        .without_persistence()
        .with_native(false)
        .with_default_model_options(options)
        .build()
        .unwrap()
}

#[test]
fn batched_predictions_equal_unbatched_ones_and_coalesce_under_contention() {
    let home = tempfile::tempdir().unwrap();
    let plain = engine_with(home.path(), ModelOptions::default());
    let data = rows(&plain, 64);
    let handle = plain.ensemble("market").unwrap();
    let expected: Vec<f32> = data.iter().map(|r| handle.predict_row(r).unwrap().prediction).collect();

    let batched = InferenceEngine::builder(home.path())
        .without_persistence()
        .with_native(false)
        .with_default_model_options(batching().with_replicas(1, 1))
        .build()
        .unwrap();
    // A slow call keeps the single replica busy, so the other threads' rows queue up behind it.
    batched.inject_fault("technical", Some(Fault::Slow(Duration::from_millis(2))));
    let handle = batched.ensemble("market").unwrap();
    let data = Arc::new(data);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (handle, data) = (handle.clone(), Arc::clone(&data));
            std::thread::spawn(move || {
                (0..data.len())
                    .filter(|i| i % 8 == t)
                    .map(|i| (i, handle.predict_row(&data[i]).unwrap()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (i, p) in t.join().unwrap() {
            assert!(!p.degraded, "{p:?}");
            // A batched GEMM may round differently from a one-row one.
            assert!((p.prediction - expected[i]).abs() < 1e-5, "row {i}: {} vs {}", p.prediction, expected[i]);
        }
    }
    let technical = &batched.replicas(Some("technical"))[0];
    assert!(technical.batches > 0, "{technical:?}");
    assert!(technical.batched_rows > technical.batches, "no two rows shared a call: {technical:?}");
}

#[test]
fn a_lone_caller_runs_inline_and_never_queues() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine_with(home.path(), batching());
    let handle = engine.ensemble("market").unwrap();
    for row in rows(&engine, 50) {
        assert!(!handle.predict_row(&row).unwrap().degraded);
    }
    for status in engine.replicas(None) {
        assert_eq!((status.batches, status.queued), (0, 0), "{status:?}");
    }
}

#[test]
fn deadlines_are_refused_rather_than_served_late() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine_with(home.path(), batching().with_replicas(1, 1));
    let handle = engine.ensemble("market").unwrap();
    let row = rows(&engine, 1).remove(0);
    let past = Instant::now() - Duration::from_millis(1);
    let err = handle.predict_row_by(&row, past).unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err}");
    assert_eq!(err.code(), "deadline_exceeded");
    // A generous deadline is met.
    assert!(handle.predict_row_by(&row, Instant::now() + Duration::from_secs(5)).is_ok());

    // With every call taking 20 ms, requests queued behind others cannot meet a 5 ms deadline.
    engine.inject_fault("fundamental", Some(Fault::Slow(Duration::from_millis(20))));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (handle, row) = (handle.clone(), row.clone());
            std::thread::spawn(move || handle.predict_row_by(&row, Instant::now() + Duration::from_millis(5)))
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let refused = results.iter().filter(|r| matches!(r, Err(Error::DeadlineExceeded { .. }))).count();
    assert!(refused > 0, "{results:?}");
    for r in &results {
        assert!(matches!(r, Ok(_) | Err(Error::DeadlineExceeded { .. })), "{r:?}");
    }
}

#[test]
fn a_member_timeout_cuts_off_a_slow_onnx_run_and_the_replica_stays_usable() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    // slow.onnx spends ~170 ms in 60 MatMuls before answering.
    let slow = common::repo().join("tests/fixtures/slow.onnx");
    engine.register_model(ModelRegistration::new("slow", slow, ["vix_chg_1d"])).unwrap();
    let members = ["technical", "fundamental", "slow"].map(|m| m.parse::<MemberSpec>().unwrap());
    engine.create_ensemble(EnsembleConfig::new("with-slow", members)).unwrap();
    let timeout = Duration::from_millis(20);
    let engine = InferenceEngine::builder(home.path())
        .without_persistence()
        .with_default_model_options(ModelOptions::default().with_timeout(Duration::from_secs(5)))
        .with_model_options("slow", ModelOptions::default().with_timeout(timeout).with_replicas(1, 1))
        .build()
        .unwrap();
    let handle = engine.ensemble("with-slow").unwrap();
    let f = &common::holdout_features(1)[0];
    for _ in 0..3 {
        let started = Instant::now();
        let p = handle.predict(f).unwrap();
        let elapsed = started.elapsed();
        assert!(p.degraded, "{p:?}");
        let slow = &p.model_contributions[2];
        assert!(slow.error.as_deref().unwrap().contains("timed out"), "{slow:?}");
        // Cut off well before the ~170 ms the model needs (ONNX Runtime checks between nodes).
        assert!(elapsed < Duration::from_millis(150), "{elapsed:?}");
        // The termination was real: the run ended near the timeout, not immediately on a stale flag.
        assert!(slow.latency_ms >= 15.0, "{slow:?}");
    }
    // The fast members also run under a (generous) timeout: their run options are re-armed each call.
    for _ in 0..100 {
        let p = handle.predict(f).unwrap();
        assert!(p.model_contributions[..2].iter().all(|c| c.error.is_none()), "{p:?}");
    }
}

#[test]
fn async_predictions_equal_sync_ones_and_fall_back_like_them() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine_with(home.path(), batching());
    let handle = engine.ensemble("market").unwrap();
    let data = rows(&engine, 100);
    let expected: Vec<f32> = data.iter().map(|r| handle.predict_row(r).unwrap().prediction).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let got: Vec<f32> = runtime.block_on(async {
        let tasks: Vec<_> = data
            .iter()
            .map(|row| {
                let future = handle.predict_row_async(row);
                tokio::spawn(future)
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap().unwrap().prediction);
        }
        out
    });
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-5, "{g} vs {e}");
    }
    // A failing member is skipped the same way; bad input is the same typed error.
    engine.inject_fault("sentiment", Some(Fault::Fail));
    let p = runtime.block_on(handle.predict_row_async(&data[0])).unwrap();
    assert!(p.degraded && p.skipped.iter().any(|s| &**s == "sentiment"), "{p:?}");
    let err = runtime.block_on(handle.predict_row_async(&data[0][1..])).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let f = &common::holdout_features(1)[0];
    assert!(runtime.block_on(handle.predict_async(f)).is_ok());
}

#[test]
fn the_autoscaler_grows_a_busy_pool_and_shrinks_it_when_quiet_without_failing_a_call() {
    let home = tempfile::tempdir().unwrap();
    common::market_engine(home.path());
    let engine = InferenceEngine::builder(home.path())
        .without_persistence()
        .with_native(false)
        .with_model_options(
            "technical",
            ModelOptions::default().with_replicas(1, 3).with_latency_target(Duration::from_millis(50)),
        )
        .with_autoscale_settings(AutoscaleSettings {
            interval: Duration::from_millis(20),
            quiet_for: Duration::from_millis(300),
        })
        .build()
        .unwrap();
    let handle = engine.ensemble("market").unwrap();
    assert_eq!(engine.replicas(Some("technical"))[0].replicas, 1);
    engine.inject_fault("technical", Some(Fault::Slow(Duration::from_millis(2))));
    let row = rows(&engine, 1).remove(0);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (handle, row, stop) = (handle.clone(), row.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let p = handle.predict_row(&row).unwrap();
                    assert!(!p.degraded, "{p:?}");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.replicas(Some("technical"))[0].replicas < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let grown = engine.replicas(Some("technical"))[0].clone();
    stop.store(true, Ordering::Relaxed);
    let served: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(grown.replicas, 3, "{grown:?}");
    assert!(served > 0);
    engine.inject_fault("technical", None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.replicas(Some("technical"))[0].replicas > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(engine.replicas(Some("technical"))[0].replicas, 1, "shrinks back to min");
    assert!(!handle.predict_row(&row).unwrap().degraded);
}

#[test]
fn lazy_models_load_on_first_use_and_idle_ones_unload_under_the_memory_budget() {
    let home = tempfile::tempdir().unwrap();
    common::market_engine(home.path());
    let engine = InferenceEngine::builder(home.path())
        .without_persistence()
        .with_default_model_options(ModelOptions::default().with_load_policy(LoadPolicy::Lazy).with_replicas(0, 2))
        .with_memory_budget(1)
        .with_autoscale_settings(AutoscaleSettings {
            interval: Duration::from_millis(20),
            quiet_for: Duration::from_secs(60),
        })
        .build()
        .unwrap();
    let handle = engine.ensemble("market").unwrap();
    assert!(engine.replicas(None).iter().all(|s| s.replicas == 0), "{:?}", engine.replicas(None));
    let row = rows(&engine, 1).remove(0);
    let first = handle.predict_row(&row).unwrap();
    assert!(!first.degraded);
    // Over a one-byte budget, every idle model is unloaded at the next tick...
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.replicas(None).iter().any(|s| s.replicas > 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(engine.replicas(None).iter().all(|s| s.replicas == 0 && s.estimated_bytes == 0));
    // ...and loads again on demand, answering the same.
    let again = handle.predict_row(&row).unwrap();
    assert_eq!(again.prediction, first.prediction);
    // Explicit unloading too.
    let _ = handle.predict_row(&row).unwrap();
    engine.unload_model("sentiment");
    assert!(!handle.predict_row(&row).unwrap().degraded);
}

#[test]
fn hot_swap_moves_traffic_to_the_new_default_without_failing_a_call() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine_with(home.path(), ModelOptions::default());
    let handle = engine.ensemble("market").unwrap();
    let row = rows(&engine, 1).remove(0);
    let features = common::features_of("technical");
    let v2 =
        engine.register_model(ModelRegistration::new("technical", common::model_file("technical"), features)).unwrap();
    assert_eq!(v2.version, 2);
    // Loaded ensembles keep what they loaded until told.
    assert_eq!(handle.predict_row(&row).unwrap().model_contributions[0].version, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (handle, row, stop) = (handle.clone(), row.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut versions = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let p = handle.predict_row(&row).expect("no call fails during a swap");
                    assert!(!p.degraded, "{p:?}");
                    versions.push(p.model_contributions[0].version);
                }
                versions
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(engine.set_default_version("technical", 2).unwrap(), vec!["market".to_string()]);
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let versions = t.join().unwrap();
        assert_eq!(versions.first(), Some(&1));
        assert_eq!(versions.last(), Some(&2));
    }
    assert_eq!(handle.predict_row(&row).unwrap().model_contributions[0].version, 2);
    // Version 1 is released once nothing uses it.
    let versions: Vec<u32> = engine.replicas(Some("technical")).iter().map(|s| s.version).collect();
    assert_eq!(versions, vec![2]);
}

#[test]
fn below_quorum_an_ensemble_can_serve_the_last_good_answer_marked_stale() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let members = ["technical", "fundamental", "sentiment"].map(|m| m.parse::<MemberSpec>().unwrap());
    let mut config = EnsembleConfig::new("stale-ok", members).with_non_finite(NonFinitePolicy::Refuse);
    config.serve_stale = true;
    engine.create_ensemble(config).unwrap();
    let handle = engine.ensemble("stale-ok").unwrap();
    let data = rows(&engine, 2);
    let good = handle.predict_row(&data[0]).unwrap();
    engine.inject_fault("technical", Some(Fault::Fail));
    engine.inject_fault("fundamental", Some(Fault::Fail));
    let stale = handle.predict_row(&data[0]).unwrap();
    assert!(stale.stale && stale.degraded, "{stale:?}");
    assert_eq!(stale.prediction, good.prediction);
    assert_ne!(stale.request_id, good.request_id);
    // A row never answered well has nothing to fall back on.
    let err = handle.predict_row(&data[1]).unwrap_err();
    assert!(matches!(err, Error::QuorumNotReached { .. }), "{err}");
    // Without serve_stale the same loss of quorum is an error.
    let err = engine.ensemble("market").unwrap().predict_row(&data[0]).unwrap_err();
    assert!(matches!(err, Error::QuorumNotReached { .. }), "{err}");
}

#[test]
fn bad_model_options_are_config_errors() {
    let home = tempfile::tempdir().unwrap();
    for options in [
        ModelOptions::default().with_replicas(3, 2),
        ModelOptions::default().with_replicas(0, 0),
        ModelOptions::default().with_replicas(0, 2),
        ModelOptions::default().with_timeout(Duration::ZERO),
        ModelOptions::default().with_batching(BatchingOptions { max_batch: 0, ..BatchingOptions::default() }),
    ] {
        let err =
            InferenceEngine::builder(home.path()).with_default_model_options(options.clone()).build().unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{options:?}: {err}");
    }
}

#[test]
fn replicas_sharing_one_copy_of_the_weights_answer_exactly_like_private_ones() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    // dense.onnx's first weight matrix (16 KiB) is large enough to be shared.
    let features = ["ret_1d", "ret_5d", "ret_20d", "vol_20d", "hl_range", "rsi_14", "vix", "vix_chg_1d"];
    let dense = common::repo().join("tests/fixtures/dense.onnx");
    engine.register_model(ModelRegistration::new("dense", dense, features)).unwrap();
    let members = ["technical", "dense"].map(|m| m.parse::<MemberSpec>().unwrap());
    engine.create_ensemble(EnsembleConfig::new("with-dense", members)).unwrap();
    let answers = |shared: bool| {
        let engine = InferenceEngine::builder(home.path())
            .without_persistence()
            .with_model_options("dense", ModelOptions::default().with_replicas(3, 3).with_shared_weights(shared))
            .build()
            .unwrap();
        let handle = engine.ensemble("with-dense").unwrap();
        let f = common::holdout_features(40);
        // Threads so that several replicas answer.
        let threads: Vec<_> = f
            .chunks(10)
            .map(|chunk| {
                let (handle, chunk) = (handle.clone(), chunk.to_vec());
                std::thread::spawn(move || {
                    chunk
                        .iter()
                        .map(|x| handle.predict(x).unwrap().model_contributions[1].prediction.unwrap())
                        .collect::<Vec<f32>>()
                })
            })
            .collect::<Vec<_>>();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect::<Vec<f32>>()
    };
    let (shared, private) = (answers(true), answers(false));
    assert_eq!(shared.len(), 40);
    for (s, p) in shared.iter().zip(&private) {
        assert!((s - p).abs() < 1e-6, "{s} vs {p}");
    }
}

#[test]
fn an_unavailable_gpu_provider_falls_back_to_cpu_visibly_or_fails_as_configured() {
    // This machine's ONNX Runtime (PyPI's CPU build) has no CUDA provider, whatever quorum's features.
    let home = tempfile::tempdir().unwrap();
    common::market_engine(home.path());
    let cuda = ExecutionProvider::Cuda { device_id: 0 };
    let engine = InferenceEngine::builder(home.path())
        .without_persistence()
        .with_model_options(
            "technical",
            ModelOptions::default().with_execution_provider(cuda.clone(), ProviderFallback::Cpu),
        )
        .build()
        .unwrap();
    let handle = engine.ensemble("market").unwrap();
    assert!(!handle.predict(&common::holdout_features(1)[0]).unwrap().degraded);
    let status = &engine.replicas(Some("technical"))[0];
    assert_eq!(status.provider, "cuda");
    let reason = status.provider_fallback.as_deref().unwrap();
    assert!(reason.contains("cuda"), "{reason}");
    assert!(engine.replicas(Some("fundamental"))[0].provider_fallback.is_none());

    let strict = InferenceEngine::builder(home.path())
        .without_persistence()
        .with_model_options("technical", ModelOptions::default().with_execution_provider(cuda, ProviderFallback::Fail))
        .build()
        .unwrap();
    let err = strict.ensemble("market").unwrap_err();
    assert!(matches!(err, Error::ModelLoad { .. }) && err.to_string().contains("cuda"), "{err}");
    // The JSON form the bindings use.
    let options: ModelOptions =
        serde_json::from_str(r#"{"provider": {"kind": "tensor_rt", "fp16": true}, "provider_fallback": "fail"}"#)
            .unwrap();
    assert_eq!(
        options,
        ModelOptions::default().with_execution_provider(
            ExecutionProvider::TensorRt { device_id: 0, fp16: true, int8: false, engine_cache: None },
            ProviderFallback::Fail
        )
    );
}

#[test]
fn a_flood_of_async_requests_beyond_the_queue_bound_is_refused_as_overloaded() {
    let home = tempfile::tempdir().unwrap();
    let bounded = ModelOptions::default()
        .with_batching(BatchingOptions { max_batch: 64, max_queued: 500, ..BatchingOptions::default() })
        .with_replicas(1, 1);
    let engine = engine_with(home.path(), bounded);
    // Each call of the technical model takes 5 ms (64 rows): its queue fills while the flood arrives.
    engine.inject_fault("technical", Some(Fault::Slow(Duration::from_millis(5))));
    let handle = engine.ensemble("market").unwrap();
    let row = rows(&engine, 1).remove(0);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    const FLOOD: usize = 100_000;
    let (ok, overloaded, other, peak) = runtime.block_on(async {
        let tasks: Vec<_> = (0..FLOOD).map(|_| tokio::spawn(handle.predict_row_async(&row))).collect();
        // While they are outstanding, no model queues more than its bound.
        let peak = engine.replicas(None).iter().map(|r| r.queued).max().unwrap_or(0);
        let (mut ok, mut overloaded, mut other) = (0, 0, Vec::new());
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(Error::Overloaded { limit, .. }) => {
                    assert_eq!(limit, 500);
                    overloaded += 1
                }
                Err(e) => other.push(e.to_string()),
            }
        }
        (ok, overloaded, other, peak)
    });
    assert!(other.is_empty(), "{} other errors, first: {:?}", other.len(), other.first());
    assert_eq!(ok + overloaded, FLOOD);
    assert!(ok >= 500 && overloaded > 0, "{ok} answered, {overloaded} refused");
    assert!(peak <= 500, "a queue held {peak} requests");
    assert_eq!(Error::Overloaded { what: "m".into(), queued: 1, limit: 1 }.code(), "overloaded");
    // The engine still answers once the flood is over.
    engine.inject_fault("technical", None);
    assert!(handle.predict_row(&row).is_ok());
}
