//! The Open Inference Protocol (KServe v2 / Triton HTTP) for quorum's ensembles: health, server and
//! model metadata, readiness and inference, with the binary tensor data extension that `tritonclient`
//! uses by default (a JSON header, its length in `Inference-Header-Content-Length`, then raw
//! little-endian tensors). An ensemble has one input per feature, named as the feature, shape `[-1]`
//! or `[-1, 1]`, and the outputs `prediction` and `confidence` (FP32, one per row). Registered models
//! show their own metadata. Errors are `{"error": "..."}`, as this protocol has them.

use std::fmt;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use quorum::{Batch, VersionSpec};

use crate::body::{check_depth, check_rows, Body};
use crate::error::{oip_error_response, ApiError, OipError};
use crate::middleware::{deadline, Arrival, Predictor};
use crate::state::AppState;

pub const HEADER_LENGTH: &str = "inference-header-content-length";
/// Extensions `GET /v2` advertises.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];

/// An error on this protocol's routes.
#[derive(Debug)]
pub struct OipFailure(ApiError);

impl From<ApiError> for OipFailure {
    fn from(e: ApiError) -> Self {
        OipFailure(e)
    }
}

impl From<quorum::Error> for OipFailure {
    fn from(e: quorum::Error) -> Self {
        OipFailure(e.into())
    }
}

fn invalid(message: impl Into<String>) -> OipFailure {
    OipFailure(ApiError::bad_request(message))
}

impl IntoResponse for OipFailure {
    fn into_response(self) -> Response {
        let e = self.0;
        // Triton answers 400 for the client's mistakes; a few statuses carry more meaning and stay.
        let status = match e.status {
            s if s.is_client_error() && ![404, 401, 403, 413, 429].contains(&s.as_u16()) => StatusCode::BAD_REQUEST,
            s => s,
        };
        let mut response = oip_error_response(status, &format!("[{}] {}", e.code, e.message));
        crate::error::finish(&mut response, status, e.retry_after);
        response
    }
}

type OipResult<T> = Result<T, OipFailure>;

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

/// Server metadata.
#[utoipa::path(get, path = "/v2", tag = "v2", responses((status = 200, body = ServerMetadata)), security(("bearer" = [])))]
pub async fn server_metadata() -> Response {
    axum::Json(ServerMetadata {
        name: "quorum".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
    })
    .into_response()
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/v2/health/live", tag = "v2", responses((status = 200, description = "live")))]
pub async fn live() -> StatusCode {
    StatusCode::OK
}

/// Readiness: the configured ensembles are loaded and the server is not draining.
#[utoipa::path(get, path = "/v2/health/ready", tag = "v2",
    responses((status = 200, description = "ready"), (status = 503, description = "loading or draining")))]
pub async fn ready(State(state): State<AppState>) -> StatusCode {
    if state.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema, Clone)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

fn tensor(name: &str, shape: Vec<i64>) -> TensorMetadata {
    TensorMetadata { name: name.to_string(), datatype: "FP32".into(), shape }
}

/// What a v2 model name is here: an ensemble (first), else a registered model.
enum Target {
    Ensemble(quorum::EnsembleHandle),
    Model(Box<quorum::ModelMetadata>),
}

fn parse_version(version: Option<&str>) -> OipResult<Option<u32>> {
    version
        .map(|v| v.parse::<u32>().map_err(|_| invalid(format!("version {v:?} is not a positive integer"))))
        .transpose()
}

fn resolve(state: &AppState, name: &str, version: Option<&str>) -> OipResult<Target> {
    let version = parse_version(version)?;
    let engine = state.engine();
    if !engine.ensemble_store().versions(name).unwrap_or_default().is_empty() {
        let handle = engine.ensemble(name)?;
        let active = handle.config().version;
        if let Some(v) = version.filter(|v| *v != active) {
            engine.ensemble_store().get_version(name, v)?;
            return Err(invalid(format!(
                "version {v} of ensemble {name:?} is not loaded (the active version is {active})"
            )));
        }
        return Ok(Target::Ensemble(handle));
    }
    let spec = version.map_or(VersionSpec::Default, VersionSpec::Exact);
    Ok(Target::Model(Box::new(engine.registry().resolve(name, spec)?)))
}

