//! The story's REST API under `/api/v1/ml`: one file per resource (predictions and outcomes,
//! ensembles, experiments, models, optimization, monitoring), routed here with the scope each route needs.

pub mod ensembles;
pub mod experiments;
pub mod models;
pub mod monitoring;
pub mod optimize;
pub mod predict;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::ApiResult;
use crate::jobs::{self, JobStatus};
use crate::middleware::Predictor;
use crate::state::AppState;

/// The state of an optimize or benchmark job.
#[utoipa::path(get, path = "/api/v1/ml/jobs/{job_id}", tag = "optimize", params(("job_id" = String, Path)),
    responses((status = 200, body = JobStatus), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn job(_scope: Predictor, State(state): State<AppState>, Path(job_id): Path<String>) -> ApiResult<Response> {
    Ok(Json(jobs::find(&state.inner.jobs, &job_id)?.status()).into_response())
}
