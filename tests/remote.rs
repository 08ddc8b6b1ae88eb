//! Remote members against a small Open Inference Protocol server on a loopback socket, written
//! here so that it can misbehave on demand: registration reads and checks its metadata, the member
//! answers beside local ones, and garbage, errors, a closed connection, a stall or a dead server
//! degrade the member — on time, under its breaker — and never the ensemble's answer.
//! (`cli/tests/serve.rs` runs a real `quorum serve` as the remote server.)

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quorum::{BreakerOptions, BreakerState, EnsembleConfig, Error, InferenceEngine, MemberSpec, ModelRegistration};

/// How the server answers inference requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Good = 0,
    Garbage = 1,
    ServerError = 2,
    Close = 3,
    Stall = 4,
    /// One row more than asked for.
    WrongShape = 5,
    /// Strings where numbers belong.
    WrongDatatype = 6,
    /// NaN, in the binary tensor extension (JSON cannot carry it).
    NotANumber = 7,
    /// A good answer, one byte every 20 ms.
    SlowLoris = 8,
}

const TOKEN_VAR: &str = "QUORUM_TEST_REMOTE_MEMBER_TOKEN";
const TOKEN: &str = "remote-secret-7f3a";

/// What the server has seen.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    most_rows: AtomicUsize,
    unauthorized: AtomicUsize,
}

/// A model `far` over `width` features: `y = sigmoid(0.01 * sum(x))`, one column.
struct FakeServer {
    addr: SocketAddr,
    width: usize,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
    thread: Option<JoinHandle<()>>,
}

fn expected(row: &[f32]) -> f32 {
    1.0 / (1.0 + (-0.01 * row.iter().sum::<f32>()).exp())
}

impl FakeServer {
    fn start(width: usize) -> FakeServer {
        FakeServer::on(TcpListener::bind("127.0.0.1:0").unwrap(), width, Arc::default())
    }

