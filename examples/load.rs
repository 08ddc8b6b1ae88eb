//! Load test: C concurrent async callers (tokio tasks) predicting single rows for T seconds.
//!
//! ```text
//! cargo run --release --example load -- [--home DIR] [--ensemble NAME] [--data FILE.csv]
//!     [--concurrency C] [--seconds T] [--batching on|off] [--max-batch N] [--max-delay-us US]
//!     [--dispatchers N] [--async-inline-limit-us US]
//!     [--cache on|off] [--native on|off] [--baseline] [--rounds R] [--time-every N] [--json]
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
//!
//! `--rounds R` (default 1) splits the callers' time into R equal slices; with `--baseline` each
//! slice sits beside the two raw ort loops, each as long as the slice, in an order that rotates
//! from round to round. The throughputs are then totals over the rounds, and the report adds each
//! round's ratios and their medians (`rounds`, `baseline_ratio_median`,
//! `baseline_per_core_ratio_median`): a shared virtual machine's speed drifts within seconds, and
//! only figures taken side by side compare.
//!
//! `--async-inline-limit-us US` sets `EngineBuilder::with_async_inline_limit` (default 200 µs: the
//! longest expected run an asynchronous caller runs on its own thread, alone or serving others).
//!
//! `--time-every N` (default 8) times one call in N, picked at random per call, for the latency
//! percentiles (every call counts for the throughput): two clock reads around each of ~1 µs calls
//! cost the callers several percent that the raw loops, which read no clock per row, do not pay.
//! `--time-every 1` times every call. The JSON gives the choice as `timed_one_in`.

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
    async_inline_limit_us: Option<u64>,
    cache: bool,
    native: bool,
    baseline: bool,
    rounds: usize,
    time_every: u64,
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
        async_inline_limit_us: None,
        cache: false,
        native: true,
        baseline: false,
        rounds: 1,
        time_every: 8,
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
            "--async-inline-limit-us" => {
                let us = value()?.parse().map_err(|_| bad("--async-inline-limit-us takes µs"))?;
                args.async_inline_limit_us = Some(us);
            }
            "--cache" => args.cache = on_off(it.next(), "--cache")?,
            "--native" => args.native = on_off(it.next(), "--native")?,
            "--baseline" => args.baseline = true,
            "--rounds" => {
                args.rounds =
                    value()?.parse().ok().filter(|&n| n > 0).ok_or_else(|| bad("--rounds takes a count ≥ 1"))?;
            }
            "--time-every" => {
                args.time_every =
                    value()?.parse().ok().filter(|&n| n > 0).ok_or_else(|| bad("--time-every takes a count ≥ 1"))?;
            }
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
    if let Some(us) = args.async_inline_limit_us {
        builder = builder.with_async_inline_limit(Duration::from_micros(us));
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
    // The engine's model work runs on its dispatcher threads (batching on) or on one per core.
    let engine_threads = if args.batching { args.dispatchers } else { cores };
    let with_baseline = args.baseline && args.ensemble == "market" && args.home.is_none();
    let names = handle.feature_names();
    let slice = args.seconds / args.rounds as f64;
    let callers = Callers {
        runtime: &runtime,
        handle: &handle,
        rows: &rows,
        concurrency: args.concurrency,
        time_every: args.time_every,
    };
    let mut raw = with_baseline.then(|| RawOrt::new(&engine, &names, &rows, BASELINE_BATCH, engine_threads.max(cores)));
    let mut run = CallerRun::default();
    let mut rounds = Vec::with_capacity(args.rounds);
    for round in 0..args.rounds {
        let mut figures = [0.0; 3];
        let sides = if with_baseline { 3 } else { 1 };
        for k in 0..sides {
            let side = (round + k) % sides;
            figures[side] = match side {
                0 => callers.run(slice, &mut run),
                1 => raw.as_mut().map_or(0.0, |raw| raw.throughput(engine_threads, slice)),
                _ => raw.as_mut().map_or(0.0, |raw| raw.throughput(cores, slice)),
            };
        }
        rounds.push(figures);
    }
    let CallerRun { mut latencies, ok, failures, first_error, elapsed } = run;
    let p = percentiles(&mut latencies);
    let replicas = engine.replicas(None);
    let (batches, batched_rows) = replicas.iter().fold((0, 0), |(b, r), s| (b + s.batches, r + s.batched_rows));
    let mean_batch = if batches > 0 { batched_rows as f64 / batches as f64 } else { 1.0 };
    // Totals over the rounds (each raw loop ran as long as each slice of callers), and the medians
    // of the rounds' own ratios.
    let baseline = with_baseline.then(|| {
        let mean = |i: usize| rounds.iter().map(|r| r[i]).sum::<f64>() / rounds.len() as f64;
        let ratios = |i: usize| median(&mut rounds.iter().map(|r| r[0] / r[i]).collect::<Vec<_>>());
        (mean(1), mean(2), ratios(1), ratios(2))
    });
    let throughput = ok as f64 / elapsed;
    if args.json {
        let report = serde_json::json!({
            "throughput": throughput,
            "p50_ms": p.p50,
            "p95_ms": p.p95,
            "p99_ms": p.p99,
            "ok": ok,
            "failed": failures,
            "timed_one_in": args.time_every,
            "concurrency": args.concurrency,
            "batching": args.batching,
            "cache": args.cache,
            "native": args.native,
            "mean_batch": mean_batch,
            "baseline_threads": engine_threads,
            "baseline_throughput": baseline.map(|b| b.0),
            "baseline_ratio": baseline.map(|b| throughput / b.0),
            "baseline_per_core_throughput": baseline.map(|b| b.1),
            "baseline_per_core_ratio": baseline.map(|b| throughput / b.1),
            "baseline_ratio_median": baseline.map(|b| b.2),
            "baseline_per_core_ratio_median": baseline.map(|b| b.3),
            "rounds": rounds.iter().map(|r| {
                if with_baseline {
                    serde_json::json!({"throughput": r[0], "baseline_throughput": r[1], "baseline_per_core_throughput": r[2]})
                } else {
                    serde_json::json!({"throughput": r[0]})
                }
            }).collect::<Vec<_>>(),
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
        println!(
            "latency p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms (1 call in {} timed)",
            p.p50, p.p95, p.p99, args.time_every
        );
        println!("ok {ok}, failed {failures}{}", first_error.map(|e| format!(" (first: {e})")).unwrap_or_default());
        if let Some(ns) = round_trip {
            println!("a cache line's round trip between two threads (cores): {ns:.0} ns");
        }
        if let Some((same, per_core, same_median, per_core_median)) = baseline {
            println!(
                "baseline: the three models through raw ort at batch {BASELINE_BATCH}: {same:.0} rows/s on {engine_threads} thread(s) (one per dispatcher), quorum reaches {:.1}%; {per_core:.0} rows/s on {cores} threads ({:.1}%)",
                100.0 * throughput / same,
                100.0 * throughput / per_core
            );
            if rounds.len() > 1 {
                let each = rounds.iter().map(|r| format!("{:.0}%", 100.0 * r[0] / r[2])).collect::<Vec<_>>().join(" ");
                println!(
                    "{} rounds side by side: median {:.1}% of raw ort on {engine_threads} thread(s), {:.1}% on {cores} threads (each round: {each})",
                    rounds.len(),
                    100.0 * same_median,
                    100.0 * per_core_median
                );
            }
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

/// What the callers measured over every slice they ran.
#[derive(Default)]
struct CallerRun {
    /// The timed calls' latencies (one call in `time_every`).
    latencies: Vec<f64>,
    /// Calls that succeeded.
    ok: usize,
    failures: usize,
    first_error: Option<String>,
    /// Seconds the callers ran, all slices together.
    elapsed: f64,
}

/// The async callers: `concurrency` tokio tasks on `runtime`, each predicting rows in turn.
struct Callers<'a> {
    runtime: &'a tokio::runtime::Runtime,
    handle: &'a quorum::EnsembleHandle,
    rows: &'a Arc<Vec<Vec<f32>>>,
    concurrency: usize,
    /// One call in this many is timed.
    time_every: u64,
}

impl Callers<'_> {
    /// Runs the callers for `seconds`, adding what they measured to `run`; their throughput.
    fn run(&self, seconds: f64, run: &mut CallerRun) -> f64 {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let before = run.ok;
        self.runtime.block_on(async {
            let tasks: Vec<_> = (0..self.concurrency)
                .map(|t| {
                    let (handle, rows, stop) = (self.handle.clone(), Arc::clone(self.rows), Arc::clone(&stop));
                    let (step, every) = (self.concurrency, self.time_every);
                    tokio::spawn(async move {
                        let (mut latencies, mut ok, mut failures, mut first_error) = (Vec::new(), 0, 0usize, None);
                        let mut i = t;
                        // xorshift64: which calls are timed, at random so as not to beat with batches.
                        let mut draw = (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                        while !stop.load(Ordering::Relaxed) {
                            draw ^= draw << 13;
                            draw ^= draw >> 7;
                            draw ^= draw << 17;
                            let start = draw.is_multiple_of(every).then(Instant::now);
                            match handle.predict_row_async(&rows[i % rows.len()]).await {
                                Ok(_) => {
                                    ok += 1;
                                    if let Some(start) = start {
                                        latencies.push(start.elapsed().as_secs_f64() * 1e3);
                                    }
                                }
                                Err(e) => {
                                    failures += 1;
                                    first_error.get_or_insert(e.to_string());
                                }
                            }
                            i += step;
                        }
                        (latencies, ok, failures, first_error)
                    })
                })
                .collect();
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            stop.store(true, Ordering::Relaxed);
            for task in tasks {
                // A panicking task counts as a failure rather than hiding the figures of the others.
                match task.await {
                    Ok((l, ok, f, e)) => {
                        run.latencies.extend(l);
                        run.ok += ok;
                        run.failures += f;
                        run.first_error = run.first_error.take().or(e);
                    }
                    Err(e) => {
                        run.failures += 1;
                        run.first_error.get_or_insert(e.to_string());
                    }
                }
            }
        });
        let elapsed = started.elapsed().as_secs_f64();
        run.elapsed += elapsed;
        (run.ok - before) as f64 / elapsed
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (values[(n - 1) / 2] + values[n / 2]) / 2.0
}

/// The batch size of the raw ort baseline.
const BASELINE_BATCH: usize = 64;

/// The raw ort loops: one [`direct::Direct`] (its own sessions) per thread, built and warmed up
/// once, so that each round times the loop itself and not a fresh session's first calls.
struct RawOrt {
    directs: Vec<direct::Direct>,
    dense: Vec<f32>,
    batch: usize,
}

impl RawOrt {
    fn new(engine: &InferenceEngine, schema: &[String], rows: &[Vec<f32>], batch: usize, threads: usize) -> RawOrt {
        let batch = batch.max(1);
        let dense: Vec<f32> = rows.iter().cycle().take(batch).flatten().copied().collect();
        let mut out = Vec::new();
        let directs = (0..threads)
            .map(|_| {
                let mut direct = direct::Direct::new(engine, schema);
                (0..WARM_UP_CALLS).for_each(|_| direct.predict(&dense, batch, &mut out));
                direct
            })
            .collect();
        RawOrt { directs, dense, batch }
    }

    /// Rows per second of the three example models called directly through ort on batches of
    /// `batch` rows, on `threads` threads at once, for `seconds`.
    fn throughput(&mut self, threads: usize, seconds: f64) -> f64 {
        let (dense, batch) = (&self.dense, self.batch);
        let done: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = self.directs[..threads]
                .iter_mut()
                .map(|direct| {
                    scope.spawn(move || {
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
        done as f64 / seconds
    }
}

/// Calls each raw ort loop makes before it is timed.
const WARM_UP_CALLS: usize = 200;
