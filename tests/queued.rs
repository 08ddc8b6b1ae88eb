//! The queued path (per-ensemble dynamic batching): concurrent requests for one ensemble coalesce
//! into one batch that runs through the fused model, and deadlines, breakers, fallbacks, quorum,
//! stale answers and fault isolation behave on it as on the inline path. Asynchronous requests take
//! the queued path unless one finds the ensemble idle and quick, so each test drives many at once.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use quorum::{
    BatchingOptions, BreakerOptions, BreakerState, EnsembleConfig, Error, Fault, InferenceEngine, MemberSpec,
    ModelOptions, ModelRegistration, NonFinitePolicy, Prediction, SlidingWindow,
};

/// The market ensemble on ONNX Runtime (fused: native plans are never fused), members batching.
fn engine(home: &std::path::Path, breaker: BreakerOptions) -> InferenceEngine {
    common::market_engine(home);
    InferenceEngine::builder(home)
        .without_persistence()
        .with_native(false)
        .with_circuit_breaker(breaker)
        .with_default_model_options(
            ModelOptions::default().with_batching(BatchingOptions { max_batch: 64, ..BatchingOptions::default() }),
        )
        .build()
        .unwrap()
}

fn rows(engine: &InferenceEngine, ensemble: &str, n: usize) -> Vec<Vec<f32>> {
    let names = engine.ensemble(ensemble).unwrap().feature_names();
    common::holdout_features(n).iter().map(|f| names.iter().map(|n| f.get(n).unwrap()).collect()).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap()
}

/// Every row of `data` predicted at once by asynchronous callers.
fn all_at_once(engine: &InferenceEngine, ensemble: &str, data: &[Vec<f32>]) -> Vec<quorum::Result<Prediction>> {
    let handle = engine.ensemble(ensemble).unwrap();
    runtime().block_on(async {
        let tasks: Vec<_> = data.iter().map(|row| tokio::spawn(handle.predict_row_async(row))).collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

fn quick_breaker() -> BreakerOptions {
    BreakerOptions {
        window: SlidingWindow::Count(10),
        minimum_calls: 5,
        wait_in_open: Duration::from_secs(60),
        half_open_calls: 2,
        ..BreakerOptions::default()
    }
}

#[test]
fn queued_requests_run_together_through_the_fused_model_and_answer_as_inline_calls_do() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path(), BreakerOptions::default());
    assert!(engine.ensemble("market").unwrap().fusion().fused);
    let data = rows(&engine, "market", 300);
    let handle = engine.ensemble("market").unwrap();
    let inline: Vec<Prediction> = data.iter().map(|r| handle.predict_row(r).unwrap()).collect();
    let queued = all_at_once(&engine, "market", &data);
    for (i, (q, p)) in queued.iter().zip(&inline).enumerate() {
        let q = q.as_ref().unwrap();
        assert!(q.fused && !q.degraded, "row {i}: {q:?}");
        // A batched GEMM may round differently from a one-row one.
        assert!((q.prediction - p.prediction).abs() < 1e-5, "row {i}: {} vs {}", q.prediction, p.prediction);
        assert!((q.confidence - p.confidence).abs() < 1e-5, "row {i}");
        for (a, b) in q.model_contributions.iter().zip(&p.model_contributions) {
            assert_eq!((&a.model, a.weight), (&b.model, b.weight));
        }
        assert_ne!(q.request_id, p.request_id);
    }
    // Each request has its own id, tracked like an inline one.
    let mut ids: Vec<u64> = queued.iter().map(|q| q.as_ref().unwrap().request_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), data.len());
    engine.record_outcome(ids[0], 1.0).unwrap();
    // 300 requests at once made fewer, larger batches: one fused run carries several rows (a
    // request that found the ensemble idle ran inline, so not every row is in a batch).
    let technical = &engine.replicas(Some("technical"))[0];
    assert!(technical.batches > 0 && technical.batched_rows <= 300, "{technical:?}");
    assert!(technical.batched_rows > technical.batches, "no two requests shared a batch: {technical:?}");
    let metrics = engine.metrics_text();
    let count = metrics
        .lines()
        .find(|l| l.starts_with("quorum_queue_batch_rows_count{ensemble=\"market\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(count, Some(technical.batches as f64), "{metrics}");
}

/// The first sample of `name` (with its labels) in the metrics text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn async_requests_from_several_threads_answer_as_inline_calls_do_and_every_batch_is_in_the_queue_metrics() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path(), BreakerOptions::default());
    let data = rows(&engine, "market", 64);
    let handle = engine.ensemble("market").unwrap();
    let inline: Vec<Prediction> = data.iter().map(|r| handle.predict_row(r).unwrap()).collect();
    // Each thread's requests queue on that thread's queue (one per core): four threads cover them.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                for _ in 0..5 {
                    let answers = runtime.block_on(async {
                        let tasks: Vec<_> =
                            data.iter().map(|row| tokio::spawn(handle.predict_row_async(row))).collect();
                        let mut out = Vec::new();
                        for t in tasks {
                            out.push(t.await.unwrap().unwrap());
                        }
                        out
                    });
                    for (i, (q, p)) in answers.iter().zip(&inline).enumerate() {
                        assert!((q.prediction - p.prediction).abs() < 1e-5, "row {i}: {q:?} vs {p:?}");
                    }
                }
            });
        }
    });
    let technical = &engine.replicas(Some("technical"))[0];
    assert!(technical.batches > 0 && technical.queued == 0, "{technical:?}");
    let text = engine.metrics_text();
    let e = "{ensemble=\"market\",version=\"1\"}";
    assert_eq!(metric(&text, &format!("quorum_queue_batch_rows_count{e}")), Some(technical.batches as f64), "{text}");
    assert_eq!(
        metric(&text, &format!("quorum_queue_batch_rows_sum{e}")),
        Some(technical.batched_rows as f64),
        "{text}"
    );
    assert_eq!(metric(&text, &format!("quorum_queue_depth{e}")), Some(0.0), "{text}");
}

