//! The model registry over HTTP: upload (multipart: a `metadata` JSON part and a `model` file part,
//! streamed to disk with its SHA-256, then registered — ONNX Runtime loads it and one row runs through
//! it before the version becomes visible), a remote model by URL (a JSON body), list, show, set-default (a hot swap of every ensemble that
//! follows the default) and the tracked performance of a model.

use std::io::Write;

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use quorum::{ModelKind, ModelRegistration, OutputSpec, Task, VersionSpec};

use crate::body::{parse, Body};
use crate::error::{ApiError, ApiResult};
use crate::middleware::{Admin, Predictor};
use crate::state::AppState;

/// The `metadata` part of an upload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadMetadata {
    pub name: String,
    /// The model's input features, in input order.
    pub features: Vec<String>,
    /// `OUTPUT[:COLUMN]` or `OUTPUT:CLASS` (default: `probabilities:1` when the model has it, else
    /// its only ZipMap or float output).
    #[serde(default)]
    pub output: Option<String>,
    /// For a model with several inputs: which features feed which input, `x1=a,b;x2=c,d`
    /// (default: inputs named as the features).
    #[serde(default)]
    pub inputs: Option<String>,
    /// technical, fundamental, sentiment or other.
    #[serde(default)]
    pub kind: Option<String>,
    /// classification or regression.
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default)]
    pub set_default: bool,
    /// The file's SHA-256 (hex) as the client computed it: the upload is refused if it differs.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Multipart form of `POST /api/v1/ml/models`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // the schema of the multipart form
pub struct UploadForm {
    /// JSON, see `UploadMetadata`.
    metadata: String,
    #[schema(format = Binary, value_type = String)]
    model: Vec<u8>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
}

/// A remote model, registered by URL (`POST /api/v1/ml/models` with `content-type:
/// application/json`): read by the core's `RemoteRegistration`, with `set_default` beside it.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // the schema of the JSON body
pub struct RemoteForm {
    name: String,
    /// `http(s)://host:port/v2/models/MODEL[/versions/V]` (Open Inference Protocol v2).
    url: String,
    features: Vec<String>,
    /// The environment variable, in the server's environment, holding the remote server's token.
    token_env: Option<String>,
    output: Option<String>,
    kind: Option<String>,
    task: Option<String>,
    version: Option<u32>,
    /// Send a request not answered by the model's recent 95th percentile a second time.
    hedge: Option<bool>,
    /// A second server of the same model, where hedged requests go (implies `hedge`).
    hedge_url: Option<String>,
    set_default: Option<bool>,
}

/// Register a model version from an uploaded ONNX file (multipart), or a model served by another
/// server by its URL (JSON).
#[utoipa::path(post, path = "/api/v1/ml/models", tag = "models",
    request_body(content(
        (UploadForm = "multipart/form-data"),
        (RemoteForm = "application/json"),
    )),
    responses((status = 201, description = "registered: the version's metadata"),
              (status = 422, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 413, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload(_scope: Admin, State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let headers = request.headers().clone();
    let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.to_ascii_lowercase().starts_with("application/json") {
        return register_remote(&state, request).await;
    }
    let mut form = Multipart::from_request(request, &state).await.map_err(|e| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "{}: upload a model as multipart/form-data, or register a remote one as application/json",
                e.body_text()
            ),
        )
    })?;
    let limits = &state.config().limits;
    let declared = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_upload_bytes as u64 + limits.max_body_bytes as u64) {
        return Err(crate::body::too_large(limits.max_upload_bytes));
    }
    let staging = state.engine().home().join("uploads");
    tokio::fs::create_dir_all(&staging).await.map_err(|e| quorum::Error::io("creating the upload directory", e))?;
    let mut metadata: Option<UploadMetadata> = None;
    let mut file: Option<(tempfile::TempPath, String)> = None;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("metadata") => {
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    if bytes.len() + chunk.len() > limits.max_body_bytes {
                        return Err(crate::body::too_large(limits.max_body_bytes));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                metadata = Some(parse(&bytes, limits.max_json_depth, "the upload's metadata part")?);
            }
            Some("model") => {
                let temp = tempfile::NamedTempFile::new_in(&staging)
                    .map_err(|e| quorum::Error::io("creating an upload file", e))?;
                let (mut out, path) = temp.into_parts();
                let mut hasher = Sha256::new();
                let mut written = 0usize;
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    written += chunk.len();
                    if written > limits.max_upload_bytes {
                        return Err(crate::body::too_large(limits.max_upload_bytes));
                    }
                    hasher.update(&chunk);
                    out.write_all(&chunk).map_err(|e| quorum::Error::io("writing the upload", e))?;
                }
                out.sync_all().map_err(|e| quorum::Error::io("writing the upload", e))?;
                let digest: [u8; 32] = hasher.finalize().into();
                file = Some((path, digest.iter().map(|b| format!("{b:02x}")).collect()));
            }
            other => {
                return Err(bad(format!(
                    "unexpected form part {other:?}: send `metadata` (JSON) and `model` (the ONNX file)"
                )))
            }
        }
    }
    let meta = metadata.ok_or_else(|| bad("the form has no `metadata` part"))?;
    let (path, sha256) = file.ok_or_else(|| bad("the form has no `model` part"))?;
    if let Some(expected) = &meta.sha256 {
        if !expected.eq_ignore_ascii_case(&sha256) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "checksum_mismatch",
                format!("the uploaded file's sha256 is {sha256}, the metadata says {expected}"),
            ));
        }
    }
    let mut registration = ModelRegistration::new(&meta.name, &*path, meta.features.clone())
        .with_kind(meta.kind.as_deref().unwrap_or("other").parse::<ModelKind>()?)
        .with_task(meta.task.as_deref().unwrap_or("classification").parse::<Task>()?);
    if let Some(output) = meta.output.as_deref() {
        registration = registration.with_output(output.parse::<OutputSpec>()?);
    }
    if let Some(inputs) = meta.inputs.as_deref() {
        registration = registration.with_inputs(inputs.parse::<quorum::InputMap>()?);
    }
    if let Some(v) = meta.version {
        registration = registration.with_version(v);
    }
    for (key, value) in meta.metadata.unwrap_or_default() {
        registration = registration.with_metadata(key, value);
    }
    register(&state, registration, meta.set_default, Some(path)).await
}

