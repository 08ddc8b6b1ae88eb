//! `/openapi.json` documents every route the server has: each documented path and method is served
//! (no 404 / 405 from the router), and every route the server is known to serve is documented.

mod support;

use support::{send, Running};

/// Every route of the server, as `METHOD path` (the list; a new route must be added here).
const ROUTES: &[&str] = &[
    "POST /api/v1/ml/ensemble",
    "GET /api/v1/ml/ensemble",
    "GET /api/v1/ml/ensemble/{ensemble_id}",
    "POST /api/v1/ml/ensemble/{ensemble_id}/versions",
    "POST /api/v1/ml/ensemble/{ensemble_id}/set-default",
    "POST /api/v1/ml/ensemble/{ensemble_id}/predict",
    "POST /api/v1/ml/ensemble/{ensemble_id}/predict/batch",
    "POST /api/v1/ml/outcomes",
    "POST /api/v1/ml/models",
    "GET /api/v1/ml/models",
    "GET /api/v1/ml/models/{model_id}",
    "POST /api/v1/ml/models/{model_id}/set-default",
    "GET /api/v1/ml/models/{model_id}/performance",
    "POST /api/v1/ml/optimize/model",
    "POST /api/v1/ml/benchmark",
    "PUT /api/v1/ml/datasets/{dataset_id}",
    "GET /api/v1/ml/jobs/{job_id}",
    "POST /api/v1/ml/experiments",
    "GET /api/v1/ml/experiments",
    "GET /api/v1/ml/experiments/{name}",
    "POST /api/v1/ml/experiments/{name}/pause",
    "POST /api/v1/ml/experiments/{name}/resume",
    "POST /api/v1/ml/experiments/{name}/stop",
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models/{name}",
    "GET /v2/models/{name}/versions/{version}",
    "GET /v2/models/{name}/ready",
    "GET /v2/models/{name}/versions/{version}/ready",
    "POST /v2/models/{name}/infer",
    "POST /v2/models/{name}/versions/{version}/infer",
    "GET /openapi.json",
    "GET /metrics",
    "GET /api/v1/ml/alerts",
    "GET /api/v1/ml/status",
    "GET /status",
];

#[test]
fn every_route_is_documented_and_every_documented_route_is_served() {
    let server = Running::market(|_| {});
    let document = server.get("/openapi.json").json();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    let mut expected: Vec<String> = ROUTES.iter().map(|r| r.to_string()).collect();
    expected.sort();
    assert_eq!(documented, expected);

    for route in ROUTES {
        let (method, path) = route.split_once(' ').unwrap();
        let concrete = path
            .replace("{ensemble_id}", "market")
            .replace("{model_id}", "technical")
            .replace("{dataset_id}", "d")
            .replace("{job_id}", "none")
            .replace("{name}", "market")
            .replace("{version}", "1");
        let reply = send(server.addr, method, &concrete, &[], b"");
        assert_ne!(reply.status, 405, "{route}");
        let routing_miss = reply.status == 404 && reply.body.windows(15).any(|w| w == b"route_not_found");
        assert!(!routing_miss, "{route} is documented but not routed");
    }
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
}
