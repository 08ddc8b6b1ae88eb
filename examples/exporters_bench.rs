//! Issue 22's concurrency goal (`make exporters-bench`): a model whose batch is fixed to one row,
//! under 64 concurrent single-row callers on an engine configured to batch (a one-row model is
//! never coalesced: threads run inline on its replicas, queued rows run one per call), against
//! the same model called inline, batching off, by as many threads (64) and by one thread per core
//! (the stricter reading): throughput, p99 and failures over a fixed count of calls, in rounds of
//! rotating order (medians, and the worst p99). The 64 callers are threads calling `predict_row`,
//! then tokio tasks on one worker thread per core calling `predict_row_async`. Compare the figures only
//! within one run. (The ZipMap goal is `profile_loop ROWS zipmap`.)
#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use quorum::{
    BatchingOptions, EnsembleConfig, EnsembleHandle, InferenceEngine, MemberSpec, ModelOptions, ModelRegistration,
};

const FEATURES: [&str; 3] = ["ret_1d", "ret_5d", "vix"];

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo().join(format!("tests/fixtures/exporters/{name}.onnx"))
}

fn rows(n: usize) -> Vec<f32> {
    common::holdout_features(n).iter().flat_map(|f| FEATURES.map(|name| f.get(name).unwrap())).collect()
}

/// The one-member ensemble of `name` in `engine`.
fn alone(engine: &InferenceEngine, name: &str) -> EnsembleHandle {
    let ensemble = format!("{name}_alone");
    if engine.ensemble(&ensemble).is_err() {
        engine.create_ensemble(EnsembleConfig::new(&ensemble, [name.parse::<MemberSpec>().unwrap()])).unwrap();
    }
    engine.ensemble(&ensemble).unwrap()
}

/// Caller `t` of `callers`: its rows of `values`, and whether it reports its first failure.
struct Caller {
    t: usize,
    callers: usize,
    values: Arc<Vec<f32>>,
    failures: Arc<AtomicUsize>,
}

impl Caller {
    /// The rows this caller predicts, by index into the `calls` of the run.
    fn rows(&self, calls: usize) -> impl Iterator<Item = &[f32]> {
        let rows = self.values.len() / 3;
        (self.t..calls).step_by(self.callers).map(move |i| &self.values[(i % rows) * 3..(i % rows) * 3 + 3])
    }

    fn count(&self, result: quorum::Result<quorum::Prediction>) {
        if let Err(e) = result {
            if self.failures.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("first failure: {e}");
            }
        }
    }
}

/// The callers of one run, and what they measured: (rows/s, p99 ms, failures).
struct Run {
    callers: usize,
    values: Arc<Vec<f32>>,
    failures: Arc<AtomicUsize>,
    started: Instant,
}

impl Run {
    fn new(callers: usize, values: &Arc<Vec<f32>>) -> Run {
        Run { callers, values: Arc::clone(values), failures: Arc::default(), started: Instant::now() }
    }

    fn caller(&self, t: usize) -> Caller {
        Caller { t, callers: self.callers, values: Arc::clone(&self.values), failures: Arc::clone(&self.failures) }
    }

    fn summary(self, mut latencies: Vec<f64>) -> (f64, f64, usize) {
        let elapsed = self.started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
        (latencies.len() as f64 / elapsed, p99, self.failures.load(Ordering::Relaxed))
    }
}

fn millis_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

