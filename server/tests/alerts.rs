//! The story's alert rules acting in `quorum serve`, one test per rule: the condition is driven with
//! fault injection or a degraded model, the action is seen taken, the notification is received by a
//! local webhook receiver (Alertmanager's JSON), then the alert resolves. Rules here use windows and
//! `for:` of seconds instead of minutes; the conditions and actions are the story's.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quorum::{EnsembleConfig, Fault, MemberSpec};
use support::{common, Running, PREDICTOR};

/// A webhook receiver on loopback: keeps every JSON body; answers 500 to the first `fail_first`
/// requests (to see retries), 200 after.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/ml-team?token=secret-in-the-path", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let status = if n < fail_first { "500 Internal Server Error" } else { "200 OK" };
                let _ = stream.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
                if n >= fail_first {
                    kept.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                }
            }
        });
        Receiver { url, bodies }
    }

    /// Waits (15 s at most) until `find` finds what it looks for among the notifications received.
    fn wait<T>(&self, what: &str, find: impl Fn(&[serde_json::Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(found) = find(&self.bodies.lock().unwrap()) {
                return found;
            }
            assert!(Instant::now() < deadline, "the webhook never got {what}: {:?}", self.bodies.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the notifications about `alert` are exactly a firing, then a resolution.
    fn wait_fired_and_resolved(&self, alert: &str) {
        self.wait(&format!("{alert} firing then resolved"), |bodies| {
            let statuses: Vec<&str> = bodies
                .iter()
                .filter(|b| b["groupLabels"]["alertname"] == alert)
                .map(|b| b["status"].as_str().unwrap())
                .collect();
            (statuses == ["firing", "resolved"]).then_some(())
        });
    }
}

fn start(rules: &str, receiver: &Receiver, engine_toml: &str) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let rules_file = dir.path().join("alerts.yml");
    std::fs::write(&rules_file, rules).unwrap();
    let tokens = support::tokens_file(dir.path());
    let url = receiver.url.clone();
    // A slow member must slow the answers down for the latency alert, not be cut off by the budget.
    let server = Running::patient_market(|c| {
        c.tokens = Some(tokens);
        c.alerts.rules = Some(rules_file);
        c.alerts.interval_ms = 200;
        c.alerts.webhooks = vec![url];
        c.alerts.webhook_timeout_ms = 1_000;
        c.engine = Some(toml::from_str(engine_toml).unwrap());
    });
    (server, dir)
}

fn alerts(server: &Running) -> serde_json::Value {
    server.get_as(PREDICTOR, "/api/v1/ml/alerts").json()
}

/// Waits (bounded) until `done` holds on the alerts document, predicting with `work` meanwhile.
fn until(
    server: &Running,
    what: &str,
    mut work: impl FnMut(),
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let document = alerts(server);
        if done(&document) {
            return document;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {document:#}");
        work();
    }
}

fn events<'a>(document: &'a serde_json::Value, alert: &str, state: &str) -> Vec<&'a serde_json::Value> {
    document["events"].as_array().unwrap().iter().filter(|e| e["alert"] == alert && e["state"] == state).collect()
}

#[test]
fn latency_alert_scales_up_the_members_pools_and_resolves() {
    let receiver = Receiver::start(0);
    let rules = "latency_alert:\n  condition: p95_latency > 100ms over 2s\n  action: scale_up_inference_workers\n  severity: warning\n  for: 1s\n  cooldown: 1m\n  min_samples: 5\n";
    // Native executors off: the members' ONNX Runtime pools are what the alert scales up.
    let (server, _dir) = start(rules, &receiver, "native = false\n[default_model]\nreplicas = [1, 4]\n");
    let engine = server.state().engine().clone();
    let rows = common::holdout_features(400);
    let mut next = rows.iter().cycle();
    let replicas = |model: &str| engine.replicas(Some(model))[0].replicas;
    assert_eq!(replicas("fundamental"), 1);

    engine.inject_fault("technical", Some(Fault::Slow(Duration::from_millis(150))));
    let fired = until(
        &server,
        "latency_alert to fire",
        || drop(engine.predict("market", next.next().unwrap())),
        |d| !events(d, "latency_alert", "firing").is_empty(),
    );
    let event = events(&fired, "latency_alert", "firing")[0];
    assert_eq!(event["subject"]["ensemble"], "market");
    assert!(event["value"].as_f64().unwrap() > 0.1);
    // The alert's scale-up, not the autoscaler: fundamental is fast and was at 1 replica.
    assert!(event["action_result"].as_str().unwrap().contains("fundamental: 2 replicas"), "{event}");
    assert_eq!(replicas("fundamental"), 2);

    engine.inject_fault("technical", None);
    let resolved = until(
        &server,
        "latency_alert to resolve",
        || drop(engine.predict("market", next.next().unwrap())),
        |d| !events(d, "latency_alert", "resolved").is_empty(),
    );
    assert!(resolved["active"].as_array().unwrap().is_empty(), "{resolved:#}");
    receiver.wait_fired_and_resolved("latency_alert");
    let text = String::from_utf8(server.get_as(PREDICTOR, "/metrics").body).unwrap();
    assert!(text.contains("quorum_alert_events_total{alert=\"latency_alert\",state=\"firing\"} 1\n"), "{text}");
}

#[test]
fn model_failure_sends_the_failing_model_to_its_fallback_until_it_resolves() {
    let receiver = Receiver::start(0);
    let rules = "model_failure:\n  condition: model_error_rate > 5% over 1s\n  action: activate_fallback_model\n  severity: critical\n  for: 0s\n  cooldown: 1m\n  min_samples: 10\n";
    let (server, _dir) = start(rules, &receiver, "");
    let engine = server.state().engine().clone();
    // `guarded`: technical stands in for sentiment when sentiment fails.
    let mut sentiment: MemberSpec = "sentiment".parse().unwrap();
    sentiment.fallback = Some("technical".into());
    let members = vec!["fundamental".parse().unwrap(), sentiment];
    engine.create_ensemble(EnsembleConfig::new("guarded", members)).unwrap();
    let rows = common::holdout_features(400);
    let mut next = rows.iter().cycle();

    engine.inject_fault("sentiment", Some(Fault::FailFraction(0.5)));
    let fired = until(
        &server,
        "model_failure to fire",
        || drop(engine.predict("guarded", next.next().unwrap())),
        |d| !events(d, "model_failure", "firing").is_empty(),
    );
    let event = events(&fired, "model_failure", "firing")[0];
    assert_eq!(event["subject"]["model"], "sentiment");
    assert!(event["action_result"].as_str().unwrap().contains("fallback in guarded"), "{event}");
    assert_eq!(fired["forced_fallbacks"], serde_json::json!(["sentiment"]));
    // Every answer now comes from the fallback, none from the failing model.
    for _ in 0..5 {
        let p = engine.predict("guarded", next.next().unwrap()).unwrap();
        let stood_in = p.model_contributions.iter().find(|c| &*c.model == "sentiment").unwrap();
        assert_eq!(stood_in.fallback.as_deref(), Some("technical"));
        assert!(stood_in.error.as_deref().unwrap().contains("an alert sent its calls to its fallback"), "{p:?}");
    }
    engine.inject_fault("sentiment", None);
    // The forced model takes no calls: its window empties and the alert resolves, releasing it.
    let resolved = until(
        &server,
        "model_failure to resolve",
        || std::thread::sleep(Duration::from_millis(100)),
        |d| !events(d, "model_failure", "resolved").is_empty(),
    );
    assert_eq!(resolved["forced_fallbacks"], serde_json::json!([]));
    // Released: whatever happens to sentiment now is its own (its breaker may still be open from
    // the failures before), not the alert's.
    let p = engine.predict("guarded", next.next().unwrap()).unwrap();
    assert!(p.model_contributions.iter().all(|c| !c.error.as_deref().unwrap_or("").contains("an alert")), "{p:?}");
    let text = String::from_utf8(server.get_as(PREDICTOR, "/metrics").body).unwrap();
    assert!(text.contains("quorum_model_forced_fallback{model=\"sentiment\",version=\"1\"} 0\n"), "{text}");
    receiver.wait_fired_and_resolved("model_failure");
}

#[test]
fn accuracy_degradation_notifies_the_ml_team_in_alertmanager_format_with_retries() {
    // The receiver fails the first two deliveries: the notification arrives on a retry.
    let receiver = Receiver::start(2);
    let rules = "accuracy_degradation:\n  condition: model_accuracy < 0.75\n  action: notify_ml_team\n  severity: critical\n  for: 0s\n  cooldown: 1m\n  min_samples: 50\n";
    let (server, _dir) = start(rules, &receiver, "");
    let engine = server.state().engine().clone();
    let rows = common::holdout_features(400);
    // A degraded model: every outcome contradicts technical.
    let technical_label = |p: &quorum::Prediction| {
        let c = p.model_contributions.iter().find(|c| &*c.model == "technical").unwrap();
        if c.prediction.unwrap() >= 0.5 {
            1.0
        } else {
            0.0
        }
    };
    for features in &rows[..60] {
        let p = engine.predict("market", features).unwrap();
        engine.record_outcome(p.request_id, 1.0 - technical_label(&p)).unwrap();
    }
    let fired = until(
        &server,
        "accuracy_degradation to fire",
        || std::thread::sleep(Duration::from_millis(50)),
        |d| events(d, "accuracy_degradation", "firing").iter().any(|e| e["subject"]["model"] == "technical"),
    );
    assert!(fired["active"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["subject"]["model"] == "technical" && a["state"] == "firing"));
    let body = receiver.wait("a notification about technical", |bodies| {
        bodies.iter().find(|b| b["commonLabels"]["model"] == "technical").cloned()
    });
    // Alertmanager's webhook payload, version 4.
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    let alert = &body["alerts"][0];
    assert_eq!(alert["labels"]["alertname"], "accuracy_degradation");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["ensemble"], "market");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert!(alert["startsAt"].as_str().unwrap().ends_with('Z'));
    assert!(alert["annotations"]["runbook"].as_str().unwrap().ends_with("#accuracy_degradation"));

    // The model recovers: outcomes agree with it until its window accuracy is back over 75%.
    for features in rows[60..].iter().take(220) {
        let p = engine.predict("market", features).unwrap();
        engine.record_outcome(p.request_id, technical_label(&p)).unwrap();
    }
    until(
        &server,
        "accuracy_degradation to resolve for technical",
        || std::thread::sleep(Duration::from_millis(50)),
        |d| events(d, "accuracy_degradation", "resolved").iter().any(|e| e["subject"]["model"] == "technical"),
    );
    receiver.wait("technical's resolution", |bodies| {
        bodies.iter().any(|b| b["commonLabels"]["model"] == "technical" && b["status"] == "resolved").then_some(())
    });
    // The secret in the webhook's path is never printed.
    assert!(!server.state().config().to_toml().unwrap().contains("secret-in-the-path"));
    let text = String::from_utf8(server.get_as(PREDICTOR, "/metrics").body).unwrap();
    assert!(text.contains("quorum_alert_notifications_total{result=\"sent\"}"), "{text}");
}