fn metadata(state: &AppState, name: &str, version: Option<&str>) -> OipResult<ModelMetadata> {
    Ok(match resolve(state, name, version)? {
        Target::Ensemble(handle) => {
            let versions = state.engine().ensemble_store().versions(name)?;
            ModelMetadata {
                name: name.to_string(),
                versions: versions.iter().map(u32::to_string).collect(),
                platform: "quorum_ensemble".into(),
                inputs: handle.feature_names().iter().map(|f| tensor(f, vec![-1])).collect(),
                outputs: vec![tensor("prediction", vec![-1]), tensor("confidence", vec![-1])],
            }
        }
        Target::Model(meta) => {
            let versions = state.engine().registry().versions(name)?;
            let (inputs, outputs) = model_io(state, &meta)?;
            ModelMetadata {
                name: name.to_string(),
                versions: versions.iter().map(u32::to_string).collect(),
                platform: if meta.remote.is_some() { "quorum_remote" } else { "onnxruntime_onnx" }.into(),
                inputs,
                outputs,
            }
        }
    })
}

/// A registered model's own inputs and outputs, read from its ONNX file (for a remote model, as
/// registration settled them: the inputs it is sent and the output read).
fn model_io(state: &AppState, meta: &quorum::ModelMetadata) -> OipResult<(Vec<TensorMetadata>, Vec<TensorMetadata>)> {
    if let Some(remote) = &meta.remote {
        let typed = |name: &str, shape: Vec<i64>| TensorMetadata {
            name: name.to_string(),
            datatype: remote.datatype.clone(),
            shape,
        };
        let inputs = match (&remote.input, remote.feature_rank) {
            (Some(name), _) => vec![typed(name, vec![-1, meta.features.len() as i64])],
            (None, Some(2)) => meta.features.iter().map(|f| typed(f, vec![-1, 1])).collect(),
            (None, _) => meta.features.iter().map(|f| typed(f, vec![-1])).collect(),
        };
        return Ok((inputs, vec![tensor(&meta.output.name, vec![-1, -1])]));
    }
    let bytes = state.engine().registry().read_verified(meta)?;
    let io = quorum::graph_io(&bytes).map_err(quorum::Error::from)?;
    let input = io.inputs.into_iter().next().map_or_else(
        || tensor("input", vec![-1, meta.features.len() as i64]),
        |i| TensorMetadata { name: i.name, datatype: i.datatype, shape: i.shape },
    );
    let outputs =
        io.outputs.into_iter().map(|o| TensorMetadata { name: o.name, datatype: o.datatype, shape: o.shape }).collect();
    Ok((vec![input], outputs))
}

/// Model (or ensemble) metadata.
#[utoipa::path(get, path = "/v2/models/{name}", tag = "v2", params(("name" = String, Path)),
    responses((status = 200, body = ModelMetadata), (status = 404, body = OipError)), security(("bearer" = [])))]
pub async fn model_metadata(
    _scope: Predictor,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> OipResult<Response> {
    Ok(axum::Json(metadata(&state, &name, None)?).into_response())
}

/// Metadata of one version.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}", tag = "v2",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = ModelMetadata), (status = 404, body = OipError)), security(("bearer" = [])))]
pub async fn version_metadata(
    _scope: Predictor,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> OipResult<Response> {
    Ok(axum::Json(metadata(&state, &name, Some(&version))?).into_response())
}

fn readiness(state: &AppState, name: &str, version: Option<&str>) -> StatusCode {
    match resolve(state, name, version) {
        Ok(Target::Ensemble(_)) if state.ready() => StatusCode::OK,
        Ok(Target::Model(_)) if state.ready() => StatusCode::OK,
        Ok(_) => StatusCode::SERVICE_UNAVAILABLE,
        Err(_) => StatusCode::NOT_FOUND,
    }
}

/// Whether a model (or ensemble) is ready to infer.
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "v2", params(("name" = String, Path)),
    responses((status = 200, description = "ready"), (status = 404, description = "unknown")), security(("bearer" = [])))]
pub async fn model_ready(_scope: Predictor, State(state): State<AppState>, Path(name): Path<String>) -> StatusCode {
    readiness(&state, &name, None)
}