    fn on(listener: TcpListener, width: usize, seen: Arc<Seen>) -> FakeServer {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (mode, stop) = (Arc::new(AtomicU8::new(Mode::Good as u8)), Arc::new(AtomicBool::new(false)));
        let thread = {
            let (mode, stop, seen) = (mode.clone(), stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut connections = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (mode, stop, seen) = (mode.clone(), stop.clone(), seen.clone());
                            connections.push(std::thread::spawn(move || serve(stream, width, &mode, &stop, &seen)));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
                for c in connections {
                    let _ = c.join();
                }
            })
        };
        FakeServer { addr, width, mode, stop, seen, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://{}/v2/models/far", self.addr)
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Stops listening and closes every connection: the port refuses connections.
    fn kill(mut self) -> (SocketAddr, usize, Arc<Seen>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (self.addr, self.width, self.seen.clone())
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One keep-alive connection: requests until the client closes or the server stops.
fn serve(stream: TcpStream, width: usize, mode: &AtomicU8, stop: &AtomicBool, seen: &Seen) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut head = Vec::new();
        // The head, line by line, waking to see whether the server stopped.
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {
                    let end = line == "\r\n";
                    head.push(line);
                    if end {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if !head.is_empty() {
                        continue;
                    }
                }
                Err(_) => return,
            }
        }
        let header = |name: &str| {
            head.iter().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        reader.get_mut().set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        reader.get_mut().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let request_line = head[0].clone();
        if header("authorization").as_deref() != Some(&format!("Bearer {TOKEN}")) {
            seen.unauthorized.fetch_add(1, Ordering::Relaxed);
            respond(&mut writer, 401, br#"{"error":"unauthorized"}"#);
            continue;
        }
        if request_line.starts_with("GET /v2/models/far ") {
            let meta = format!(
                r#"{{"name":"far","versions":["1"],"platform":"fake","inputs":[{{"name":"x","datatype":"FP32","shape":[-1,{width}]}}],"outputs":[{{"name":"y","datatype":"FP32","shape":[-1,1]}}]}}"#
            );
            respond(&mut writer, 200, meta.as_bytes());
            continue;
        }
        if request_line.starts_with("GET /v2 ") {
            respond(&mut writer, 200, br#"{"name":"fake","version":"1","extensions":[]}"#);
            continue;
        }
        if !request_line.starts_with("POST /v2/models/far/infer ") {
            respond(&mut writer, 404, br#"{"error":"no such route"}"#);
            continue;
        }
        seen.requests.fetch_add(1, Ordering::Relaxed);
        let mode = [
            Mode::Good,
            Mode::Garbage,
            Mode::ServerError,
            Mode::Close,
            Mode::Stall,
            Mode::WrongShape,
            Mode::WrongDatatype,
            Mode::NotANumber,
            Mode::SlowLoris,
        ][usize::from(mode.load(Ordering::Relaxed))];
        let computed = || {
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let input = &request["inputs"][0];
            assert_eq!(input["name"], "x");
            let rows = input["shape"][0].as_u64().unwrap() as usize;
            seen.most_rows.fetch_max(rows, Ordering::Relaxed);
            let data: Vec<f32> = input["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            data.chunks(width).map(expected).collect::<Vec<f32>>()
        };
        match mode {
            Mode::Good | Mode::WrongShape | Mode::SlowLoris => {
                // A real server takes a while; concurrent callers queue up meanwhile.
                std::thread::sleep(Duration::from_micros(500));
                let mut y = computed();
                if mode == Mode::WrongShape {
                    y.push(0.5);
                }
                let answer = serde_json::json!({
                    "model_name": "far",
                    "outputs": [{"name": "y", "datatype": "FP32", "shape": [y.len(), 1], "data": y}],
                });
                if mode == Mode::SlowLoris {
                    let body = answer.to_string();
                    let _ = write!(writer, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    for byte in body.bytes() {
                        if stop.load(Ordering::Relaxed) || writer.write_all(&[byte]).is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                } else {
                    respond(&mut writer, 200, answer.to_string().as_bytes());
                }
            }
            Mode::WrongDatatype => {
                let rows = computed().len();
                let answer = serde_json::json!({
                    "outputs": [{"name": "y", "datatype": "BYTES", "shape": [rows, 1], "data": vec!["up"; rows]}],
                });
                respond(&mut writer, 200, answer.to_string().as_bytes());
            }
            Mode::NotANumber => {
                let rows = computed().len();
                let header = serde_json::json!({
                    "outputs": [{"name": "y", "datatype": "FP32", "shape": [rows, 1],
                                 "parameters": {"binary_data_size": rows * 4}}],
                })
                .to_string();
                let mut answer = header.clone().into_bytes();
                answer.extend((0..rows).flat_map(|_| f32::NAN.to_le_bytes()));
                let head = format!(
                    "HTTP/1.1 200 OK\r\ninference-header-content-length: {}\r\ncontent-length: {}\r\n\r\n",
                    header.len(),
                    answer.len()
                );
                let _ = writer.write_all(&[head.as_bytes(), &answer].concat());
            }
            Mode::Garbage => respond(&mut writer, 200, b"<html>not an inference answer</html>"),
            Mode::ServerError => respond(&mut writer, 500, br#"{"error":"the model crashed"}"#),
            Mode::Close => return,
            Mode::Stall => {
                let until = Instant::now() + Duration::from_secs(3);
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return;
            }
        }
    }
}

fn respond(writer: &mut TcpStream, status: u16, body: &[u8]) {
    let head =
        format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
    // One write: with Nagle's algorithm a second small one waits for the client's delayed ACK.
    let _ = writer.write_all(&[head.as_bytes(), body].concat());
}

/// The example models and `far` at `server`, in ensemble `mixed` (far is member 3).
fn engine_with_far(home: &std::path::Path, server: &FakeServer, breaker: BreakerOptions) -> InferenceEngine {
    let registration =
        ModelRegistration::remote("far", server.url(), Some(TOKEN_VAR.into()), common::features_of("technical"));
    engine_with(home, registration, breaker)
}

/// The example models and the remote `registration` (as `far`), in ensemble `mixed` (member 3).
fn engine_with(home: &std::path::Path, registration: ModelRegistration, breaker: BreakerOptions) -> InferenceEngine {
    std::env::set_var(TOKEN_VAR, TOKEN);
    common::market_engine(home);
    let engine = InferenceEngine::builder(home).with_circuit_breaker(breaker).build().unwrap();
    engine.register_model(registration).unwrap();
    let members = ["technical", "fundamental", "sentiment", "far"].map(|m| m.parse::<MemberSpec>().unwrap());
    engine.create_ensemble(EnsembleConfig::new("mixed", members)).unwrap();
    engine
}

fn far_input(f: &quorum::Features) -> Vec<f32> {
    common::features_of("technical").iter().map(|n| f.get(n).unwrap()).collect()
}

#[test]
fn a_remote_member_answers_beside_local_ones_as_its_server_computes() {
    let server = FakeServer::start(common::features_of("technical").len());
    let home = tempfile::tempdir().unwrap();
    let engine = engine_with_far(home.path(), &server, BreakerOptions::default());

    let meta = engine.registry().get("far", 1).unwrap();
    let spec = meta.remote.as_ref().expect("stored as remote");
    assert_eq!(
        (spec.url.as_str(), spec.input.as_deref(), spec.datatype.as_str()),
        (server.url().as_str(), Some("x"), "FP32")
    );
    assert_eq!((spec.token_env.as_deref(), spec.binary, meta.size_bytes), (Some(TOKEN_VAR), false, 0));
    let stored = std::fs::read_to_string(home.path().join("models/far/1/metadata.json")).unwrap();
    assert!(!stored.contains(TOKEN), "the token is never stored");
    assert!(!home.path().join("models/far/1/model.onnx").exists());
    assert!(matches!(engine.registry().read_verified(&meta), Err(Error::InvalidInput(_))));

    for f in common::holdout_features(5) {
        let p = engine.predict("mixed", &f).unwrap();
        assert!(!p.degraded, "{:?}", p.model_contributions[3].error);
        let far = p.model_contributions[3].prediction.unwrap();
        assert!((far - expected(&far_input(&f))).abs() < 1e-6, "{far}");
    }
    let status = engine.replicas(Some("far"));
    assert_eq!(status[0].executor.kind, "remote");
    assert_eq!(status[0].executor.url.as_deref(), Some(server.url().as_str()));
    let fusion = engine.ensemble("mixed").unwrap().fusion();
    assert!(!fusion.members.contains(&"far".to_string()), "{fusion:?}");

    // A batch goes as one request, not one per row.
    let before = server.seen.requests.load(Ordering::Relaxed);
    let handle = engine.ensemble("mixed").unwrap();
    let names = handle.feature_names();
    let rows = common::holdout_features(32);
    let values: Vec<f32> = rows.iter().flat_map(|f| names.iter().map(|n| f.get(n).unwrap())).collect();
    let answer = handle.predict_batch(&quorum::Batch::row_major(&names, &values).unwrap()).unwrap();
    assert_eq!(answer.predictions.len(), 32);
    assert_eq!(server.seen.requests.load(Ordering::Relaxed) - before, 1);
    assert_eq!(server.seen.most_rows.load(Ordering::Relaxed), 32);
    assert_eq!(server.seen.unauthorized.load(Ordering::Relaxed), 0);
}

#[test]
fn concurrent_callers_rows_reach_the_server_in_far_fewer_requests_than_predictions() {
    let server = FakeServer::start(common::features_of("technical").len());
    let home = tempfile::tempdir().unwrap();
    let engine = engine_with_far(home.path(), &server, BreakerOptions::default());
    let rows = common::holdout_features(20);
    let before = server.seen.requests.load(Ordering::Relaxed);
    let (callers, each) = (64, 20);
    std::thread::scope(|scope| {
        for _ in 0..callers {
            scope.spawn(|| {
                for f in &rows[..each] {
                    let p = engine.predict("mixed", f).unwrap();
                    assert!(!p.degraded, "{:?}", p.model_contributions[3].error);
                    let far = p.model_contributions[3].prediction.unwrap();
                    assert!((far - expected(&far_input(f))).abs() < 1e-6, "{far}");
                }
            });
        }
    });
    let requests = server.seen.requests.load(Ordering::Relaxed) - before;
    assert!(requests * 4 <= callers * each, "{requests} requests for {} predictions", callers * each);
    assert!(server.seen.most_rows.load(Ordering::Relaxed) > 1);
}

#[test]
fn registration_refuses_a_server_that_does_not_match_the_declaration() {
    let server = FakeServer::start(3);
    std::env::set_var(TOKEN_VAR, TOKEN);
    let home = tempfile::tempdir().unwrap();
    let engine = InferenceEngine::builder(home.path()).without_persistence().build().unwrap();
    let register = |url: String, token: Option<&str>, features: &[&str], output: Option<&str>| {
        let mut r = ModelRegistration::remote("far", url, token.map(str::to_string), features.iter().copied());
        if let Some(o) = output {
            r = r.with_output(o.parse().unwrap());
        }
        engine.register_model(r)
    };
    let error = |r: quorum::Result<quorum::ModelMetadata>| r.unwrap_err().to_string();

    let wrong_width = error(register(server.url(), Some(TOKEN_VAR), &["a", "b"], None));
    assert!(wrong_width.contains("takes 3 features but 2 were declared"), "{wrong_width}");
    let no_output = error(register(server.url(), Some(TOKEN_VAR), &["a", "b", "c"], Some("z")));
    assert!(no_output.contains("no output \"z\""), "{no_output}");
    let no_column = error(register(server.url(), Some(TOKEN_VAR), &["a", "b", "c"], Some("y:1")));
    assert!(no_column.contains("column 1 does not exist"), "{no_column}");
    let unset = error(register(server.url(), Some("QUORUM_TEST_NO_SUCH_TOKEN"), &["a", "b", "c"], None));
    assert!(unset.contains("QUORUM_TEST_NO_SUCH_TOKEN") && unset.contains("not set"), "{unset}");
    let refused = error(register(server.url(), None, &["a", "b", "c"], None));
    assert!(refused.contains("401"), "{refused}");
    let tls = register(server.url().replace("http://", "https://"), Some(TOKEN_VAR), &["a", "b", "c"], None);
    // With a TLS client the handshake with this plain-HTTP server fails; without one, the URL is refused.
    if cfg!(feature = "remote-tls") {
        assert!(matches!(tls, Err(Error::ModelLoad { .. })), "{tls:?}");
    } else {
        assert!(matches!(tls, Err(Error::Config(_))), "{tls:?}");
    }
    let other_model = error(register(server.url().replace("/far", "/near"), Some(TOKEN_VAR), &["a", "b", "c"], None));
    assert!(other_model.contains("404"), "{other_model}");
    assert!(engine.registry().versions("far").unwrap_or_default().is_empty(), "nothing was registered");

    let (addr, _, _) = server.kill();
    let dead = error(register(format!("http://{addr}/v2/models/far"), Some(TOKEN_VAR), &["a", "b", "c"], None));
    assert!(dead.contains(&addr.to_string()), "{dead}");

    let server = FakeServer::start(3);
    let meta = register(server.url(), Some(TOKEN_VAR), &["a", "b", "c"], None).unwrap();
    assert_eq!(meta.output.name, "y");
    assert!(meta.metadata["remote"].as_str().unwrap().contains("picked output \"y\""));
}

#[test]
fn a_misbehaving_server_degrades_the_member_on_time_and_the_member_recovers() {
    let server = FakeServer::start(common::features_of("technical").len());
    let home = tempfile::tempdir().unwrap();
    let engine = engine_with_far(home.path(), &server, common::quick_breaker());
    let f = &common::holdout_features(1)[0];
    let healthy = engine.predict("mixed", f).unwrap();
    assert!(!healthy.degraded);

    let budget = quorum::ensemble::DEFAULT_LATENCY_BUDGET_MS;
    for (mode, says) in [
        (Mode::Garbage, "remote"),
        (Mode::ServerError, "the model crashed"),
        (Mode::Close, "remote"),
        (Mode::Stall, "budget"),
    ] {
        server.set(mode);
        let started = Instant::now();
        let p = engine.predict("mixed", f).unwrap();
        let took = started.elapsed();
        assert!(p.degraded, "{mode:?}");
        assert_eq!(p.skipped.iter().map(|s| &**s).collect::<Vec<_>>(), ["far"], "{mode:?}");
        let why = p.model_contributions[3].error.clone().unwrap();
        assert!(why.contains(says), "{mode:?}: {why}");
        assert!(!why.contains(TOKEN), "{why}");
        assert!(took < Duration::from_secs_f64(budget / 1e3 * 3.0), "{mode:?} took {took:?}");
        // The local members answered as they do when all is well.
        for m in 0..3 {
            assert_eq!(p.model_contributions[m].prediction, healthy.model_contributions[m].prediction);
        }
    }
    // Four failures so far; the fifth opens the breaker, and then the server is not asked at all.
    server.set(Mode::ServerError);
    engine.predict("mixed", f).unwrap();
    assert_eq!(engine.breaker_state("far"), vec![(1, BreakerState::Open)]);
    let asked = server.seen.requests.load(Ordering::Relaxed);
    let p = engine.predict("mixed", f).unwrap();
    assert!(p.model_contributions[3].error.as_deref().unwrap().contains("circuit breaker is open"));
    assert_eq!(server.seen.requests.load(Ordering::Relaxed), asked);

    // The server dies: still answered, on time.
    let (addr, width, seen) = server.kill();
    std::thread::sleep(Duration::from_millis(120));
    let started = Instant::now();
    let p = engine.predict("mixed", f).unwrap();
    assert!(p.degraded && started.elapsed() < Duration::from_secs_f64(budget / 1e3 * 3.0));

    // It comes back on the same port: after the breaker's wait, trial calls close it again (a
    // trial that failed while it was down may reopen it once more first).
    let back = FakeServer::on(TcpListener::bind(addr).unwrap(), width, seen);
    let mut recovered = None;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(60));
        let p = engine.predict("mixed", f).unwrap();
        if !p.degraded && engine.breaker_state("far") == vec![(1, BreakerState::Closed)] {
            recovered = Some(p);
            break;
        }
    }
    let p = recovered.unwrap_or_else(|| panic!("the member did not recover: {:?}", engine.breaker_state("far")));
    assert_eq!(p.prediction, healthy.prediction);
    drop(back);
}

#[test]
fn wrong_shapes_datatypes_nan_and_a_dribbled_answer_are_the_members_failures_on_time() {
    let server = FakeServer::start(common::features_of("technical").len());
    let home = tempfile::tempdir().unwrap();
    // A breaker that stays closed: every call reaches the server.
    let patient = BreakerOptions { minimum_calls: 1000, ..BreakerOptions::default() };
    let engine = engine_with_far(home.path(), &server, patient);
    let f = &common::holdout_features(1)[0];
    let budget = Duration::from_secs_f64(quorum::ensemble::DEFAULT_LATENCY_BUDGET_MS / 1e3);
    for (mode, says) in [
        (Mode::WrongShape, "shape"),
        (Mode::WrongDatatype, "datatype \"BYTES\" is not a number"),
        (Mode::NotANumber, "finite"),
        (Mode::SlowLoris, "budget"),
    ] {
        server.set(mode);
        let started = Instant::now();
        let p = engine.predict("mixed", f).unwrap();
        let took = started.elapsed();
        assert_eq!(p.skipped.iter().map(|s| &**s).collect::<Vec<_>>(), ["far"], "{mode:?}");
        let why = p.model_contributions[3].error.clone().unwrap();
        assert!(why.contains(says), "{mode:?}: {why}");
        assert!(took < budget * 3, "{mode:?} took {took:?}");
        assert!(p.prediction.is_finite() && p.confidence.is_finite(), "{mode:?}: {p:?}");
    }
    server.set(Mode::Good);
    let p = engine.predict("mixed", f).unwrap();
    assert!(!p.degraded, "{:?}", p.model_contributions[3].error);
}

#[test]
fn a_late_request_is_hedged_to_the_second_server_and_a_refused_one_fails_over_to_it() {
    let width = common::features_of("technical").len();
    let (first, second) = (FakeServer::start(width), FakeServer::start(width));
    let home = tempfile::tempdir().unwrap();
    let registration =
        ModelRegistration::remote("far", first.url(), Some(TOKEN_VAR.into()), common::features_of("technical"))
            .with_hedge(Some(second.url()));
    let engine = engine_with(home.path(), registration, BreakerOptions::default());
    let spec = engine.registry().get("far", 1).unwrap().remote.clone().unwrap();
    assert_eq!((spec.hedge, spec.hedge_url.as_deref()), (true, Some(second.url().as_str())));
    let rows = common::holdout_features(40);
    // Enough answers for the member's 95th percentile; none of them late enough to hedge.
    for f in &rows {
        assert!(!engine.predict("mixed", f).unwrap().degraded);
    }
    let hedged_before = second.seen.requests.load(Ordering::Relaxed);

    // The first server stalls: each request goes to the second one after the percentile, and the
    // answer comes from there, well within the budget.
    first.set(Mode::Stall);
    let budget = Duration::from_secs_f64(quorum::ensemble::DEFAULT_LATENCY_BUDGET_MS / 1e3);
    for f in &rows[..5] {
        let started = Instant::now();
        let p = engine.predict("mixed", f).unwrap();
        let took = started.elapsed();
        assert!(!p.degraded, "{:?}", p.model_contributions[3].error);
        let far = p.model_contributions[3].prediction.unwrap();
        assert!((far - expected(&far_input(f))).abs() < 1e-6, "{far}");
        assert!(took < budget / 2, "{took:?}");
    }
    assert!(second.seen.requests.load(Ordering::Relaxed) >= hedged_before + 5);

    // The first server is gone: requests fail over to the second at once.
    let _ = first.kill();
    for f in &rows[..5] {
        let p = engine.predict("mixed", f).unwrap();
        assert!(!p.degraded, "{:?}", p.model_contributions[3].error);
    }
    assert_eq!(engine.breaker_state("far"), vec![(1, BreakerState::Closed)]);
}

#[test]
fn hedging_is_refused_for_a_local_file_and_for_a_second_url_that_is_another_model() {
    let width = common::features_of("technical").len();
    let (server, other) = (FakeServer::start(width), FakeServer::start(width - 1));
    std::env::set_var(TOKEN_VAR, TOKEN);
    let home = tempfile::tempdir().unwrap();
    let engine = InferenceEngine::builder(home.path()).without_persistence().build().unwrap();
    let remote = |hedge: String| {
        ModelRegistration::remote("far", server.url(), Some(TOKEN_VAR.into()), common::features_of("technical"))
            .with_hedge(Some(hedge))
    };
    let e = engine.register_model(remote(other.url())).unwrap_err().to_string();
    assert!(e.contains("hedge URL") && e.contains(&other.url()), "{e}");
    let e = engine.register_model(remote("ftp://nowhere/v2/models/far".into())).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    let file = common::model_file("technical");
    let local = ModelRegistration::new("local", file, common::features_of("technical")).with_hedge(None);
    assert!(matches!(engine.register_model(local), Err(Error::Config(_))));
    assert!(engine.registry().versions("far").unwrap_or_default().is_empty());
}
