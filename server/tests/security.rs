//! Secure by default and bounded: tokens and their scopes (401 vs 403), the refusal to serve a
//! non-loopback address without tokens, body / JSON depth / header limits, slow-loris connections
//! cut, the admission queue answering 503 with Retry-After at once, client deadlines refused rather
//! than served late.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use quorum::{EnsembleConfig, MemberSpec, ModelRegistration};
use support::{common, send, Running, ADMIN, PREDICTOR};

#[test]
fn tokens_have_scopes_and_401_and_403_mean_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = support::tokens_file(dir.path());
    let server = Running::market(|c| c.tokens = Some(tokens));
    let body = support::predict_body();
    let path = "/api/v1/ml/ensemble/market/predict";

    let none = server.post(path, &body);
    assert_eq!((none.status, none.code().as_str()), (401, "unauthorized"));
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = server.post_as("not-a-token-but-long-enough", path, &body);
    assert_eq!((wrong.status, wrong.code().as_str()), (401, "unauthorized"));
    assert_eq!(server.post_as(PREDICTOR, path, &body).status, 200);
    assert_eq!(server.post_as(ADMIN, path, &body).status, 200, "an admin token may predict");

    let create = r#"{"name": "solo", "models": ["technical"]}"#;
    let forbidden = server.post_as(PREDICTOR, "/api/v1/ml/ensemble", create);
    assert_eq!((forbidden.status, forbidden.code().as_str()), (403, "forbidden"));
    assert_eq!(server.post_as(ADMIN, "/api/v1/ml/ensemble", create).status, 201);
    // Reads need the predict scope; health does not.
    assert_eq!(server.get("/api/v1/ml/ensemble").status, 401);
    assert_eq!(server.get_as(PREDICTOR, "/api/v1/ml/ensemble").status, 200);
    assert_eq!(server.get("/v2/health/ready").status, 200);
    assert_eq!(server.get("/v2/health/live").status, 200);
    // The v2 routes answer in their own error shape.
    let v2 = server.get("/v2/models/market");
    assert_eq!(v2.status, 401);
    assert!(v2.json()["error"].is_string());
    assert_eq!(server.get_as(PREDICTOR, "/v2/models/market").status, 200);
}

#[test]
fn a_public_address_without_tokens_is_refused_unless_insecure() {
    let home = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = quorum_server::ServerConfig {
        home: home.path().to_path_buf(),
        listen: "0.0.0.0:0".parse().unwrap(),
        ..Default::default()
    };
    let refused = runtime.block_on(quorum_server::start(config.clone())).unwrap_err();
    assert_eq!(refused.code(), "config");
    assert!(refused.to_string().contains("--insecure"), "{refused}");
    let server =
        runtime.block_on(quorum_server::start(quorum_server::ServerConfig { insecure: true, ..config })).unwrap();
    runtime.block_on(server.shutdown()).unwrap();
}

#[test]
fn bodies_json_depth_and_headers_are_bounded() {
    let server = Running::market(|c| c.limits.max_body_bytes = 4096);
    let path = "/api/v1/ml/ensemble/market/predict";
    let big = format!(r#"{{"features": {{"market_data": {{"x": "{}"}}}}}}"#, "a".repeat(5000));
    let reply = server.post(path, &big);
    assert_eq!((reply.status, reply.code().as_str()), (413, "payload_too_large"));
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let reply = server.post(path, &deep);
    assert_eq!((reply.status, reply.code().as_str()), (400, "json"));
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("nested"));
    // A request head over the limit is answered 431 by the HTTP layer.
    let huge = "x".repeat(20_000);
    let reply = send(server.addr, "GET", "/v2/health/live", &[("x-filler", &huge)], b"");
    assert_eq!(reply.status, 431);
}

#[test]
fn a_slow_loris_connection_is_cut() {
    let server = Running::market(|c| c.limits.header_timeout_ms = 300);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n").unwrap();
    // ...and never finishes the head: the server closes the connection.
    let mut buffer = [0u8; 256];
    let read = stream.read(&mut buffer).unwrap_or(0);
    assert!(started.elapsed() < Duration::from_secs(3), "not cut after {:?}", started.elapsed());
    let text = String::from_utf8_lossy(&buffer[..read]);
    assert!(read == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
}

/// A home whose `slow` ensemble takes ~170 ms per prediction (tests/fixtures/slow.onnx).
fn slow_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let engine = common::engine(home.path());
    let slow = common::repo().join("tests/fixtures/slow.onnx");
    engine.register_model(ModelRegistration::new("slow", slow, ["x"])).unwrap();
    // Its calls outlast the default latency budget: these tests want them to run their course.
    let slow = EnsembleConfig::new("slow", ["slow".parse::<MemberSpec>().unwrap()])
        .with_latency_budget(std::time::Duration::from_secs(10));
    engine.create_ensemble(slow).unwrap();
    home
}

#[test]
fn a_full_queue_answers_503_with_retry_after_at_once() {
    let server = Running::start(slow_home(), |c| {
        c.limits.max_concurrent = 1;
        c.limits.max_queue = 1;
    });
    let addr = server.addr;
    let body = r#"{"features": {"market_data": {"x": 1.0}}}"#;
    let path = "/api/v1/ml/ensemble/slow/predict";
    // One running, one waiting; the rest are refused without waiting.
    let workers: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(i * 20));
                let started = Instant::now();
                let reply = send(addr, "POST", path, &[], body.as_bytes());
                (reply, started.elapsed())
            })
        })
        .collect();
    let replies: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let ok = replies.iter().filter(|(r, _)| r.status == 200).count();
    let refused: Vec<_> = replies.iter().filter(|(r, _)| r.status == 503).collect();
    assert!(ok >= 2, "{replies:?}");
    assert!(!refused.is_empty(), "{replies:?}");
    for (reply, elapsed) in refused {
        assert_eq!(reply.code(), "overloaded");
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert!(*elapsed < Duration::from_millis(150), "a refusal took {elapsed:?}");
    }
}

#[test]
fn a_deadline_that_cannot_be_met_is_refused_not_served_late() {
    let server = Running::start(slow_home(), |c| c.limits.max_concurrent = 1);
    let addr = server.addr;
    let body = r#"{"features": {"market_data": {"x": 1.0}}}"#;
    let path = "/api/v1/ml/ensemble/slow/predict";
    let busy = std::thread::spawn(move || send(addr, "POST", path, &[], body.as_bytes()));
    std::thread::sleep(Duration::from_millis(40));
    let started = Instant::now();
    let reply = send(addr, "POST", path, &[("x-deadline-ms", "30")], body.as_bytes());
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (504, "deadline_exceeded"),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(started.elapsed() < Duration::from_millis(150), "refused after {:?}", started.elapsed());
    assert_eq!(busy.join().unwrap().status, 200);
    let bad = send(addr, "POST", path, &[("x-deadline-ms", "soon")], body.as_bytes());
    assert_eq!(bad.status, 400);
}