#[test]
fn on_the_queued_path_a_failing_member_is_skipped_and_trips_its_breaker_without_touching_the_others() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path(), quick_breaker());
    let data = rows(&engine, "market", 8);
    engine.inject_fault("sentiment", Some(Fault::Fail));
    // A batch is one call of each member, for its breaker as for its metrics: five waves make at
    // least five failed calls.
    for _ in 0..5 {
        for result in all_at_once(&engine, "market", &data) {
            let p = result.unwrap();
            assert!(p.degraded && !p.fused, "{p:?}");
            assert_eq!(p.skipped.iter().map(|s| &**s).collect::<Vec<_>>(), ["sentiment"]);
            assert!(p.model_contributions.iter().filter(|c| &*c.model != "sentiment").all(|c| c.error.is_none()));
        }
    }
    assert_eq!(engine.breaker_state("sentiment"), vec![(1, BreakerState::Open)]);
    assert_eq!(engine.breaker_state("technical"), vec![(1, BreakerState::Closed)]);
    let p = all_at_once(&engine, "market", &data[..1]).remove(0).unwrap();
    let c = p.model_contributions.iter().find(|c| &*c.model == "sentiment").unwrap();
    assert!(c.error.as_deref().unwrap().contains("circuit breaker is open"), "{c:?}");
    // A panicking member is isolated the same way: the batch answers, the dispatcher lives on.
    let home = tempfile::tempdir().unwrap();
    let engine = self::engine(home.path(), quick_breaker());
    // Printing the first panic's backtrace (RUST_BACKTRACE in CI) can take longer than the default
    // latency budget, which would then skip the members after it.
    let members = ["technical", "fundamental", "sentiment"].map(|m| m.parse().unwrap()).to_vec();
    let patient = EnsembleConfig::new("patient", members).with_latency_budget(Duration::from_secs(60));
    engine.create_ensemble(patient.with_weights(vec![0.4, 0.4, 0.2])).unwrap();
    engine.inject_fault("fundamental", Some(Fault::Panic));
    for result in all_at_once(&engine, "patient", &data) {
        let p = result.unwrap();
        assert!(p.skipped.iter().any(|s| &**s == "fundamental"), "{p:?}");
        let c = p.model_contributions.iter().find(|c| &*c.model == "fundamental").unwrap();
        assert!(c.error.as_deref().unwrap().contains("panic"), "{c:?}");
    }
}

