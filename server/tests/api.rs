//! The story's REST API against a real server on loopback: predict (shape and fields), batch,
//! outcomes and the tracked performance they feed, ensembles (create, 409, 422 naming the field,
//! versions, set-default), model upload and hot swap, optimize and benchmark jobs.

mod support;

use support::{common, send, Running};

#[test]
fn predict_answers_the_story_fields_and_quorum_s_own() {
    let server = Running::market(|_| {});
    let reply = server.post("/api/v1/ml/ensemble/market/predict", &support::predict_body());
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let p = reply.json();
    for field in [
        "prediction",
        "confidence",
        "model_contributions",
        "latency_ms",
        "request_id",
        "version",
        "degraded",
        "skipped",
        "regime",
        "cached",
        "stale",
    ] {
        assert!(p.get(field).is_some(), "missing {field} in {p}");
    }
    let members = p["model_contributions"].as_object().unwrap();
    assert_eq!(members.len(), 3);
    assert!((members["technical"]["weight"].as_f64().unwrap() - 0.4).abs() < 1e-6);
    assert!(p["latency_ms"].as_f64().unwrap() >= p["engine_latency_ms"].as_f64().unwrap());
    assert!(reply.header("x-request-id").is_some());

    // The same row through the library gives the same number.
    let engine = server.state().engine();
    let direct = engine.predict("market", &common::holdout_features(1)[0]).unwrap();
    assert_eq!(p["prediction"].as_f64().unwrap() as f32, direct.prediction);
}

