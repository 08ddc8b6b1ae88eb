//! `quorum serve` as a process: `--print-config` (file and flags merged), and SIGTERM under load —
//! requests in flight finish, every request sent on a connection the server had not closed is
//! answered 200, the process exits 0 — with no token in its logs even at trace level.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorum::{EnsembleConfig, MemberSpec, ModelRegistration};

const ADMIN: &str = "admin-secret-token-4f9a1c2e";
const PREDICT: &str = "predict-secret-token-77b3d0aa";

#[test]
fn print_config_merges_the_file_and_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quorum.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9001\"\n[limits]\nmax_batch_rows = 77\n[engine]\ncache_capacity = 500\nfusion = false\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["--home", dir.path().to_str().unwrap(), "serve", "--config", file.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:9002", "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let config = quorum_server::ServerConfig::from_toml(&printed).unwrap();
    assert_eq!(config.listen.port(), 9002, "the flag wins");
    assert_eq!(config.limits.max_batch_rows, 77);
    assert_eq!(config.limits.max_body_bytes, quorum_server::Limits::default().max_body_bytes);
    assert_eq!(config.engine_options().unwrap().cache_capacity, Some(500));
    assert_eq!(config.home, dir.path());

    let bad = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .arg("--home")
        .arg(dir.path())
        .env_remove("QUORUM_ADMIN_TOKENS")
        .env_remove("QUORUM_PREDICT_TOKENS")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("error[config]"));
}

/// `quorum serve` on a free loopback port with JSON logs and `args`: the process, its address, the
/// rest of its log lines, and the lines read so far.
fn serve(home: &std::path::Path, args: &[&str]) -> (Child, SocketAddr, impl Iterator<Item = String> + Send, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .arg("--home")
        .arg(home)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let mut log = String::new();
    let addr = listening_address(&mut lines, &mut log);
    (child, addr, lines, log)
}

/// Reads the server's JSON log lines until it says where it listens.
fn listening_address(lines: &mut impl Iterator<Item = String>, log: &mut String) -> SocketAddr {
    for line in lines {
        log.push_str(&line);
        log.push('\n');
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if value["fields"]["message"] == "quorum serve listening" {
            return value["fields"]["addr"].as_str().unwrap().parse().unwrap();
        }
    }
    panic!("the server never listened:\n{log}");
}

fn request(stream: &mut TcpStream, path: &str, body: &str) -> std::io::Result<(u16, bool)> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {PREDICT}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    // Read the head, then exactly content-length bytes.
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut status_line = String::new();
    if reader.read_line(&mut status_line)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before answering"));
    }
    let status: u16 = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut length, mut close) = (0usize, false);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok((status, close))
}