#[test]
fn on_the_queued_path_a_fallback_model_stands_in_for_a_failed_member() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path(), BreakerOptions::default());
    let features = common::features_of("technical");
    engine
        .register_model(ModelRegistration::new("technical-backup", common::model_file("technical"), features))
        .unwrap();
    let mut technical: MemberSpec = "technical".parse().unwrap();
    technical.fallback = Some("technical-backup".into());
    let members = vec![technical, "fundamental".parse().unwrap(), "sentiment".parse().unwrap()];
    engine.create_ensemble(EnsembleConfig::new("backed", members).with_weights(vec![0.4, 0.4, 0.2])).unwrap();
    let data = rows(&engine, "backed", 30);
    let normal = all_at_once(&engine, "backed", &data);
    engine.inject_fault("technical", Some(Fault::Fail));
    for (p, n) in all_at_once(&engine, "backed", &data).into_iter().zip(normal) {
        let (p, n) = (p.unwrap(), n.unwrap());
        assert!(p.degraded && p.skipped.is_empty(), "{p:?}");
        assert_eq!(p.model_contributions[0].fallback.as_deref(), Some("technical-backup"));
        assert!((p.prediction - n.prediction).abs() < 1e-5, "the same model, registered twice");
    }
}

#[test]
fn on_the_queued_path_below_quorum_a_request_gets_its_rows_last_good_answer_or_quorum_not_reached() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path(), BreakerOptions::default());
    let members = ["technical", "fundamental", "sentiment"].map(|m| m.parse::<MemberSpec>().unwrap());
    let mut config = EnsembleConfig::new("stale-ok", members).with_non_finite(NonFinitePolicy::Refuse);
    config.serve_stale = true;
    engine.create_ensemble(config).unwrap();
    let data = rows(&engine, "stale-ok", 20);
    // The first ten rows were answered well once; the other ten never were.
    let good: Vec<Prediction> = all_at_once(&engine, "stale-ok", &data[..10]).into_iter().map(Result::unwrap).collect();
    engine.inject_fault("technical", Some(Fault::Fail));
    engine.inject_fault("fundamental", Some(Fault::Fail));
    let results = all_at_once(&engine, "stale-ok", &data);
    for (i, result) in results.iter().enumerate() {
        match (i < 10, result) {
            (true, Ok(p)) => {
                assert!(p.stale && p.degraded, "{p:?}");
                assert_eq!(p.prediction, good[i].prediction, "row {i} got another row's answer");
            }
            (false, Err(Error::QuorumNotReached { succeeded: 1, required: 2, .. })) => {}
            (_, other) => panic!("row {i}: {other:?}"),
        }
    }
    // Without serve_stale the loss of quorum is every request's error.
    for result in all_at_once(&engine, "market", &rows(&engine, "market", 5)) {
        assert!(matches!(result, Err(Error::QuorumNotReached { .. })), "{result:?}");
    }
}

