//! The server's own request metrics — requests by route template, method and status class, and their
//! latency — in the Prometheus text format (`GET /metrics` adds the admission queue, the alerts and
//! the engine's, see `api/monitoring.rs`). Counting is lock-free:
//! routes are a table fixed when the router is built (found by binary search on the matched path),
//! every count an atomic add.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::Method;
use quorum::telemetry::{Counter, Exposition, Histogram, Kind, LATENCY_BOUNDS_NS};

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

    pub fn write(&self, e: &mut Exposition) {
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
    }
}
