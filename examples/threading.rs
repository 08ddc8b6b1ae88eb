//! Concurrent load on the example ensemble: N caller threads predicting single rows as fast as they
//! can, for each session threading setting. Prints throughput and latency percentiles.
//!
//! `cargo run --release --example threading -- [seconds per run, default 2]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorum::stats::percentiles;
use quorum::{InferenceEngine, RuntimeOptions};

fn main() -> quorum::Result<()> {
    let seconds: f64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2.0);
    let home = tempfile::tempdir().map_err(|e| quorum::Error::io("temporary home", e))?;
    common::market_engine(home.path());
    let rows: Arc<Vec<Vec<f32>>> = {
        let engine = common::engine(home.path());
        let schema = engine.ensemble("market")?.feature_names().to_vec();
        Arc::new(
            common::holdout_features(256)
                .iter()
                .map(|f| schema.iter().map(|n| f.get(n).unwrap_or(0.0)).collect())
                .collect(),
        )
    };
    println!(
        "{} cores; {seconds} s per run; single-row predictions of the 3-model ensemble",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("{:<16} {:>7} {:>12} {:>10} {:>10} {:>10}", "sessions", "callers", "pred/s", "p50 µs", "p95 µs", "p99 µs");
    for (label, intra, spin) in [("intra1-nospin", 1, false), ("intra2-spin", 2, true)] {
        let options = RuntimeOptions::default().with_intra_threads(intra).with_spinning(spin);
        let engine = InferenceEngine::builder(home.path())
            .with_runtime_options(options)
            .without_tracking()
            .without_persistence()
            .build()?;
        for callers in [1, 2, 4, 8] {
            let stop = Arc::new(AtomicBool::new(false));
            let workers: Vec<_> = (0..callers)
                .map(|t| {
                    let (handle, rows, stop) = (engine.ensemble("market"), Arc::clone(&rows), Arc::clone(&stop));
                    std::thread::spawn(move || -> quorum::Result<Vec<f64>> {
                        let handle = handle?;
                        let mut latencies = Vec::new();
                        let mut i = t;
                        while !stop.load(Ordering::Relaxed) {
                            let start = Instant::now();
                            handle.predict_row(&rows[i % rows.len()])?;
                            latencies.push(start.elapsed().as_secs_f64() * 1e6);
                            i += callers;
                        }
                        Ok(latencies)
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs_f64(seconds));
            stop.store(true, Ordering::Relaxed);
            let mut all = Vec::new();
            for w in workers {
                all.extend(w.join().map_err(|_| quorum::Error::Config("worker panicked".into()))??);
            }
            let count = all.len();
            let p = percentiles(&mut all);
            println!(
                "{label:<16} {callers:>7} {:>12.0} {:>10.1} {:>10.1} {:>10.1}",
                count as f64 / seconds,
                p.p50,
                p.p95,
                p.p99
            );
        }
    }
    Ok(())
}