#[test]
fn on_the_queued_path_a_request_past_its_deadline_is_refused_rather_than_served_late() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path(), BreakerOptions::default());
    let handle = engine.ensemble("market").unwrap();
    let row = rows(&engine, "market", 1).remove(0);
    let rt = runtime();
    let past = Instant::now() - Duration::from_millis(1);
    let err = rt.block_on(handle.predict_row_async_by(&row, past)).unwrap_err();
    assert_eq!(err.code(), "deadline_exceeded");
    assert!(rt.block_on(handle.predict_row_async_by(&row, Instant::now() + Duration::from_secs(5))).is_ok());
    // One slow batch (20 ms) sets the estimate at once: 16 requests with 5 ms to live are refused
    // when their batch forms, not answered late.
    engine.inject_fault("fundamental", Some(Fault::Slow(Duration::from_millis(20))));
    assert!(rt.block_on(handle.predict_row_async(&row)).is_ok(), "a first slow batch sets the estimate");
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|_| tokio::spawn(handle.predict_row_async_by(&row, Instant::now() + Duration::from_millis(5))))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for r in &results {
        assert!(matches!(r, Err(Error::DeadlineExceeded { .. })), "{r:?}");
    }
    // A batch slower than the estimate (50 ms against 20) overruns a 30 ms deadline: the late
    // answer is refused too.
    engine.inject_fault("fundamental", Some(Fault::Slow(Duration::from_millis(50))));
    let late = rt.block_on(handle.predict_row_async_by(&row, Instant::now() + Duration::from_millis(30)));
    assert!(matches!(late, Err(Error::DeadlineExceeded { .. })), "{late:?}");
    engine.inject_fault("fundamental", None);
    assert!(rt.block_on(handle.predict_row_async_by(&row, Instant::now() + Duration::from_secs(5))).is_ok());
}

#[test]
fn synchronous_callers_under_contention_share_batches_and_a_lone_one_runs_inline() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path(), BreakerOptions::default());
    let handle = engine.ensemble("market").unwrap();
    let data = rows(&engine, "market", 64);
    for row in &data {
        assert!(handle.predict_row(row).unwrap().fused);
    }
    assert_eq!(engine.replicas(Some("technical"))[0].batches, 0, "a lone caller queued");
    // A slow member holds the inline caller, so the other threads' requests queue behind it.
    engine.inject_fault("technical", Some(Fault::Slow(Duration::from_millis(2))));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (handle, data) = (handle.clone(), data.clone());
            std::thread::spawn(move || {
                (0..data.len()).filter(|i| i % 8 == t).filter(|&i| handle.predict_row(&data[i]).is_ok()).count()
            })
        })
        .collect();
    assert_eq!(threads.into_iter().map(|t| t.join().unwrap()).sum::<usize>(), 64);
    let technical = &engine.replicas(Some("technical"))[0];
    assert!(technical.batched_rows > technical.batches, "no two requests shared a batch: {technical:?}");
}

#[test]
fn a_lone_async_caller_queues_once_the_ensembles_runs_are_slow() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path(), BreakerOptions::default());
    let handle = engine.ensemble("market").unwrap();
    let row = rows(&engine, "market", 1).remove(0);
    let rt = runtime();
    // 2 ms a run is far over what may run on an executor's thread: after one such run every lone
    // asynchronous request goes to a dispatcher, one batch each.
    engine.inject_fault("technical", Some(Fault::Slow(Duration::from_millis(2))));
    handle.predict_row(&row).unwrap();
    let before = engine.replicas(Some("technical"))[0].batches;
    for _ in 0..5 {
        assert!(rt.block_on(handle.predict_row_async(&row)).is_ok());
    }
    assert_eq!(engine.replicas(Some("technical"))[0].batches, before + 5);
}

#[test]
fn an_async_request_future_is_at_most_512_bytes() {
    // Every outstanding request holds one (a flood of 100,000 holds that many), and each `.await`
    // moves it: a future awaited inside another is held twice (744 bytes before it was one).
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path(), BreakerOptions::default());
    let handle = engine.ensemble("market").unwrap();
    let row = rows(&engine, "market", 1).remove(0);
    let future = handle.predict_row_async(&row);
    let size = std::mem::size_of_val(&future);
    assert!(size <= 512, "{size} bytes");
    drop(future);
}

/// Polls `future` once, with a waker that does nothing (the test polls again itself).
fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

fn ready<T>(poll: Poll<T>, what: &str) -> T {
    match poll {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("{what}: still pending"),
    }
}

