//! Models that do not take any number of rows per call (issue 22): a batch dimension fixed to 1 (as
//! `torch.onnx.export` writes without `dynamic_axes`) or to 4, and a free dimension that fails on
//! two rows. Registration finds the limit; every batch path (the engine's calls, native probes,
//! the optimizer's benchmark, queued batches, fusion) splits rows into calls the model takes, and
//! the answers equal the model's arithmetic. Fixtures: `scripts/make_fixed_batch_fixtures.py`.

mod common;

use quorum::{
    BatchingOptions, EnsembleConfig, InferenceEngine, MemberSpec, ModelOptions, ModelRegistration, Optimizer,
    RuntimeOptions, VersionSpec,
};

const FEATURES: [&str; 3] = ["ret_1d", "ret_5d", "vix"];
const W: [[f64; 2]; 3] = [[0.8, -0.5], [-1.2, 0.3], [0.4, 0.9]];
const B: [f64; 2] = [0.1, -0.2];

/// (fixture, the most rows per call registration must find)
const MODELS: [(&str, u32); 3] = [("fixed_batch1", 1), ("fixed_batch4", 4), ("reshape_batch1", 1)];

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo().join(format!("tests/fixtures/exporters/{name}.onnx"))
}

fn features() -> Vec<String> {
    FEATURES.map(String::from).to_vec()
}

/// The fixtures' arithmetic: softmax(x · W + B), class 1.
fn expected(row: &[f32]) -> f32 {
    let s: Vec<f64> = (0..2).map(|j| B[j] + (0..3).map(|i| f64::from(row[i]) * W[i][j]).sum::<f64>()).collect();
    (1.0 / (1.0 + (s[0] - s[1]).exp())) as f32
}

fn engine(home: &std::path::Path, native: bool) -> InferenceEngine {
    let engine = InferenceEngine::builder(home).without_persistence().with_native(native).build().unwrap();
    for (name, _) in MODELS {
        engine.register_model(ModelRegistration::new(name, fixture(name), features())).unwrap();
        let member = [name.parse::<MemberSpec>().unwrap()];
        engine.create_ensemble(EnsembleConfig::new(format!("{name}_alone"), member)).unwrap();
    }
    engine
}

/// `n` rows of the three features from the held-out data.
fn rows(n: usize) -> Vec<f32> {
    common::holdout_features(n).iter().flat_map(|f| FEATURES.map(|name| f.get(name).unwrap())).collect()
}

#[test]
fn registration_finds_fixed_batch_sizes_and_a_free_one_that_fails_on_two_rows() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path(), true);
    for (name, max_batch) in MODELS {
        let meta = engine.registry().resolve(name, VersionSpec::Default).unwrap();
        assert_eq!(meta.max_batch, Some(max_batch), "{name}");
        // `models show --json` prints the metadata: the limit is in it.
        assert_eq!(serde_json::to_value(&meta).unwrap()["max_batch"], max_batch, "{name}");
    }
    engine
        .register_model(ModelRegistration::new(
            "sentiment",
            common::model_file("sentiment"),
            common::features_of("sentiment"),
        ))
        .unwrap();
    let free = engine.registry().resolve("sentiment", VersionSpec::Default).unwrap();
    assert_eq!(free.max_batch, None);
    assert!(serde_json::to_value(&free).unwrap().get("max_batch").is_none());
}

#[test]
fn single_rows_and_batches_of_every_size_answer_the_models_arithmetic_natively_or_not() {
    let values = rows(9);
    for native in [false, true] {
        let home = tempfile::tempdir().unwrap();
        let engine = engine(home.path(), native);
        for (name, _) in MODELS {
            let handle = engine.ensemble(&format!("{name}_alone")).unwrap();
            let names = handle.feature_names();
            for n in [1usize, 2, 3, 4, 5, 9] {
                let batch = quorum::Batch::row_major(&names, &values[..n * 3]).unwrap();
                let answer = handle.predict_batch(&batch).unwrap_or_else(|e| panic!("{name}, {n} rows: {e}"));
                for (r, row) in values[..n * 3].chunks(3).enumerate() {
                    let got = answer.member_predictions[r];
                    assert!((got - expected(row)).abs() < 1e-6, "{name} (native {native}), row {r} of {n}: {got}");
                }
            }
        }
        // The fixed-size models verify on their native plans (the probe calls ONNX Runtime row by row
        // or four at a time); the reshaping one has no plan and keeps ONNX Runtime.
        for r in engine.replicas(None) {
            let expected = native && r.model != "reshape_batch1";
            assert_eq!(r.executor.is_native(), expected, "{} (native {native}): {:?}", r.model, r.executor);
        }
    }
}

