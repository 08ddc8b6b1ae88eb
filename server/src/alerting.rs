//! The alert rules acting in the server: every `interval_ms` the engine's snapshot is judged
//! ([`quorum::alerts::Alerting`]) off the request path, and each alert that fires or resolves acts —
//! `scale_up_inference_workers` adds replicas, `activate_fallback_model` sends a failing model's calls
//! to its fallback until the alert resolves, `scale_horizontal` raises a metric for the cluster
//! autoscaler, `notify_ml_team` posts to the webhooks — then is logged and kept as an event
//! (`GET /api/v1/ml/alerts`, `quorum alerts`, the status page). Webhooks get Alertmanager's JSON
//! (version 4) from their own task, retried with doubling backoff; the request path never waits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quorum::alerts::{AlertAction, AlertEvent, Alerting, EventState};
use quorum::telemetry::{Counter, Exposition, Kind};
use quorum::{InferenceEngine, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::alert_rules::{load_rules, WebhookUrl};
use crate::config::AlertsConfig;

/// Notifications waiting for the webhook task; beyond it new ones are dropped (and counted).
const NOTIFY_QUEUE: usize = 1024;

/// The server's alerting: rules and their state, what the actions left in force, notifications.
#[derive(Debug)]
pub struct AlertsState {
    alerting: Mutex<Alerting>,
    /// Firing scale_horizontal alerts now (a gauge for the cluster autoscaler).
    scale_horizontal: AtomicU64,
    notify: Option<mpsc::Sender<AlertEvent>>,
    pub notifications_sent: Counter,
    pub notifications_failed: Counter,
    pub notifications_dropped: Counter,
    events_total: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl AlertsState {
    fn lock(&self) -> MutexGuard<'_, Alerting> {
        self.alerting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rules, alerts pending or firing, recent events, and what the actions hold in force.
    pub fn document(&self, engine: &InferenceEngine) -> serde_json::Value {
        let alerting = self.lock();
        serde_json::json!({
            "rules": alerting.rules(),
            "active": alerting.active(),
            "events": alerting.events(),
            "forced_fallbacks": engine.forced_fallbacks(),
            "scale_horizontal_needed": self.scale_horizontal.load(Ordering::Relaxed) > 0,
        })
    }

    pub fn write_metrics(&self, e: &mut Exposition) {
        let alerting = self.lock();
        e.family("quorum_alerts_active", Kind::Gauge, "Alerts pending or firing now, per rule and state.");
        let mut counts: BTreeMap<(String, &str, &str), u64> = BTreeMap::new();
        for rule in alerting.rules() {
            for state in ["pending", "firing"] {
                counts.insert((rule.name.clone(), state, rule.severity.as_str()), 0);
            }
        }
        for a in alerting.active() {
            *counts.entry((a.alert.clone(), a.state, a.severity.as_str())).or_default() += 1;
        }
        for ((alert, state, severity), n) in &counts {
            e.sample("quorum_alerts_active", &[("alert", alert), ("state", state), ("severity", severity)], *n as f64);
        }
        drop(alerting);
        e.family("quorum_alert_events_total", Kind::Counter, "Alerts that fired or resolved.");
        for ((alert, state), n) in self.events_total.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            e.sample("quorum_alert_events_total", &[("alert", alert), ("state", state)], *n as f64);
        }
        e.family(
            "quorum_scale_horizontal_needed",
            Kind::Gauge,
            "1 while a scale_horizontal alert fires: this replica asks for more replicas.",
        );
        e.sample(
            "quorum_scale_horizontal_needed",
            &[],
            f64::from(u8::from(self.scale_horizontal.load(Ordering::Relaxed) > 0)),
        );
        e.family("quorum_alert_notifications_total", Kind::Counter, "Webhook notifications by result.");
        for (result, c) in [
            ("sent", &self.notifications_sent),
            ("failed", &self.notifications_failed),
            ("dropped", &self.notifications_dropped),
        ] {
            e.sample("quorum_alert_notifications_total", &[("result", result)], c.get() as f64);
        }
    }
}

/// Starts evaluating the rules (and the webhook task when webhooks are configured).
pub fn start(engine: InferenceEngine, config: &AlertsConfig) -> Result<Option<Arc<AlertsState>>> {
    if !config.enabled {
        return Ok(None);
    }
    let rules = load_rules(config.rules.as_deref())?;
    let webhooks = config.webhooks.iter().map(|u| WebhookUrl::parse(u)).collect::<Result<Vec<_>>>()?;
    let notify = (!webhooks.is_empty()).then(|| mpsc::channel(NOTIFY_QUEUE));
    let state = Arc::new(AlertsState {
        alerting: Mutex::new(Alerting::new(rules)),
        scale_horizontal: AtomicU64::new(0),
        notify: notify.as_ref().map(|(tx, _)| tx.clone()),
        notifications_sent: Counter::default(),
        notifications_failed: Counter::default(),
        notifications_dropped: Counter::default(),
        events_total: Mutex::new(BTreeMap::new()),
    });
    if let Some((_, rx)) = notify {
        let delivery = Delivery {
            webhooks,
            timeout: Duration::from_millis(config.webhook_timeout_ms),
            attempts: config.webhook_attempts,
        };
        tokio::spawn(deliver(rx, delivery, Arc::downgrade(&state)));
    }
    // The tasks end with the server's state (the webhook task when its sender goes with it).
    crate::periodic::every(engine, &state, Duration::from_millis(config.interval_ms), evaluate_once);
    Ok(Some(state))
}

/// One evaluation: judge, act, log, keep.
fn evaluate_once(engine: &InferenceEngine, state: &AlertsState) {
    let snapshot = engine.telemetry_snapshot();
    let events = state.lock().evaluate(snapshot);
    for mut event in events {
        event.action_result = Some(act(engine, state, &event));
        let subject: Vec<String> = event.subject.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let state_name = match event.state {
            EventState::Firing => "firing",
            EventState::Resolved => "resolved",
        };
        tracing::warn!(
            alert = %event.alert,
            state = state_name,
            severity = event.severity.as_str(),
            subject = %subject.join(","),
            value = ?event.value,
            threshold = event.threshold,
            action = event.action.as_str(),
            result = event.action_result.as_deref().unwrap_or(""),
            "alert"
        );
        *state
            .events_total
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((event.alert.clone(), state_name))
            .or_default() += 1;
        if let Some(tx) = &state.notify {
            if tx.try_send(event.clone()).is_err() {
                state.notifications_dropped.inc();
            }
        }
        state.lock().log(event);
    }
}

/// What the event's action does; returns what was done, for the event.
fn act(engine: &InferenceEngine, state: &AlertsState, event: &AlertEvent) -> String {
    let firing = event.state == EventState::Firing;
    let subject = |key: &str| event.subject.get(key).cloned().unwrap_or_default();
    match event.action {
        AlertAction::ScaleUpInferenceWorkers if firing => match engine.scale_up(&subject("ensemble")) {
            Ok(pools) => pools
                .iter()
                .map(|(model, replicas, grew)| {
                    if *grew {
                        format!("{model}: {replicas} replicas")
                    } else {
                        format!("{model}: at its max ({replicas})")
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("could not scale up: {e}"),
        },
        AlertAction::ActivateFallbackModel => {
            let model = subject("model");
            let covered = engine.force_fallback(&model, firing);
            match (firing, covered.is_empty()) {
                (true, true) => format!("{model} has no fallback configured in any ensemble: nothing to activate"),
                (true, false) => format!("{model}'s calls go to its fallback in {}", covered.join(", ")),
                (false, _) => format!("{model} answers again"),
            }
        }
        AlertAction::ScaleHorizontal => {
            if firing {
                state.scale_horizontal.fetch_add(1, Ordering::Relaxed);
                "quorum_scale_horizontal_needed is 1".into()
            } else {
                let _ = state.scale_horizontal.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                "quorum_scale_horizontal_needed back to 0 unless another alert holds it".into()
            }
        }
        AlertAction::NotifyMlTeam if state.notify.is_some() => "sent to the webhooks".into(),
        AlertAction::NotifyMlTeam => "logged (no webhook configured)".into(),
        AlertAction::ScaleUpInferenceWorkers | AlertAction::Log => "logged".into(),
    }
}

struct Delivery {
    webhooks: Vec<WebhookUrl>,
    timeout: Duration,
    attempts: u32,
}

/// The webhook task: each event to every webhook, retried with doubling backoff (0.5 s, 1 s, ...).
async fn deliver(mut rx: mpsc::Receiver<AlertEvent>, delivery: Delivery, state: std::sync::Weak<AlertsState>) {
    while let Some(event) = rx.recv().await {
        let body = alertmanager_payload(&event).to_string();
        for hook in &delivery.webhooks {
            let mut backoff = Duration::from_millis(500);
            let mut sent = false;
            for attempt in 1..=delivery.attempts {
                let why = match tokio::time::timeout(delivery.timeout, post(hook, &body)).await {
                    Ok(Ok(())) => {
                        sent = true;
                        break;
                    }
                    Ok(Err(why)) => why,
                    Err(_) => format!("no answer within {} ms", delivery.timeout.as_millis()),
                };
                // The host only: a webhook's path may hold a secret.
                tracing::warn!(host = %hook.host, port = hook.port, attempt, %why, "alert webhook failed");
                if attempt < delivery.attempts {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
            let Some(state) = state.upgrade() else { return };
            if sent {
                state.notifications_sent.inc()
            } else {
                state.notifications_failed.inc()
            }
        }
    }
}

/// One POST over a fresh connection; Ok on a 2xx answer.
async fn post(hook: &WebhookUrl, body: &str) -> std::result::Result<(), String> {
    let mut stream =
        tokio::net::TcpStream::connect((hook.host.as_str(), hook.port)).await.map_err(|e| format!("connect: {e}"))?;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: quorum/{}\r\nConnection: close\r\n\r\n{body}",
        hook.path,
        hook.host,
        hook.port,
        body.len(),
        env!("CARGO_PKG_VERSION"),
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).await.map_err(|e| format!("read: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).ok_or("no HTTP status")?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// Alertmanager's webhook JSON (version 4) for one event.
pub fn alertmanager_payload(event: &AlertEvent) -> serde_json::Value {
    let status = match event.state {
        EventState::Firing => "firing",
        EventState::Resolved => "resolved",
    };
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), event.alert.clone().into());
    labels.insert("severity".into(), event.severity.as_str().into());
    labels.insert("action".into(), event.action.as_str().into());
    for (k, v) in &event.subject {
        labels.insert((*k).into(), v.clone().into());
    }
    let value = event.value.map_or("no data".to_string(), |v| format!("{v:.6}"));
    let annotations = serde_json::json!({
        "summary": format!("{}: {} (value {value}, threshold {})", event.alert, event.condition, event.threshold),
        "runbook": format!("docs/runbook.md#{}", event.alert),
        "action_result": event.action_result.clone().unwrap_or_default(),
    });
    let ends_at = match event.state {
        EventState::Firing => "0001-01-01T00:00:00Z".to_string(),
        EventState::Resolved => event.at.clone(),
    };
    let fingerprint = {
        use sha2::Digest;
        let key = serde_json::Value::Object(labels.clone()).to_string();
        let digest = sha2::Sha256::digest(key.as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    serde_json::json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\"}}", event.alert),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "quorum",
        "groupLabels": {"alertname": event.alert},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": event.fired_at,
            "endsAt": ends_at,
            "generatorURL": "",
            "fingerprint": fingerprint,
        }],
    })
}
