//! Load test: C concurrent async callers (tokio tasks) predicting single rows for T seconds.
//!
//! ```text
//! cargo run --release --example load -- [--home DIR] [--ensemble NAME] [--data FILE.csv]
//!     [--concurrency C] [--seconds T] [--batching on|off] [--max-batch N] [--max-delay-us US]
//!     [--dispatchers N]
//!     [--cache on|off] [--native on|off] [--baseline] [--json]
//! ```
//!
//! Without `--home`, a temporary home gets the three example models and the `market` ensemble; the
//! default data is the held-out S&P 500 file. Rows are matched to the ensemble's features by column
//! name; rows with non-finite values are skipped (counted in the report). `--native off` runs every
//! member on ONNX Runtime (the fused model) rather than on native plans. `--baseline` (market
//! ensemble only) also measures the three models called directly through ort on batches of 64 rows:
//! on as many threads as the engine has dispatchers (with batching on, the batches of an ensemble
//! run one at a time per dispatcher: on the dispatcher, or on the caller holding the queue's claim;
//! both at once only around a hand-off), which is the ratio the report gives, and on one thread per
//! core (a ratio that also charges the engine with the callers' own work, which the raw loop lacks).
//!
//! Prints throughput, p50/p95/p99 and the counts of successes and failures, and (on more than one
//! core) how long a cache line takes to go to another core and back, read before the run; `--json`
//! prints `{"throughput", "p50_ms", "p95_ms", "p99_ms", "ok", "failed", "core_round_trip_ns", ...}`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../benches/support/direct.rs"]
mod direct;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorum::stats::percentiles;
use quorum::{BatchingOptions, CacheOptions, Error, InferenceEngine, ModelOptions, Result};

struct Args {
    home: Option<PathBuf>,
    ensemble: String,
    data: PathBuf,
    concurrency: usize,
    seconds: f64,
    batching: bool,
    max_batch: usize,
    max_delay_us: u64,
    dispatchers: usize,
    cache: bool,
    native: bool,
    baseline: bool,
    json: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        home: None,
        ensemble: "market".into(),
        data: common::repo().join("examples/data/holdout.csv"),
        concurrency: 64,
        seconds: 5.0,
        batching: true,
        max_batch: 256,
        max_delay_us: 0,
        dispatchers: 1,
        cache: false,
        native: true,
        baseline: false,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    let bad = |what: &str| Error::Config(format!("load: {what} (see the header of examples/load.rs)"));
    let on_off = |v: Option<String>, flag: &str| match v.as_deref() {
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        _ => Err(bad(&format!("{flag} takes on or off"))),
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| bad(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--home" => args.home = Some(value()?.into()),
            "--ensemble" => args.ensemble = value()?,
            "--data" => args.data = value()?.into(),
            "--concurrency" => args.concurrency = value()?.parse().map_err(|_| bad("--concurrency takes a count"))?,
            "--seconds" => args.seconds = value()?.parse().map_err(|_| bad("--seconds takes a number"))?,
            "--batching" => args.batching = on_off(it.next(), "--batching")?,
            "--max-batch" => args.max_batch = value()?.parse().map_err(|_| bad("--max-batch takes a count"))?,
            "--max-delay-us" => args.max_delay_us = value()?.parse().map_err(|_| bad("--max-delay-us takes µs"))?,
            "--dispatchers" => {
                args.dispatchers =
                    value()?.parse().ok().filter(|&n| n > 0).ok_or_else(|| bad("--dispatchers takes a count ≥ 1"))?;
            }
            "--cache" => args.cache = on_off(it.next(), "--cache")?,
            "--native" => args.native = on_off(it.next(), "--native")?,
            "--baseline" => args.baseline = true,
            "--json" => args.json = true,
            other => return Err(bad(&format!("unknown argument {other:?}"))),
        }
    }
    if args.concurrency == 0 || args.seconds <= 0.0 {
        return Err(bad("--concurrency and --seconds must be positive"));
    }
    Ok(args)
}