#[test]
fn sigterm_under_load_finishes_accepted_requests_and_exits_zero() {
    let home = tempfile::tempdir().unwrap();
    {
        let engine = common::market_engine(home.path());
        let slow = common::repo().join("tests/fixtures/slow.onnx");
        engine.register_model(ModelRegistration::new("slow", slow, ["x"])).unwrap();
        // Its calls outlast the default latency budget: this test wants them to finish.
        let slow = EnsembleConfig::new("slow", ["slow".parse::<MemberSpec>().unwrap()])
            .with_latency_budget(Duration::from_secs(10));
        engine.create_ensemble(slow).unwrap();
    }
    let tokens = home.path().join("tokens");
    std::fs::write(&tokens, format!("admin {ADMIN}\npredict {PREDICT}\n")).unwrap();
    let tokens = tokens.to_str().unwrap();
    let (mut child, addr, lines, mut log) = serve(home.path(), &["--log-level", "trace", "--tokens", tokens]);
    let log_reader = std::thread::spawn(move || {
        for line in lines {
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    // Wait for readiness.
    let ready = |addr| {
        let mut s = TcpStream::connect(addr).ok()?;
        s.write_all(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.starts_with("HTTP/1.1 200").then_some(())
    };
    let started = Instant::now();
    while ready(addr).is_none() {
        assert!(started.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }

    let market = {
        let features = &common::holdout_features(1)[0];
        let map: serde_json::Map<String, serde_json::Value> =
            features.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
        serde_json::json!({"features": {"market_data": map}}).to_string()
    };
    let stop = Arc::new(AtomicBool::new(false));
    // Keep-alive clients: each sends requests one after another until an answer says
    // `Connection: close`; a request that fails on an open connection is a failure.
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let body = if i == 0 { r#"{"features": {"market_data": {"x": 1}}}"#.to_string() } else { market.clone() };
            let path = if i == 0 { "/api/v1/ml/ensemble/slow/predict" } else { "/api/v1/ml/ensemble/market/predict" };
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut ok, mut failures) = (0u32, Vec::new());
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                loop {
                    match request(&mut stream, path, &body) {
                        Ok((200, close)) => {
                            ok += 1;
                            if close {
                                break;
                            }
                        }
                        Ok((status, _)) => failures.push(format!("status {status}")),
                        Err(e) => {
                            failures.push(e.to_string());
                            break;
                        }
                    }
                    if stop.load(Ordering::Relaxed) && i != 0 && ok > 10_000 {
                        break;
                    }
                }
                (ok, failures)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(600));
    let terminated = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(terminated.success());
    let status = child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    for client in clients {
        let (ok, failures) = client.join().unwrap();
        assert!(failures.is_empty(), "requests failed: {failures:?}");
        assert!(ok > 0);
        answered += ok;
    }
    assert!(status.success(), "exit status {status:?}");
    assert!(answered > 20, "{answered}");
    // Connections are refused once it has stopped.
    assert!(TcpStream::connect(addr).is_err());
    let log = log_reader.join().unwrap();
    assert!(log.contains("every connection finished") || log.contains("grace period over"), "{log}");
    assert!(!log.contains(ADMIN) && !log.contains(PREDICT), "a token reached the log");
    assert!(log.contains("\"level\":\"DEBUG\""), "trace logging was on");
}

#[test]
fn top_and_alerts_list_read_a_running_server_with_the_token_from_the_environment() {
    let home = tempfile::tempdir().unwrap();
    drop(common::market_engine(home.path()));
    let tokens = home.path().join("tokens");
    std::fs::write(&tokens, format!("admin {ADMIN}\npredict {PREDICT}\n")).unwrap();
    // A rule that holds at once on any machine, to see an alert end to end.
    let rules = home.path().join("alerts.yml");
    std::fs::write(&rules, "memory_watch:\n  condition: memory_usage > 1MB\n  action: log\n  severity: info\n")
        .unwrap();
    let quorum = |args: &[&str], token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quorum"));
        command.arg("--home").arg(home.path()).args(args).env_remove("QUORUM_TOKEN");
        if let Some(token) = token {
            command.env("QUORUM_TOKEN", token);
        }
        command.output().unwrap()
    };
    let checked = quorum(&["alerts", "check", rules.to_str().unwrap()], None);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    assert!(String::from_utf8_lossy(&checked.stdout).contains("memory_watch"));

    let args = ["--tokens", tokens.to_str().unwrap(), "--alerts", rules.to_str().unwrap()];
    let (mut child, addr, lines, _) = serve(home.path(), &args);
    std::thread::spawn(move || lines.for_each(drop));
    let server = format!("http://{addr}");

    let refused = quorum(&["top", "--server", &server, "--frames", "1", "--interval", "0.2"], None);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--token-env"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let started = Instant::now();
    let listed = loop {
        let out = quorum(&["alerts", "list", "--server", &server, "--json"], Some(PREDICT));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let document: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if !document["events"].as_array().unwrap().is_empty() {
            break document;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no alert event: {document}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(listed["events"][0]["alert"], "memory_watch");
    assert_eq!(listed["events"][0]["state"], "firing");

    let top = quorum(&["top", "--server", &server, "--frames", "1", "--interval", "0.3"], Some(PREDICT));
    assert!(top.status.success(), "{}", String::from_utf8_lossy(&top.stderr));
    let frame = String::from_utf8_lossy(&top.stdout);
    for expected in ["quorum top", "market", "technical", "weight", "alerts: 1 active", "memory_watch", "process: CPU"]
    {
        assert!(frame.contains(expected), "{expected:?} missing from:\n{frame}");
    }
    // A reader that goes away (`quorum top | head -3`) ends it quietly.
    let mut piped = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["top", "--server", &server, "--frames", "3", "--interval", "0.2"])
        .env("QUORUM_TOKEN", PREDICT)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(piped.stdout.take());
    let out = piped.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = quorum(&["alerts", "list", "--server", &server], Some(PREDICT));
    assert!(String::from_utf8_lossy(&table.stdout).contains("memory_usage > 1MB"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_served_ensemble_joins_another_home_as_a_remote_member_registered_on_the_command_line() {
    // Home A serves `market` behind tokens; home B registers it by URL, next to a local model.
    let upstream_home = tempfile::tempdir().unwrap();
    // The served home is built and closed (the server takes its state lock); a twin home built the
    // same way gives the answers the server should compute.
    drop(common::market_engine(upstream_home.path()));
    let twin_home = tempfile::tempdir().unwrap();
    let upstream = common::market_engine(twin_home.path());
    let features = upstream.ensemble("market").unwrap().feature_names();
    let tokens = upstream_home.path().join("tokens");
    std::fs::write(&tokens, format!("admin {ADMIN}\npredict {PREDICT}\n")).unwrap();
    let (child, addr, lines, _) = serve(upstream_home.path(), &["--tokens", tokens.to_str().unwrap()]);
    // A failed assertion must not leave the server running (it holds the test's output pipe).
    let mut child = KillOnDrop(child);
    std::thread::spawn(move || lines.for_each(drop));

    let home = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}/v2/models/market");
    let quorum = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_quorum"))
            .arg("--home")
            .arg(home.path())
            .args(args)
            .env("QUORUM_TEST_UPSTREAM_TOKEN", PREDICT)
            .output()
            .unwrap()
    };
    let register = |extra: &[&str]| {
        let mut args = vec!["models", "register", "upstream", "--remote", &url, "--output", "prediction"];
        let joined = features.join(",");
        args.extend(["--features", &joined]);
        args.extend(extra);
        quorum(&args)
    };
    let unauthorized = register(&[]);
    assert!(!unauthorized.status.success());
    assert!(String::from_utf8_lossy(&unauthorized.stderr).contains("401"), "{unauthorized:?}");
    let both = quorum(&["models", "register", "x", "--remote", &url, "--file", "m.onnx", "--features", "a"]);
    assert!(!both.status.success(), "--file and --remote conflict");
    let hedged_file = quorum(&["models", "register", "x", "--file", "m.onnx", "--features", "a", "--remote-hedge"]);
    assert!(!hedged_file.status.success(), "--remote-hedge needs --remote");

    let registered = register(&["--remote-token-env", "QUORUM_TEST_UPSTREAM_TOKEN", "--remote-hedge"]);
    assert!(registered.status.success(), "{}", String::from_utf8_lossy(&registered.stderr));
    assert!(String::from_utf8_lossy(&registered.stdout).contains("registered upstream@1"));
    let shown = quorum(&["models", "show", "upstream"]);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!((shown["executor"]["kind"].as_str(), shown["executor"]["url"].as_str()), (Some("remote"), Some(&*url)));
    // quorum serve lists one input per feature and speaks the binary tensor extension.
    assert_eq!(shown["remote"]["input"], serde_json::Value::Null);
    assert_eq!(shown["remote"]["binary"], true);
    assert_eq!((shown["remote"]["hedge"].as_bool(), shown["remote"].get("hedge_url")), (Some(true), None));
    for entry in walk(home.path()) {
        let text = std::fs::read(&entry).unwrap();
        assert!(!String::from_utf8_lossy(&text).contains(PREDICT), "the token reached {}", entry.display());
    }

    // The engine reads the token from the variable registration named, in its own process.
    std::env::set_var("QUORUM_TEST_UPSTREAM_TOKEN", PREDICT);
    let engine = quorum::InferenceEngine::builder(home.path()).build().unwrap();
    engine
        .register_model(ModelRegistration::new(
            "technical",
            common::model_file("technical"),
            common::features_of("technical"),
        ))
        .unwrap();
    let members = ["technical", "upstream"].map(|m| m.parse::<MemberSpec>().unwrap());
    engine.create_ensemble(EnsembleConfig::new("desk", members).with_min_members(1)).unwrap();
    for f in common::holdout_features(6) {
        let local = upstream.predict("market", &f).unwrap();
        let p = engine.predict("desk", &f).unwrap();
        assert!(!p.degraded, "{:?}", p.model_contributions[1].error);
        let remote = p.model_contributions[1].prediction.unwrap();
        assert!((remote - local.prediction).abs() < 1e-6, "remote {remote} vs served {}", local.prediction);
    }

    // The server goes away: the desk still answers, from its local member, within its budget.
    let _ = child.0.kill();
    let _ = child.0.wait();
    let f = &common::holdout_features(1)[0];
    let started = Instant::now();
    let p = engine.predict("desk", f).unwrap();
    assert!(p.degraded && started.elapsed() < Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(p.skipped.iter().map(|s| &**s).collect::<Vec<_>>(), ["upstream"]);
}

/// A server process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
