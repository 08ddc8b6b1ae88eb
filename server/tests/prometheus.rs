//! A real Prometheus (Debian's `prometheus`, on loopback, a temporary data directory) scrapes a
//! running `quorum serve` with deploy/prometheus/alerts.yml loaded (its `for:` durations shortened to
//! seconds; the expressions as shipped). A slow member makes the latency alert go pending, then
//! firing; every PromQL expression of deploy/grafana/quorum.json then evaluates without error and
//! returns data, except the few that only a GPU or a drift alarm produces (named below).

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quorum::{ExperimentConfig, Fault};
use support::{common, Running, PREDICTOR};

/// Dashboard expressions that return nothing on this machine, and why.
const EMPTY_HERE: &[(&str, &str)] = &[
    ("quorum_gpu_utilization_ratio", "no GPU provider is configured (and no GPU here)"),
    ("quorum_drift_events_total", "no member drifted"),
];

struct Prometheus {
    child: Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(common::repo().join(path)).unwrap()
}

impl Prometheus {
    fn start(dir: &Path, target: std::net::SocketAddr, token: &str) -> Option<Prometheus> {
        // Same rules, evaluated every second and pending for 2 s instead of minutes.
        let rules = repo_file("deploy/prometheus/alerts.yml");
        let rules: String = rules
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("for: ") {
                    l.split("for: ").next().unwrap().to_string() + "for: 2s"
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join("alerts.yml"), rules).unwrap();
        std::fs::write(dir.join("token"), token).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: quorum\n    metrics_path: /metrics\n    authorization:\n      type: Bearer\n      credentials_file: {}\n    static_configs:\n      - targets: [\"{target}\"]\n",
            dir.join("alerts.yml").display(),
            dir.join("token").display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("prometheus.log")).unwrap()))
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(_) => return None,
        };
        let prometheus = Prometheus { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while prometheus.api("/-/ready", &[]).is_none_or(|r| !r.contains("Ready")) {
            assert!(
                Instant::now() < deadline,
                "prometheus did not start: {}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(prometheus)
    }

    /// A GET of Prometheus's HTTP API with URL-encoded parameters (curl does the encoding).
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Option<String> {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "10", "-G", &format!("http://127.0.0.1:{}{path}", self.port)]);
        for (k, v) in params {
            curl.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        let out = curl.output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    fn query(&self, expr: &str) -> serde_json::Value {
        let reply = self.api("/api/v1/query", &[("query", expr)]).expect("query answered");
        serde_json::from_str(&reply).unwrap()
    }

    /// The states (`pending`, `firing`) of the named alert now.
    fn alert_states(&self, name: &str) -> Vec<String> {
        let reply: serde_json::Value = serde_json::from_str(&self.api("/api/v1/alerts", &[]).unwrap()).unwrap();
        reply["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .map(|a| a["state"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Every `expr` in the dashboard's panels, with Grafana's variables filled in.
fn dashboard_expressions() -> Vec<String> {
    let dashboard: serde_json::Value = serde_json::from_str(&repo_file("deploy/grafana/quorum.json")).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            exprs.push(expr.replace("$__rate_interval", "30s").replace("$ensemble", ".*"));
        }
    }
    exprs
}

#[test]
fn prometheus_scrapes_quorum_fires_the_latency_alert_and_answers_every_dashboard_query() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = support::tokens_file(dir.path());
    // The slow member below must slow the answers down, not be cut off by the latency budget (by
    // default it would keep p95 near the alert's 100 ms).
    let server = Running::patient_market(|c| {
        c.tokens = Some(tokens);
        c.engine = Some(toml::from_str("cache_capacity = 1000").unwrap());
    });
    let engine = server.state().engine().clone();
    // An experiment, tracked outcomes and cache hits, so that their panels have data.
    engine.create_ensemble_inactive(support::patient_market(vec![0.2, 0.5, 0.3])).unwrap();
    engine.start_experiment(ExperimentConfig::new("ab", "market", 2, 3)).unwrap();
    for (i, features) in common::holdout_features(60).iter().enumerate() {
        let p = engine.predict("market", features).unwrap();
        engine.record_outcome(p.request_id, (i % 2) as f64).unwrap();
        engine.predict("market", features).unwrap();
    }

    // One request that fails (every member down), for the errors panel.
    let models = ["technical", "fundamental", "sentiment"];
    models.iter().for_each(|m| engine.inject_fault(m, Some(Fault::Fail)));
    // A row not predicted before: the cache does not answer it.
    assert!(engine.predict("market", &common::holdout_features(61)[60]).is_err());
    models.iter().for_each(|m| engine.inject_fault(m, None));

    let prometheus_dir = tempfile::tempdir().unwrap();
    let Some(prometheus) = Prometheus::start(prometheus_dir.path(), server.addr, PREDICTOR) else {
        eprintln!("SKIPPED the Prometheus integration test: prometheus is not installed (make monitoring-tools)");
        return;
    };

    // Traffic through HTTP while the technical model takes 150 ms per call: p95 well over 100 ms.
    engine.inject_fault("technical", Some(Fault::Slow(Duration::from_millis(150))));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, addr) = (Arc::clone(&stop), server.addr);
        // Distinct rows, so that the cache (1 s TTL) does not answer them.
        let bodies: Vec<String> = common::holdout_features(400).iter().map(support::market_body).collect();
        std::thread::spawn(move || {
            let started = Instant::now();
            let headers =
                [("authorization", "Bearer predict-token-0123456789abcdef"), ("content-type", "application/json")];
            // Bounded: stops when told, or after 90 s whatever happens.
            for body in bodies.iter().cycle() {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(90) {
                    break;
                }
                support::send(addr, "POST", "/api/v1/ml/ensemble/market/predict", &headers, body.as_bytes());
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !seen.contains(&"firing".to_string()) {
        assert!(
            Instant::now() < deadline,
            "latency_alert never fired; states seen: {seen:?}; up: {}; p95: {}; rules: {}",
            prometheus.query("up"),
            prometheus.query("quorum:request_duration_seconds:p95_5m"),
            prometheus.api("/api/v1/rules", &[]).unwrap_or_default()
        );
        for state in prometheus.alert_states("latency_alert") {
            if !seen.contains(&state) {
                seen.push(state);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(seen.first().map(String::as_str), Some("pending"), "{seen:?}");
    let p95 = prometheus.query("quorum:request_duration_seconds:p95_5m{ensemble=\"market\"}");
    let p95: f64 = p95["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(p95 > 0.1, "{p95}");

    let mut empty = Vec::new();
    for expr in dashboard_expressions() {
        let reply = prometheus.query(&expr);
        assert_eq!(reply["status"], "success", "{expr}: {reply}");
        if reply["data"]["result"].as_array().unwrap().is_empty() {
            empty.push(expr);
        }
    }
    stop.store(true, Ordering::Relaxed);
    engine.inject_fault("technical", None);
    traffic.join().unwrap();
    let unexplained: Vec<&String> =
        empty.iter().filter(|e| !EMPTY_HERE.iter().any(|(metric, _)| e.contains(metric))).collect();
    assert!(unexplained.is_empty(), "dashboard queries without data: {unexplained:#?}");
}

/// Without a Grafana server here, the dashboard and its provisioning files are checked offline: they
/// parse, every panel queries the provisioned Prometheus data source through the `datasource`
/// variable, and panel ids are unique.
#[test]
fn the_grafana_dashboard_and_provisioning_files_are_well_formed() {
    let dashboard: serde_json::Value = serde_json::from_str(&repo_file("deploy/grafana/quorum.json")).unwrap();
    assert_eq!(dashboard["uid"], "quorum-overview");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids: Vec<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids repeat");
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        assert!(!panel["targets"].as_array().unwrap().is_empty(), "{}", panel["title"]);
    }
    let titles: Vec<&str> = panels.iter().map(|p| p["title"].as_str().unwrap()).collect();
    for needed in
        ["Latency", "Throughput", "errors", "accuracy", "weights", "breakers", "Cache", "Replicas", "Experiments"]
    {
        assert!(
            titles.iter().any(|t| t.to_lowercase().contains(&needed.to_lowercase())),
            "no {needed} panel in {titles:?}"
        );
    }

    #[derive(serde::Deserialize)]
    struct Providers {
        #[serde(rename = "apiVersion")]
        api_version: u32,
        providers: Vec<serde_json::Value>,
    }
    let providers: Providers =
        serde_saphyr::from_str(&repo_file("deploy/grafana/provisioning/dashboards/quorum.yml")).unwrap();
    assert_eq!(providers.api_version, 1);
    assert_eq!(providers.providers[0]["type"], "file");
    #[derive(serde::Deserialize)]
    struct Sources {
        datasources: Vec<serde_json::Value>,
    }
    let sources: Sources =
        serde_saphyr::from_str(&repo_file("deploy/grafana/provisioning/datasources/prometheus.yml")).unwrap();
    assert_eq!(sources.datasources[0]["type"], "prometheus");
}
