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
    let mut out = Vec::new();
    let (mut e, mut d) = (Vec::new(), Vec::new());
    let n = (200_000 / rows).max(200);
    for _ in 0..n {
        let t = Instant::now();
        std::hint::black_box(handle.predict_batch(&batch).unwrap());
        e.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        direct.predict(&values, rows, &mut out);
        d.push(t.elapsed().as_secs_f64());
    }
    e.sort_by(f64::total_cmp);
    d.sort_by(f64::total_cmp);
    let (me, md) = (e[n / 2] * 1e6, d[n / 2] * 1e6);
    println!("rows {rows}: engine median {me:.2} µs, direct {md:.2} µs, overhead {:+.1}%", (me / md - 1.0) * 100.0);
}
