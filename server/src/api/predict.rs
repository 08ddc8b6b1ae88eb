//! Predictions and outcomes: `POST /api/v1/ml/ensemble/{ensemble_id}/predict` (the story's request
//! and response), its batch form, and `POST /api/v1/ml/outcomes`. The engine's work runs inline on
//! the server's threads after a slot in the admission queue (it takes microseconds; handing it to
//! another thread would cost more than it does).

use std::borrow::Cow;
use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use quorum::{Batch, Prediction};

use crate::body::{check_rows, parse, Body};
use crate::error::{ApiError, ApiResult};
use crate::middleware::{deadline, Arrival, Predictor};
use crate::state::AppState;

/// Feature name → value as sent, names borrowed from the body. No hashing: the ensemble asks for its
/// features in schema order, which clients usually send them in, so each lookup starts where the
/// last one matched. A name sent twice is refused.
#[derive(Debug, Default)]
pub struct MarketData<'a>(Vec<(Cow<'a, str>, Option<f64>)>);

impl<'a> MarketData<'a> {
    /// The value of `name` (`Some(None)`: sent as null), searching from `*cursor` on.
    fn find(&self, name: &str, cursor: &mut usize) -> Option<Option<f64>> {
        let n = self.0.len();
        for i in 0..n {
            let at = (*cursor + i) % n;
            if self.0[at].0 == name {
                *cursor = at + 1;
                return Some(self.0[at].1);
            }
        }
        None
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for MarketData<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Name<'a>(#[serde(borrow)] Cow<'a, str>);
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = MarketData<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of feature name → number (or null)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs: Vec<(Cow<'a, str>, Option<f64>)> = Vec::with_capacity(map.size_hint().unwrap_or(32));
                while let Some((Name(name), value)) = map.next_entry::<Name<'a>, Option<f64>>()? {
                    if pairs.iter().any(|(seen, _)| seen.len() == name.len() && *seen == name) {
                        return Err(serde::de::Error::custom(format!("feature {name:?} is given twice")));
                    }
                    pairs.push((name, value));
                }
                Ok(MarketData(pairs))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// The story's `features`: `market_data` holds the models' features by name (null: not available,
/// treated as NaN by the ensemble's non-finite policy); the other two are accepted and logged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureGroups<'a> {
    #[serde(borrow)]
    #[schema(value_type = HashMap<String, Option<f64>>)]
    pub market_data: MarketData<'a>,
    #[serde(borrow, default)]
    #[schema(value_type = Option<Object>)]
    pub user_profile: Option<&'a RawValue>,
    #[serde(borrow, default)]
    #[schema(value_type = Option<Object>)]
    pub risk_parameters: Option<&'a RawValue>,
}

/// `POST /api/v1/ml/ensemble/{ensemble_id}/predict`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest<'a> {
    #[serde(borrow)]
    pub features: FeatureGroups<'a>,
    /// Picks the experiment arm while the ensemble runs an experiment (a user, an account, a
    /// symbol); the `x-routing-key` header does the same.
    #[serde(default, borrow)]
    #[schema(value_type = Option<String>)]
    pub routing_key: Option<std::borrow::Cow<'a, str>>,
}

/// The batch form: one `features` object per row.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchPredictRequest<'a> {
    #[serde(borrow)]
    pub rows: Vec<FeatureGroups<'a>>,
    /// During an experiment the batch is one request, routed to one arm by this key.
    #[serde(default, borrow)]
    #[schema(value_type = Option<String>)]
    pub routing_key: Option<std::borrow::Cow<'a, str>>,
}

/// One member's part in a prediction.
#[derive(Debug, Serialize, ToSchema)]
pub struct Contribution {
    pub version: u32,
    /// Its own prediction; null when it failed.
    pub prediction: Option<f32>,
    pub weight: f32,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_loss: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// The story's response (`prediction`, `confidence`, `model_contributions`, `latency_ms`) and
/// quorum's own fields.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // the schema of what `PredictResponse::serialize` writes from the prediction
pub struct PredictResponse {
    /// Quote it in `POST /api/v1/ml/outcomes` once the outcome is known.
    pub request_id: u64,
    pub ensemble: String,
    /// The ensemble version that answered.
    pub version: u32,
    pub strategy: String,
    pub prediction: f32,
    pub confidence: f32,
    pub label: Option<u8>,
    pub model_contributions: HashMap<String, Contribution>,
    /// Time in the server, from the request's arrival to the answer (ms).
    pub latency_ms: f64,
    /// Of which in the engine (ms).
    pub engine_latency_ms: f64,
    pub degraded: bool,
    pub skipped: Vec<String>,
    /// `low`, `normal` or `high`, for ensembles with regimes.
    pub regime: Option<String>,
    pub cached: bool,
    pub stale: bool,
    pub fused: bool,
    pub weights_epoch: u64,
    /// `{"name", "arm"}` while the ensemble runs an experiment (`arm`: control or treatment).
    #[schema(value_type = Option<Object>)]
    pub experiment: Option<serde_json::Value>,
}

/// A prediction as the API writes it (serialised straight from the engine's, no copy).
pub(crate) struct PredictionView<'a> {
    pub prediction: &'a Prediction,
    pub latency_ms: f64,
}

