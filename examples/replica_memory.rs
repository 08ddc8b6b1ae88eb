//! What an extra replica costs in memory, with and without shared prepacked weights.
//!
//! `make replica-memory` builds a wide MLP (64 → 4096 → 4096 → 2, 68 MB of weights) and runs
//! `cargo run --release --example replica_memory -- WIDE.onnx`. Each configuration is measured in a
//! fresh child process: resident memory (VmRSS) after the engine is built, then after the model is
//! loaded with N replicas and each replica has answered once.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use quorum::{EnsembleConfig, Error, InferenceEngine, MemberSpec, ModelOptions, ModelRegistration, Result};

const FEATURES: usize = 64;

fn rss_bytes() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| Error::io("reading /proc/self/status", e))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| Error::Config("no VmRSS in /proc/self/status".into()))?;
    Ok((kb * 1024) as f64)
}

fn features() -> Vec<String> {
    (0..FEATURES).map(|i| format!("f{i}")).collect()
}

/// In a child: load the model with `replicas` replicas and print "before after" RSS in bytes.
fn child(home: &Path, replicas: usize, shared: bool) -> Result<()> {
    let options = ModelOptions::default().with_replicas(replicas, replicas).with_shared_weights(shared);
    let engine = InferenceEngine::builder(home)
        .without_persistence()
        .without_tracking()
        .with_model_options("wide", options)
        .build()?;
    let before = rss_bytes()?;
    let handle = engine.ensemble("wide-only")?;
    // Every replica answers once, so per-run buffers (ONNX Runtime's arena) are counted too.
    let row = vec![0.5f32; FEATURES];
    std::thread::scope(|scope| {
        for _ in 0..replicas {
            let handle = &handle;
            let row = &row;
            scope.spawn(move || {
                for _ in 0..20 {
                    let _ = handle.predict_row(row);
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
    });
    let after = rss_bytes()?;
    // Single-row latency with the weights as configured (sharing can change the kernels' path).
    let started = std::time::Instant::now();
    for _ in 0..200 {
        handle.predict_row(&row)?;
    }
    let micros = started.elapsed().as_secs_f64() * 1e6 / 200.0;
    let batch: Vec<f32> = row.iter().copied().cycle().take(64 * FEATURES).collect();
    let names = handle.feature_names();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        handle.predict_batch(&quorum::Batch::row_major(&names, &batch)?)?;
    }
    let batch_micros = started.elapsed().as_secs_f64() * 1e6 / 20.0;
    println!("{before} {after} {micros} {batch_micros}");
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let home = Path::new(&args[2]);
        let replicas = args[3].parse().map_err(|_| Error::Config("replicas".into()))?;
        return child(home, replicas, args[4] == "shared");
    }
    let model = args.get(1).ok_or_else(|| Error::Config("usage: replica_memory WIDE.onnx".into()))?;
    let home = tempfile::tempdir().map_err(|e| Error::io("temporary home", e))?;
    {
        let engine = InferenceEngine::builder(home.path()).without_persistence().build()?;
        engine.register_model(ModelRegistration::new("wide", model, features()))?;
        engine.create_ensemble(EnsembleConfig::new("wide-only", ["wide".parse::<MemberSpec>()?]))?;
    }
    let size = std::fs::metadata(model).map_err(|e| Error::io("model size", e))?.len();
    println!(
        "model file {:.1} MB; resident memory added by loading N replicas (each answered once):",
        size as f64 / 1e6
    );
    println!(
        "{:<8} {:>9} {:>14} {:>22} {:>16} {:>12} {:>14}",
        "weights", "replicas", "added MB", "per extra replica MB", "extra / first", "one row µs", "64 rows µs"
    );
    let exe = std::env::current_exe().map_err(|e| Error::io("current exe", e))?;
    for shared in [true, false] {
        let mut first = None;
        for replicas in [1, 2, 4] {
            let out = Command::new(&exe)
                .args(["--child", &home.path().display().to_string(), &replicas.to_string()])
                .arg(if shared { "shared" } else { "private" })
                .output()
                .map_err(|e| Error::io("running the child", e))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let numbers: Vec<f64> = text.split_whitespace().filter_map(|n| n.parse().ok()).collect();
            let [before, after, micros, batch_micros] = numbers[..] else {
                return Err(Error::Config(format!("child failed: {}", String::from_utf8_lossy(&out.stderr))));
            };
            let added = (after - before).max(0.0) / 1e6;
            let first_mb = *first.get_or_insert(added);
            let (per_extra, ratio) = if replicas > 1 {
                let per = (added - first_mb) / (replicas - 1) as f64;
                (format!("{per:.1}"), format!("{:.1}%", 100.0 * per / first_mb))
            } else {
                ("-".into(), "-".into())
            };
            println!(
                "{:<8} {replicas:>9} {added:>14.1} {per_extra:>22} {ratio:>16} {micros:>12.0} {batch_micros:>14.0}",
                if shared { "shared" } else { "private" }
            );
        }
    }
    Ok(())
}