/// The technical member's (batches, rows) so far.
fn batches(engine: &InferenceEngine) -> (u64, u64) {
    let r = &engine.replicas(Some("technical"))[0];
    (r.batches, r.batched_rows)
}

/// Polls `future` until it is ready (a dispatcher answers it on its own thread).
fn wait<F: Future>(mut future: Pin<&mut F>) -> F::Output {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Poll::Ready(value) = poll_once(future.as_mut()) {
            return value;
        }
        assert!(Instant::now() < end, "a queued request was never served");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The market ensemble on ONNX Runtime (fused) with `batching` on its members, where an
/// asynchronous request may run on its caller's thread however long the ensemble's runs take (so
/// that the choice does not depend on how fast a debug build on a busy machine runs them).
fn engine_inline_async(home: &std::path::Path, batching: Option<BatchingOptions>) -> InferenceEngine {
    common::market_engine(home);
    let options = batching.map_or_else(ModelOptions::default, |b| ModelOptions::default().with_batching(b));
    InferenceEngine::builder(home)
        .without_persistence()
        .with_native(false)
        .with_default_model_options(options)
        .with_async_inline_limit(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// The queue's first use starts its dispatcher, which serves whatever it finds queued when it
/// starts: a first round of queued requests, so that the dispatcher is parked before the test's.
fn park_the_dispatcher(handle: &quorum::EnsembleHandle, data: &[Vec<f32>]) {
    let mut first_round: Vec<_> = data[..2].iter().map(|r| Box::pin(handle.predict_row_async(r))).collect();
    first_round.iter_mut().for_each(|f| drop(wait(f.as_mut())));
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn async_requests_made_together_are_served_as_one_batch_by_the_first_of_them_on_its_own_thread() {
    let home = tempfile::tempdir().unwrap();
    let batching = BatchingOptions { max_batch: 64, ..BatchingOptions::default() };
    let engine = engine_inline_async(home.path(), Some(batching));
    let handle = engine.ensemble("market").unwrap();
    let data = rows(&engine, "market", 32);
    // Inline runs, which also give the queue its expected run time.
    let inline: Vec<Prediction> = data.iter().map(|r| handle.predict_row(r).unwrap()).collect();
    park_the_dispatcher(&handle, &data);
    let before = batches(&engine);
    let mut futures: Vec<_> = data.iter().map(|r| Box::pin(handle.predict_row_async(r))).collect();
    // First polls: the first request claims the queue and yields, the others queue behind it; no
    // dispatcher is woken, so nothing runs until it is polled again.
    for (i, f) in futures.iter_mut().enumerate() {
        assert!(poll_once(f.as_mut()).is_pending(), "request {i} was answered at its first poll");
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(batches(&engine), before);
    // Its second poll runs every queued row in one batch, here, and answers them all. With few
    // requests outstanding it then yields once, still holding the claim, for rows its answers
    // bring; its next poll finds none and returns its own answer.
    let first = poll_once(futures[0].as_mut());
    assert_eq!(batches(&engine), (before.0 + 1, before.1 + 32));
    let mut queued: Vec<_> = futures[1..]
        .iter_mut()
        .enumerate()
        .map(|(i, f)| ready(poll_once(f.as_mut()), &format!("request {}", i + 1)))
        .collect();
    let first = match first {
        Poll::Ready(answer) => answer,
        Poll::Pending => ready(poll_once(futures[0].as_mut()), "request 0"),
    };
    queued.insert(0, first);
    assert_eq!(batches(&engine), (before.0 + 1, before.1 + 32));
    for (i, (q, p)) in queued.iter().zip(&inline).enumerate() {
        let q = q.as_ref().unwrap();
        assert!(q.fused && !q.degraded, "row {i}: {q:?}");
        assert!((q.prediction - p.prediction).abs() < 1e-5, "row {i}: {} vs {}", q.prediction, p.prediction);
    }
}

#[test]
fn a_queued_requests_latency_ends_at_its_batchs_answer_not_at_its_callers_late_poll() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine_inline_async(home.path(), Some(BatchingOptions::default()));
    let handle = engine.ensemble("market").unwrap();
    let data = rows(&engine, "market", 2);
    park_the_dispatcher(&handle, &data);
    let before = batches(&engine);
    let made = Instant::now();
    let mut first = Box::pin(handle.predict_row_async(&data[0]));
    let mut second = Box::pin(handle.predict_row_async(&data[1]));
    assert!(poll_once(first.as_mut()).is_pending());
    assert!(poll_once(second.as_mut()).is_pending());
    // The first's second poll runs both rows; the second is answered and polled only later.
    let _ = poll_once(first.as_mut());
    assert_eq!(batches(&engine), (before.0 + 1, before.1 + 2));
    let ran = made.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let late = ready(poll_once(second.as_mut()), "the second request").unwrap();
    assert!(late.latency_ms <= ran.as_secs_f64() * 1e3, "{} ms, batch done at {ran:?}", late.latency_ms);
    assert!(late.latency_ms > 0.0);
}

#[test]
fn a_request_queued_while_the_serving_caller_yields_is_answered_when_that_caller_is_dropped() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine_inline_async(home.path(), Some(BatchingOptions::default()));
    let handle = engine.ensemble("market").unwrap();
    let data = rows(&engine, "market", 3);
    let inline = handle.predict_row(&data[2]).unwrap();
    park_the_dispatcher(&handle, &data);
    // Its second poll serves both rows and, few requests being outstanding, yields holding its
    // claim; unless that batch alone took longer than a claim may serve (a slow debug build on a
    // busy machine), in which case the round is tried again.
    let mut serving = None;
    for _ in 0..50 {
        let mut first = Box::pin(handle.predict_row_async(&data[0]));
        let mut answered = Box::pin(handle.predict_row_async(&data[1]));
        assert!(poll_once(first.as_mut()).is_pending());
        assert!(poll_once(answered.as_mut()).is_pending());
        let yielded = poll_once(first.as_mut()).is_pending();
        assert!(wait(answered.as_mut()).is_ok());
        if yielded {
            serving = Some(first);
            break;
        }
    }
    let serving = serving.expect("the serving caller never yielded between batches");
    // A row queued now, and the serving caller cancelled: the row is still served (by a claim of its
    // own where there are cores for two, by the dispatcher otherwise).
    let mut late = Box::pin(handle.predict_row_async(&data[2]));
    assert!(poll_once(late.as_mut()).is_pending());
    drop(serving);
    let answer = wait(late.as_mut()).unwrap();
    assert!((answer.prediction - inline.prediction).abs() < 1e-5);
}

#[test]
fn a_claiming_request_dropped_before_it_serves_hands_the_queue_to_a_dispatcher() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine_inline_async(home.path(), Some(BatchingOptions::default()));
    let handle = engine.ensemble("market").unwrap();
    let data = rows(&engine, "market", 2);
    let inline = handle.predict_row(&data[1]).unwrap();
    park_the_dispatcher(&handle, &data);
    let mut claiming = Box::pin(handle.predict_row_async(&data[0]));
    let mut waiting = Box::pin(handle.predict_row_async(&data[1]));
    assert!(poll_once(claiming.as_mut()).is_pending());
    assert!(poll_once(waiting.as_mut()).is_pending());
    // Cancelled (a timeout, a dropped task): the row queued behind it must still be served.
    drop(claiming);
    let answer = wait(waiting.as_mut()).unwrap();
    assert!((answer.prediction - inline.prediction).abs() < 1e-5);
}

#[test]
fn without_batching_concurrent_async_requests_to_a_quick_ensemble_each_run_at_their_first_poll() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine_inline_async(home.path(), None);
    let handle = engine.ensemble("market").unwrap();
    let data = rows(&engine, "market", 16);
    let inline: Vec<Prediction> = data.iter().map(|r| handle.predict_row(r).unwrap()).collect();
    let mut futures: Vec<_> = data.iter().map(|r| Box::pin(handle.predict_row_async(r))).collect();
    for (i, (f, p)) in futures.iter_mut().zip(&inline).enumerate() {
        let answer = ready(poll_once(f.as_mut()), &format!("request {i}")).unwrap();
        assert!((answer.prediction - p.prediction).abs() < 1e-6, "row {i}");
    }
}

#[test]
fn with_a_max_delay_async_requests_wait_for_the_dispatcher_to_hold_their_batch_open() {
    let home = tempfile::tempdir().unwrap();
    let delay = Duration::from_millis(30);
    let batching = BatchingOptions { max_batch: 64, max_delay: delay, ..BatchingOptions::default() };
    let engine = engine_inline_async(home.path(), Some(batching));
    let handle = engine.ensemble("market").unwrap();
    let data = rows(&engine, "market", 3);
    // Were it not for the delay, a caller would serve the queue (as in the tests above).
    for r in &data {
        handle.predict_row(r).unwrap();
    }
    let before = batches(&engine);
    let made = Instant::now();
    let mut futures: Vec<_> = data.iter().map(|r| Box::pin(handle.predict_row_async(r))).collect();
    assert!(futures.iter_mut().all(|f| poll_once(f.as_mut()).is_pending()));
    // No caller serves the queue in its place: the first request is not answered at its next poll.
    assert!(poll_once(futures[0].as_mut()).is_pending());
    for f in &mut futures {
        wait(f.as_mut()).unwrap();
    }
    assert!(made.elapsed() >= delay, "answered after {:?}", made.elapsed());
    assert_eq!(batches(&engine), (before.0 + 1, before.1 + 3));
}

#[test]
fn a_request_made_after_a_hot_swap_runs_on_the_new_version_while_an_older_one_still_waits() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine_inline_async(home.path(), Some(BatchingOptions::default()));
    let handle = engine.ensemble("market").unwrap();
    let data = rows(&engine, "market", 2);
    // Two made at once, so neither is alone: the first's poll queues its row and takes the claim;
    // both stay outstanding (and this thread's lease on version 1 with them) until polled again.
    let (mut first, mut second) =
        (Box::pin(handle.predict_row_async(&data[0])), Box::pin(handle.predict_row_async(&data[1])));
    let _ = poll_once(first.as_mut());
    let members = ["technical", "fundamental"].map(|m| m.parse::<MemberSpec>().unwrap());
    assert_eq!(engine.create_ensemble(EnsembleConfig::new("market", members)).unwrap().version, 2);
    let row = &rows(&engine, "market", 1)[0];
    let after = wait(Box::pin(handle.predict_row_async(row)).as_mut()).unwrap();
    assert_eq!((after.ensemble_version, after.model_contributions.len()), (2, 2));
    let (first, second) = (wait(first.as_mut()).unwrap(), wait(second.as_mut()).unwrap());
    assert_eq!((first.ensemble_version, second.ensemble_version), (1, 1));
}

#[test]
fn a_thread_that_made_async_requests_does_not_keep_a_dropped_engine_alive() {
    let home = tempfile::tempdir().unwrap();
    common::market_engine(home.path());
    // With persistence: one engine at a time may write a home's state, so a second one can be
    // built only once the first is gone.
    let build = || {
        InferenceEngine::builder(home.path())
            .with_default_model_options(ModelOptions::default().with_batching(BatchingOptions::default()))
            .build()
    };
    let engine = build().unwrap();
    let handle = engine.ensemble("market").unwrap();
    let data = rows(&engine, "market", 3);
    for row in &data {
        assert!(wait(Box::pin(handle.predict_row_async(row)).as_mut()).is_ok());
    }
    drop(handle);
    drop(engine);
    let again = build().unwrap_or_else(|e| panic!("the first engine is still alive: {e}"));
    assert!(wait(Box::pin(again.ensemble("market").unwrap().predict_row_async(&data[0])).as_mut()).is_ok());
}
