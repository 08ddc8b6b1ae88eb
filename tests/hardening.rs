//! What a hostile or careless user found (issue 18): concurrent writers that lost versions, two
//! engines on one state, unbounded model files, versions that wrapped, leftovers of killed writes, a
//! deleted home flushed into, models removed from under their ensembles.

mod common;

use std::sync::Arc;

use quorum::{EnsembleConfig, EnsembleStore, Error, InferenceEngine, MemberSpec, ModelRegistration, Registry};

fn members() -> [MemberSpec; 2] {
    ["technical", "fundamental"].map(|m| m.parse().unwrap())
}

#[test]
fn concurrent_ensemble_versions_are_all_kept() {
    let home = tempfile::tempdir().unwrap();
    drop(common::market_engine(home.path()));
    let home = Arc::new(home.path().to_path_buf());
    // Each thread opens its own store, as separate processes would.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let home = Arc::clone(&home);
            std::thread::spawn(move || {
                let store = EnsembleStore::open(&*home).unwrap();
                (0..20).map(|_| store.save(EnsembleConfig::new("par", members())).unwrap().version).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut reported: Vec<u32> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    reported.sort_unstable();
    assert_eq!(reported, (1..=80).collect::<Vec<u32>>(), "every creation got its own version");
    assert_eq!(EnsembleStore::open(&*home).unwrap().versions("par").unwrap().len(), 80);
}

#[test]
fn a_second_writer_of_one_state_is_refused_with_the_holder_named() {
    let home = tempfile::tempdir().unwrap();
    let first = common::market_engine(home.path());
    let second = InferenceEngine::builder(home.path()).build().unwrap_err();
    assert_eq!(second.code(), "locked");
    let message = second.to_string();
    assert!(message.contains(&format!("pid {}", std::process::id())) && message.contains("postgres"), "{message}");
    // A reader that keeps no state is welcome.
    let reader = InferenceEngine::builder(home.path()).without_persistence().build().unwrap();
    assert!(reader.predict("market", &common::holdout_features(1)[0]).is_ok());
    // Once the writer is gone, the next one takes over.
    drop(first);
    drop(common::engine(home.path()));
}

#[test]
fn a_deleted_home_makes_flush_fail_instead_of_writing_into_nothing() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let p = engine.predict("market", &common::holdout_features(1)[0]).unwrap();
    engine.flush().unwrap();
    std::fs::remove_dir_all(home.path()).unwrap();
    engine.record_outcome(p.request_id, 1.0).unwrap();
    let error = engine.flush().unwrap_err();
    assert_eq!(error.code(), "state_lost", "{error}");
    assert!(error.to_string().contains("state.sqlite"), "{error}");
}

#[test]
fn model_files_must_be_regular_and_within_the_size_limit() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::engine(home.path());
    let features = common::features_of("technical");
    let device = engine.register_model(ModelRegistration::new("dev", "/dev/zero", features.clone())).unwrap_err();
    assert_eq!(device.code(), "invalid_input", "{device}");
    assert!(device.to_string().contains("not a regular file"), "{device}");
    let folder = engine.register_model(ModelRegistration::new("dir", home.path(), features.clone())).unwrap_err();
    assert_eq!(folder.code(), "invalid_input", "{folder}");
    let small = ModelRegistration::new("small", common::model_file("technical"), features.clone()).with_max_bytes(1000);
    let too_large = engine.register_model(small).unwrap_err();
    assert_eq!(too_large.code(), "too_large", "{too_large}");
    assert!(engine.register_model(ModelRegistration::new("ok", common::model_file("technical"), features)).is_ok());
}

#[test]
fn versions_stay_in_range_instead_of_wrapping() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::engine(home.path());
    let features = common::features_of("technical");
    let file = common::model_file("technical");
    let wrapped = ModelRegistration::new("vh", &file, features.clone()).with_version(u32::MAX);
    assert_eq!(engine.register_model(wrapped).unwrap_err().code(), "invalid_name");
    let last = ModelRegistration::new("vh", &file, features.clone()).with_version(quorum::MAX_VERSION);
    assert_eq!(engine.register_model(last).unwrap().version, quorum::MAX_VERSION);
    let next = engine.register_model(ModelRegistration::new("vh", &file, features)).unwrap_err();
    assert_eq!(next.code(), "config", "{next}");
    assert_eq!(engine.registry().versions("vh").unwrap(), [quorum::MAX_VERSION]);
    for bad in [0.0, -1.0, 1.5, f64::NAN, 4_294_967_296.0] {
        assert_eq!(quorum::check_version("version", bad).unwrap_err().code(), "invalid_name", "{bad}");
    }
    assert_eq!(quorum::check_version("version", 7.0).unwrap(), 7);
}

