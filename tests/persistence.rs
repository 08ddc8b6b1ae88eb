//! Learnt weights, weight history and tracked metrics survive a restart (SQLite in the home).

mod common;

use std::time::Duration;

use quorum::{EnsembleConfig, InferenceEngine, MemberSpec, PersistOptions, StrategyKind};

fn members() -> [MemberSpec; 3] {
    ["technical", "fundamental", "sentiment"].map(|m| m.parse().unwrap())
}

fn teach(engine: &InferenceEngine, ensemble: &str, rows: &[quorum::Features]) -> quorum::Prediction {
    for (i, f) in rows.iter().enumerate() {
        let p = engine.predict(ensemble, f).unwrap();
        engine.record_outcome(p.request_id, (i % 3 == 0) as u8 as f64).unwrap();
    }
    engine.predict(ensemble, &rows[0]).unwrap()
}

#[test]
fn weights_and_metrics_resume_after_a_restart() {
    let home = tempfile::tempdir().unwrap();
    let rows = common::holdout_features(80);
    let before = {
        let engine = common::market_engine(home.path());
        engine.create_ensemble(EnsembleConfig::new("learning", members()).with_strategy(StrategyKind::Boa)).unwrap();
        teach(&engine, "learning", &rows)
        // dropped here: the last clone flushes
    };
    assert_eq!(before.weights_epoch, 80);
    let engine = common::engine(home.path());
    let after = engine.predict("learning", &rows[0]).unwrap();
    assert_eq!(after.weights_epoch, 80, "learning resumed where it stopped");
    assert_eq!(after.prediction, before.prediction);
    for (a, b) in after.model_contributions.iter().zip(&before.model_contributions) {
        assert_eq!((a.weight, a.recent_loss), (b.weight, b.recent_loss));
    }
    let metrics = engine.metrics("learning").unwrap();
    assert_eq!(metrics.metrics.all_time.count, 80, "tracked sums resumed");
    assert_eq!(metrics.members[0].1.all_time.count, 80);

    // It keeps learning from there.
    let p = engine.predict("learning", &rows[1]).unwrap();
    engine.record_outcome(p.request_id, 1.0).unwrap();
    assert_eq!(engine.predict("learning", &rows[0]).unwrap().weights_epoch, 81);

    let history = engine.state_store().unwrap().weight_history("learning").unwrap();
    assert!(history.len() >= 2, "the configured weights, then at least one learnt row: {history:?}");
    assert_eq!(history[0].1, 0);
    assert!(history.last().unwrap().1 >= 80);
    assert!(history[0].2["technical"].is_number());
}

#[test]
fn every_online_rule_resumes_after_a_restart_even_with_a_zero_prior_weight() {
    // A zero configured weight is −∞ in the log domain, which JSON cannot hold; EWA also keeps
    // rounds where a member did not answer. Both must survive the state file.
    let home = tempfile::tempdir().unwrap();
    let rows = common::holdout_features(40);
    let rules = [StrategyKind::Hedge, StrategyKind::Boa, StrategyKind::Mlpol, StrategyKind::Ewa];
    let before: Vec<quorum::Prediction> = {
        let engine = common::market_engine(home.path());
        rules
            .iter()
            .map(|&rule| {
                let name = format!("resume-{}", rule.as_str());
                let config =
                    EnsembleConfig::new(&name, members()).with_strategy(rule).with_weights(vec![0.5, 0.5, 0.0]);
                engine.create_ensemble(config).unwrap();
                teach(&engine, &name, &rows)
            })
            .collect()
    };
    let engine = common::engine(home.path());
    for (rule, before) in rules.iter().zip(&before) {
        let after = engine.predict(&format!("resume-{}", rule.as_str()), &rows[0]).unwrap();
        assert_eq!(after.weights_epoch, 40, "{rule:?} resumed where it stopped");
        assert_eq!(after.prediction, before.prediction, "{rule:?}");
    }
}

#[test]
fn the_background_flush_bounds_what_a_crash_loses() {
    // The crash is real: this test runs itself again as a child process that learns, lets the
    // background flush run, and is killed with SIGKILL (no drop, no final flush, its lock released
    // by the kernel).
    const CHILD: &str = "QUORUM_TEST_CRASH_HOME";
    let rows = common::holdout_features(30);
    if let Some(home) = std::env::var_os(CHILD) {
        let options = PersistOptions { flush_interval: Duration::from_millis(50), history_interval: Duration::ZERO };
        let engine = InferenceEngine::builder(std::path::Path::new(&home)).with_persistence(options).build().unwrap();
        engine.create_ensemble(EnsembleConfig::new("learning", members()).with_strategy(StrategyKind::Hedge)).unwrap();
        teach(&engine, "learning", &rows);
        std::thread::sleep(Duration::from_millis(400));
        println!("taught");
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let home = tempfile::tempdir().unwrap();
    drop(common::market_engine(home.path()));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "the_background_flush_bounds_what_a_crash_loses", "--nocapture", "--test-threads=1"])
        .env(CHILD, home.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    while !line.contains("taught") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0, "the child ended before teaching");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let restarted = common::engine(home.path());
    assert_eq!(restarted.predict("learning", &rows[0]).unwrap().weights_epoch, 30);
    assert_eq!(restarted.metrics("learning").unwrap().metrics.all_time.count, 30);
    let db = rusqlite::Connection::open(home.path().join("state.sqlite")).unwrap();
    let performance: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM model_performance WHERE model_id = 'technical' AND metric_name = 'accuracy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(performance >= 2, "metric history rows (all_time and window)");
    let active: i64 = db
        .query_row("SELECT COUNT(*) FROM ensemble_config WHERE ensemble_name = 'learning' AND is_active", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(active, 1, "one active configuration per name");
}

#[test]
fn a_new_ensemble_version_starts_fresh() {
    let home = tempfile::tempdir().unwrap();
    let rows = common::holdout_features(20);
    {
        let engine = common::market_engine(home.path());
        engine.create_ensemble(EnsembleConfig::new("learning", members()).with_strategy(StrategyKind::Hedge)).unwrap();
        teach(&engine, "learning", &rows);
        engine.create_ensemble(EnsembleConfig::new("learning", members()).with_strategy(StrategyKind::Hedge)).unwrap();
    }
    let engine = common::engine(home.path());
    let p = engine.predict("learning", &rows[0]).unwrap();
    assert_eq!((p.ensemble_version, p.weights_epoch), (2, 0));
}

#[test]
fn cache_hits_reach_the_inference_log_like_other_predictions() {
    let home = tempfile::tempdir().unwrap();
    common::market_engine(home.path());
    let engine = InferenceEngine::builder(home.path())
        .with_prediction_cache(quorum::CacheOptions { capacity: 100, ..Default::default() })
        .with_inference_log(quorum::InferenceLogOptions { flush_ms: 5, ..Default::default() })
        .build()
        .unwrap();
    let rows = common::holdout_features(1);
    let first = engine.predict("market", &rows[0]).unwrap();
    let hit = engine.predict("market", &rows[0]).unwrap();
    assert!(hit.cached && !first.cached);
    let started = std::time::Instant::now();
    while engine.inference_log_stats().unwrap().written < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", engine.inference_log_stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    let db = rusqlite::Connection::open(home.path().join("state.sqlite")).unwrap();
    let ids: Vec<String> = db
        .prepare("SELECT request_id FROM inference_logs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids, [first.request_id.to_string(), hit.request_id.to_string()]);
}