/// Whether one version is ready.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/ready", tag = "v2",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "ready"), (status = 404, description = "unknown")), security(("bearer" = [])))]
pub async fn version_ready(
    _scope: Predictor,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> StatusCode {
    readiness(&state, &name, Some(&version))
}

/// Numbers of a `data` array, nested or flat, read in row-major order without building JSON values.
#[derive(Debug, Default)]
struct FlatNumbers(Vec<f64>);

impl<'de> Deserialize<'de> for FlatNumbers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Flat<'a>(&'a mut Vec<f64>);
        impl<'de> de::DeserializeSeed<'de> for Flat<'_> {
            type Value = ();
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_any(self)
            }
        }
        impl<'de> Visitor<'de> for Flat<'_> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("numbers, or (nested) arrays of numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                while seq.next_element_seed(Flat(&mut *self.0))?.is_some() {}
                Ok(())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
                self.0.push(v);
                Ok(())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
                self.0.push(v as f64);
                Ok(())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
                self.0.push(v as f64);
                Ok(())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
                self.0.push(if v { 1.0 } else { 0.0 });
                Ok(())
            }
        }
        let mut out = Vec::new();
        de::DeserializeSeed::deserialize(Flat(&mut out), d)?;
        Ok(FlatNumbers(out))
    }
}

#[derive(Debug, Deserialize, Default)]
struct Parameters {
    #[serde(default)]
    binary_data_size: Option<usize>,
    #[serde(default)]
    binary_data: Option<bool>,
    #[serde(default)]
    binary_data_output: Option<bool>,
    #[serde(default)]
    classification: Option<serde::de::IgnoredAny>,
    /// The request's experiment routing key (the request's `parameters`; the `x-routing-key`
    /// header does the same).
    #[serde(default)]
    routing_key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Parameters,
    #[serde(default)]
    data: Option<FlatNumbers>,
}

#[derive(Debug, Deserialize)]
struct InferOutput {
    name: String,
    #[serde(default)]
    parameters: Parameters,
}

#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Parameters,
    inputs: Vec<InferInput>,
    #[serde(default)]
    outputs: Option<Vec<InferOutput>>,
}

/// The inference request as `tritonclient` and KServe clients send it (see the module docs).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // the schema of what `infer` reads
pub struct InferRequestSchema {
    id: Option<String>,
    #[schema(value_type = Option<Object>)]
    parameters: Option<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    inputs: Vec<serde_json::Value>,
    #[schema(value_type = Option<Vec<Object>>)]
    outputs: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferOutputTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<InferOutputTensor>,
}

/// Element size of the datatypes accepted as inputs (converted to FP32).
fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "FP32" | "INT32" => 4,
        "FP64" | "INT64" => 8,
        _ => return None,
    })
}

fn decode(datatype: &str, raw: &[u8], out: &mut Vec<f32>) {
    match datatype {
        "FP32" => out.extend(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        "FP64" => out.extend(
            raw.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32),
        ),
        "INT32" => out.extend(raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)),
        "INT64" => out.extend(
            raw.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32),
        ),
        _ => {}
    }
}

/// Run inference on an ensemble.
#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "v2", params(("name" = String, Path)),
    request_body = InferRequestSchema,
    responses((status = 200, body = InferResponse), (status = 400, body = OipError)), security(("bearer" = [])))]
pub async fn infer(
    _scope: Predictor,
    State(state): State<AppState>,
    Path(name): Path<String>,
    arrival: axum::Extension<Arrival>,
    headers: HeaderMap,
    Body(body): Body,
) -> OipResult<Response> {
    run_infer(state, name, None, arrival.0, headers, body).await
}

/// Run inference on one version of an ensemble (the active one).
#[utoipa::path(post, path = "/v2/models/{name}/versions/{version}/infer", tag = "v2",
    params(("name" = String, Path), ("version" = String, Path)),
    request_body = InferRequestSchema,
    responses((status = 200, body = InferResponse), (status = 400, body = OipError)), security(("bearer" = [])))]
pub async fn version_infer(
    _scope: Predictor,
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    arrival: axum::Extension<Arrival>,
    headers: HeaderMap,
    Body(body): Body,
) -> OipResult<Response> {
    run_infer(state, name, Some(version), arrival.0, headers, body).await
}

