//! Interleaved engine-vs-direct timing (development aid; the criterion bench is the reference).
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
    let untracked = quorum::InferenceEngine::builder(home.path()).without_tracking().build().unwrap();
    let untracked = untracked.ensemble("market").unwrap();
    let mut out = Vec::new();
    let (mut e, mut d, mut u) = (Vec::new(), Vec::new(), Vec::new());
    let n = (200_000 / rows).max(200);
    for _ in 0..n {
        let t = Instant::now();
        std::hint::black_box(handle.predict_batch(&batch).unwrap());
        e.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        direct.predict(&values, rows, &mut out);
        d.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(untracked.predict_batch(&batch).unwrap());
        u.push(t.elapsed().as_secs_f64());
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e6
    };
    let (me, md, mu) = (median(e), median(d), median(u));
    println!(
        "rows {rows}: direct ort {md:.2} µs | engine {me:.2} µs ({:+.1}%) | engine without tracking {mu:.2} µs ({:+.1}%)",
        (me / md - 1.0) * 100.0,
        (mu / md - 1.0) * 100.0
    );
}
