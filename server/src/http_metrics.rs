//! The server's own metrics — requests by route template, method and status class, their latency,
//! the admission queue — and `GET /metrics`: these plus the engine's
//! ([`quorum::InferenceEngine::metrics_text`]) in the Prometheus text format. Counting is lock-free:
//! routes are a table fixed when the router is built (found by binary search on the matched path),
//! every count an atomic add.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use quorum::telemetry::{Counter, Exposition, Histogram, Kind, LATENCY_BOUNDS_NS};

use crate::middleware::Predictor;
use crate::state::AppState;

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "OTHER"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The route label of requests no route matched (404s, scans): one series, not one per path.
const UNMATCHED: &str = "unmatched";

#[derive(Debug)]
struct RouteStats {
    template: String,
    responses: [[Counter; CLASSES.len()]; METHODS.len()],
    duration: Histogram,
}

impl RouteStats {
    fn new(template: String) -> RouteStats {
        RouteStats { template, responses: Default::default(), duration: Histogram::latency() }
    }
}

/// Request counts per route.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// Sorted by template; the last entry is [`UNMATCHED`].
    routes: OnceLock<Box<[RouteStats]>>,
}

impl HttpMetrics {
    /// Fixes the route table (once, when the router is built).
    pub fn set_routes<'a>(&self, templates: impl Iterator<Item = &'a str>) {
        let mut templates: Vec<String> = templates.map(str::to_string).collect();
        templates.sort();
        templates.dedup();
        let mut routes: Vec<RouteStats> = templates.into_iter().map(RouteStats::new).collect();
        routes.push(RouteStats::new(UNMATCHED.into()));
        let _ = self.routes.set(routes.into_boxed_slice());
    }

    /// One answered request: `route` is the matched template, `None` when no route matched.
    pub fn observe(&self, route: Option<&str>, method: &Method, status: u16, elapsed: Duration) {
        let Some(routes) = self.routes.get() else { return };
        let known = &routes[..routes.len() - 1];
        let stats = route
            .and_then(|r| known.binary_search_by(|s| s.template.as_str().cmp(r)).ok())
            .map_or(&routes[routes.len() - 1], |i| &known[i]);
        let m = METHODS.iter().position(|m| *m == method.as_str()).unwrap_or(METHODS.len() - 1);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        stats.responses[m][class].inc();
        stats.duration.observe_duration(elapsed);
    }

    fn write(&self, e: &mut Exposition, state: &AppState) {
        let routes = self.routes.get().map(|r| &r[..]).unwrap_or_default();
        e.family(
            "quorum_http_requests_total",
            Kind::Counter,
            "HTTP requests answered, by route template, method and status class.",
        );
        for r in routes {
            for (method, classes) in METHODS.iter().zip(&r.responses) {
                for (class, count) in CLASSES.iter().zip(classes) {
                    if count.get() > 0 {
                        let labels = [("route", r.template.as_str()), ("method", *method), ("status", *class)];
                        e.sample("quorum_http_requests_total", &labels, count.get() as f64);
                    }
                }
            }
        }
        e.family(
            "quorum_http_request_duration_seconds",
            Kind::Histogram,
            "HTTP request latency from head read to answer built.",
        );
        for r in routes {
            let snapshot = r.duration.snapshot();
            if snapshot.count() > 0 {
                let labels = [("route", r.template.as_str())];
                e.histogram("quorum_http_request_duration_seconds", &labels, &snapshot, LATENCY_BOUNDS_NS, 1e9);
            }
        }
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
}

/// The Prometheus scrape endpoint: the server's metrics and the engine's.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "metrics in the Prometheus text format (0.0.4)", content_type = "text/plain")))]
pub async fn metrics(_: Predictor, State(state): State<AppState>) -> Response {
    let engine = state.engine().clone();
    // Reading replicas, breakers and tracked metrics takes the engine's locks briefly: off the workers.
    let text = tokio::task::spawn_blocking(move || engine.metrics_text()).await.unwrap_or_default();
    let mut e = Exposition::new();
    state.inner.http.write(&mut e, &state);
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