#[test]
fn leftovers_of_killed_writes_are_cleared_on_open() {
    let home = tempfile::tempdir().unwrap();
    drop(common::market_engine(home.path()));
    // A pid no process has: its writer is gone.
    let dead = (4_000_000..4_194_304).find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()).unwrap();
    let staging = home.path().join(format!("models/technical/.tmp-2-{dead}-0-123"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), vec![0u8; 4096]).unwrap();
    let trash = home.path().join(format!("models/.tmp-removed-{dead}-1-456"));
    std::fs::create_dir_all(&trash).unwrap();
    // Written to a while ago: a fresh one may be a live writer's in another PID namespace.
    let recent = home.path().join(format!("models/technical/.tmp-4-{dead}-0-5"));
    std::fs::create_dir_all(&recent).unwrap();
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for old in [&staging, &trash] {
        std::fs::File::open(old).unwrap().set_modified(an_hour_ago).unwrap();
    }
    // A live writer's (this process's) staging stays whatever its age.
    let live = home.path().join(format!("models/technical/.tmp-3-{}-0-789", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();
    std::fs::File::open(&live).unwrap().set_modified(an_hour_ago).unwrap();
    Registry::open(home.path()).unwrap();
    assert!(!staging.exists() && !trash.exists(), "the dead writer's old leftovers are removed");
    assert!(live.exists() && recent.exists(), "a live writer's staging and a recent one are left alone");
}

#[test]
fn a_model_in_use_is_removed_only_when_forced() {
    let home = tempfile::tempdir().unwrap();
    drop(common::market_engine(home.path()));
    let registry = Registry::open(home.path()).unwrap();
    let ensembles = EnsembleStore::open(home.path()).unwrap();
    let error = ensembles.remove_model(&registry, "sentiment", None, false).unwrap_err();
    assert_eq!(error.code(), "in_use");
    assert!(error.to_string().contains("market@1"), "{error}");
    // Its only version is what the ensemble's default spec resolves to.
    assert_eq!(ensembles.remove_model(&registry, "sentiment", Some(1), false).unwrap_err().code(), "in_use");
    // A second version makes the first removable: the ensemble follows the default.
    let features = common::features_of("sentiment");
    let engine = common::engine(home.path());
    engine.register_model(ModelRegistration::new("sentiment", common::model_file("sentiment"), features)).unwrap();
    drop(engine);
    ensembles.remove_model(&registry, "sentiment", Some(1), false).unwrap();
    ensembles.remove_model(&registry, "sentiment", None, true).unwrap();
    assert!(registry.versions("sentiment").unwrap().is_empty());
}

#[test]
fn reading_a_missing_home_is_an_error_and_creates_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("typo");
    let error = Registry::open(&missing).unwrap().list().unwrap_err();
    assert!(matches!(error, Error::NotFound { what: "quorum home", .. }), "{error}");
    assert_eq!(EnsembleStore::open(&missing).unwrap().list().unwrap_err().code(), "not_found");
    assert!(!missing.exists(), "reading made no home");
    // A home that exists but holds nothing yet lists nothing.
    assert!(Registry::open(parent.path()).unwrap().list().unwrap().is_empty());
}

#[test]
fn a_classifier_whose_output_is_no_probability_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::engine(home.path());
    let linear = common::repo().join("tests/fixtures/linear.onnx");
    // y = 2a + b: 0 on the trial row of zeros, so registration cannot tell; every call checks.
    let reg = ModelRegistration::new("lin", &linear, ["a", "b"]).with_output("variable".parse().unwrap());
    engine.register_model(reg).unwrap();
    engine.create_ensemble(EnsembleConfig::new("probs", ["lin".parse::<MemberSpec>().unwrap()])).unwrap();
    let inside = quorum::Features::new().with("a", 0.25).with("b", 0.25);
    assert!((engine.predict("probs", &inside).unwrap().prediction - 0.75).abs() < 1e-6);
    let outside = quorum::Features::new().with("a", 1.0).with("b", 1.0);
    let error = engine.predict("probs", &outside).unwrap_err();
    assert!(error.to_string().contains("a probability in [0, 1]"), "{error}");
    assert!(error.to_string().contains('3'), "{error}");
}

#[test]
fn a_spent_latency_budget_answers_with_the_members_that_answered() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::onnxruntime_market_engine(home.path());
    let slow = common::repo().join("tests/fixtures/slow.onnx");
    engine.register_model(ModelRegistration::new("slow", slow, ["x"])).unwrap();
    let members = ["technical", "fundamental", "slow"].map(|m| m.parse::<MemberSpec>().unwrap());
    let budget = std::time::Duration::from_millis(40);
    engine.create_ensemble(EnsembleConfig::new("budgeted", members).with_latency_budget(budget)).unwrap();
    let features = common::holdout_features(1).remove(0).with("x", 0.5);
    // slow.onnx spends ~170 ms. Fused, the one run is cut off when the budget is spent: no member
    // answered. The calls that follow take the members' own path for a while, where the budget cuts
    // the slow one off alone and the two others make the quorum.
    let first = engine.predict("budgeted", &features).unwrap_err();
    assert_eq!(first.code(), "quorum_not_reached", "{first}");
    let p = engine.predict("budgeted", &features).unwrap();
    assert!(!p.fused);
    assert!(p.degraded, "{p:?}");
    let late = p.model_contributions.iter().find(|c| &*c.model == "slow").unwrap();
    assert!(late.prediction.is_none());
    assert!(late.error.as_deref().unwrap().contains("latency budget"), "{late:?}");

    // First in line, it spends the budget and the members after it are skipped: no quorum.
    let first = ["slow", "technical", "fundamental"].map(|m| m.parse::<MemberSpec>().unwrap());
    let unfused = InferenceEngine::builder(home.path())
        .with_native(false)
        .with_fusion(false)
        .without_persistence()
        .build()
        .unwrap();
    unfused.create_ensemble(EnsembleConfig::new("slow-first", first).with_latency_budget(budget)).unwrap();
    let error = unfused.predict("slow-first", &features).unwrap_err();
    assert_eq!(error.code(), "quorum_not_reached", "{error}");
    assert!(error.to_string().contains("latency budget"), "{error}");

    let bad = EnsembleConfig::new("bad", ["technical".parse::<MemberSpec>().unwrap()]);
    let mut bad = bad.with_latency_budget(std::time::Duration::ZERO);
    assert_eq!(engine.create_ensemble(bad.clone()).unwrap_err().code(), "config");
    bad.latency_budget_ms = Some(f64::NAN);
    assert_eq!(engine.create_ensemble(bad).unwrap_err().code(), "config");
}