/// Runs `calls` single-row predictions spread over `threads` threads; (rows/s, p99 ms, failures).
fn hammer(handle: &EnsembleHandle, threads: usize, calls: usize, values: &Arc<Vec<f32>>) -> (f64, f64, usize) {
    let run = Run::new(threads, values);
    let latencies: Vec<f64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (handle, caller) = (handle.clone(), run.caller(t));
                s.spawn(move || {
                    let mut latencies = Vec::with_capacity(calls / threads + 1);
                    for row in caller.rows(calls) {
                        let t0 = Instant::now();
                        caller.count(handle.predict_row(row));
                        latencies.push(millis_since(t0));
                    }
                    latencies
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    run.summary(latencies)
}

/// As [`hammer`], from `tasks` asynchronous callers (tokio tasks) on one worker thread per core.
fn hammer_async(handle: &EnsembleHandle, tasks: usize, calls: usize, values: &Arc<Vec<f32>>) -> (f64, f64, usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(cores).build().unwrap();
    let run = Run::new(tasks, values);
    let latencies: Vec<f64> = runtime.block_on(async {
        let workers: Vec<_> = (0..tasks)
            .map(|t| {
                let (handle, caller) = (handle.clone(), run.caller(t));
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(calls / tasks + 1);
                    for row in caller.rows(calls) {
                        let t0 = Instant::now();
                        caller.count(handle.predict_row_async(row).await);
                        latencies.push(millis_since(t0));
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::with_capacity(calls);
        for w in workers {
            all.extend(w.await.unwrap());
        }
        all
    });
    run.summary(latencies)
}

fn fixed_batch_under_concurrency(home: &std::path::Path) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let values = Arc::new(rows(256));
    let calls = 400_000;
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
    hammer_async(&queued, 64, 10_000, &values);
    // Short rounds, rotating which goes first, so that every side sees the same machine: a
    // shared VM's speed drifts by 2× within minutes. Medians over the rounds.
    let (mut base, mut rate, mut ratio, mut tasks, mut tasks_ratio) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut base_64, mut ratio_64) = (vec![], vec![]);
    let (mut base_p99, mut p99, mut tasks_p99, mut base_64_p99) = (0f64, 0f64, 0f64, 0f64);
    let (mut base_failed, mut failed, mut tasks_failed, mut base_64_failed) = (0, 0, 0, 0);
    for round in 0..ROUNDS {
        let mut run = [(0.0, 0.0, 0); 4];
        for k in 0..4 {
            let side = (round + k) % 4;
            run[side] = match side {
                0 => hammer(&inline, cores, calls / ROUNDS, &values),
                1 => hammer(&queued, 64, calls / ROUNDS, &values),
                2 => hammer_async(&queued, 64, calls / ROUNDS, &values),
                _ => hammer(&inline, 64, calls / ROUNDS, &values),
            };
        }
        let [(b, bp, bf), (r, rp, rf), (a, ap, af), (b64, b64p, b64f)] = run;
        (base_p99, p99, tasks_p99, base_64_p99) =
            (base_p99.max(bp), p99.max(rp), tasks_p99.max(ap), base_64_p99.max(b64p));
        (base_failed, failed, tasks_failed, base_64_failed) =
            (base_failed + bf, failed + rf, tasks_failed + af, base_64_failed + b64f);
        base.push(b);
        rate.push(r);
        ratio.push(r / b);
        tasks.push(a);
        tasks_ratio.push(a / b);
        base_64.push(b64);
        ratio_64.push(r / b64);
    }
    let (base, rate) = (median(&mut base), median(&mut rate));
    let ratios = ratio.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ");
    let ratio = median(&mut ratio);
    let (tasks, tasks_ratio) = (median(&mut tasks), median(&mut tasks_ratio));
    let ratios_64 = ratio_64.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ");
    let (base_64, ratio_64) = (median(&mut base_64), median(&mut ratio_64));
    // Where a shortfall against one thread per core comes from: the batching configuration (the
    // batching engine, one caller per core) or the 64 threads (the rounds' inline side on 64).
    let (queued_cores, _, _) = hammer(&queued, cores, calls / ROUNDS, &values);
    // The ceiling for 64 threads: a session each, so that no caller ever waits for one (what the
    // operating system's time-sharing of 64 threads costs by itself).
    let own = ModelOptions::default().with_replicas(64, 64);
    let own = InferenceEngine::builder(home)
        .without_persistence()
        .with_native(false)
        .with_default_model_options(own)
        .build()
        .unwrap();
    let own = alone(&own, "fixed_batch1");
    hammer(&own, 64, 10_000, &values);
    let (own_64, _, own_failed) = hammer(&own, 64, calls / ROUNDS, &values);
    println!(
        "fixed batch 1, split: the batching engine on {cores} threads {queued_cores:.0} rows/s | 64 threads \
         with a session each {own_64:.0} rows/s ({own_failed} failed)"
    );
    println!(
        "fixed batch 1, medians of {ROUNDS} rounds: inline on 64 threads (batching off) {base_64:.0} rows/s (p99 \
         {base_64_p99:.3} ms, {base_64_failed} failed) | 64 callers, batching on: ratio {ratio_64:.3} \
         (rounds: {ratios_64})"
    );
    println!(
        "fixed batch 1 on onnxruntime, medians of {ROUNDS} rounds: inline on {cores} threads {base:.0} rows/s (p99 \
         {base_p99:.3} ms, {base_failed} failed) | 64 callers, batching on {rate:.0} rows/s (p99 {p99:.3} ms, \
         {failed} failed) | ratio {ratio:.3} (rounds: {ratios})"
    );
    println!(
        "fixed batch 1, 64 asynchronous callers (tokio tasks on {cores} worker threads, `predict_row_async`): \
         {tasks:.0} rows/s (p99 {tasks_p99:.3} ms, {tasks_failed} failed) | ratio to inline on {cores} threads \
         {tasks_ratio:.3}"
    );
}

/// Rounds of the comparison; each runs `calls / ROUNDS` calls per side.
const ROUNDS: usize = 8;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (values[(n - 1) / 2] + values[n / 2]) / 2.0
}

fn main() {
    let home = tempfile::tempdir().unwrap();
    let engine = InferenceEngine::builder(home.path()).without_persistence().build().unwrap();
    engine.register_model(ModelRegistration::new("fixed_batch1", fixture("fixed_batch1"), FEATURES)).unwrap();
    drop(engine);
    fixed_batch_under_concurrency(home.path());
}