/// A remote model from a JSON body: `set_default` taken out, the rest read by the core.
async fn register_remote(state: &AppState, request: Request) -> ApiResult<Response> {
    let Body(bytes) = Body::from_request(request, state).await?;
    let mut document: serde_json::Map<String, serde_json::Value> =
        parse(&bytes, state.config().limits.max_json_depth, "the remote registration")?;
    let set_default = match document.remove("set_default") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => b,
        Some(other) => return Err(bad(format!("set_default must be true or false, not {other}"))),
    };
    let registration = quorum::RemoteRegistration::from_json(document.into())?.into_registration()?;
    register(state, registration, set_default, None).await
}

/// Registers off the async threads (registration loads and probes the model), then sets the
/// default when asked; a staged upload is removed once the registry holds its copy.
async fn register(
    state: &AppState,
    registration: ModelRegistration,
    set_default: bool,
    staged: Option<tempfile::TempPath>,
) -> ApiResult<Response> {
    let engine = state.engine().clone();
    let registered = tokio::task::spawn_blocking(move || {
        quorum::Error::guard(|| {
            let registered = engine.register_model(registration)?;
            drop(staged);
            if set_default {
                engine.set_default_version(&registered.name, registered.version)?;
            }
            Ok(registered)
        })
    })
    .await
    .map_err(|e| quorum::Error::Internal(format!("the registration task failed: {e}")))??;
    tracing::info!(model = %registered.name, version = registered.version, sha256 = %registered.sha256, "model registered");
    Ok((StatusCode::CREATED, Json(registered)).into_response())
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    let status = e.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "bad_request" };
    ApiError::new(status, code, format!("cannot read the upload: {}", e.body_text()))
}

/// Every registered model with its versions.
#[utoipa::path(get, path = "/api/v1/ml/models", tag = "models",
    responses((status = 200, description = "the models")), security(("bearer" = [])))]
pub async fn list(_scope: Predictor, State(state): State<AppState>) -> ApiResult<Response> {
    Ok(Json(state.engine().registry().list()?).into_response())
}

