//! The live status page: `GET /status` (one HTML file with its JS and SVG charts, built into the
//! binary; no build step, no CDN) and the document it draws, `GET /api/v1/ml/status` — ensembles with
//! their members (weight, accuracy, breaker, replicas), latency percentiles, throughput, alerts,
//! experiments — and a history sampled every `status_sample_ms` (the last 720 points) so a page opened
//! at 3 a.m. shows the last hour at once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use quorum::telemetry::{Snapshot, LATENCY_BOUNDS_NS};
use quorum::{BreakerState, InferenceEngine};
use serde::Serialize;

use crate::middleware::Predictor;
use crate::state::AppState;

const POINTS_KEPT: usize = 720;
const PAGE: &str = include_str!("status.html");

/// One ensemble at one sample.
#[derive(Debug, Clone, Serialize)]
struct EnsemblePoint {
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Requests per second since the previous sample.
    rps: f64,
    errors_per_s: f64,
    accuracy: Option<f64>,
    weights: BTreeMap<String, f32>,
    member_accuracy: BTreeMap<String, Option<f64>>,
}

#[derive(Debug, Clone, Serialize)]
struct Point {
    /// Seconds since the Unix epoch.
    t: f64,
    ensembles: BTreeMap<String, EnsemblePoint>,
}

/// The sampled history.
#[derive(Debug, Default)]
pub struct StatusHistory {
    points: Mutex<VecDeque<Point>>,
    last: Mutex<Option<Snapshot>>,
}

impl StatusHistory {
    fn lock_points(&self) -> MutexGuard<'_, VecDeque<Point>> {
        self.points.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one sample (the first only primes the counters).
    fn sample(&self, engine: &InferenceEngine) {
        let now = engine.telemetry_snapshot();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let Some(before) = last.replace(now.clone()) else { return };
        let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let mut ensembles = BTreeMap::new();
        for e in &now.ensembles {
            let earlier = before.ensembles.iter().find(|b| b.name == e.name);
            let window = earlier.map_or(e.duration.clone(), |b| e.duration.since(&b.duration));
            let q = |q: f64| window.quantile(LATENCY_BOUNDS_NS, q).map(|ns| ns / 1e6);
            let requests = e.requests.saturating_sub(earlier.map_or(0, |b| b.requests));
            let errors = e.errors.saturating_sub(earlier.map_or(0, |b| b.errors));
            let weights = engine
                .ensemble(&e.name)
                .map(|h| h.current_weights().regimes.into_values().next().unwrap_or_default())
                .unwrap_or_default();
            ensembles.insert(
                e.name.clone(),
                EnsemblePoint {
                    p50_ms: q(0.5),
                    p95_ms: q(0.95),
                    p99_ms: q(0.99),
                    rps: requests as f64 / seconds,
                    errors_per_s: errors as f64 / seconds,
                    accuracy: e.accuracy,
                    weights: weights.into_iter().collect(),
                    member_accuracy: e.members.iter().cloned().collect(),
                },
            );
        }
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let mut points = self.lock_points();
        if points.len() == POINTS_KEPT {
            points.pop_front();
        }
        points.push_back(Point { t, ensembles });
    }
}

/// Samples every `every` while the server's state lives.
pub fn start(engine: InferenceEngine, history: &Arc<StatusHistory>, every: Duration) {
    let history = Arc::downgrade(history);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(history) = history.upgrade() else { return };
            let engine = engine.clone();
            let _ = tokio::task::spawn_blocking(move || history.sample(&engine)).await;
        }
    });
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