async fn run_infer(
    state: AppState,
    name: String,
    version: Option<String>,
    arrival: Arrival,
    headers: HeaderMap,
    body: Bytes,
) -> OipResult<Response> {
    let deadline = deadline(&headers, arrival)?;
    let limits = &state.config().limits;
    let (request, binary) = split_body(&headers, &body, limits.max_json_depth)?;
    let handle = match resolve(&state, &name, version.as_deref())? {
        Target::Ensemble(handle) => handle,
        Target::Model(meta) => {
            return Err(invalid(format!(
                "{name} is a registered model; inference runs on ensembles here (create a one-member ensemble \
                 of {}@{} to serve it alone)",
                meta.name, meta.version
            )))
        }
    };
    let (columns, rows) = read_inputs(&request, binary, &handle.feature_names(), &name)?;
    check_rows(rows, limits.max_batch_rows)?;
    let wanted = requested_outputs(&request)?;
    let named: Vec<(&str, &[f32])> = columns.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    let batch = Batch::columnar(&named)?;
    let header_key =
        headers.get("x-routing-key").map(|v| v.to_str().map_err(|_| invalid("x-routing-key is not visible ASCII")));
    let routing_key = match (request.parameters.routing_key.as_deref(), header_key) {
        (Some(key), _) => Some(key),
        (None, Some(key)) => Some(key?),
        (None, None) => None,
    };
    if routing_key.is_some_and(|k| k.len() > 256) {
        return Err(invalid("parameters.routing_key: at most 256 bytes"));
    }
    let _slot = state.inner.admission.enter(deadline).await?;
    let (predictions, confidences, answered_version) = if rows == 1 && deadline.is_some() {
        // One row with a deadline: the single-row path, which refuses rather than answers late.
        let row =
            handle.resolve_row_routed(|f| Ok(columns.iter().find(|(n, _)| n == f).map(|(_, v)| v[0])), routing_key)?;
        let p = crate::inline::run(&name, || handle.predict_resolved(&row, deadline))?;
        state.inner.model_stats.record(&p);
        (vec![p.prediction], vec![p.confidence], p.ensemble_version)
    } else {
        let key = format!("{name}/batch");
        let b = crate::inline::run(&key, || handle.predict_batch_routed(&batch, routing_key))?;
        state.inner.model_stats.record_batch(&crate::model_stats::runs(&b));
        let version = b.ensemble_version;
        (b.predictions, b.confidences, version)
    };
    let answer = Answer { name, version: answered_version, id: request.id, rows, predictions, confidences };
    answer.encode(&wanted)
}

/// The request's JSON (its length in [`HEADER_LENGTH`] when binary tensors follow) and the binary part.
fn split_body<'a>(headers: &HeaderMap, body: &'a [u8], max_depth: usize) -> OipResult<(InferRequest, &'a [u8])> {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING).filter(|e| e.as_bytes() != b"identity") {
        return Err(OipFailure(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Encoding {encoding:?} is not supported: send the request uncompressed"),
        )));
    }
    let header_length = match headers.get(HEADER_LENGTH) {
        Some(v) => {
            let n = v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok());
            n.filter(|n| *n <= body.len()).ok_or_else(|| {
                invalid(format!("{HEADER_LENGTH} must be a length within the body ({} bytes)", body.len()))
            })?
        }
        None => body.len(),
    };
    let (json, binary) = body.split_at(header_length);
    check_depth(json, max_depth)?;
    let request = serde_json::from_slice(json).map_err(|e| invalid(format!("invalid inference request: {e}")))?;
    Ok((request, binary))
}

/// For the fuzz target: `bytes` as an inference request whose JSON part is `json_length` bytes
/// long (binary tensors after it), read against an ensemble taking features `a` and `b`.
pub(crate) fn fuzz_infer(bytes: &[u8], json_length: usize) {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_LENGTH, json_length.into());
    if let Ok((request, binary)) = split_body(&headers, bytes, 32) {
        let _ = read_inputs(&request, binary, &["a".to_string(), "b".to_string()], "fuzz");
        let _ = requested_outputs(&request);
    }
}

/// A feature's values, one per row.
type Column = (String, Vec<f32>);

/// Every input as an FP32 column named as its feature, and the row count; each feature exactly once,
/// the binary part consumed exactly.
fn read_inputs(
    request: &InferRequest,
    mut binary: &[u8],
    features: &[String],
    ensemble: &str,
) -> OipResult<(Vec<Column>, usize)> {
    let mut rows: Option<usize> = None;
    let mut columns: Vec<Column> = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        if !features.contains(&input.name) {
            return Err(invalid(format!(
                "unexpected input {:?}: ensemble {ensemble:?} takes {features:?}",
                input.name
            )));
        }
        let values = read_input(input, &mut binary)?;
        if *rows.get_or_insert(values.len()) != values.len() {
            return Err(invalid(format!(
                "input {:?} has {} rows, the others {}",
                input.name,
                values.len(),
                rows.unwrap_or(0)
            )));
        }
        columns.push((input.name.clone(), values));
    }
    if !binary.is_empty() {
        return Err(invalid(format!("{} bytes of binary data follow the inputs that no input claims", binary.len())));
    }
    if let Some(missing) = features.iter().find(|f| !columns.iter().any(|(n, _)| n == *f)) {
        return Err(invalid(format!("missing input {missing:?}: ensemble {ensemble:?} takes {features:?}")));
    }
    Ok((columns, rows.unwrap_or(0)))
}