#[test]
fn bad_predictions_are_4xx_with_stable_codes() {
    let server = Running::market(|_| {});
    let cases: [(&str, &str, u16, &str); 7] = [
        ("/api/v1/ml/ensemble/market/predict", r#"{"features": {"market_data": {"vix": 1, "vix": 2}}}"#, 422, "json"),
        ("/api/v1/ml/ensemble/market/predict", r#"{"features": {"market_data": {"vix": 1}}}"#, 422, "missing_feature"),
        ("/api/v1/ml/ensemble/market/predict", r#"{"features": {"market_data": {"vix": "high"}}}"#, 422, "json"),
        ("/api/v1/ml/ensemble/market/predict", r#"{"features": "#, 400, "json"),
        ("/api/v1/ml/ensemble/market/predict", r#"{"feature": {}}"#, 422, "json"),
        ("/api/v1/ml/ensemble/nothing/predict", &support::predict_body(), 404, "not_found"),
        ("/api/v1/ml/ensemble/..%2Fetc/predict", &support::predict_body(), 422, "invalid_name"),
    ];
    for (path, body, status, code) in cases {
        let reply = server.post(path, body);
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (status, code),
            "{path} {body}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    // A query that does not parse is refused in the same shape.
    let reply = server.get("/api/v1/ml/models/technical?version=latest");
    assert_eq!((reply.status, reply.code().as_str()), (400, "bad_request"), "{}", String::from_utf8_lossy(&reply.body));
    // A null feature is NaN: refused by the ensemble's non-finite policy, naming the feature.
    let mut body: serde_json::Value = serde_json::from_str(&support::predict_body()).unwrap();
    body["features"]["market_data"]["vix"] = serde_json::Value::Null;
    let reply = server.post("/api/v1/ml/ensemble/market/predict", &body.to_string());
    assert_eq!((reply.status, reply.code().as_str()), (422, "non_finite"));
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("vix"));
}

#[test]
fn batch_rows_match_single_predictions_and_outcomes_feed_performance() {
    let server = Running::market(|_| {});
    let rows: Vec<serde_json::Value> = common::holdout_features(5)
        .iter()
        .map(|f| serde_json::from_str::<serde_json::Value>(&support::market_body(f)).unwrap()["features"].clone())
        .collect();
    let reply = server.post("/api/v1/ml/ensemble/market/predict/batch", &serde_json::json!({"rows": rows}).to_string());
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let batch = reply.json();
    let predictions = batch["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 5);
    for (row, p) in common::holdout_features(5).iter().zip(predictions) {
        let single = server.post("/api/v1/ml/ensemble/market/predict", &support::market_body(row)).json();
        assert!((single["prediction"].as_f64().unwrap() - p["prediction"].as_f64().unwrap()).abs() < 1e-6);
    }
    // Outcomes, many at once: one unknown request id is reported, the others recorded.
    let mut outcomes: Vec<serde_json::Value> =
        predictions.iter().map(|p| serde_json::json!({"request_id": p["request_id"], "outcome": 1.0})).collect();
    outcomes.push(serde_json::json!({"request_id": 987654321, "outcome": 0.0}));
    let reply = server.post("/api/v1/ml/outcomes", &serde_json::json!({"outcomes": outcomes}).to_string());
    assert_eq!(reply.status, 200);
    let recorded = reply.json();
    assert_eq!(recorded["recorded"], 5);
    assert_eq!(recorded["errors"][0]["index"], 5);
    assert_eq!(recorded["errors"][0]["code"], "outcome");
    // One outcome for an unknown id alone is an error status.
    assert_eq!(server.post("/api/v1/ml/outcomes", r#"{"request_id": 987654321, "outcome": 1}"#).status, 422);

    let perf = server.get("/api/v1/ml/models/technical/performance").json();
    assert_eq!(perf["outcomes"], 5);
    for field in ["accuracy", "precision", "recall", "f1_score", "latency_p95", "throughput"] {
        assert!(perf.get(field).is_some(), "{field} missing in {perf}");
    }
    assert!(perf["accuracy"].as_f64().is_some());
    // Six single predictions and one batch went through the technical model.
    assert_eq!(perf["calls"], 6);
    assert!(perf["latency_p95"].as_f64().unwrap() > 0.0);
    assert!(perf["throughput"].as_f64().unwrap() > 0.0);
    assert_eq!(server.get("/api/v1/ml/models/nothing/performance").status, 404);

    // Rows over the limit are refused before any work.
    let many = serde_json::json!({"rows": vec![rows[0].clone(); 11]}).to_string();
    let limited = Running::market(|c| c.limits.max_batch_rows = 10);
    let reply = limited.post("/api/v1/ml/ensemble/market/predict/batch", &many);
    assert_eq!((reply.status, reply.code().as_str()), (413, "payload_too_large"));
}

#[test]
fn ensembles_are_created_once_versioned_and_switched() {
    let server = Running::market(|_| {});
    let create = r#"{"name": "pair", "models": ["technical", "fundamental"], "weights": {"technical": 3, "fundamental": 1}, "strategy": "soft-vote"}"#;
    let reply = server.post("/api/v1/ml/ensemble", create);
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let shown = reply.json();
    assert_eq!(shown["version"], 1);
    assert!((shown["weights"]["all"]["technical"].as_f64().unwrap() - 0.75).abs() < 1e-6);
    assert_eq!(shown["weights_epoch"], 0);

    let again = server.post("/api/v1/ml/ensemble", create);
    assert_eq!((again.status, again.code().as_str()), (409, "already_exists"));

    let bad = [
        (r#"{"name": "x", "models": ["technical"], "weights": {"sentiment": 1}}"#, "weights.sentiment"),
        (r#"{"name": "x", "models": ["technical"], "strategy": "loudest"}"#, "strategy"),
        (r#"{"name": "x", "models": [], "strategy": "soft-vote"}"#, "models"),
        (r#"{"name": "x", "models": ["technical", "nothing"]}"#, "nothing"),
        (r#"{"name": "x", "models": ["technical"], "min_members": 3}"#, "min_members"),
    ];
    for (body, field) in bad {
        let reply = server.post("/api/v1/ml/ensemble", body);
        let message = reply.json()["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(matches!(reply.status, 404 | 422), "{body}: {} {message}", reply.status);
        assert!(message.contains(field), "{body}: {message} does not name {field}");
    }

    // A second version becomes active; set-default switches back (and stays across a reload).
    let v2 = r#"{"name": "pair", "models": ["technical", "fundamental"], "weights": [1, 1]}"#;
    assert_eq!(server.post("/api/v1/ml/ensemble/pair/versions", v2).json()["version"], 2);
    let p = server.post("/api/v1/ml/ensemble/pair/predict", &support::predict_body()).json();
    assert_eq!(p["version"], 2);
    let back = server.post("/api/v1/ml/ensemble/pair/set-default", r#"{"version": 1}"#);
    assert_eq!(back.status, 200, "{}", String::from_utf8_lossy(&back.body));
    let p = server.post("/api/v1/ml/ensemble/pair/predict", &support::predict_body()).json();
    assert_eq!(p["version"], 1);
    assert_eq!(server.state().engine().ensemble_store().get("pair").unwrap().version, 1);
    assert_eq!(server.get("/api/v1/ml/ensemble").json(), serde_json::json!(["market", "pair"]));
    let missing = server.post("/api/v1/ml/ensemble/pair/set-default", r#"{"version": 9}"#);
    assert_eq!(missing.status, 404);
}

fn multipart(metadata: &str, model: &[u8]) -> (String, Vec<u8>) {
    let boundary = "quorum-test-boundary-7d2";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"metadata\"\r\ncontent-type: application/json\r\n\r\n{metadata}\r\n").as_bytes());
    body.extend_from_slice(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"model\"; filename=\"m.onnx\"\r\ncontent-type: application/octet-stream\r\n\r\n").as_bytes());
    body.extend_from_slice(model);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn uploads_are_verified_before_they_become_versions_and_set_default_swaps() {
    let server = Running::market(|_| {});
    let bytes = std::fs::read(common::model_file("sentiment")).unwrap();
    let features = serde_json::to_string(&common::features_of("sentiment")).unwrap();
    let upload = |metadata: &str, model: &[u8]| {
        let (content_type, body) = multipart(metadata, model);
        send(server.addr, "POST", "/api/v1/ml/models", &[("content-type", &content_type)], &body)
    };
    // Not ONNX: refused, and no version appears.
    let reply = upload(&format!(r#"{{"name": "sentiment", "features": {features}}}"#), b"not a model");
    assert_eq!((reply.status, reply.code().as_str()), (422, "model_load"), "{}", String::from_utf8_lossy(&reply.body));
    // A checksum that does not match.
    let reply =
        upload(&format!(r#"{{"name": "sentiment", "features": {features}, "sha256": "{}"}}"#, "0".repeat(64)), &bytes);
    assert_eq!((reply.status, reply.code().as_str()), (422, "checksum_mismatch"));
    // A name that would leave the registry.
    let reply = upload(&format!(r#"{{"name": "../evil", "features": {features}}}"#), &bytes);
    assert_eq!((reply.status, reply.code().as_str()), (422, "invalid_name"));
    assert_eq!(server.state().engine().registry().versions("sentiment").unwrap(), vec![1]);

    let reply = upload(&format!(r#"{{"name": "sentiment", "features": {features}, "kind": "sentiment"}}"#), &bytes);
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["version"], 2);
    let listed = server.get("/api/v1/ml/models").json();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let swap = server.post("/api/v1/ml/models/sentiment/set-default", r#"{"version": 2}"#).json();
    assert_eq!(swap["reloaded"], serde_json::json!(["market"]));
    let p = server.post("/api/v1/ml/ensemble/market/predict", &support::predict_body()).json();
    assert_eq!(p["model_contributions"]["sentiment"]["version"], 2);
    // Nothing is left in the staging directory.
    let staged = std::fs::read_dir(server.home.path().join("uploads")).unwrap().count();
    assert_eq!(staged, 0);
}

#[test]
fn uploads_take_models_as_exporters_write_them() {
    let server = Running::market(|_| {});
    let fixture =
        |name: &str| std::fs::read(common::repo().join(format!("tests/fixtures/exporters/{name}.onnx"))).unwrap();
    let upload = |metadata: &str, model: &[u8]| {
        let (content_type, body) = multipart(metadata, model);
        send(server.addr, "POST", "/api/v1/ml/models", &[("content-type", &content_type)], &body)
    };
    let features = r#"["ret_1d", "ret_5d", "vix"]"#;
    // Inputs that need a map: without it a 422 naming the field's syntax, with it a version.
    let grouped = fixture("grouped_inputs");
    let reply = upload(&format!(r#"{{"name": "grouped", "features": {features}}}"#), &grouped);
    assert_eq!((reply.status, reply.code().as_str()), (422, "model_load"));
    let reply = upload(&format!(r#"{{"name": "grouped", "features": {features}, "inputs": "x1"}}"#), &grouped);
    assert_eq!(reply.status / 100, 4, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.code(), "config");
    let mapped = format!(r#"{{"name": "grouped", "features": {features}, "inputs": "x1=ret_1d,ret_5d;x2=vix"}}"#);
    let reply = upload(&mapped, &grouped);
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["metadata"]["inputs"], "x1=ret_1d,ret_5d;x2=vix");
    // A DataFrame export with a ZipMap and a batch fixed to one row, as they are.
    let reply = upload(&format!(r#"{{"name": "frame", "features": {features}}}"#), &fixture("frame_pipeline"));
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["output"]["label"], "1");
    let reply = upload(&format!(r#"{{"name": "fixed", "features": {features}}}"#), &fixture("fixed_batch1"));
    assert_eq!(reply.json()["max_batch"], 1);
}

#[test]
fn a_json_body_registers_a_remote_model_served_by_another_server() {
    let upstream = Running::market(|_| {});
    let server = Running::market(|_| {});
    let engine = server.state().engine();
    let features = serde_json::to_string(&engine.ensemble("market").unwrap().feature_names()).unwrap();
    let url = format!("http://{}/v2/models/market", upstream.addr);
    let register = |body: String| server.post("/api/v1/ml/models", &body);
    let cases = [
        (format!(r#"{{"name": "up", "url": "{url}", "features": {features}, "token": "x"}}"#), 422, "json"),
        (
            format!(r#"{{"name": "up", "url": "{url}", "features": {features}, "set_default": "yes"}}"#),
            422,
            "invalid_input",
        ),
        // TLS to a plain-HTTP server: the handshake fails.
        (
            format!(r#"{{"name": "up", "url": "{}", "features": {features}}}"#, url.replace("http:", "https:")),
            422,
            "model_load",
        ),
        (format!(r#"{{"name": "up", "url": "ftp://x/v2/models/m", "features": {features}}}"#), 422, "config"),
        (format!(r#"{{"name": "up", "url": "{url}", "features": ["a"], "output": "prediction"}}"#), 422, "model_load"),
        (
            format!(r#"{{"name": "up", "url": "{url}", "features": {features}, "hedge_url": "http://x/v3/m"}}"#),
            422,
            "config",
        ),
    ];
    for (body, status, code) in cases {
        let reply = register(body.clone());
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (status, code),
            "{body}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    let plain = send(server.addr, "POST", "/api/v1/ml/models", &[("content-type", "text/plain")], b"up");
    assert_eq!((plain.status, plain.code().as_str()), (415, "unsupported_media_type"));
    assert!(engine.registry().versions("up").unwrap_or_default().is_empty());

    let reply = register(format!(
        r#"{{"name": "up", "url": "{url}", "features": {features}, "output": "prediction", "kind": "technical", "hedge": true}}"#
    ));
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let meta = reply.json();
    assert_eq!((meta["remote"]["url"].as_str(), meta["kind"].as_str()), (Some(&*url), Some("technical")));
    assert_eq!(meta["remote"]["hedge"], true);
    let members = ["technical", "up"].map(|m| m.parse::<quorum::MemberSpec>().unwrap());
    engine.create_ensemble(quorum::EnsembleConfig::new("desk", members)).unwrap();
    for f in common::holdout_features(3) {
        let p = engine.predict("desk", &f).unwrap();
        let remote = p.model_contributions[1].prediction.expect("the remote member answered");
        assert!((remote - engine.predict("market", &f).unwrap().prediction).abs() < 1e-6);
    }
}

#[test]
fn benchmark_and_optimize_run_on_an_uploaded_dataset() {
    let server = Running::market(|c| c.limits.sync_job_wait_ms = 60_000);
    let csv = std::fs::read(common::repo().join("examples/data/holdout.csv")).unwrap();
    let put = send(server.addr, "PUT", "/api/v1/ml/datasets/holdout", &[("content-type", "text/csv")], &csv);
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    let reply = server.post(
        "/api/v1/ml/benchmark",
        r#"{"model_id": "sentiment", "test_dataset": "holdout", "metrics": ["latency", "accuracy"], "outcome": "next_day_up"}"#,
    );
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let bench = reply.json();
    assert!(bench["results"]["latency"].as_array().unwrap().len() >= 3);
    assert!(bench["results"]["accuracy"].as_f64().is_some());
    assert!(bench["results"].get("size_bytes").is_none());
    assert!(!bench["recommendations"].as_array().unwrap().is_empty());
    let missing = server.post("/api/v1/ml/benchmark", r#"{"model_id": "sentiment", "test_dataset": "nothing"}"#);
    assert_eq!(missing.status, 404);

    let reply = server.post(
        "/api/v1/ml/optimize/model",
        r#"{"model_id": "technical", "optimization_type": "int8-dynamic", "accuracy_threshold": 0.05, "dataset": "holdout", "outcome": "next_day_up"}"#,
    );
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let report = reply.json();
    for field in ["optimized_model_id", "performance_improvement", "deployment_ready"] {
        assert!(report.get(field).is_some(), "{field} missing");
    }
}

#[test]
fn slow_jobs_answer_202_and_are_polled() {
    let server = Running::market(|c| c.limits.sync_job_wait_ms = 1);
    let csv = std::fs::read(common::repo().join("examples/data/holdout.csv")).unwrap();
    send(server.addr, "PUT", "/api/v1/ml/datasets/holdout", &[], &csv);
    let reply = server.post("/api/v1/ml/benchmark", r#"{"model_id": "technical", "test_dataset": "holdout"}"#);
    assert_eq!(reply.status, 202);
    let location = reply.header("location").unwrap().to_string();
    assert_eq!(reply.json()["status"], "running");
    let mut status = String::new();
    for _ in 0..600 {
        let polled = server.get(&location).json();
        status = polled["status"].as_str().unwrap().to_string();
        if status != "running" {
            assert!(polled["result"]["results"]["latency"].is_array(), "{polled}");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(status, "succeeded");
    assert_eq!(server.get("/api/v1/ml/jobs/benchmark-999").code(), "job_not_found");
}
