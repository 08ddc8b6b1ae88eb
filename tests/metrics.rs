//! `InferenceEngine::metrics_text`: what the engine counted shows in the Prometheus text format,
//! and Prometheus's own `promtool check metrics` accepts the text.

mod common;

use std::collections::HashMap;

use quorum::{Batch, Fault, InferenceEngine};

/// The value of the sample whose name and labels are exactly `series` (`name{a="b",...}`).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.parse().unwrap()))
}

fn families(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_string(), kind.to_string())
        })
        .collect()
}

fn market() -> (tempfile::TempDir, InferenceEngine) {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    (home, engine)
}

#[test]
fn predictions_errors_latency_and_tracking_are_counted_and_promtool_accepts_the_text() {
    let (_home, engine) = market();
    let rows = common::holdout_features(40);
    let mut ids = Vec::new();
    for features in &rows[..30] {
        ids.push(engine.predict("market", features).unwrap().request_id);
    }
    for (i, id) in ids.iter().enumerate() {
        engine.record_outcome(*id, (i % 2) as f64).unwrap();
    }
    let handle = engine.ensemble("market").unwrap();
    let names = handle.feature_names();
    let dense: Vec<f32> = rows[30..40].iter().flat_map(|f| names.iter().map(|n| f.get(n).unwrap())).collect();
    handle.predict_batch(&Batch::row_major(&names, &dense).unwrap()).unwrap();
    // Every member failing: a quorum error, counted by its code.
    for model in ["technical", "fundamental", "sentiment"] {
        engine.inject_fault(model, Some(Fault::Fail));
    }
    assert!(engine.predict("market", &rows[0]).is_err());

    let text = engine.metrics_text();
    let e = "ensemble=\"market\"";
    assert_eq!(value(&text, &format!("quorum_requests_total{{{e}}}")), Some(32.0), "{text}");
    assert_eq!(value(&text, &format!("quorum_predictions_total{{{e}}}")), Some(40.0));
    assert_eq!(value(&text, &format!("quorum_prediction_errors_total{{{e},code=\"quorum_not_reached\"}}")), Some(1.0));
    assert_eq!(value(&text, &format!("quorum_request_duration_seconds_count{{{e}}}")), Some(32.0));
    assert_eq!(value(&text, &format!("quorum_request_rows_bucket{{{e},le=\"16\"}}")), Some(32.0));
    assert_eq!(value(&text, &format!("quorum_request_rows_bucket{{{e},le=\"8\"}}")), Some(31.0));
    let fused = value(&text, &format!("quorum_ensemble_calls_total{{{e},path=\"fused\"}}")).unwrap();
    let members = value(&text, &format!("quorum_ensemble_calls_total{{{e},path=\"members\"}}")).unwrap();
    assert_eq!(fused + members, 32.0);
    // Each failing member was called once and failed once.
    let m = "model=\"sentiment\",version=\"1\"";
    assert_eq!(value(&text, &format!("quorum_model_errors_total{{{m}}}")), Some(1.0));
    assert_eq!(value(&text, &format!("quorum_model_calls_total{{{m}}}")), Some(32.0));
    assert_eq!(value(&text, &format!("quorum_model_fault_injected{{{m}}}")), Some(1.0));
    assert_eq!(value(&text, &format!("quorum_breaker_state{{{m},state=\"closed\"}}")), Some(1.0));
    assert_eq!(value(&text, &format!("quorum_outcomes_total{{{e}}}")), Some(30.0));
    let accuracy = value(&text, &format!("quorum_ensemble_accuracy{{{e}}}")).unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    assert!(value(&text, &format!("quorum_model_log_loss{{{e},model=\"technical\"}}")).unwrap() > 0.0);
    let w = value(&text, &format!("quorum_member_weight{{{e},model=\"technical\",regime=\"all\"}}")).unwrap();
    assert!((w - 0.4).abs() < 1e-6, "{w}");
    assert_eq!(value(&text, "quorum_outcome_join_lag_seconds_count"), Some(30.0));
    assert!(value(&text, "process_resident_memory_bytes").unwrap() > 1e6);

    let kinds = families(&text);
    assert_eq!(kinds["quorum_request_duration_seconds"], "histogram");
    assert_eq!(kinds["quorum_requests_total"], "counter");
    assert_eq!(kinds["quorum_breaker_state"], "gauge");
    match common::promtool_check(&text) {
        Some(result) => result.unwrap(),
        None => eprintln!("SKIPPED promtool check metrics: promtool is not installed (make monitoring-tools)"),
    }
}

#[test]
fn an_open_breaker_is_a_state_and_a_transition() {
    let (_home, engine) = market();
    let rows = common::holdout_features(60);
    engine.inject_fault("sentiment", Some(Fault::Fail));
    // The default breaker opens after 100 calls at least half failed.
    for features in rows.iter().cycle().take(120) {
        // The other two members answer: degraded, not failed.
        assert!(engine.predict("market", features).unwrap().degraded);
    }
    let text = engine.metrics_text();
    let m = "model=\"sentiment\",version=\"1\"";
    assert_eq!(value(&text, &format!("quorum_breaker_state{{{m},state=\"open\"}}")), Some(1.0), "{text}");
    assert_eq!(value(&text, &format!("quorum_breaker_transitions_total{{{m},state=\"open\"}}")), Some(1.0));
    assert_eq!(value(&text, "quorum_degraded_predictions_total{ensemble=\"market\"}"), Some(120.0));
    // Refused calls count as errors without a latency observation.
    assert_eq!(value(&text, &format!("quorum_model_errors_total{{{m}}}")), Some(120.0));
    assert_eq!(value(&text, &format!("quorum_model_call_duration_seconds_count{{{m}}}")), Some(100.0));
}
