//! Interleaved engine-vs-direct timing (development aid; the criterion bench is the reference):
//! the three example models through raw ort, the engine (members on native plans), the engine with fusion off,
//! the engine without tracking, and the engine logging every prediction to the inference log (to
//! `QUORUM_PROFILE_STATE`, e.g. a `postgres://` URL with `--features postgres`, else the home's
//! SQLite), alternating call by call so that machine noise hits all alike.
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../benches/support/direct.rs"]
mod direct;
use std::time::Instant;
fn main() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let handle = engine.ensemble("market").unwrap();
    let schema = handle.feature_names().to_vec();
    let mut direct = direct::Direct::new(&engine, &schema);
    let rows: usize = std::env::args().nth(1).map_or(1, |a| a.parse().unwrap());
    let values = direct::rows(rows, &schema);
    let batch = quorum::Batch::row_major(&schema, &values).unwrap();
    let unfused =
        quorum::InferenceEngine::builder(home.path()).with_fusion(false).without_persistence().build().unwrap();
    let unfused = unfused.ensemble("market").unwrap();
    let untracked =
        quorum::InferenceEngine::builder(home.path()).without_tracking().without_persistence().build().unwrap();
    let untracked = untracked.ensemble("market").unwrap();
    // Its own state file: one engine writes a state at a time.
    let own_state = quorum::StateUrl::Sqlite(home.path().join("logging-state.sqlite"));
    let url = std::env::var("QUORUM_PROFILE_STATE").map_or(own_state, |url| quorum::StateUrl::parse(&url).unwrap());
    let logging = quorum::InferenceEngine::builder(home.path()).with_inference_log(Default::default()).with_state(url);
    let logging = logging.build().unwrap();
    let logged = logging.ensemble("market").unwrap();
    let mut out = Vec::new();
    let mut samples: [Vec<f64>; 5] = Default::default();
    let n = (200_000 / rows).max(200);
    for _ in 0..n {
        let t = Instant::now();
        direct.predict(&values, rows, &mut out);
        samples[0].push(t.elapsed().as_secs_f64());
        for (k, h) in [(1, &handle), (2, &unfused), (3, &untracked), (4, &logged)] {
            let t = Instant::now();
            std::hint::black_box(h.predict_batch(&batch).unwrap());
            samples[k].push(t.elapsed().as_secs_f64());
        }
    }
    let [d, e, u, t, l] = samples.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e6
    });
    let vs = |x: f64| (x / d - 1.0) * 100.0;
    println!(
        "rows {rows}: direct ort {d:.2} µs | engine {e:.2} µs ({:+.1}%) | unfused {u:.2} µs ({:+.1}%) | untracked {t:.2} µs ({:+.1}%) | logged {l:.2} µs ({:+.1}% vs engine)",
        vs(e),
        vs(u),
        vs(t),
        (l / e - 1.0) * 100.0
    );
    // Let the writer finish, then say what reached the database.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let stats = logging.inference_log_stats().unwrap();
    println!(
        "inference log ({}): {} rows written, {} dropped, {} write errors",
        logging.state_store().unwrap().url().redacted(),
        stats.written,
        stats.dropped,
        stats.write_errors
    );
}