#[test]
fn a_fixed_batch_member_runs_beside_the_fused_example_models() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::onnxruntime_market_engine(home.path());
    engine.register_model(ModelRegistration::new("fixed_batch1", fixture("fixed_batch1"), features())).unwrap();
    let (handle, answer) = common::beside_examples(&engine, "fixed_batch1", 40);
    // The example models fuse; the fixed-batch member runs on its own session beside them.
    let fusion = handle.fusion();
    assert!(fusion.fused && answer.fused, "{fusion:?}");
    assert_eq!(fusion.members, ["technical", "fundamental", "sentiment"]);
    assert!(fusion.left_out["fixed_batch1"].contains("fixed batch size"), "{fusion:?}");
    assert!(answer.members.iter().all(|m| m.error.is_none()), "{:?}", answer.members);
    for (r, f) in common::holdout_features(40).iter().enumerate() {
        let row = FEATURES.map(|n| f.get(n).unwrap());
        assert!((answer.member_predictions[r * 4 + 3] - expected(&row)).abs() < 1e-6);
    }
}

#[test]
fn the_optimizer_benchmarks_fixed_batch_models_at_every_batch_size() {
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path(), false);
    let data = common::repo().join("examples/data/holdout.csv");
    for name in ["fixed_batch1", "fixed_batch4"] {
        let bench = Optimizer::new(&engine)
            .benchmark(name, VersionSpec::Default, &data, Some("next_day_up"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(bench.latency.len(), 4, "{name}: {bench:?}");
        assert!(bench.accuracy.is_some());
    }
}

#[test]
fn concurrent_callers_with_batching_on_never_send_a_fixed_batch_model_more_rows_than_it_takes() {
    let home = tempfile::tempdir().unwrap();
    let batching =
        ModelOptions::default().with_batching(BatchingOptions { max_batch: 64, ..BatchingOptions::default() });
    let engine = InferenceEngine::builder(home.path())
        .without_persistence()
        .with_native(false)
        .with_default_model_options(batching)
        .build()
        .unwrap();
    for name in ["fixed_batch1", "fixed_batch4"] {
        engine.register_model(ModelRegistration::new(name, fixture(name), features())).unwrap();
        engine.create_ensemble(EnsembleConfig::new(format!("{name}_alone"), [name.parse().unwrap()])).unwrap();
    }
    let features = common::holdout_features(50);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (engine, features) = (&engine, &features);
            scope.spawn(move || {
                for name in ["fixed_batch1", "fixed_batch4"] {
                    let handle = engine.ensemble(&format!("{name}_alone")).unwrap();
                    for f in features.iter().skip(t) {
                        let p = handle.predict(f).unwrap_or_else(|e| panic!("{name}: {e}"));
                        let row = FEATURES.map(|n| f.get(n).unwrap());
                        assert!((p.prediction - expected(&row)).abs() < 1e-6);
                    }
                }
            });
        }
    });
}

#[test]
fn a_model_that_takes_one_row_per_call_gets_two_replicas_per_default_session_unless_its_options_set_them() {
    let home = tempfile::tempdir().unwrap();
    let engine = InferenceEngine::builder(home.path())
        .without_persistence()
        .with_native(false)
        .with_runtime_options(RuntimeOptions::default().with_sessions_per_model(3))
        .with_model_options("reshape_batch1", ModelOptions::default().with_replicas(1, 1))
        .build()
        .unwrap();
    for (name, _) in MODELS {
        engine.register_model(ModelRegistration::new(name, fixture(name), features())).unwrap();
    }
    for name in ["fixed_batch1", "fixed_batch4", "reshape_batch1"] {
        engine.create_ensemble(EnsembleConfig::new(format!("{name}_alone"), [name.parse().unwrap()])).unwrap();
        engine.ensemble(&format!("{name}_alone")).unwrap().predict_row(&[0.1, 0.2, 0.3]).unwrap();
    }
    let replicas = |model: &str| engine.replicas(None).into_iter().find(|r| r.model == model).unwrap();
    let one_row = replicas("fixed_batch1");
    assert_eq!((one_row.replicas, one_row.min, one_row.max), (6, 6, 6));
    let four_rows = replicas("fixed_batch4");
    assert_eq!((four_rows.replicas, four_rows.min, four_rows.max), (3, 3, 3));
    let pinned = replicas("reshape_batch1");
    assert_eq!((pinned.replicas, pinned.min, pinned.max), (1, 1, 1));
}