impl Serialize for PredictionView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let p = self.prediction;
        let mut map = s.serialize_map(Some(17))?;
        map.serialize_entry("request_id", &p.request_id)?;
        map.serialize_entry("ensemble", &*p.ensemble)?;
        map.serialize_entry("version", &p.ensemble_version)?;
        map.serialize_entry("strategy", p.strategy)?;
        map.serialize_entry("prediction", &p.prediction)?;
        map.serialize_entry("confidence", &p.confidence)?;
        map.serialize_entry("label", &p.label)?;
        map.serialize_entry("model_contributions", &Contributions(p))?;
        map.serialize_entry("latency_ms", &self.latency_ms)?;
        map.serialize_entry("engine_latency_ms", &p.latency_ms)?;
        map.serialize_entry("degraded", &p.degraded)?;
        map.serialize_entry("skipped", &p.skipped)?;
        map.serialize_entry("regime", &p.regime)?;
        map.serialize_entry("cached", &p.cached)?;
        map.serialize_entry("stale", &p.stale)?;
        map.serialize_entry("fused", &p.fused)?;
        map.serialize_entry("weights_epoch", &p.weights_epoch)?;
        if let Some(arm) = &p.experiment {
            map.serialize_entry("experiment", arm)?;
        }
        map.end()
    }
}

struct Contributions<'a>(&'a Prediction);

impl Serialize for Contributions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.model_contributions.len()))?;
        for c in &self.0.model_contributions {
            map.serialize_entry(&*c.model, c)?;
        }
        map.end()
    }
}

fn value_of(market: &MarketData<'_>, name: &str, cursor: &mut usize) -> quorum::Result<Option<f32>> {
    Ok(market.find(name, cursor).map(|v| v.map_or(f32::NAN, |x| x as f32)))
}

/// Longest routing key accepted.
const MAX_ROUTING_KEY: usize = 256;

/// The request's routing key: the body's `routing_key`, else the `x-routing-key` header.
fn routing_key<'a>(body: Option<&'a str>, headers: &'a HeaderMap) -> ApiResult<Option<&'a str>> {
    let key = match body {
        Some(key) => Some(key),
        None => match headers.get("x-routing-key") {
            Some(v) => Some(v.to_str().map_err(|_| ApiError::bad_request("x-routing-key is not visible ASCII"))?),
            None => None,
        },
    };
    if key.is_some_and(|k| k.len() > MAX_ROUTING_KEY) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            format!("routing_key: at most {MAX_ROUTING_KEY} bytes"),
        ));
    }
    Ok(key)
}

fn log_context(groups: &FeatureGroups<'_>) {
    if groups.user_profile.is_some() || groups.risk_parameters.is_some() {
        tracing::trace!(
            user_profile = groups.user_profile.map(RawValue::get),
            risk_parameters = groups.risk_parameters.map(RawValue::get),
            "prediction context"
        );
    }
}

/// Predict one request with the ensemble.
#[utoipa::path(post, path = "/api/v1/ml/ensemble/{ensemble_id}/predict", tag = "predict",
    params(("ensemble_id" = String, Path, description = "the ensemble's name"),
           ("x-deadline-ms" = Option<f64>, Header, description = "refuse rather than answer after this many ms")),
    request_body = PredictRequest,
    responses((status = 200, body = PredictResponse), (status = 422, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn predict(
    _scope: Predictor,
    State(state): State<AppState>,
    Path(ensemble_id): Path<String>,
    Extension(arrival): Extension<Arrival>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let deadline = deadline(&headers, arrival)?;
    let request: PredictRequest<'_> = parse(&body, state.config().limits.max_json_depth, "the prediction request")?;
    log_context(&request.features);
    let handle = state.engine().ensemble(&ensemble_id)?;
    let mut cursor = 0;
    let routing_key = routing_key(request.routing_key.as_deref(), &headers)?;
    let row =
        handle.resolve_row_routed(|name| value_of(&request.features.market_data, name, &mut cursor), routing_key)?;
    let _slot = state.inner.admission.enter(deadline).await?;
    let prediction = crate::inline::run(&ensemble_id, || handle.predict_resolved(&row, deadline))?;
    state.inner.model_stats.record(&prediction);
    let latency_ms = arrival.0.elapsed().as_secs_f64() * 1e3;
    Ok(Json(PredictionView { prediction: &prediction, latency_ms }).into_response())
}

/// The batch answer.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // the schema of what `predict_batch` writes
pub struct BatchPredictResponse {
    pub predictions: Vec<PredictResponse>,
    pub latency_ms: f64,
}

/// The batch answer as written (serialised straight from the views, no JSON tree built).
#[derive(Serialize)]
struct BatchView<'a> {
    predictions: &'a [PredictionView<'a>],
    latency_ms: f64,
}