#[test]
fn a_scale_horizontal_alert_raises_the_autoscaler_metric_while_it_fires() {
    // resource_exhaustion's action on a signal this machine has: no GPU provider here, so
    // `gpu_usage` has no source (docs/metrics.md); CPU use drives the same action.
    let receiver = Receiver::start(0);
    let rules = "resource_exhaustion:\n  condition: cpu_usage > 10% over 1s\n  action: scale_horizontal\n  severity: warning\n  for: 0s\n  cooldown: 1m\n";
    let (server, _dir) = start(rules, &receiver, "");
    let engine = server.state().engine().clone();
    let rows = common::holdout_features(400);
    let mut next = rows.iter().cycle();
    until(
        &server,
        "resource_exhaustion to fire",
        || {
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(100) {
                let _ = engine.predict("market", next.next().unwrap());
            }
        },
        |d| !events(d, "resource_exhaustion", "firing").is_empty() && d["scale_horizontal_needed"] == true,
    );
    let text = String::from_utf8(server.get_as(PREDICTOR, "/metrics").body).unwrap();
    assert!(text.contains("quorum_scale_horizontal_needed 1\n"), "{text}");
    // Idle: CPU use falls, the alert resolves and the metric returns to 0.
    let resolved = until(
        &server,
        "resource_exhaustion to resolve",
        || std::thread::sleep(Duration::from_millis(100)),
        |d| !events(d, "resource_exhaustion", "resolved").is_empty(),
    );
    assert_eq!(resolved["scale_horizontal_needed"], false);
    let text = String::from_utf8(server.get_as(PREDICTOR, "/metrics").body).unwrap();
    assert!(text.contains("quorum_scale_horizontal_needed 0\n"));
    receiver.wait_fired_and_resolved("resource_exhaustion");
}

#[test]
fn a_bad_rule_file_is_refused_at_start_with_the_alert_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerts.yml");
    std::fs::write(&file, "latency_alert:\n  condition: p95_latency > 100\n  action: scale_up_inference_workers\n")
        .unwrap();
    let config = quorum_server::ServerConfig {
        alerts: quorum_server::AlertsConfig { rules: Some(file.clone()), ..Default::default() },
        ..Default::default()
    };
    let e = config.validate().unwrap_err();
    assert_eq!(e.code(), "config");
    assert!(e.to_string().contains("latency_alert") && e.to_string().contains("needs a unit"), "{e}");
    std::fs::write(&file, "latency_alert: [not, a, rule]\n").unwrap();
    let e = config.validate().unwrap_err();
    assert!(e.to_string().contains(&file.display().to_string()), "{e}");
}
