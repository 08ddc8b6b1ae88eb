//! Ensembles over HTTP: create (the story's `name, models, weights, strategy`; 409 when the name is
//! taken, 422 naming the field of a bad configuration), new versions, list, show (configuration,
//! current weights per regime, weights epoch, tracked metrics, the running experiment) and set-default (a hot swap).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use quorum::EnsembleConfig;

use super::models::{blocking, SetDefault};
use crate::body::{parse, Body};
use crate::error::{ApiError, ApiResult};
use crate::middleware::{Admin, Predictor};
use crate::state::AppState;

/// The story's ensemble configuration. `models` are `"model"`, `"model@version"` or
/// `{"model", "version", "fallback"}`; `weights` maps each model to its weight (or is a list in
/// `models` order); absent weights are equal. The core's other settings (`min_members`, `non_finite`,
/// `regime`, `online`, `meta`, `serve_stale`) are accepted as they are in ensemble JSON.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateEnsemble {
    pub name: String,
    #[schema(value_type = Vec<Object>)]
    pub models: Vec<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub weights: Option<Value>,
    /// soft-vote, majority, hedge, boa, mlpol, ewa, stacking or blending (default soft-vote).
    #[serde(default)]
    pub strategy: Option<String>,
    /// New versions only: `false` saves the version without making it active (a candidate for an
    /// experiment); default `true`.
    #[serde(default)]
    pub activate: Option<bool>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub rest: Map<String, Value>,
}

/// What a create or show answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnsembleView {
    #[schema(value_type = Object)]
    pub config: Value,
    pub version: u32,
    /// Every saved version.
    pub versions: Vec<u32>,
    /// Feature names the ensemble consumes (`market_data` keys; v2 inputs).
    pub features: Vec<String>,
    /// The weights predictions use now, per regime (`all` without regimes).
    #[schema(value_type = Object)]
    pub weights: Value,
    pub weights_epoch: u64,
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<Value>,
    #[schema(value_type = Object)]
    pub fusion: Value,
    /// The running or paused experiment's status, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub experiment: Option<Value>,
}

/// Turns the story's document into the core's ensemble JSON, naming the field that is wrong.
fn to_config(request: CreateEnsemble, name: Option<&str>) -> ApiResult<EnsembleConfig> {
    let invalid = |field: &str, message: String| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "config", format!("field `{field}`: {message}"))
    };
    if let Some(name) = name {
        if request.name != name {
            return Err(invalid(
                "name",
                format!("{:?} differs from the ensemble in the path ({name:?})", request.name),
            ));
        }
    }
    let mut members = Vec::with_capacity(request.models.len());
    for (i, m) in request.models.iter().enumerate() {
        let spec: quorum::MemberSpec =
            serde_json::from_value(m.clone()).map_err(|e| invalid(&format!("models[{i}]"), e.to_string()))?;
        members.push(spec);
    }
    if members.is_empty() {
        return Err(invalid("models", "an ensemble needs at least one model".into()));
    }
    let weights = match request.weights {
        None | Some(Value::Null) => None,
        Some(Value::Object(by_model)) => {
            for key in by_model.keys() {
                if !members.iter().any(|m| &m.model == key) {
                    return Err(invalid(&format!("weights.{key}"), "is not one of the models".into()));
                }
            }
            let mut list = Vec::with_capacity(members.len());
            for m in &members {
                let w = by_model
                    .get(&m.model)
                    .ok_or_else(|| invalid("weights", format!("no weight for model {:?}", m.model)))?;
                let w = w
                    .as_f64()
                    .ok_or_else(|| invalid(&format!("weights.{}", m.model), format!("{w} is not a number")))?;
                list.push(w as f32);
            }
            Some(list)
        }
        Some(Value::Array(list)) => Some(
            list.iter()
                .enumerate()
                .map(|(i, w)| {
                    w.as_f64()
                        .map(|w| w as f32)
                        .ok_or_else(|| invalid(&format!("weights[{i}]"), format!("{w} is not a number")))
                })
                .collect::<ApiResult<Vec<f32>>>()?,
        ),
        Some(other) => return Err(invalid("weights", format!("{other} is neither an object nor a list"))),
    };
    let mut document = request.rest;
    for reserved in ["members", "version", "created_at"] {
        if document.contains_key(reserved) {
            return Err(invalid(reserved, "is set by the server (use `models`)".into()));
        }
    }
    document.insert("name".into(), Value::String(request.name));
    document.insert("members".into(), serde_json::to_value(&members).unwrap_or_default());
    if let Some(w) = weights {
        document.insert("weights".into(), serde_json::to_value(w).unwrap_or_default());
    }
    if let Some(s) = request.strategy {
        document.insert("strategy".into(), Value::String(s));
    }
    let config: EnsembleConfig = serde_path_to_error::deserialize(Value::Object(document)).map_err(|e| {
        let path = e.path().to_string();
        invalid(&path, e.into_inner().to_string())
    })?;
    config.validate().map_err(|e| {
        let api = ApiError::from(e);
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, api.code, api.message)
    })?;
    Ok(config)
}