/// Predict many rows with the ensemble in one call (each model runs once for the whole batch).
#[utoipa::path(post, path = "/api/v1/ml/ensemble/{ensemble_id}/predict/batch", tag = "predict",
    params(("ensemble_id" = String, Path, description = "the ensemble's name"),
           ("x-deadline-ms" = Option<f64>, Header, description = "refuse rather than answer after this many ms")),
    request_body = BatchPredictRequest,
    responses((status = 200, body = BatchPredictResponse), (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn predict_batch(
    _scope: Predictor,
    State(state): State<AppState>,
    Path(ensemble_id): Path<String>,
    Extension(arrival): Extension<Arrival>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    let deadline = deadline(&headers, arrival)?;
    let limits = &state.config().limits;
    let request: BatchPredictRequest<'_> = parse(&body, limits.max_json_depth, "the batch request")?;
    check_rows(request.rows.len(), limits.max_batch_rows)?;
    let handle = state.engine().ensemble(&ensemble_id)?;
    let names = handle.feature_names();
    let mut values = Vec::with_capacity(names.len() * request.rows.len());
    for (index, row) in request.rows.iter().enumerate() {
        log_context(row);
        let mut cursor = 0;
        for name in &names {
            match row.market_data.find(name.as_str(), &mut cursor) {
                Some(v) => values.push(v.map_or(f32::NAN, |x| x as f32)),
                None => {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "missing_feature",
                        format!("row {index}: missing feature {name:?} in market_data"),
                    ))
                }
            }
        }
    }
    let batch = Batch::row_major(&names, &values)?;
    let _slot = state.inner.admission.enter(deadline).await?;
    let key = format!("{ensemble_id}/batch");
    let routing_key = routing_key(request.routing_key.as_deref(), &headers)?;
    let predictions = crate::inline::run(&key, || handle.predict_batch_routed(&batch, routing_key))?;
    state.inner.model_stats.record_batch(&crate::model_stats::runs(&predictions));
    let latency_ms = arrival.0.elapsed().as_secs_f64() * 1e3;
    let rows: Vec<Prediction> = predictions.rows().collect();
    let views: Vec<PredictionView<'_>> = rows.iter().map(|p| PredictionView { prediction: p, latency_ms }).collect();
    Ok(Json(BatchView { predictions: &views, latency_ms }).into_response())
}

/// One realised outcome.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// The `request_id` of the prediction.
    pub request_id: u64,
    /// Classification: 0 or 1; regression: the realised value.
    pub outcome: f64,
    /// The outcome's business value (e.g. the trade's P&L; higher is better), for experiments
    /// whose metric is `business`.
    #[serde(default)]
    pub business_value: Option<f64>,
}

/// One outcome, or many.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OutcomesRequest {
    One(Outcome),
    Many { outcomes: Vec<Outcome> },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutcomeError {
    /// Position in `outcomes`.
    pub index: usize,
    pub request_id: u64,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutcomesResponse {
    pub recorded: usize,
    /// Outcomes that could not be joined with a prediction (the others were recorded).
    pub errors: Vec<OutcomeError>,
}

/// Record realised outcomes: they update tracked metrics and the learning strategies' weights.
#[utoipa::path(post, path = "/api/v1/ml/outcomes", tag = "predict", request_body = OutcomesRequest,
    responses((status = 200, body = OutcomesResponse), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn outcomes(_scope: Predictor, State(state): State<AppState>, Body(body): Body) -> ApiResult<Response> {
    let limits = &state.config().limits;
    let request: OutcomesRequest = parse(&body, limits.max_json_depth, "the outcomes request")?;
    let engine = state.engine();
    // With a shared state an outcome is a database round trip: `inline` moves it off the worker
    // when it is slow.
    crate::inline::run("outcomes", || record_outcomes(engine, request, limits.max_batch_rows))
}

fn record_outcomes(engine: &quorum::InferenceEngine, request: OutcomesRequest, max_rows: usize) -> ApiResult<Response> {
    match request {
        OutcomesRequest::One(o) => {
            engine.record_outcome_valued(o.request_id, o.outcome, o.business_value)?;
            Ok(Json(OutcomesResponse { recorded: 1, errors: Vec::new() }).into_response())
        }
        OutcomesRequest::Many { outcomes } => {
            check_rows(outcomes.len(), max_rows)?;
            let mut errors = Vec::new();
            for (index, o) in outcomes.iter().enumerate() {
                if let Err(e) = engine.record_outcome_valued(o.request_id, o.outcome, o.business_value) {
                    errors.push(OutcomeError {
                        index,
                        request_id: o.request_id,
                        code: e.code().into(),
                        message: e.to_string(),
                    });
                }
            }
            Ok(Json(OutcomesResponse { recorded: outcomes.len() - errors.len(), errors }).into_response())
        }
    }
}
