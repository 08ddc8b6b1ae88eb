//! How many inference log rows per second reach the database, sustained: one thread predicts
//! batches as fast as it can for `SECONDS` (default 10) with every row logged, then the rows
//! written, dropped (queue full) and the rate are printed, beside the prediction rate without the
//! log in the same run. The state is `QUORUM_PROFILE_STATE` (a `postgres://` URL, with `--features
//! postgres`), else the home's SQLite.
//!
//! A third argument paces the predictions at that many rows per second (default: unpaced), so the
//! writer and the database have the machine's other core as they would beside a real service.
//!
//! `cargo run --release --features postgres --example inference_log_rate -- 10 64 60000`
#[path = "../tests/common/mod.rs"]
mod common;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().map_or(10.0, |a| a.parse().unwrap());
    let rows: usize = args.next().map_or(64, |a| a.parse().unwrap());
    let pace: f64 = args.next().map_or(0.0, |a| a.parse().unwrap());
    let home = tempfile::tempdir().unwrap();
    common::market_engine(home.path());
    let mut builder = quorum::InferenceEngine::builder(home.path()).with_inference_log(quorum::InferenceLogOptions {
        queue_capacity: 200_000,
        batch_rows: 10_000,
        ..Default::default()
    });
    if let Ok(url) = std::env::var("QUORUM_PROFILE_STATE") {
        builder = builder.with_state(quorum::StateUrl::parse(&url).unwrap());
    }
    let engine = builder.build().unwrap();
    let handle = engine.ensemble("market").unwrap();
    let features = common::holdout_features(rows);
    let schema = handle.feature_names().to_vec();
    let values: Vec<f32> = features.iter().flat_map(|f| schema.iter().map(|n| f.get(n).unwrap())).collect();
    let batch = quorum::Batch::row_major(&schema, &values).unwrap();

    let plain = quorum::InferenceEngine::builder(home.path()).without_persistence().build().unwrap();
    let plain = plain.ensemble("market").unwrap();
    let run = |h: &quorum::EnsembleHandle, secs: f64| {
        let started = Instant::now();
        let mut predicted = 0u64;
        while started.elapsed().as_secs_f64() < secs {
            predicted += h.predict_batch(&batch).unwrap().len() as u64;
            if pace > 0.0 {
                let due = Duration::from_secs_f64(predicted as f64 / pace);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        predicted as f64 / started.elapsed().as_secs_f64()
    };
    let without = run(&plain, seconds.min(3.0));
    let started = Instant::now();
    let with = run(&handle, seconds);
    let produced = engine.inference_log_stats().unwrap();
    // Wait for the backlog, bounded.
    while engine.inference_log_stats().unwrap().waiting > 0
        && started.elapsed() < Duration::from_secs_f64(seconds * 3.0)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let s = engine.inference_log_stats().unwrap();
    println!(
        "{} ({rows} rows per call): predictions {with:.0}/s with the log ({without:.0}/s without); \
         {} rows written in {elapsed:.1} s = {:.0} rows/s sustained; {} dropped, {} write errors; {} waiting at the end of predicting",
        engine.state_store().unwrap().url().redacted(),
        s.written,
        s.written as f64 / elapsed,
        s.dropped,
        s.write_errors,
        produced.waiting
    );
}
