//! PostgreSQL as the state store (feature `postgres`), against the real server on 127.0.0.1:5432:
//! migrations, the inference log (including the database going away and coming back), and several
//! engines over one home learning as one from the ordered outcome log. Each test makes its own
//! scratch database and skips, saying so, when PostgreSQL is not reachable.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::psql;
use quorum::{
    EnsembleConfig, Features, InferenceEngine, InferenceLogOptions, MemberSpec, ModelRegistration, StateStore,
    StateUrl, StrategyKind,
};

fn engine(home: &Path, url: &str, log: Option<InferenceLogOptions>) -> InferenceEngine {
    let mut builder = InferenceEngine::builder(home).with_state(StateUrl::parse(url).unwrap());
    if let Some(options) = log {
        builder = builder.with_inference_log(options);
    }
    builder.build().expect("engine over PostgreSQL")
}

fn register_models(engine: &InferenceEngine) {
    for (name, kind, features) in common::example_models() {
        engine
            .register_model(ModelRegistration::new(&name, common::model_file(&name), features).with_kind(kind))
            .expect("register");
    }
}

fn boa(name: &str) -> EnsembleConfig {
    let members = ["technical", "fundamental", "sentiment"].map(|m| m.parse::<MemberSpec>().unwrap());
    EnsembleConfig::new(name, members).with_strategy(StrategyKind::Boa)
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn weight_bits(engine: &InferenceEngine, ensemble: &str) -> Vec<(String, u32)> {
    let weights = engine.ensemble(ensemble).unwrap().current_weights();
    weights.regimes["all"].iter().map(|(m, w)| (m.clone(), w.to_bits())).collect()
}

#[test]
fn migrations_record_their_version_and_a_newer_schema_is_refused() {
    let Some(db) = common::scratch_database("q_migrate") else { return };
    let url = db.url.clone();
    let store = StateStore::connect(&StateUrl::parse(&url).unwrap()).unwrap();
    assert_eq!(store.schema_version().unwrap(), 2);
    drop(store);
    // Opening again applies nothing twice.
    let store = StateStore::connect(&StateUrl::parse(&url).unwrap()).unwrap();
    assert_eq!(psql(&url, "SELECT count(*) FROM schema_version").unwrap(), "2");
    // Migration 2: outcomes keep every digit of an f64 (a regression target).
    let outcome_type =
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'outcome_log' AND column_name = 'outcome'";
    assert_eq!(psql(&url, outcome_type).unwrap(), "double precision");
    drop(store);
    let tables = psql(&url, "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'public'").unwrap();
    for table in
        ["model_performance", "ensemble_config", "inference_logs", "outcome_log", "change_log", "schema_version"]
    {
        assert!(tables.split(',').any(|t| t == table), "{table} missing from {tables}");
    }
    let indexes = psql(&url, "SELECT string_agg(indexname, ',') FROM pg_indexes WHERE schemaname = 'public'").unwrap();
    for index in [
        "idx_model_performance_date",
        "idx_model_performance_id",
        "idx_inference_logs_timestamp",
        "idx_inference_logs_latency",
    ] {
        assert!(indexes.contains(index), "{index} missing from {indexes}");
    }
    psql(&url, "INSERT INTO schema_version (version) VALUES (7)").unwrap();
    let error = StateStore::connect(&StateUrl::parse(&url).unwrap()).unwrap_err();
    assert_eq!(error.code(), "config");
    assert!(error.to_string().contains("schema version 7, newer"), "{error}");
}

#[test]
fn predictions_reach_inference_logs_with_features_and_result() {
    let Some(db) = common::scratch_database("q_log") else { return };
    let url = db.url.clone();
    let home = tempfile::tempdir().unwrap();
    let engine = engine(home.path(), &url, Some(InferenceLogOptions::default()));
    register_models(&engine);
    engine.create_ensemble(boa("market")).unwrap();
    let rows = common::holdout_features(50);
    let mut predictions = Vec::new();
    for f in rows.iter().cycle().take(200) {
        predictions.push(engine.predict("market", f).unwrap());
    }
    wait_for("200 logged rows", Duration::from_secs(20), || engine.inference_log_stats().unwrap().written == 200);
    assert_eq!(psql(&url, "SELECT count(*) FROM inference_logs").unwrap(), "200");
    let p = &predictions[7];
    let row = psql(
        &url,
        &format!("SELECT model_ensemble, ensemble_version, prediction_result->>'prediction', input_features::text, member_values::text FROM inference_logs WHERE request_id = '{}'", p.request_id),
    )
    .unwrap();
    let fields: Vec<&str> = row.split('|').collect();
    assert_eq!(fields[0], "market");
    assert_eq!(fields[1], "1");
    assert_eq!(fields[2].parse::<f32>().unwrap(), p.prediction);
    let features: HashMap<String, f64> = serde_json::from_str(fields[3]).unwrap();
    for (name, value) in rows[7].iter() {
        assert_eq!(features[name] as f32, value, "{name}");
    }
    let members: Vec<f32> =
        fields[4].trim_matches(|c| c == '{' || c == '}').split(',').map(|v| v.parse().unwrap()).collect();
    let expected: Vec<f32> = p.model_contributions.iter().map(|c| c.prediction.unwrap()).collect();
    assert_eq!(members, expected, "member values are stored exactly");
    let stats = engine.inference_log_stats().unwrap();
    assert_eq!((stats.dropped, stats.write_errors), (0, 0));
}

#[test]
fn the_inference_log_survives_the_database_going_away_and_coming_back() {
    let Some(db) = common::scratch_database("q_down") else { return };
    let (url, database) = (db.url.clone(), db.name.clone());
    let admin = "postgres://postgres@127.0.0.1:5432/test";
    let home = tempfile::tempdir().unwrap();
    let options = InferenceLogOptions { queue_capacity: 100, flush_ms: 10, ..Default::default() };
    let engine = engine(home.path(), &url, Some(options));
    register_models(&engine);
    engine.create_ensemble(boa("market")).unwrap();
    let rows = common::holdout_features(20);
    for f in &rows {
        engine.predict("market", f).unwrap();
    }
    wait_for("the first rows", Duration::from_secs(20), || engine.inference_log_stats().unwrap().written == 20);

    // The database refuses connections and drops the open ones: predictions go on, rows wait up to
    // the bound, the rest are dropped and counted.
    psql(admin, &format!("ALTER DATABASE {database} ALLOW_CONNECTIONS false")).unwrap();
    psql(admin, &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"))
        .unwrap();
    for f in rows.iter().cycle().take(500) {
        engine.predict("market", f).expect("predictions do not depend on the database");
    }
    wait_for("a failed write", Duration::from_secs(20), || engine.inference_log_stats().unwrap().write_errors > 0);
    let during = engine.inference_log_stats().unwrap();
    assert!(during.dropped > 0, "{during:?}");
    assert!(during.waiting <= 100 + 5_000, "{during:?}");
    assert!(during.last_error.is_some());

    // Back: the writer reconnects by itself and writes everything that waited.
    psql(admin, &format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true")).unwrap();
    wait_for("the backlog", Duration::from_secs(30), || {
        let s = engine.inference_log_stats().unwrap();
        s.waiting == 0 && s.written + s.dropped == 520
    });
    let stats = engine.inference_log_stats().unwrap();
    assert_eq!(psql(&url, "SELECT count(*) FROM inference_logs").unwrap(), stats.written.to_string());
    assert!(stats.last_error.is_none(), "{stats:?}");
}

#[test]
fn engines_sharing_a_state_learn_as_one_and_a_late_one_catches_up() {
    let Some(db) = common::scratch_database("q_shared") else { return };
    let url = db.url.clone();
    let home = tempfile::tempdir().unwrap();
    let log = Some(InferenceLogOptions { flush_ms: 5, ..Default::default() });
    let a = engine(home.path(), &url, log);
    let b = engine(home.path(), &url, log);
    register_models(&a);
    // Created through one engine, loaded by the other through the change feed.
    a.create_ensemble(boa("shared")).unwrap();
    wait_for("b to load the ensemble", Duration::from_secs(10), || b.ensemble("shared").is_ok());

    let rows = common::holdout_features(120);
    let mut ids = std::collections::HashSet::new();
    let mut by_id: HashMap<u64, Features> = HashMap::new();
    for (i, f) in rows.iter().enumerate() {
        // Predictions alternate between the engines; each outcome goes to the other one.
        let (predictor, receiver) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let p = predictor.predict("shared", f).unwrap();
        assert!(ids.insert(p.request_id), "request id {} issued twice", p.request_id);
        by_id.insert(p.request_id, f.clone());
        receiver.record_outcome(p.request_id, (i % 3 == 0) as u8 as f64).unwrap();
        let again = receiver.record_outcome(p.request_id, 1.0).unwrap_err();
        assert_eq!(again.code(), "outcome", "an outcome counts once");
    }
    // An id this process could have issued but no longer holds is refused at once, not waited for.
    let own = u64::from(a.shared_status().unwrap().instance) << 40;
    let started = Instant::now();
    assert_eq!(a.record_outcome(own + 999_999_999, 1.0).unwrap_err().code(), "outcome");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    let head: i64 = psql(&url, "SELECT max(position) FROM outcome_log").unwrap().parse().unwrap();
    assert_eq!(head, 120);
    for e in [&a, &b] {
        wait_for("the log to be applied", Duration::from_secs(10), || {
            e.shared_status().unwrap().applied_position == head
        });
    }
    assert_eq!(weight_bits(&a, "shared"), weight_bits(&b, "shared"));
    let learnt = a.ensemble("shared").unwrap().current_weights();
    assert!(learnt.epoch >= 120, "the weights learnt: {learnt:?}");
    assert!(learnt.regimes["all"].values().any(|w| (w - 1.0 / 3.0).abs() > 1e-3), "{learnt:?}");
    assert_eq!(a.metrics("shared").unwrap().metrics.all_time, b.metrics("shared").unwrap().metrics.all_time);
    assert_eq!(a.metrics("shared").unwrap().metrics.all_time.count, 120);

    // A process started later replays the log and ends in the same place.
    let c = engine(home.path(), &url, log);
    c.ensemble("shared").unwrap();
    wait_for("c to catch up", Duration::from_secs(10), || c.shared_status().unwrap().caught_up);
    assert_eq!(weight_bits(&c, "shared"), weight_bits(&a, "shared"));
    assert_ne!(c.shared_status().unwrap().instance, a.shared_status().unwrap().instance);

    // One embedded engine fed the same outcomes in the log's order learns the same weights, bit for bit.
    let single_home = tempfile::tempdir().unwrap();
    let single = InferenceEngine::builder(single_home.path()).without_persistence().build().unwrap();
    register_models(&single);
    single.create_ensemble(boa("shared")).unwrap();
    let log = psql(&url, "SELECT request_id || ':' || outcome FROM outcome_log ORDER BY position").unwrap();
    for line in log.lines() {
        let (id, outcome) = line.split_once(':').unwrap();
        let p = single.predict("shared", &by_id[&id.parse::<u64>().unwrap()]).unwrap();
        single.record_outcome(p.request_id, outcome.parse().unwrap()).unwrap();
    }
    assert_eq!(weight_bits(&single, "shared"), weight_bits(&a, "shared"));
}

#[test]
fn a_retried_outcome_whose_prediction_never_reached_the_inference_log_is_already_recorded() {
    // As when a replica logs an outcome and is killed before it answers, and before its queue writes
    // the prediction's row: the client's retry reaches another replica, which must say "already
    // recorded", not "unknown request id".
    let Some(db) = common::scratch_database("q_retry") else { return };
    let url = db.url.clone();
    let home = tempfile::tempdir().unwrap();
    let a = engine(home.path(), &url, None);
    let b = engine(home.path(), &url, None);
    register_models(&a);
    a.create_ensemble(boa("retried")).unwrap();
    wait_for("b to load the ensemble", Duration::from_secs(10), || b.ensemble("retried").is_ok());
    let p = a.predict("retried", &common::holdout_features(1)[0]).unwrap();
    a.record_outcome(p.request_id, 1.0).unwrap();
    let logged: i64 = psql(&url, "SELECT count(*) FROM inference_logs").unwrap().parse().unwrap();
    assert_eq!(logged, 0, "this test needs the prediction absent from the inference log");
    let retry = b.record_outcome(p.request_id, 1.0).unwrap_err();
    assert_eq!(retry.code(), "outcome");
    assert!(retry.to_string().contains("already recorded"), "{retry}");
}

#[test]
fn an_experiment_is_credited_with_its_predictions_outcomes_posted_to_another_engine() {
    let Some(db) = common::scratch_database("q_ab") else { return };
    let home = tempfile::tempdir().unwrap();
    let log = Some(InferenceLogOptions { flush_ms: 5, ..Default::default() });
    let a = engine(home.path(), &db.url, log);
    let b = engine(home.path(), &db.url, log);
    register_models(&a);
    a.create_ensemble(boa("exp")).unwrap();
    let treatment = a.create_ensemble_inactive(boa("exp")).unwrap().version;
    let mut config = quorum::ExperimentConfig::new("ab", "exp", 1, treatment);
    config.steps = vec![50.0, 100.0];
    a.start_experiment(config).unwrap();
    wait_for("b to load the ensemble", Duration::from_secs(10), || b.ensemble("exp").is_ok());
    let handle = a.ensemble("exp").unwrap();
    let rows = common::holdout_features(60);
    let mut versions = std::collections::HashSet::new();
    for (i, f) in rows.iter().enumerate() {
        let p = handle.predict_routed(f, Some(&format!("user-{i}")), None).unwrap();
        versions.insert(p.ensemble_version);
        b.record_outcome(p.request_id, (i % 2) as f64).unwrap();
    }
    assert_eq!(versions.len(), 2, "both arms predicted: {versions:?}");
    let head = 60;
    wait_for("a to apply the log", Duration::from_secs(10), || a.shared_status().unwrap().applied_position == head);
    let status = a.experiment_status("ab").unwrap();
    assert_eq!(status.arms.control.outcomes + status.arms.treatment.outcomes, 60, "{status:?}");
    assert!(status.arms.treatment.outcomes > 0);
    assert_eq!(a.shared_status().unwrap().skipped, 0, "the treatment's outcomes teach the treatment");
}

#[test]
fn an_engine_over_postgresql_can_be_dropped_inside_an_async_runtime() {
    let Some(db) = common::scratch_database("q_drop") else { return };
    let home = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
    runtime.block_on(async {
        let engine = engine(home.path(), &db.url, Some(InferenceLogOptions::default()));
        register_models(&engine);
        engine.create_ensemble(boa("market")).unwrap();
        drop(engine);
    });
}
