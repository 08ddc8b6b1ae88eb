//! `GET /metrics`: the server's and the engine's metrics in the Prometheus text format, behind the
//! read token, accepted by `promtool check metrics`.

mod support;

use support::{common, Running, PREDICTOR};

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.parse().unwrap()))
}

#[test]
fn metrics_count_requests_by_route_and_status_and_promtool_accepts_them() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = support::tokens_file(dir.path());
    let server = Running::market(|c| c.tokens = Some(tokens));
    assert_eq!(server.get("/metrics").status, 401);
    for _ in 0..5 {
        let reply = server.post_as(PREDICTOR, "/api/v1/ml/ensemble/market/predict", &support::predict_body());
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    }
    let missing =
        server.post_as(PREDICTOR, "/api/v1/ml/ensemble/market/predict", r#"{"features": {"market_data": {}}}"#);
    assert_eq!(missing.status, 422);
    assert_eq!(server.get_as(PREDICTOR, "/no/such/path").status, 404);

    let reply = server.get_as(PREDICTOR, "/metrics");
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(reply.body.clone()).unwrap();
    let route = "route=\"/api/v1/ml/ensemble/{ensemble_id}/predict\"";
    assert_eq!(
        value(&text, &format!("quorum_http_requests_total{{{route},method=\"POST\",status=\"2xx\"}}")),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &format!("quorum_http_requests_total{{{route},method=\"POST\",status=\"4xx\"}}")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "quorum_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"4xx\"}"),
        Some(1.0)
    );
    assert_eq!(value(&text, &format!("quorum_http_request_duration_seconds_count{{{route}}}")), Some(6.0));
    assert_eq!(value(&text, "quorum_predictions_total{ensemble=\"market\"}"), Some(5.0));
    assert_eq!(value(&text, "quorum_server_ready"), Some(1.0));
    assert_eq!(value(&text, "quorum_admission_refused_total{reason=\"overloaded\"}"), Some(0.0));
    assert!(value(&text, "process_cpu_seconds_total").is_some());
    // No token, path or query text leaks into a label.
    assert!(!text.contains("no/such"));

    match common::promtool_check(&text) {
        Some(result) => result.unwrap(),
        None => eprintln!("SKIPPED promtool check metrics: promtool is not installed (make monitoring-tools)"),
    }
}