/// A model's metadata (its default version unless `?version=`).
#[utoipa::path(get, path = "/api/v1/ml/models/{model_id}", tag = "models",
    params(("model_id" = String, Path), ("version" = Option<u32>, Query)),
    responses((status = 200, description = "the version's metadata"), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    _scope: Predictor,
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<VersionQuery>,
) -> ApiResult<Response> {
    let spec = query.version.map_or(VersionSpec::Default, VersionSpec::Exact);
    let registry = state.engine().registry();
    let meta = registry.resolve(&model_id, spec)?;
    let versions = registry.versions(&model_id)?;
    let default_version = registry.default_version(&model_id)?;
    Ok(Json(serde_json::json!({ "model": meta, "versions": versions, "default_version": default_version }))
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct VersionQuery {
    pub version: Option<u32>,
}

/// `{"version": N}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDefault {
    pub version: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SetDefaultResponse {
    pub model: String,
    pub default_version: u32,
    /// Ensembles moved onto the new version (a hot swap: none of their predictions fails).
    pub reloaded: Vec<String>,
}

/// Make a version the model's default: every loaded ensemble that follows the default moves to it.
#[utoipa::path(post, path = "/api/v1/ml/models/{model_id}/set-default", tag = "models",
    params(("model_id" = String, Path)), request_body = SetDefault,
    responses((status = 200, body = SetDefaultResponse), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_default(
    _scope: Admin,
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let request: SetDefault = parse(&body, state.config().limits.max_json_depth, "the request")?;
    let engine = state.engine().clone();
    let name = model_id.clone();
    let reloaded = blocking(move || engine.set_default_version(&name, request.version)).await?;
    Ok(Json(SetDefaultResponse { model: model_id, default_version: request.version, reloaded }).into_response())
}

/// Runs registry or loading work (file I/O, ONNX Runtime sessions) off the server's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> quorum::Result<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(move || quorum::Error::guard(work))
        .await
        .map_err(|e| ApiError::from(quorum::Error::Internal(format!("a blocking task failed: {e}"))))?
        .map_err(ApiError::from)
}

/// The story's performance object, from the tracker.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelPerformance {
    pub model_id: String,
    pub accuracy: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1_score: Option<f64>,
    /// p95 of the model's call latency in this server's predictions since it started (ms; the upper
    /// edge of a 19%-wide histogram bucket); null before its first call.
    pub latency_p95: Option<f64>,
    /// The model's calls per second since the server started (a batch is one call).
    pub throughput: f64,
    pub calls: u64,
    /// Outcomes behind the metrics above: those of the ensemble with the most outcomes for it.
    pub outcomes: u64,
    pub ensemble: Option<String>,
    /// All-time metrics of the model in every ensemble that has it as a member.
    #[schema(value_type = Object)]
    pub by_ensemble: serde_json::Map<String, serde_json::Value>,
}

/// Tracked accuracy, precision, recall and F1 of a model, with its latency and throughput.
#[utoipa::path(get, path = "/api/v1/ml/models/{model_id}/performance", tag = "models",
    params(("model_id" = String, Path)),
    responses((status = 200, body = ModelPerformance), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn performance(
    _scope: Predictor,
    State(state): State<AppState>,
    Path(model_id): Path<String>,
) -> ApiResult<Response> {
    let engine = state.engine();
    engine.registry().default_version(&model_id)?;
    let mut by_ensemble = serde_json::Map::new();
    let mut best: Option<(String, quorum::tracking::Metrics)> = None;
    for name in engine.ensemble_store().list()? {
        let Ok(config) = engine.ensemble_store().get(&name) else { continue };
        if !config.members.iter().any(|m| m.model == model_id) {
            continue;
        }
        let metrics = match engine.metrics(&name) {
            Ok(m) => m,
            Err(quorum::Error::TrackingDisabled) => return Err(quorum::Error::TrackingDisabled.into()),
            Err(_) => continue,
        };
        if let Some((_, tracked)) = metrics.members.iter().find(|(m, _)| *m == model_id) {
            let all = tracked.all_time;
            by_ensemble.insert(name.clone(), serde_json::to_value(all).unwrap_or_default());
            if best.as_ref().is_none_or(|(_, b)| all.count > b.count) {
                best = Some((name, all));
            }
        }
    }
    let stat = state.inner.model_stats.get(&model_id);
    let calls = stat.as_ref().map_or(0, |s| s.calls());
    let latency_p95 = stat.as_ref().and_then(|s| s.quantile_ms(0.95));
    let uptime = state.inner.started.elapsed().as_secs_f64().max(1e-3);
    let (ensemble, m) = match best {
        Some((name, m)) => (Some(name), Some(m)),
        None => (None, None),
    };
    Ok(Json(ModelPerformance {
        model_id,
        accuracy: m.and_then(|m| m.accuracy),
        precision: m.and_then(|m| m.precision),
        recall: m.and_then(|m| m.recall),
        f1_score: m.and_then(|m| m.f1_score),
        latency_p95,
        throughput: calls as f64 / uptime,
        calls,
        outcomes: m.map_or(0, |m| m.count),
        ensemble,
        by_ensemble,
    })
    .into_response())
}
