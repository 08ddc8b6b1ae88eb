//! Interleaved engine-vs-direct timing (development aid; the criterion bench is the reference):
//! the three example models through raw ort, the engine (members on native plans), the engine with fusion off,
//! the engine without tracking, and the engine logging every prediction to the inference log (to
//! `QUORUM_PROFILE_STATE`, e.g. a `postgres://` URL with `--features postgres`, else the home's
//! SQLite), alternating call by call so that machine noise hits all alike.
//!
//! `profile_loop ROWS mixed`: the example ensemble fused on ONNX Runtime at its one opset against
//! the same models stamped at three opsets (`examples/models/mixed`, lifted to one at load), call by
//! call, and the engine load time of each (issue 21).
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../benches/support/direct.rs"]
mod direct;
use std::time::Instant;
fn main() {
    let rows: usize = std::env::args().nth(1).map_or(1, |a| a.parse().unwrap());
    match std::env::args().nth(2).as_deref() {
        Some("mixed") => return mixed_opsets(rows),
        Some("zipmap") => return zipmap_vs_plain(rows),
        _ => {}
    }
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let handle = engine.ensemble("market").unwrap();
    let schema = handle.feature_names().to_vec();
    let mut direct = direct::Direct::new(&engine, &schema);
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

/// One-opset vs mixed-opset fused ensembles (both on ONNX Runtime), and their load times.
fn mixed_opsets(rows: usize) {
    let (one_home, mixed_home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = common::onnxruntime_market_engine(one_home.path());
    let mixed = common::mixed_opset_market_engine(mixed_home.path());
    let (a, b) = (one.ensemble("market").unwrap(), mixed.ensemble("market").unwrap());
    assert!(a.fusion().fused && b.fusion().fused, "{:?} / {:?}", a.fusion(), b.fusion());
    let schema = a.feature_names().to_vec();
    let values = direct::rows(rows, &schema);
    let batch = quorum::Batch::row_major(&schema, &values).unwrap();
    let mut samples: [Vec<f64>; 2] = Default::default();
    for _ in 0..(200_000 / rows).max(200) {
        for (k, h) in [(0, &a), (1, &b)] {
            let t = Instant::now();
            std::hint::black_box(h.predict_batch(&batch).unwrap());
            samples[k].push(t.elapsed().as_secs_f64());
        }
    }
    let [x, y] = samples.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e6
    });
    println!(
        "rows {rows}: fused at one opset {x:.2} µs | fused across opsets {y:.2} µs ({:+.1}%)",
        (y / x - 1.0) * 100.0
    );
    // Engine load (ensembles, sessions, fusion with its probe rows), alternating, median of 41 each.
    let load = |home: &std::path::Path| {
        let t = Instant::now();
        let engine = quorum::InferenceEngine::builder(home).with_native(false).without_persistence().build().unwrap();
        std::hint::black_box(engine.ensemble("market").unwrap());
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut ones, mut mixeds) = (Vec::new(), Vec::new());
    for _ in 0..41 {
        ones.push(load(one_home.path()));
        mixeds.push(load(mixed_home.path()));
    }
    let [la, lb] = [ones, mixeds].map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    });
    println!("engine load: one opset {la:.1} ms | across opsets {lb:.1} ms ({:+.1}%)", (lb / la - 1.0) * 100.0);
}

/// ZipMap exports (cut back at registration) against the same models exported without ZipMap.
fn zipmap_vs_plain(rows: usize) {
    const FEATURES: [&str; 3] = ["ret_1d", "ret_5d", "vix"];
    const PAIRS: [(&str, &str); 2] = [("zipmap_int", "zipmap_int_plain"), ("zipmap_lightgbm", "zipmap_lightgbm_plain")];
    let home = tempfile::tempdir().unwrap();
    let registering = quorum::InferenceEngine::builder(home.path()).without_persistence().build().unwrap();
    for name in PAIRS.iter().flat_map(|(z, p)| [*z, *p]) {
        let file = common::repo().join(format!("tests/fixtures/exporters/{name}.onnx"));
        registering.register_model(quorum::ModelRegistration::new(name, file, FEATURES)).unwrap();
        let member = [name.parse::<quorum::MemberSpec>().unwrap()];
        registering.create_ensemble(quorum::EnsembleConfig::new(format!("{name}_alone"), member)).unwrap();
    }
    drop(registering);
    let names: Vec<String> = FEATURES.map(String::from).to_vec();
    let values: Vec<f32> =
        common::holdout_features(rows).iter().flat_map(|f| FEATURES.map(|n| f.get(n).unwrap())).collect();
    let batch = quorum::Batch::row_major(&names, &values).unwrap();
    for (executor, native) in [("onnxruntime", false), ("default executor", true)] {
        let engine =
            quorum::InferenceEngine::builder(home.path()).without_persistence().with_native(native).build().unwrap();
        for (zipmap, plain) in PAIRS {
            let z = engine.ensemble(&format!("{zipmap}_alone")).unwrap();
            let p = engine.ensemble(&format!("{plain}_alone")).unwrap();
            let mut samples: [Vec<f64>; 2] = Default::default();
            for _ in 0..(100_000 / rows).clamp(2_000, 20_000) {
                for (k, h) in [(0, &z), (1, &p)] {
                    let t = Instant::now();
                    std::hint::black_box(h.predict_batch(&batch).unwrap());
                    samples[k].push(t.elapsed().as_secs_f64());
                }
            }
            let [zm, pm] = samples.map(|mut v| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2] * 1e6
            });
            println!(
                "rows {rows}, {executor}: {zipmap} {zm:.2} µs | {plain} {pm:.2} µs | ZipMap export {:+.1}%",
                (zm / pm - 1.0) * 100.0
            );
        }
    }
}