fn view(state: &AppState, name: &str) -> ApiResult<EnsembleView> {
    let engine = state.engine();
    let handle = engine.ensemble(name)?;
    let config = handle.config();
    let weights = handle.current_weights();
    let metrics = match engine.metrics(name) {
        Ok(m) => Some(serde_json::to_value(m).unwrap_or_default()),
        // Tracking off, or no outcome recorded for this version yet.
        Err(quorum::Error::TrackingDisabled | quorum::Error::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(EnsembleView {
        version: config.version,
        versions: engine.ensemble_store().versions(name)?,
        features: handle.feature_names(),
        weights: serde_json::to_value(&weights.regimes).unwrap_or_default(),
        weights_epoch: weights.epoch,
        metrics,
        fusion: serde_json::to_value(handle.fusion()).unwrap_or_default(),
        experiment: handle.experiment().map(|e| serde_json::to_value(e).unwrap_or_default()),
        config: serde_json::to_value(config).unwrap_or_default(),
    })
}

/// Create an ensemble (409 if one of that name exists: add versions with `.../versions`).
#[utoipa::path(post, path = "/api/v1/ml/ensemble", tag = "ensembles", request_body = CreateEnsemble,
    responses((status = 201, body = EnsembleView), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(_scope: Admin, State(state): State<AppState>, Body(body): Body) -> ApiResult<Response> {
    let request: CreateEnsemble = parse(&body, state.config().limits.max_json_depth, "the ensemble configuration")?;
    let config = to_config(request, None)?;
    let name = config.name.clone();
    let engine = state.engine().clone();
    let _admin = state.inner.admin.lock().await;
    blocking(move || {
        if !engine.ensemble_store().versions(&config.name)?.is_empty() {
            return Err(quorum::Error::AlreadyExists { what: "ensemble", name: config.name });
        }
        engine.create_ensemble(config)
    })
    .await?;
    tracing::info!(ensemble = %name, "ensemble created");
    Ok((StatusCode::CREATED, Json(view(&state, &name)?)).into_response())
}

/// Save a new version of an ensemble and make it the active one (unless `"activate": false`).
#[utoipa::path(post, path = "/api/v1/ml/ensemble/{ensemble_id}/versions", tag = "ensembles",
    params(("ensemble_id" = String, Path)), request_body = CreateEnsemble,
    responses((status = 201, body = EnsembleView), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn new_version(
    _scope: Admin,
    State(state): State<AppState>,
    Path(ensemble_id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let request: CreateEnsemble = parse(&body, state.config().limits.max_json_depth, "the ensemble configuration")?;
    let activate = request.activate.unwrap_or(true);
    let config = to_config(request, Some(&ensemble_id))?;
    let engine = state.engine().clone();
    let _admin = state.inner.admin.lock().await;
    blocking(move || {
        engine.ensemble_store().get(&config.name)?;
        if activate {
            engine.create_ensemble(config)
        } else {
            engine.create_ensemble_inactive(config)
        }
    })
    .await?;
    Ok((StatusCode::CREATED, Json(view(&state, &ensemble_id)?)).into_response())
}

/// Names of every ensemble.
#[utoipa::path(get, path = "/api/v1/ml/ensemble", tag = "ensembles",
    responses((status = 200, body = Vec<String>)), security(("bearer" = [])))]
pub async fn list(_scope: Predictor, State(state): State<AppState>) -> ApiResult<Response> {
    Ok(Json(state.engine().ensemble_store().list()?).into_response())
}

/// An ensemble's configuration, version, current weights per regime, weights epoch and tracked metrics.
#[utoipa::path(get, path = "/api/v1/ml/ensemble/{ensemble_id}", tag = "ensembles",
    params(("ensemble_id" = String, Path)),
    responses((status = 200, body = EnsembleView), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    _scope: Predictor,
    State(state): State<AppState>,
    Path(ensemble_id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(view(&state, &ensemble_id)?).into_response())
}

/// Make a saved version the active one (a hot swap; kept across restarts until a new version).
#[utoipa::path(post, path = "/api/v1/ml/ensemble/{ensemble_id}/set-default", tag = "ensembles",
    params(("ensemble_id" = String, Path)), request_body = SetDefault,
    responses((status = 200, body = EnsembleView), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_default(
    _scope: Admin,
    State(state): State<AppState>,
    Path(ensemble_id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let request: SetDefault = parse(&body, state.config().limits.max_json_depth, "the request")?;
    let engine = state.engine().clone();
    let name = ensemble_id.clone();
    let _admin = state.inner.admin.lock().await;
    blocking(move || engine.set_default_ensemble_version(&name, request.version).map(|_| ())).await?;
    Ok(Json(view(&state, &ensemble_id)?).into_response())
}
