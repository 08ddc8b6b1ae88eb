//! The story's optimization API: `POST /api/v1/ml/optimize/model` and `POST /api/v1/ml/benchmark`,
//! run on blocking threads as jobs (answered inline when they finish within a few seconds, else 202
//! with a job to poll at `GET /api/v1/ml/jobs/{job_id}`), and the datasets they measure on: CSV
//! files uploaded to `PUT /api/v1/ml/datasets/{dataset_id}` and kept in `<home>/datasets/`.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use quorum::{MemberSpec, OptimizeOptions, Optimizer};

use crate::body::{parse, Body};
use crate::error::{ApiError, ApiResult};
use crate::jobs;
use crate::middleware::Admin;
use crate::state::AppState;

/// `POST /api/v1/ml/optimize/model`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizeRequest {
    /// `model` or `model@version`.
    pub model_id: String,
    /// `auto` (every CPU method, the native plan included), `int8` (the INT8 methods), `fp16`, or one
    /// method name (`int8-dynamic`, `int8-static-entropy`, `fp32-optimized`, `native`, ...). A native
    /// winner is the same file on another executor: `chosen.registered` is false and its `note` says
    /// how the engine runs it.
    #[serde(default)]
    pub optimization_type: Option<String>,
    /// The p50 single-row latency a deployment needs, in ms (`deployment_ready` requires it).
    #[serde(default)]
    pub target_latency: Option<f64>,
    /// Largest accuracy loss accepted, absolute (0.01 = one percentage point; default 0.01).
    #[serde(default)]
    pub accuracy_threshold: Option<f64>,
    /// The dataset (uploaded to `/api/v1/ml/datasets/{dataset_id}`) to measure on.
    pub dataset: String,
    /// Its column with each row's outcome.
    pub outcome: String,
}

/// `POST /api/v1/ml/benchmark`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkRequest {
    pub model_id: String,
    /// A dataset uploaded to `/api/v1/ml/datasets/{dataset_id}`.
    pub test_dataset: String,
    /// What to report: any of `latency`, `throughput`, `accuracy`, `size`, `memory` (default all).
    #[serde(default)]
    pub metrics: Vec<String>,
    /// The column to score accuracy on.
    #[serde(default)]
    pub outcome: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BenchmarkResponse {
    #[schema(value_type = Object)]
    pub results: serde_json::Value,
    pub recommendations: Vec<String>,
}

fn dataset_path(state: &AppState, name: &str) -> ApiResult<PathBuf> {
    quorum::validate_name("dataset name", name)?;
    let path = state.engine().home().join("datasets").join(format!("{name}.csv"));
    if !path.exists() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("dataset not found: {name} (upload it with PUT /api/v1/ml/datasets/{name})"),
        ));
    }
    Ok(path)
}

/// How long a request waits for its job before answering 202.
fn job_wait(state: &AppState) -> std::time::Duration {
    std::time::Duration::from_millis(state.config().limits.sync_job_wait_ms)
}

fn methods(optimization_type: Option<&str>) -> Option<Vec<String>> {
    let all_int8 = [
        "int8-dynamic",
        "int8-dynamic-per-channel",
        "int8-static-minmax",
        "int8-static-percentile",
        "int8-static-entropy",
    ];
    match optimization_type {
        None | Some("auto") => None,
        Some("int8") | Some("INT8") => Some(all_int8.iter().map(|m| m.to_string()).collect()),
        Some("fp16") | Some("FP16") => Some(vec!["fp16".into()]),
        Some(method) => Some(vec![method.to_string()]),
    }
}

