//! Shared by the server's tests: a home with the three example models and the `market` ensemble, a
//! server started in-process on a free loopback port, and a small HTTP/1.1 client over a raw socket
//! (so tests also control what is sent byte by byte).
#![allow(dead_code)]

#[path = "../../../tests/common/mod.rs"]
pub mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use quorum_server::{Server, ServerConfig};

pub const ADMIN: &str = "admin-token-0123456789abcdef";
pub const PREDICTOR: &str = "predict-token-0123456789abcdef";

/// A running server over its own home and runtime.
pub struct Running {
    pub home: tempfile::TempDir,
    pub addr: SocketAddr,
    pub runtime: tokio::runtime::Runtime,
    server: Option<Server>,
}

impl Running {
    /// Home with the example models and `market`; `configure` adjusts the settings.
    pub fn market(configure: impl FnOnce(&mut ServerConfig)) -> Running {
        let home = tempfile::tempdir().unwrap();
        drop(common::market_engine(home.path()));
        Running::start(home, configure)
    }

    /// [`Running::market`] whose `market` ensemble waits up to 2 s for its members (version 2):
    /// for tests where a slow member must slow the answers down rather than be cut off by the
    /// default latency budget.
    pub fn patient_market(configure: impl FnOnce(&mut ServerConfig)) -> Running {
        let home = tempfile::tempdir().unwrap();
        let engine = common::market_engine(home.path());
        engine.create_ensemble(patient_market(vec![0.4, 0.4, 0.2])).unwrap();
        drop(engine);
        Running::start(home, configure)
    }

    pub fn start(home: tempfile::TempDir, configure: impl FnOnce(&mut ServerConfig)) -> Running {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut config = ServerConfig { home: home.path().to_path_buf(), ..Default::default() };
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.limits.shutdown_drain_ms = 50;
        configure(&mut config);
        let plain_http = config.tls.is_none();
        let server = runtime.block_on(quorum_server::start(config)).expect("server starts");
        let addr = server.addr;
        let running = Running { home, addr, runtime, server: Some(server) };
        if plain_http {
            running.wait_ready();
        }
        running
    }

    pub fn wait_ready(&self) {
        for _ in 0..500 {
            if self.get("/v2/health/ready").status == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the server did not become ready");
    }

    pub fn state(&self) -> &quorum_server::AppState {
        &self.server.as_ref().unwrap().state
    }

    pub fn get(&self, path: &str) -> Reply {
        send(self.addr, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        send(self.addr, "POST", path, &[("content-type", "application/json")], body.as_bytes())
    }

    pub fn post_as(&self, token: &str, path: &str, body: &str) -> Reply {
        let auth = format!("Bearer {token}");
        send(
            self.addr,
            "POST",
            path,
            &[("authorization", &auth), ("content-type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn get_as(&self, token: &str, path: &str) -> Reply {
        let auth = format!("Bearer {token}");
        send(self.addr, "GET", path, &[("authorization", &auth)], b"")
    }

    pub fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown()).unwrap();
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The API error code (`{"error": {"code"}}`).
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_string()
    }
}

/// One request on a fresh connection (`Connection: close`), the whole answer read.
pub fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    read_reply(&mut stream)
}

pub fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_reply(&raw)
}

pub fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no reply head in {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())).collect();
    Reply { status, headers, body: raw[split + 4..].to_vec() }
}

/// A prediction request body for the first finite holdout row.
pub fn predict_body() -> String {
    let features = &common::holdout_features(1)[0];
    market_body(features)
}

pub fn market_body(features: &quorum::Features) -> String {
    let market: serde_json::Map<String, serde_json::Value> =
        features.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    serde_json::json!({"features": {"market_data": market, "user_profile": {"id": 1}, "risk_parameters": {}}})
        .to_string()
}

/// A tokens file with one admin and one predict token.
pub fn tokens_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("tokens");
    std::fs::write(&path, format!("# test tokens\nadmin {ADMIN}\npredict {PREDICTOR}\n")).unwrap();
    path
}

/// A `market` configuration over the three example models with these weights and a 2 s latency
/// budget (see [`Running::patient_market`]).
pub fn patient_market(weights: Vec<f32>) -> quorum::EnsembleConfig {
    let members = ["technical", "fundamental", "sentiment"].map(|m| m.parse::<quorum::MemberSpec>().unwrap());
    quorum::EnsembleConfig::new("market", members)
        .with_weights(weights)
        .with_latency_budget(std::time::Duration::from_secs(2))
}
