//! Shared by the integration tests: a fresh quorum home with the three real example models.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use quorum::{
    BreakerOptions, EnsembleConfig, Features, InferenceEngine, MemberSpec, ModelKind, ModelRegistration, SlidingWindow,
};

/// The repository root (the core crate's directory; the CLI crate's tests include this file too).
pub fn repo() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.ancestors().find(|dir| dir.join("examples/models").is_dir()).unwrap_or(&manifest).to_path_buf()
}

pub fn model_file(name: &str) -> PathBuf {
    repo().join("examples/models").join(format!("{name}.onnx"))
}

/// (name, kind, features) of each example model, read from the manifest the training script wrote.
pub fn example_models() -> Vec<(String, ModelKind, Vec<String>)> {
    let text = std::fs::read_to_string(repo().join("examples/models/manifest.json")).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest json");
    manifest["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| {
            let kind = m["kind"].as_str().expect("kind").parse().expect("kind");
            let features = m["features"]
                .as_array()
                .expect("features")
                .iter()
                .map(|f| f.as_str().expect("f").to_string())
                .collect();
            (m["name"].as_str().expect("name").to_string(), kind, features)
        })
        .collect()
}

pub fn features_of(name: &str) -> Vec<String> {
    example_models().into_iter().find(|m| m.0 == name).expect("model").2
}

pub fn engine(home: &Path) -> InferenceEngine {
    InferenceEngine::builder(home).build().expect("engine")
}

/// A fresh home (no persistence) with only the technical model registered.
pub fn technical_home() -> (tempfile::TempDir, InferenceEngine) {
    let home = tempfile::tempdir().expect("home");
    let engine = InferenceEngine::builder(home.path()).without_persistence().build().expect("engine");
    engine
        .register_model(ModelRegistration::new("technical", model_file("technical"), features_of("technical")))
        .expect("register");
    (home, engine)
}

/// Registers the three example models and the `market` soft-vote ensemble.
pub fn market_engine(home: &Path) -> InferenceEngine {
    market_engine_with(home, engine(home))
}

/// [`market_engine`] with native executors off: every member runs on ONNX Runtime (for tests of
/// what ONNX Runtime calls do: fusion, replica pools, cut-off runs, autoscaling).
pub fn onnxruntime_market_engine(home: &Path) -> InferenceEngine {
    market_engine_with(home, InferenceEngine::builder(home).with_native(false).build().expect("engine"))
}

/// The `market` ensemble on ONNX Runtime with the example models as three exporters would stamp
/// them (`examples/models/mixed/`: technical at ai.onnx 13, fundamental at 9, sentiment at 22;
/// `scripts/make_mixed_opset_models.py`): fusion lifts them to 22.
pub fn mixed_opset_market_engine(home: &Path) -> InferenceEngine {
    let engine = InferenceEngine::builder(home).with_native(false).without_persistence().build().expect("engine");
    for (name, kind, features) in example_models() {
        let file = repo().join("examples/models/mixed").join(format!("{name}.onnx"));
        engine.register_model(ModelRegistration::new(&name, file, features).with_kind(kind)).expect("register");
    }
    let members = ["technical", "fundamental", "sentiment"].map(|m| m.parse::<MemberSpec>().expect("member"));
    engine.create_ensemble(EnsembleConfig::new("market", members).with_weights(vec![0.4, 0.4, 0.2])).expect("ensemble");
    engine
}

fn market_engine_with(home: &Path, engine: InferenceEngine) -> InferenceEngine {
    let _ = home;
    for (name, kind, features) in example_models() {
        engine
            .register_model(ModelRegistration::new(&name, model_file(&name), features).with_kind(kind))
            .expect("register");
    }
    let members = ["technical", "fundamental", "sentiment"].map(|m| m.parse::<MemberSpec>().expect("member"));
    engine.create_ensemble(EnsembleConfig::new("market", members).with_weights(vec![0.4, 0.4, 0.2])).expect("ensemble");
    engine
}