/// Quantize / optimise a model, benchmark the candidates against it and register the best one that
/// stays within the accuracy threshold (the default version is not changed).
#[utoipa::path(post, path = "/api/v1/ml/optimize/model", tag = "optimize", request_body = OptimizeRequest,
    responses((status = 200, description = "the report: optimized_model_id, performance_improvement, deployment_ready, ..."),
              (status = 202, body = crate::jobs::JobStatus), (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn optimize(_scope: Admin, State(state): State<AppState>, Body(body): Body) -> ApiResult<Response> {
    let request: OptimizeRequest = parse(&body, state.config().limits.max_json_depth, "the optimize request")?;
    let spec: MemberSpec = request.model_id.parse()?;
    let data = dataset_path(&state, &request.dataset)?;
    let mut document = serde_json::Map::new();
    if let Some(t) = request.accuracy_threshold {
        document.insert("accuracy_threshold".into(), t.into());
    }
    if let Some(ms) = request.target_latency {
        document.insert("target_latency_ms".into(), ms.into());
    }
    if let Some(m) = methods(request.optimization_type.as_deref()) {
        document.insert("methods".into(), m.into());
    }
    let options = OptimizeOptions::from_json(document.into())?;
    let engine = state.engine().clone();
    let outcome = request.outcome;
    jobs::run(&state.inner.jobs, job_wait(&state), "optimize", move || {
        let report = Optimizer::new(&engine).optimize(&spec.model, spec.version, &data, &outcome, &options)?;
        // A native winner registers nothing: the faster model is the original version itself.
        let optimized = report.chosen.as_ref().map(|c| format!("{}@{}", report.model, c.version));
        let mut value = serde_json::to_value(&report).map_err(|e| quorum::Error::json("optimize report", e))?;
        value["optimized_model_id"] = optimized.map_or(serde_json::Value::Null, Into::into);
        Ok(value)
    })
    .await
}

/// Benchmark a model on a dataset: latency at batch 1/8/64/512, throughput, size, memory, accuracy.
#[utoipa::path(post, path = "/api/v1/ml/benchmark", tag = "optimize", request_body = BenchmarkRequest,
    responses((status = 200, body = BenchmarkResponse), (status = 202, body = crate::jobs::JobStatus),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn benchmark(_scope: Admin, State(state): State<AppState>, Body(body): Body) -> ApiResult<Response> {
    let request: BenchmarkRequest = parse(&body, state.config().limits.max_json_depth, "the benchmark request")?;
    let spec: MemberSpec = request.model_id.parse()?;
    let data = dataset_path(&state, &request.test_dataset)?;
    let known = ["latency", "throughput", "accuracy", "size", "memory"];
    if let Some(bad) = request.metrics.iter().find(|m| !known.contains(&m.as_str())) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            format!("field `metrics`: {bad:?} is not one of {known:?}"),
        ));
    }
    let engine = state.engine().clone();
    let wanted = request.metrics;
    jobs::run(&state.inner.jobs, job_wait(&state), "benchmark", move || {
        let bench = Optimizer::new(&engine).benchmark(&spec.model, spec.version, &data, request.outcome.as_deref())?;
        let full = serde_json::to_value(&bench).map_err(|e| quorum::Error::json("benchmark", e))?;
        let results = if wanted.is_empty() { full } else { select(&full, &wanted) };
        Ok(BenchmarkResponse { results, recommendations: recommend(&bench) })
    })
    .await
}

/// The parts of a benchmark a client asked for.
fn select(full: &serde_json::Value, wanted: &[String]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for key in ["model", "version"] {
        if let Some(v) = full.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    for metric in wanted {
        let keys: &[&str] = match metric.as_str() {
            "latency" | "throughput" => &["latency"],
            "accuracy" => &["accuracy"],
            "size" => &["size_bytes"],
            "memory" => &["session_memory_bytes"],
            _ => &[],
        };
        for key in keys {
            if let Some(v) = full.get(*key) {
                out.insert((*key).into(), v.clone());
            }
        }
    }
    out.into()
}

/// Plain advice from the measured figures.
fn recommend(bench: &quorum::optimizer::ModelBenchmark) -> Vec<String> {
    let mut advice = Vec::new();
    let per_row = |batch: usize| bench.latency.iter().find(|l| l.batch == batch).map(|l| l.p50_ms / batch as f64);
    if let (Some(one), Some(many)) = (per_row(1), per_row(64)) {
        if many < one / 4.0 {
            advice.push(format!(
                "batching pays: {:.1} µs per row at batch 64 against {:.1} µs alone; enable dynamic batching for concurrent callers",
                many * 1e3,
                one * 1e3
            ));
        }
    }
    if let Some(p50) = bench.p50_ms(1) {
        if p50 > 100.0 {
            advice.push(format!("p50 at batch 1 is {p50:.1} ms, over the 100 ms budget: try POST /api/v1/ml/optimize/model or a GPU provider"));
        }
    }
    if bench.size_bytes > 16 << 20 {
        advice.push(
            "the model is over 16 MiB: INT8 quantization (optimization_type int8) would shrink it about 4×".into(),
        );
    }
    if advice.is_empty() {
        advice.push("no change suggested by these figures".into());
    }
    advice
}

/// Store a CSV dataset (header row, then numbers) for benchmarks and optimization.
#[utoipa::path(put, path = "/api/v1/ml/datasets/{dataset_id}", tag = "optimize",
    params(("dataset_id" = String, Path)), request_body(content = String, content_type = "text/csv"),
    responses((status = 201, description = "stored"), (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_dataset(
    _scope: Admin,
    State(state): State<AppState>,
    Path(dataset_id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    quorum::validate_name("dataset name", &dataset_id)?;
    let dir = state.engine().home().join("datasets");
    let path = dir.join(format!("{dataset_id}.csv"));
    super::models::blocking(move || {
        let text = std::str::from_utf8(&body)
            .map_err(|_| quorum::Error::InvalidInput("the dataset is not UTF-8 text (CSV expected)".into()))?;
        quorum::replay::Table::parse(text)?;
        std::fs::create_dir_all(&dir).map_err(|e| quorum::Error::io("creating the dataset directory", e))?;
        quorum::write_atomic(&path, &body)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "dataset": dataset_id }))).into_response())
}