/// One input's values as FP32: from `data`, or from the front of `binary` (which it then consumes).
fn read_input(input: &InferInput, binary: &mut &[u8]) -> OipResult<Vec<f32>> {
    let size = element_size(&input.datatype).ok_or_else(|| {
        invalid(format!(
            "input {:?}: datatype {} is not supported (FP32, FP64, INT32, INT64)",
            input.name, input.datatype
        ))
    })?;
    let count = match input.shape.as_slice() {
        [n] | [n, 1] if *n >= 0 => *n as usize,
        other => {
            return Err(invalid(format!(
                "input {:?} has shape {other:?}: one value per row, shape [rows] or [rows, 1]",
                input.name
            )))
        }
    };
    let mut values = Vec::with_capacity(count);
    match (&input.data, input.parameters.binary_data_size) {
        (None, Some(bytes)) => {
            if bytes != count * size || bytes > binary.len() {
                return Err(invalid(format!(
                    "input {:?}: binary_data_size {bytes} does not match shape {:?} of {} (or the body is short)",
                    input.name, input.shape, input.datatype
                )));
            }
            let (raw, rest) = binary.split_at(bytes);
            decode(&input.datatype, raw, &mut values);
            *binary = rest;
        }
        (Some(data), None) => {
            if data.0.len() != count {
                return Err(invalid(format!(
                    "input {:?}: {} values for shape {:?}",
                    input.name,
                    data.0.len(),
                    input.shape
                )));
            }
            values.extend(data.0.iter().map(|&v| v as f32));
        }
        _ => return Err(invalid(format!("input {:?}: give either `data` or parameters.binary_data_size", input.name))),
    }
    Ok(values)
}

/// The outputs to answer, each with whether it goes as binary data (default: both, as the request's
/// `binary_data_output` says).
fn requested_outputs(request: &InferRequest) -> OipResult<Vec<(&'static str, bool)>> {
    let all_binary = request.parameters.binary_data_output.unwrap_or(false);
    let Some(outputs) = &request.outputs else {
        return Ok(vec![("prediction", all_binary), ("confidence", all_binary)]);
    };
    outputs
        .iter()
        .map(|o| {
            if o.parameters.classification.is_some() {
                return Err(invalid("the classification extension is not supported"));
            }
            let name = match o.name.as_str() {
                "prediction" => "prediction",
                "confidence" => "confidence",
                other => return Err(invalid(format!("unknown output {other:?}: prediction or confidence"))),
            };
            Ok((name, o.parameters.binary_data.unwrap_or(all_binary)))
        })
        .collect()
}

/// An ensemble's answer to one inference request.
struct Answer {
    name: String,
    version: u32,
    id: Option<String>,
    rows: usize,
    predictions: Vec<f32>,
    confidences: Vec<f32>,
}

impl Answer {
    /// The response: JSON, or the JSON header followed by the binary outputs.
    fn encode(self, wanted: &[(&'static str, bool)]) -> OipResult<Response> {
        let mut outputs = Vec::with_capacity(wanted.len());
        let mut tail: Vec<u8> = Vec::new();
        for (output, binary) in wanted {
            let values = if *output == "prediction" { &self.predictions } else { &self.confidences };
            let mut tensor = InferOutputTensor {
                name: output.to_string(),
                datatype: "FP32".into(),
                shape: vec![self.rows as i64],
                data: None,
                parameters: None,
            };
            if *binary {
                tensor.parameters = Some(serde_json::json!({ "binary_data_size": values.len() * 4 }));
                tail.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            } else {
                tensor.data = Some(values.clone());
            }
            outputs.push(tensor);
        }
        let response =
            InferResponse { model_name: self.name, model_version: self.version.to_string(), id: self.id, outputs };
        let json = serde_json::to_vec(&response).map_err(|e| quorum::Error::json("inference response", e))?;
        if tail.is_empty() {
            return Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response());
        }
        let length = json.len();
        let mut body = json;
        body.extend_from_slice(&tail);
        Ok((
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
                (header::HeaderName::from_static(HEADER_LENGTH), HeaderValue::from(length)),
            ],
            body,
        )
            .into_response())
    }
}