/// Model `model` (registered by the caller) as a fourth member beside the example models, in
/// ensemble `mixed`; the ensemble and its answer to the first `rows` held-out rows (the model's
/// prediction is member column 3).
pub fn beside_examples(
    engine: &InferenceEngine,
    model: &str,
    rows: usize,
) -> (quorum::EnsembleHandle, quorum::BatchPrediction) {
    let members = ["technical", "fundamental", "sentiment", model].map(|m| m.parse::<MemberSpec>().expect("member"));
    engine.create_ensemble(EnsembleConfig::new("mixed", members)).expect("ensemble");
    let handle = engine.ensemble("mixed").expect("handle");
    let names = handle.feature_names();
    let values: Vec<f32> =
        holdout_features(rows).iter().flat_map(|f| names.iter().map(|n| f.get(n).expect("feature"))).collect();
    let answer = handle.predict_batch(&quorum::Batch::row_major(&names, &values).expect("batch")).expect("predict");
    (handle, answer)
}

/// The held-out replay data: (column names, rows of f32, outcome column index).
pub fn holdout() -> (Vec<String>, Vec<Vec<f32>>) {
    let text = std::fs::read_to_string(repo().join("examples/data/holdout.csv")).expect("holdout");
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("header").split(',').skip(1).map(str::to_string).collect();
    let rows = lines.map(|l| l.split(',').skip(1).map(|c| c.parse::<f32>().expect("number")).collect()).collect();
    (header, rows)
}

/// The first `n` finite rows of the holdout as named features (outcome excluded).
pub fn holdout_features(n: usize) -> Vec<Features> {
    let (header, rows) = holdout();
    rows.into_iter()
        .filter(|r| r.iter().all(|v| v.is_finite()))
        .take(n)
        .map(|r| header.iter().zip(r).filter(|(h, _)| *h != "next_day_up").map(|(h, v)| (h.clone(), v)).collect())
        .collect()
}

/// `promtool check metrics` on the text: Ok, or its complaints. `None` when promtool is not
/// installed (`make test` installs it; see the Makefile's `monitoring-tools`).
pub fn promtool_check(text: &str) -> Option<Result<(), String>> {
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("promtool: {e}"),
    };
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some(if out.status.success() && said.trim().is_empty() { Ok(()) } else { Err(said) })
}

/// A fresh PostgreSQL database for one test (`postgres://postgres@127.0.0.1:5432/<name>`), made with
/// `psql`. `None`, with a visible message, when PostgreSQL is not reachable — unless
/// `QUORUM_REQUIRE_POSTGRES=1` (as `make test` sets), where that is a failure.
pub fn scratch_database(prefix: &str) -> Option<ScratchDatabase> {
    let admin = "postgres://postgres@127.0.0.1:5432/test";
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000
    );
    match psql(admin, &format!("CREATE DATABASE {name}")) {
        Ok(_) => Some(ScratchDatabase { url: format!("postgres://postgres@127.0.0.1:5432/{name}"), name }),
        Err(e) => {
            assert!(
                std::env::var("QUORUM_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "PostgreSQL is required here (QUORUM_REQUIRE_POSTGRES=1) but not reachable: {e}"
            );
            eprintln!("SKIPPED: PostgreSQL is not reachable at 127.0.0.1:5432 ({e})");
            None
        }
    }
}

/// Runs SQL through `psql` and returns its unaligned, tuples-only output.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = std::process::Command::new("psql")
        .args([url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// A scratch database, dropped (its connections closed) when this is.
pub struct ScratchDatabase {
    pub url: String,
    pub name: String,
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let _ = psql(
            "postgres://postgres@127.0.0.1:5432/test",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A breaker that opens after 5 calls in a window of 10 and tries again after 100 ms: fault tests
/// see it open and close within a test.
pub fn quick_breaker() -> BreakerOptions {
    BreakerOptions {
        window: SlidingWindow::Count(10),
        minimum_calls: 5,
        wait_in_open: std::time::Duration::from_millis(100),
        half_open_calls: 2,
        ..BreakerOptions::default()
    }
}
