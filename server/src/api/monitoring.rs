//! Monitoring over HTTP: `GET /metrics` (the server's request, admission and alert metrics, then the
//! engine's), `GET /api/v1/ml/alerts`, `GET /api/v1/ml/status` and the live status page `/status`
//! (one HTML file with its JS and SVG charts, built into the binary; no build step, no CDN).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use quorum::telemetry::{Exposition, Kind};
use quorum::BreakerState;

use crate::middleware::Predictor;
use crate::state::AppState;
use crate::status::Point;

const PAGE: &str = include_str!("../status.html");

/// The admission queue and readiness, in the exposition.
fn write_admission(e: &mut Exposition, state: &AppState) {
    let admission = &state.inner.admission;
    e.family("quorum_admission_waiting", Kind::Gauge, "Requests waiting for a slot in front of the engine.");
    e.sample("quorum_admission_waiting", &[], admission.waiting() as f64);
    e.family("quorum_admission_in_flight", Kind::Gauge, "Requests holding a slot now.");
    e.sample("quorum_admission_in_flight", &[], admission.in_flight() as f64);
    e.family("quorum_admission_slots", Kind::Gauge, "Slots in front of the engine (max_concurrent).");
    e.sample("quorum_admission_slots", &[], state.config().limits.max_concurrent as f64);
    e.family(
        "quorum_admission_refused_total",
        Kind::Counter,
        "Requests refused before the engine: overloaded (503) or past their deadline (504).",
    );
    e.sample("quorum_admission_refused_total", &[("reason", "overloaded")], admission.overloaded.get() as f64);
    e.sample("quorum_admission_refused_total", &[("reason", "deadline")], admission.deadline_refused.get() as f64);
    e.family("quorum_server_ready", Kind::Gauge, "1 when the server is ready (ensembles loaded, not draining).");
    e.sample("quorum_server_ready", &[], f64::from(u8::from(state.ready())));
}

/// The Prometheus scrape endpoint: the server's metrics and the engine's.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "metrics in the Prometheus text format (0.0.4)", content_type = "text/plain")))]
pub async fn metrics(_: Predictor, State(state): State<AppState>) -> Response {
    let engine = state.engine().clone();
    // Reading replicas, breakers and tracked metrics takes the engine's locks briefly: off the workers.
    let text = tokio::task::spawn_blocking(move || engine.metrics_text()).await.unwrap_or_default();
    let mut e = Exposition::new();
    state.inner.http.write(&mut e);
    write_admission(&mut e, &state);
    if let Some(alerts) = &state.inner.alerts {
        alerts.write_metrics(&mut e);
    }
    e.append(&text);
    let mut response = e.finish().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// `GET /api/v1/ml/alerts`: rules, active alerts, recent events, fallbacks in force.
#[utoipa::path(get, path = "/api/v1/ml/alerts", tag = "monitoring",
    responses((status = 200, description = "the alert rules, alerts pending or firing, the latest events")))]
pub async fn alerts(_: Predictor, State(state): State<AppState>) -> Response {
    match &state.inner.alerts {
        Some(alerts) => axum::Json(alerts.document(state.engine())).into_response(),
        None => axum::Json(serde_json::json!({"rules": [], "active": [], "events": [], "forced_fallbacks": [], "scale_horizontal_needed": false, "disabled": true})).into_response(),
    }
}

fn breaker(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

fn document(state: &AppState) -> serde_json::Value {
    let engine = state.engine();
    let history: Vec<Point> = state.inner.status.lock_points().iter().cloned().collect();
    let latest = history.last();
    let forced = engine.forced_fallbacks();
    let mut ensembles = Vec::new();
    for name in engine.loaded_ensembles() {
        let Ok(handle) = engine.ensemble(&name) else { continue };
        let config = handle.config();
        let point = latest.and_then(|p| p.ensembles.get(&name));
        let members: Vec<serde_json::Value> = config
            .members
            .iter()
            .map(|m| {
                let pools = engine.replicas(Some(&m.model));
                let worst = engine.breaker_state(&m.model).into_iter().map(|(_, s)| s).max_by_key(|s| match s {
                    BreakerState::Closed => 0,
                    BreakerState::HalfOpen => 1,
                    BreakerState::Open => 2,
                });
                serde_json::json!({
                    "model": m.model,
                    "weight": point.and_then(|p| p.weights.get(&m.model)),
                    "accuracy": point.and_then(|p| p.member_accuracy.get(&m.model).copied().flatten()),
                    "breaker": worst.map_or("closed", breaker),
                    "replicas": pools.iter().map(|p| p.replicas).sum::<usize>(),
                    "busy": pools.iter().map(|p| p.in_flight).sum::<usize>(),
                    "forced_fallback": forced.contains(&m.model),
                    "fallback": m.fallback,
                })
            })
            .collect();
        ensembles.push(serde_json::json!({
            "name": name,
            "version": config.version,
            "strategy": config.strategy.as_str(),
            "fused": handle.fusion().fused,
            "latest": point,
            "members": members,
        }));
    }
    let alerts = match &state.inner.alerts {
        Some(alerts) => alerts.document(engine),
        None => serde_json::json!({"rules": [], "active": [], "events": []}),
    };
    serde_json::json!({
        "server": {
            "ready": state.ready(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": state.inner.started.elapsed().as_secs_f64(),
            "sample_ms": state.config().status_sample_ms,
        },
        "ensembles": ensembles,
        "history": history,
        "alerts": alerts,
        "experiments": engine.experiments().unwrap_or_default(),
        // Where state lives (password redacted), the inference log's counters, and this replica's
        // place in a shared outcome log.
        "state": {
            "url": engine.state_store().map(|s| s.url().redacted()),
            "inference_log": engine.inference_log_stats(),
            "shared": engine.shared_status(),
        },
    })
}

/// `GET /api/v1/ml/status`: what the status page draws.
#[utoipa::path(get, path = "/api/v1/ml/status", tag = "monitoring",
    responses((status = 200, description = "ensembles, members, latency, alerts, experiments and their recent history")))]
pub async fn status(_: Predictor, State(state): State<AppState>) -> Response {
    let reader = state.clone();
    match tokio::task::spawn_blocking(move || document(&reader)).await {
        Ok(document) => axum::Json(document).into_response(),
        Err(_) => crate::error::ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "building the status document failed",
        )
        .into_response(),
    }
}

/// `GET /status`: the page (static: its data comes from `/api/v1/ml/status` with the token given in
/// the page, kept in the tab's session storage, or in the URL's `#token=` fragment, which is never
/// sent to the server).
#[utoipa::path(get, path = "/status", tag = "monitoring", responses((status = 200, description = "the live status page", content_type = "text/html")))]
pub async fn page() -> Response {
    let mut response = PAGE.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    // Its own script and styles only: nothing is fetched from elsewhere.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
