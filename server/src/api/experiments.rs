//! A/B experiments over HTTP under `/api/v1/ml/experiments`: start (admin; the body is the core's
//! `ExperimentConfig` document), list, status, and pause / resume / stop (admin). A request's arm is
//! picked by its `routing_key` (body) or `x-routing-key` header on the prediction routes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use quorum::ExperimentConfig;

use super::models::blocking;
use crate::body::{parse, Body};
use crate::error::{ApiError, ApiResult};
use crate::middleware::{Admin, Predictor};
use crate::state::AppState;

/// Start an experiment: `name`, `ensemble`, `control` and `treatment` versions, and optionally
/// `steps` (percent), `min_outcomes_per_step`, `metric`, `guardrails`, `alpha`, `max_outcomes`,
/// `non_inferiority_margin`, `mixing_sd`, `seed`. Answers the experiment's status.
#[utoipa::path(post, path = "/api/v1/ml/experiments", tag = "experiments",
    request_body(content = Object, description = "an ExperimentConfig document"),
    responses((status = 201, description = "the experiment's status"), (status = 409, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn start(_scope: Admin, State(state): State<AppState>, Body(body): Body) -> ApiResult<Response> {
    let config: ExperimentConfig = parse(&body, state.config().limits.max_json_depth, "the experiment")?;
    let engine = state.engine().clone();
    let _admin = state.inner.admin.lock().await;
    let status = blocking(move || engine.start_experiment(config)).await?;
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

/// Every experiment: running, paused and ended.
#[utoipa::path(get, path = "/api/v1/ml/experiments", tag = "experiments",
    responses((status = 200, description = "a list of experiment statuses")), security(("bearer" = [])))]
pub async fn list(_scope: Predictor, State(state): State<AppState>) -> ApiResult<Response> {
    Ok(Json(state.engine().experiments()?).into_response())
}

/// An experiment's arms, counts, metric with its confidence sequence, always-valid p-value, step
/// and decision history.
#[utoipa::path(get, path = "/api/v1/ml/experiments/{name}", tag = "experiments", params(("name" = String, Path)),
    responses((status = 200, description = "the experiment's status"), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(_scope: Predictor, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(Json(state.engine().experiment_status(&name)?).into_response())
}

/// Why an experiment is stopped (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    #[serde(default)]
    pub reason: String,
}

/// What an action on an experiment does.
#[derive(Clone, Copy)]
enum Act {
    Pause,
    Resume,
    Stop,
}

async fn act(state: &AppState, name: String, act: Act, reason: String) -> ApiResult<Response> {
    let engine = state.engine().clone();
    let _admin = state.inner.admin.lock().await;
    let status = blocking(move || match act {
        Act::Pause => engine.pause_experiment(&name),
        Act::Resume => engine.resume_experiment(&name),
        Act::Stop => engine.stop_experiment(&name, &reason),
    })
    .await
    .map_err(|e| {
        // Acting against the experiment's state (pausing an ended one) is a conflict, not bad input.
        if e.code == "config" {
            ApiError::new(StatusCode::CONFLICT, "experiment_state", e.message)
        } else {
            e
        }
    })?;
    Ok(Json(status).into_response())
}

/// Route every request to the control until resumed (outcomes are not counted meanwhile).
#[utoipa::path(post, path = "/api/v1/ml/experiments/{name}/pause", tag = "experiments", params(("name" = String, Path)),
    responses((status = 200, description = "the experiment's status"), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn pause(_scope: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    act(&state, name, Act::Pause, String::new()).await
}

/// Continue a paused experiment at its step.
#[utoipa::path(post, path = "/api/v1/ml/experiments/{name}/resume", tag = "experiments", params(("name" = String, Path)),
    responses((status = 200, description = "the experiment's status"), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn resume(_scope: Admin, State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    act(&state, name, Act::Resume, String::new()).await
}

/// End an experiment for good; the control stays the active version.
#[utoipa::path(post, path = "/api/v1/ml/experiments/{name}/stop", tag = "experiments", params(("name" = String, Path)),
    request_body(content = Option<StopRequest>),
    responses((status = 200, description = "the experiment's status"), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn stop(
    _scope: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let request: StopRequest = if body.is_empty() {
        StopRequest::default()
    } else {
        parse(&body, state.config().limits.max_json_depth, "the request")?
    };
    act(&state, name, Act::Stop, request.reason).await
}
