//! A/B experiments over HTTP: start (admin only), routing by body key and header, outcomes with a
//! business value, status, pause / stop and the conflict of acting on an ended experiment.

mod support;

use support::{common, send, Running, ADMIN, PREDICTOR};

#[test]
fn an_experiment_is_started_routed_fed_and_stopped_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = support::tokens_file(dir.path());
    let server = Running::market(|c| c.tokens = Some(tokens));
    // A second version of `market` to compare with, saved without serving any request yet.
    let candidate = r#"{"name": "market", "models": ["technical", "fundamental", "sentiment"],
                        "weights": [0.2, 0.5, 0.3], "activate": false}"#;
    let saved = server.post_as(ADMIN, "/api/v1/ml/ensemble/market/versions", candidate);
    assert_eq!(saved.status, 201, "{}", String::from_utf8_lossy(&saved.body));
    assert_eq!(
        (saved.json()["version"].clone(), saved.json()["versions"].clone()),
        (1.into(), serde_json::json!([1, 2]))
    );

    let config = r#"{"name": "ab", "ensemble": "market", "control": 1, "treatment": 2, "steps": [50],
                     "metric": "business", "min_outcomes_per_step": 40}"#;
    let refused = server.post_as(PREDICTOR, "/api/v1/ml/experiments", config);
    assert_eq!(refused.status, 403, "{}", String::from_utf8_lossy(&refused.body));
    let started = server.post_as(ADMIN, "/api/v1/ml/experiments", config);
    assert_eq!(started.status, 201, "{}", String::from_utf8_lossy(&started.body));
    assert_eq!(started.json()["state"], "running");
    let again = server.post_as(ADMIN, "/api/v1/ml/experiments", config);
    assert_eq!((again.status, again.code().as_str()), (409, "already_exists"));
    let bad = server.post_as(ADMIN, "/api/v1/ml/experiments", r#"{"name": "x", "ensemble": "market", "control": 1}"#);
    assert_eq!(bad.status, 422, "{}", String::from_utf8_lossy(&bad.body));

    // The same key, in the body or the header, gets the same arm every time.
    let body = |key: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&support::predict_body()).unwrap();
        v["routing_key"] = serde_json::json!(key);
        v.to_string()
    };
    let auth = format!("Bearer {PREDICTOR}");
    let mut arms = std::collections::HashMap::new();
    for i in 0..200 {
        let key = format!("acct-{i}");
        let p = server.post_as(PREDICTOR, "/api/v1/ml/ensemble/market/predict", &body(&key)).json();
        let arm = p["experiment"]["arm"].as_str().unwrap().to_string();
        assert_eq!(p["version"], if arm == "treatment" { 2 } else { 1 }, "{p}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json"), ("x-routing-key", &key)];
        let by_header = send(
            server.addr,
            "POST",
            "/api/v1/ml/ensemble/market/predict",
            &headers,
            support::predict_body().as_bytes(),
        );
        assert_eq!(by_header.json()["experiment"]["arm"].as_str().unwrap(), arm);
        *arms.entry(arm).or_insert(0) += 1;
        // A P&L per outcome: the business metric.
        let outcome =
            serde_json::json!({"request_id": p["request_id"], "outcome": 1, "business_value": (i % 7) as f64 - 3.0});
        let recorded = server.post_as(PREDICTOR, "/api/v1/ml/outcomes", &outcome.to_string());
        assert_eq!(recorded.status, 200, "{}", String::from_utf8_lossy(&recorded.body));
    }
    assert!(arms["control"] > 60 && arms["treatment"] > 60, "{arms:?}");

    // The Open Inference Protocol takes the key as a request parameter; the answering version says the arm.
    let names = server.get_as(PREDICTOR, "/api/v1/ml/ensemble/market").json()["features"].clone();
    assert_eq!(server.get_as(PREDICTOR, "/api/v1/ml/ensemble/market").json()["experiment"]["name"], "ab");
    let row = &common::holdout_features(1)[0];
    let inputs: Vec<serde_json::Value> = names
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let v = row.get(n.as_str().unwrap()).unwrap();
            serde_json::json!({"name": n, "shape": [1, 1], "datatype": "FP32", "data": [v]})
        })
        .collect();
    let mut versions = std::collections::HashSet::new();
    for i in 0..40 {
        let body =
            serde_json::json!({"inputs": inputs, "parameters": {"routing_key": format!("acct-{i}")}}).to_string();
        let first = server.post_as(PREDICTOR, "/v2/models/market/infer", &body);
        assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
        let version = first.json()["model_version"].clone();
        assert_eq!(server.post_as(PREDICTOR, "/v2/models/market/infer", &body).json()["model_version"], version);
        versions.insert(version.to_string());
    }
    assert_eq!(versions.len(), 2, "{versions:?}");

    let status = server.get_as(PREDICTOR, "/api/v1/ml/experiments/ab").json();
    for field in ["name", "state", "step", "arms", "p_value", "decisions"] {
        assert!(status.get(field).is_some(), "{field} missing: {status}");
    }
    let counted = status["arms"]["control"]["outcomes"].as_u64().unwrap()
        + status["arms"]["treatment"]["outcomes"].as_u64().unwrap();
    assert_eq!(counted, 200, "{status}");
    assert_eq!(server.get_as(PREDICTOR, "/api/v1/ml/experiments").json().as_array().unwrap().len(), 1);
    assert_eq!(server.get_as(PREDICTOR, "/api/v1/ml/experiments/none").status, 404);

    assert_eq!(server.post_as(ADMIN, "/api/v1/ml/experiments/ab/pause", "").json()["state"], "paused");
    let paused = server.post_as(PREDICTOR, "/api/v1/ml/ensemble/market/predict", &body("acct-1")).json();
    assert!(paused.get("experiment").is_none(), "{paused}");
    let stopped = server.post_as(ADMIN, "/api/v1/ml/experiments/ab/stop", r#"{"reason": "test over"}"#);
    assert_eq!(stopped.json()["state"], "stopped");
    let conflict = server.post_as(ADMIN, "/api/v1/ml/experiments/ab/resume", "");
    assert_eq!((conflict.status, conflict.code().as_str()), (409, "experiment_state"));
}
