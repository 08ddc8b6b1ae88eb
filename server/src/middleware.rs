//! What wraps every request: its id (`x-request-id`, taken from the client when sane), the whole-
//! request timeout, one log line (debug; server errors at warn), errors of the router itself in the
//! API's shape; and the bearer-token check of each route group.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Scope;
use crate::config::ms;
use crate::error::ApiError;
use crate::state::AppState;

pub const REQUEST_ID: &str = "x-request-id";
/// The client's time budget for a prediction, in milliseconds: refused rather than answered late.
pub const DEADLINE_MS: &str = "x-deadline-ms";

/// When the server started reading this request (after its head), for deadlines and `latency_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub Instant);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Request id, timeout, logging and error shape.
pub async fn around(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let arrived = Instant::now();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|v| v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic()))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(NEXT_ID.fetch_add(1, Ordering::Relaxed)));
    request.extensions_mut().insert(Arrival(arrived));
    let method = request.method().clone();
    let route = request.extensions().get::<axum::extract::MatchedPath>().cloned();
    // The path, not the query: ids in paths are validated names, queries are not logged.
    let path = request.uri().path().to_owned();
    let oip = request.uri().path().starts_with("/v2");
    let limits = &state.config().limits;
    let upload = path == "/api/v1/ml/models" && method == axum::http::Method::POST;
    let timeout = ms(if upload { limits.upload_timeout_ms } else { limits.request_timeout_ms });
    let mut response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} ms", timeout.as_millis()),
        )
        .into_response(),
    };
    let status = response.status();
    if status == StatusCode::METHOD_NOT_ALLOWED && !response.headers().contains_key(header::CONTENT_TYPE) {
        let allow = response.headers().get(header::ALLOW).cloned();
        let message = format!("{method} is not allowed here");
        response = if oip {
            crate::error::oip_error_response(status, &message)
        } else {
            ApiError::new(status, "method_not_allowed", message).into_response()
        };
        if let Some(allow) = allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
    } else if status.is_client_error() && is_plain_text(&response) {
        // An extractor's own rejection (a query or path that does not parse): the API's shape instead.
        let text = axum::body::to_bytes(std::mem::take(response.body_mut()), 4096).await.unwrap_or_default();
        let message = String::from_utf8_lossy(&text).to_string();
        response = if oip {
            crate::error::oip_error_response(status, &message)
        } else {
            ApiError::new(status, "bad_request", message).into_response()
        };
    }
    let elapsed = arrived.elapsed();
    let elapsed_us = elapsed.as_micros();
    state.inner.http.observe(route.as_ref().map(|r| r.as_str()), &method, response.status().as_u16(), elapsed);
    // The server's time for this request (head read to answer built), for load tools and dashboards;
    // the engine's part is the answer's `engine_latency_ms`.
    if let Ok(timing) = HeaderValue::from_str(&format!("app;dur={:.3}", elapsed.as_secs_f64() * 1e3)) {
        response.headers_mut().insert("server-timing", timing);
    }
    if status.is_server_error() {
        tracing::warn!(request_id = ?id, %method, path, status = status.as_u16(), elapsed_us, "request failed");
    } else {
        tracing::debug!(request_id = ?id, %method, path, status = status.as_u16(), elapsed_us, "request");
    }
    response.headers_mut().insert(REQUEST_ID, id);
    if state.draining() {
        // Clients stop reusing the connection, so none of their next requests meets a closing socket.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn is_plain_text(response: &Response) -> bool {
    response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/plain"))
}

/// A handler argument that requires a token with the predict scope (predictions, outcomes, reads).
/// As a parts extractor it runs before the body is read.
#[derive(Debug)]
pub struct Predictor;

/// A handler argument that requires a token with the admin scope (everything that changes state).
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Predictor {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        authorize(state, parts, Scope::Predict).map(|()| Predictor).map_err(|r| *r)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        authorize(state, parts, Scope::Admin).map(|()| Admin).map_err(|r| *r)
    }
}

fn authorize(state: &AppState, parts: &Parts, needed: Scope) -> Result<(), Box<Response>> {
    let tokens = &state.inner.tokens;
    if tokens.is_empty() {
        return Ok(());
    }
    let oip = parts.uri.path().starts_with("/v2");
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let refuse = |status: StatusCode, code: &'static str, message: String| {
        if oip {
            let mut response = crate::error::oip_error_response(status, &message);
            crate::error::finish(&mut response, status, None);
            response
        } else {
            ApiError::new(status, code, message).into_response()
        }
    };
    match presented.map(|t| tokens.scope_of(t)) {
        None => Err(Box::new(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs `Authorization: Bearer <token>`".into(),
        ))),
        Some(None) => {
            Err(Box::new(refuse(StatusCode::UNAUTHORIZED, "unauthorized", "the bearer token is not valid".into())))
        }
        Some(Some(scope)) if scope < needed => Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this route needs a token with the {} scope", needed.as_str()),
        ))),
        Some(Some(_)) => Ok(()),
    }
}

/// The deadline a client set with [`DEADLINE_MS`], counted from the request's arrival.
pub fn deadline(headers: &axum::http::HeaderMap, arrival: Arrival) -> Result<Option<Instant>, ApiError> {
    let Some(value) = headers.get(DEADLINE_MS) else { return Ok(None) };
    let ms = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0 && *v <= 3.6e6)
        .ok_or_else(|| {
            ApiError::bad_request(format!("{DEADLINE_MS} must be a number of milliseconds (0 to 3600000)"))
        })?;
    Ok(Some(arrival.0 + std::time::Duration::from_secs_f64(ms / 1e3)))
}

/// 404 in the API's shape (the router's fallback).
pub async fn not_found(request: Request) -> Response {
    let message = format!("no route {} {}", request.method(), request.uri().path());
    if request.uri().path().starts_with("/v2") {
        crate::error::oip_error_response(StatusCode::NOT_FOUND, &message)
    } else {
        ApiError::new(StatusCode::NOT_FOUND, "route_not_found", message).into_response()
    }
}