/// The file's rows in `names` order, by header; rows with a non-finite value are dropped.
fn read_rows(path: &PathBuf, names: &[String]) -> Result<(Vec<Vec<f32>>, usize)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').map(str::trim).collect();
    let columns = names
        .iter()
        .map(|n| {
            header
                .iter()
                .position(|h| h == n)
                .ok_or_else(|| Error::Config(format!("{} has no column {n}", path.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    let (mut rows, mut skipped) = (Vec::new(), 0);
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let row: Option<Vec<f32>> =
            columns.iter().map(|&c| cells.get(c).and_then(|v| v.trim().parse::<f32>().ok())).collect();
        match row {
            Some(r) if r.iter().all(|v| v.is_finite()) => rows.push(r),
            _ => skipped += 1,
        }
    }
    if rows.is_empty() {
        return Err(Error::Config(format!("{} has no usable rows", path.display())));
    }
    Ok((rows, skipped))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let temporary = tempfile::tempdir().map_err(|e| Error::io("temporary home", e))?;
    let home = match &args.home {
        Some(home) => home.clone(),
        None => {
            common::market_engine(temporary.path());
            temporary.path().to_path_buf()
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let batching = BatchingOptions {
        max_batch: args.max_batch,
        max_delay: Duration::from_micros(args.max_delay_us),
        dispatchers: args.dispatchers,
        ..BatchingOptions::default()
    };
    let model_options =
        if args.batching { ModelOptions::default().with_batching(batching) } else { ModelOptions::default() };
    let mut builder = InferenceEngine::builder(&home)
        .without_persistence()
        .with_native(args.native)
        .with_default_model_options(model_options);
    if args.cache {
        builder = builder.with_prediction_cache(CacheOptions::default());
    }
    let engine = builder.build()?;
    let handle = engine.ensemble(&args.ensemble)?;
    let (rows, skipped) = read_rows(&args.data, &handle.feature_names())?;
    let rows = Arc::new(rows);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_time()
        .build()
        .map_err(|e| Error::io("starting tokio", e))?;
    // Read before the run: a queue's rows and replies crossing cores cost this, raw ort nothing.
    let round_trip = (cores > 1).then(core_round_trip_ns);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let (latencies, failures, first_error) = runtime.block_on(async {
        let tasks: Vec<_> = (0..args.concurrency)
            .map(|t| {
                let (handle, rows, stop) = (handle.clone(), Arc::clone(&rows), Arc::clone(&stop));
                tokio::spawn(async move {
                    let (mut latencies, mut failures, mut first_error) = (Vec::new(), 0usize, None);
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        match handle.predict_row_async(&rows[i % rows.len()]).await {
                            Ok(_) => latencies.push(start.elapsed().as_secs_f64() * 1e3),
                            Err(e) => {
                                failures += 1;
                                first_error.get_or_insert(e.to_string());
                            }
                        }
                        i += args.concurrency;
                    }
                    (latencies, failures, first_error)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let (mut all, mut failures, mut first_error) = (Vec::new(), 0, None);
        for task in tasks {
            // A panicking task counts as a failure rather than hiding the figures of the others.
            match task.await {
                Ok((l, f, e)) => {
                    all.extend(l);
                    failures += f;
                    first_error = first_error.or(e);
                }
                Err(e) => {
                    failures += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        (all, failures, first_error)
    });
    let elapsed = started.elapsed().as_secs_f64();
    let ok = latencies.len();
    let mut latencies = latencies;
    let p = percentiles(&mut latencies);
    let replicas = engine.replicas(None);
    let (batches, batched_rows) = replicas.iter().fold((0, 0), |(b, r), s| (b + s.batches, r + s.batched_rows));
    let mean_batch = if batches > 0 { batched_rows as f64 / batches as f64 } else { 1.0 };
    // The engine's model work runs on its dispatcher threads (batching on) or on one per core.
    let engine_threads = if args.batching { batching.dispatchers } else { cores };
    let baseline = if args.baseline && args.ensemble == "market" && args.home.is_none() {
        let names = handle.feature_names();
        let same = direct_throughput(&engine, &names, &rows, BASELINE_BATCH, engine_threads)?;
        let per_core = direct_throughput(&engine, &names, &rows, BASELINE_BATCH, cores)?;
        Some((same, per_core))
    } else {
        None
    };
    let throughput = ok as f64 / elapsed;
    if args.json {
        let report = serde_json::json!({
            "throughput": throughput,
            "p50_ms": p.p50,
            "p95_ms": p.p95,
            "p99_ms": p.p99,
            "ok": ok,
            "failed": failures,
            "concurrency": args.concurrency,
            "batching": args.batching,
            "cache": args.cache,
            "native": args.native,
            "mean_batch": mean_batch,
            "baseline_threads": engine_threads,
            "baseline_throughput": baseline.map(|b| b.0),
            "baseline_ratio": baseline.map(|b| throughput / b.0),
            "baseline_per_core_throughput": baseline.map(|b| b.1),
            "core_round_trip_ns": round_trip,
            "first_error": first_error,
        });
        println!("{report}");
    } else {
        println!(
            "{} async callers for {elapsed:.1} s on {cores} cores, batching {}, cache {}, native {} ({} rows, {skipped} skipped as non-finite)",
            args.concurrency,
            if args.batching { "on" } else { "off" },
            if args.cache { "on" } else { "off" },
            if args.native { "on" } else { "off" },
            rows.len()
        );
        println!("throughput {throughput:.0} predictions/s; mean batch {mean_batch:.1} rows per call");
        println!("latency p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms", p.p50, p.p95, p.p99);
        println!("ok {ok}, failed {failures}{}", first_error.map(|e| format!(" (first: {e})")).unwrap_or_default());
        if let Some(ns) = round_trip {
            println!("a cache line's round trip between two threads (cores): {ns:.0} ns");
        }
        if let Some((same, per_core)) = baseline {
            println!(
                "baseline: the three models through raw ort at batch {BASELINE_BATCH}: {same:.0} rows/s on {engine_threads} thread(s) (one per dispatcher), quorum reaches {:.1}%; {per_core:.0} rows/s on {cores} threads ({:.1}%)",
                100.0 * throughput / same,
                100.0 * throughput / per_core
            );
        }
    }
    Ok(())
}

/// Nanoseconds for a cache line to go to another thread and back (two threads, unpinned, passing
/// a counter), the median of five rounds of up to 100,000 trips or 50 ms. Virtual machines' cores
/// are not always where they seem: on one 2-core AMD EPYC this read 55 ns or 330 ns depending on
/// where the host had put them, and a queue whose rows and replies cross cores moves with it.
fn core_round_trip_ns() -> f64 {
    const TRIPS: u64 = 100_000;
    let round = || {
        let (turn, stop) = (std::sync::atomic::AtomicU64::new(0), AtomicBool::new(false));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0.. {
                    while turn.load(Ordering::Acquire) != 2 * i + 1 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        std::hint::spin_loop();
                    }
                    turn.store(2 * i + 2, Ordering::Release);
                }
            });
            let started = Instant::now();
            let mut trips = 0;
            // Bounded in time too: two threads sharing one core would take a time slice a trip.
            'trips: while trips < TRIPS {
                turn.store(2 * trips + 1, Ordering::Release);
                let mut spins = 0u32;
                while turn.load(Ordering::Acquire) != 2 * trips + 2 {
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(1024) && started.elapsed() > Duration::from_millis(50) {
                        break 'trips;
                    }
                    std::hint::spin_loop();
                }
                trips += 1;
            }
            stop.store(true, Ordering::Relaxed);
            started.elapsed().as_nanos() as f64 / trips.max(1) as f64
        })
    };
    let mut rounds: Vec<f64> = (0..5).map(|_| round()).collect();
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

/// The batch size of the raw ort baseline.
const BASELINE_BATCH: usize = 64;

/// Rows per second of the three example models called directly through ort on `batch`-row batches,
/// one thread (with its own sessions) per core, for two seconds.
fn direct_throughput(
    engine: &InferenceEngine,
    schema: &[String],
    rows: &[Vec<f32>],
    batch: usize,
    threads: usize,
) -> Result<f64> {
    let batch = batch.max(1);
    let dense: Vec<f32> = rows.iter().cycle().take(batch).flatten().copied().collect();
    let seconds = 2.0;
    let done: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let dense = &dense;
                scope.spawn(move || {
                    let mut direct = direct::Direct::new(engine, schema);
                    let mut out = Vec::new();
                    let until = Instant::now() + Duration::from_secs_f64(seconds);
                    let mut n = 0;
                    while Instant::now() < until {
                        direct.predict(dense, batch, &mut out);
                        n += batch;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    Ok(done as f64 / seconds)
}
