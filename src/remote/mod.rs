//! Remote members: a model served by another server (Triton, KServe, MLServer, another `quorum
//! serve`) over the Open Inference Protocol v2, registered by URL and run as a member like any
//! other — under its breaker, deadline and fallback, weighted and tracked. Registration reads the
//! server's metadata, checks it against the declared features and output and probes it; every call
//! is bounded by a deadline and its failures are the member's. The bearer token is read from an
//! environment variable named at registration and never stored or shown.

use quorum_oip::{conn, error_text, hedge, http, protocol as oip};

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model_spec::{OutputSpec, Task};

pub(crate) use quorum_oip::protocol::Layout;

/// The deadline of a remote call when neither the model's timeout nor an ensemble's latency
/// budget sets one: a remote member never waits longer.
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(2);
/// The deadline of each request registration makes (metadata, probes).
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from a remote server.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// How a remote model is reached, as registered (the `remote` field of its `metadata.json`). It
/// names the environment variable holding the token, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSpec {
    /// `http(s)://host:port/v2/models/MODEL[/versions/V]`.
    pub url: String,
    /// The environment variable whose value is sent as `Authorization: Bearer ...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// The input tensor taking `[rows, features]`; `None` when the model takes one input per
    /// feature, named as the features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// With one input per feature: 1 for `[rows]` inputs, 2 for `[rows, 1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_rank: Option<u8>,
    /// The input datatype sent (`FP32`, `FP64`, `INT64`, `INT32`).
    pub datatype: String,
    /// Whether requests use the binary tensor data extension (the server advertised it).
    pub binary: bool,
    /// Whether a request not answered by the model's recent 95th percentile of answer times is
    /// sent a second time (to `hedge_url`, else to the same server on another connection).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hedge: bool,
    /// A second server of the same model (`http(s)://host:port/v2/models/MODEL[/versions/V]`):
    /// where hedged attempts go, and where a request that failed outright is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_url: Option<String>,
}

/// What to reach a remote model at, given to registration ([`crate::ModelRegistration::remote`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSource {
    /// `http(s)://host:port/v2/models/MODEL[/versions/V]`.
    pub url: String,
    /// The environment variable holding the bearer token, if the server wants one.
    pub token_env: Option<String>,
}

/// A remote model's URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    authority: String,
    /// `/v2/models/MODEL[/versions/V]`.
    path: String,
    /// `https://`.
    tls: bool,
}

fn parse_url(url: &str) -> std::result::Result<Target, String> {
    let shape = "give http(s)://host:port/v2/models/MODEL or http(s)://host:port/v2/models/MODEL/versions/V";
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        (None, None) => return Err(format!("{url:?} is not an http:// or https:// URL: {shape}")),
    };
    let (authority, path) = rest.split_once('/').ok_or_else(|| format!("{url:?} has no path: {shape}"))?;
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?}: the host is empty or carries credentials (use --remote-token-env)"));
    }
    let path = path.trim_end_matches('/');
    let parts: Vec<&str> = path.split('/').collect();
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    let ok = match parts.as_slice() {
        ["v2", "models", model] => valid(model),
        ["v2", "models", model, "versions", version] => valid(model) && valid(version),
        _ => false,
    };
    if !ok {
        return Err(format!("{url:?}: {shape} (names of letters, digits, '.', '_' and '-')"));
    }
    Ok(Target { authority: authority.to_string(), path: format!("/{path}"), tls })
}

/// The `Authorization` header line for a token variable, read now.
fn authorization(token_env: Option<&str>) -> std::result::Result<Option<String>, String> {
    let Some(var) = token_env else { return Ok(None) };
    match std::env::var(var) {
        Ok(token) if !token.trim().is_empty() => {
            if token.bytes().any(|b| b.is_ascii_control()) {
                return Err(format!("the token in ${var} holds control characters"));
            }
            Ok(Some(format!("Authorization: Bearer {}", token.trim())))
        }
        _ => Err(format!("the environment variable {var} (named by --remote-token-env) is not set")),
    }
}

/// What a remote model's requests carry: the input layout and datatype, the output asked for,
/// the encoding, and the features per row.
#[derive(Debug, Clone)]
struct Wire {
    layout: Layout,
    datatype: String,
    output: String,
    binary: bool,
    width: usize,
}

/// A remote model ready to call: its pooled connections and the request it sends.
pub(crate) struct RemoteModel {
    url: String,
    client: Arc<http::Client>,
    infer_path: String,
    /// Header lines sent with each request (the token's among them: never printed).
    headers: Vec<String>,
    wire: Wire,
    /// Second attempts, when registered with them.
    hedge: Option<hedge::Hedge>,
}

impl std::fmt::Debug for RemoteModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteModel").field("url", &self.url).field("wire", &self.wire).finish_non_exhaustive()
    }
}

impl RemoteModel {
    /// Connects lazily to a registered remote model (nothing is sent until the first call).
    pub fn open(spec: &RemoteSpec, features: &[String], output: &str) -> std::result::Result<RemoteModel, String> {
        let target = parse_url(&spec.url)?;
        let layout = match (&spec.input, spec.feature_rank) {
            (Some(name), _) => Layout::Single { name: name.clone() },
            (None, rank) => Layout::PerFeature { names: features.to_vec(), rank: usize::from(rank.unwrap_or(1)) },
        };
        let wire = Wire {
            layout,
            datatype: spec.datatype.clone(),
            output: output.to_string(),
            binary: spec.binary,
            width: features.len(),
        };
        let mut model = RemoteModel::build(&spec.url, &target, spec.token_env.as_deref(), wire)?;
        // A hedge URL implies hedging, even in a metadata file edited by hand.
        if spec.hedge || spec.hedge_url.is_some() {
            model.hedge = Some(match &spec.hedge_url {
                Some(url) => {
                    let other = parse_url(url)?;
                    let endpoint = http::Endpoint::resolve(&other.authority, other.tls)?;
                    let client = Arc::new(http::Client::new(endpoint, MAX_ANSWER_BYTES));
                    hedge::Hedge::new(client, format!("{}/infer", other.path), true)
                }
                None => hedge::Hedge::new(model.client.clone(), model.infer_path.clone(), false),
            });
        }
        Ok(model)
    }

    fn build(
        url: &str,
        target: &Target,
        token_env: Option<&str>,
        wire: Wire,
    ) -> std::result::Result<RemoteModel, String> {
        oip::check_input_datatype(&wire.datatype)?;
        let endpoint = http::Endpoint::resolve(&target.authority, target.tls)?;
        let mut headers = vec!["Content-Type: application/json".to_string()];
        headers.extend(authorization(token_env)?);
        Ok(RemoteModel {
            url: url.to_string(),
            client: Arc::new(http::Client::new(endpoint, MAX_ANSWER_BYTES)),
            infer_path: format!("{}/infer", target.path),
            headers,
            wire,
            hedge: None,
        })
    }

    /// The URL it was registered with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `rows` rows (`input`, row-major, `width` each) as one inference request answered
    /// before `deadline`; the declared output as float32.
    pub fn infer(&self, input: &[f32], rows: usize, deadline: Instant) -> std::result::Result<oip::Output, String> {
        let start = Instant::now();
        let wire = &self.wire;
        let request =
            oip::Request { layout: &wire.layout, datatype: &wire.datatype, output: &wire.output, binary: wire.binary };
        let (mut head, mut tail) = (String::with_capacity(64 + rows * wire.width * 12), Vec::new());
        request.encode(input, rows, wire.width, &mut head, &mut tail);
        let mut headers = self.headers.clone();
        let body = if wire.binary {
            headers.push(format!("Inference-Header-Content-Length: {}", head.len()));
            let mut body = head.into_bytes();
            body.extend_from_slice(&tail);
            body
        } else {
            head.into_bytes()
        };
        let response = match &self.hedge {
            None => {
                self.client.request("POST", &self.infer_path, &headers, &body, deadline).and_then(hedge::accepted)?
            }
            Some(h) => {
                let request =
                    hedge::Request { path: &self.infer_path, headers: &headers, body: &body, start, deadline };
                h.request(&self.client, &request)?
            }
        };
        let output = oip::decode(&response.body, response.inference_header_length, &wire.output, rows)?;
        if let Some(h) = &self.hedge {
            h.record(start.elapsed());
        }
        Ok(output)
    }

    fn get(&self, path: &str) -> std::result::Result<serde_json::Value, String> {
        let deadline = Instant::now() + REGISTRATION_TIMEOUT;
        let response = self.client.request("GET", path, &self.headers[1..], b"", deadline)?;
        if response.status != 200 {
            return Err(format!("GET {path}: HTTP {}: {}", response.status, error_text(&response.body)));
        }
        serde_json::from_slice(&response.body).map_err(|e| format!("GET {path}: not JSON: {e}"))
    }
}

/// What registration found: the spec to store, the output settled, and the probes' findings.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    pub spec: RemoteSpec,
    pub output: OutputSpec,
    /// The model's metadata as the server answered it (its sha256 is the version's fingerprint).
    pub metadata: Vec<u8>,
    /// The declared column's value on one row of zeros.
    pub value: f32,
    pub max_batch: Option<u32>,
    /// What registration noticed and decided, for the user.
    pub notes: Vec<String>,
}

/// Reads a remote model's metadata, settles its input layout and output against the declared
/// features and output, and probes it on one row of zeros and on two. `hedge`: hedged requests,
/// to a second URL or not (which is probed too, and must answer as the first).
pub(crate) fn register(
    model: &str,
    source: &RemoteSource,
    features: &[String],
    output: Option<&OutputSpec>,
    task: Task,
    hedge: Option<Option<&str>>,
) -> Result<Registered> {
    let fail = |reason: String| Error::ModelLoad {
        model: model.to_string(),
        reason: format!("remote {}: {reason}", source.url),
    };
    let target = parse_url(&source.url).map_err(|e| Error::Config(format!("model {model}: {e}")))?;
    for url in std::iter::once(source.url.as_str()).chain(hedge.flatten()) {
        let target = parse_url(url).map_err(|e| Error::Config(format!("model {model}: {e}")))?;
        if target.tls && !cfg!(feature = "remote-tls") {
            let why = conn::Security::tls("").err().unwrap_or_default();
            return Err(Error::Config(format!("model {model}: {url}: {why}")));
        }
    }
    if let Some(var) = &source.token_env {
        if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Error::Config(format!("model {model}: {var:?} is not an environment variable name")));
        }
    }
    let token_env = source.token_env.as_deref();
    // First with the metadata endpoint only, to read what the model declares.
    let metadata_only = Wire {
        layout: Layout::Single { name: String::new() },
        datatype: "FP32".into(),
        output: String::new(),
        binary: false,
        width: features.len(),
    };
    let probe = RemoteModel::build(&source.url, &target, token_env, metadata_only).map_err(fail)?;
    let raw = probe.get(&target.path).map_err(fail)?;
    let metadata = serde_json::to_vec(&raw).unwrap_or_default();
    let declared: oip::ModelMetadata =
        serde_json::from_value(raw).map_err(|e| fail(format!("its model metadata does not parse: {e}")))?;
    let binary = probe
        .get("/v2")
        .ok()
        .and_then(|v| serde_json::from_value::<oip::ServerMetadata>(v).ok())
        .is_some_and(|s| s.extensions.iter().any(|e| e == "binary_tensor_data"));
    let mut notes = Vec::new();

    // The input layout: one [rows, features] tensor, or one per feature named as the features.
    let (layout, datatype) = match declared.inputs.as_slice() {
        [] => {
            notes.push("the server lists no inputs: one FP32 input \"input-0\" of [rows, features] is sent".into());
            (Layout::Single { name: "input-0".into() }, "FP32".to_string())
        }
        [one] if features.len() != 1 || one.name != features[0] => {
            if let Some(&width) = one.shape.last().filter(|&&w| w > 0) {
                if one.shape.len() == 2 && width as usize != features.len() {
                    return Err(fail(format!(
                        "its input {:?} takes {width} features but {} were declared ({})",
                        one.name,
                        features.len(),
                        features.join(",")
                    )));
                }
            }
            if one.shape.len() > 2 {
                return Err(fail(format!(
                    "its input {:?} has shape {:?}; quorum sends [rows, features]",
                    one.name, one.shape
                )));
            }
            (Layout::Single { name: one.name.clone() }, one.datatype.clone())
        }
        inputs => {
            let mut names = Vec::with_capacity(features.len());
            for f in features {
                let Some(input) = inputs.iter().find(|i| &i.name == f) else {
                    let listed: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
                    return Err(fail(format!(
                        "it has {} inputs ({}) and none is named {f:?}: with several inputs, each is one feature named as \
                         the feature",
                        inputs.len(),
                        listed.join(", ")
                    )));
                };
                names.push(input);
            }
            if inputs.len() != features.len() {
                return Err(fail(format!(
                    "it has {} inputs but {} features were declared",
                    inputs.len(),
                    features.len()
                )));
            }
            let datatype = names[0].datatype.clone();
            if let Some(other) = names.iter().find(|i| i.datatype != datatype) {
                return Err(fail(format!("its inputs mix datatypes ({datatype} and {})", other.datatype)));
            }
            let rank = names[0].shape.len().clamp(1, 2);
            (Layout::PerFeature { names: features.to_vec(), rank }, datatype)
        }
    };
    let datatype = if datatype.is_empty() { "FP32".to_string() } else { datatype };
    oip::check_input_datatype(&datatype).map_err(fail)?;

    // The output: the declared one, or the only one listed.
    let mut output = match output {
        Some(o) => o.clone(),
        None => match declared.outputs.as_slice() {
            [one] => {
                notes.push(format!("picked output {:?}, the only one the server lists", one.name));
                OutputSpec { name: one.name.clone(), column: None, label: None }
            }
            [] => {
                return Err(fail(
                    "the server lists no outputs: pass --output NAME[:COLUMN] (for MLServer's sklearn runtime, \
                     predict_proba:1 for a classifier or predict for a regressor)"
                        .into(),
                ))
            }
            many => {
                let names: Vec<&str> = many.iter().map(|o| o.name.as_str()).collect();
                return Err(fail(format!(
                    "it has several outputs ({}): pass --output NAME[:COLUMN]",
                    names.join(", ")
                )));
            }
        },
    };
    if output.label.is_some() {
        return Err(fail(format!(
            "output {output}: a class label needs the model's labels, which the protocol does not carry; give the column \
             (for example {}:1)",
            output.name
        )));
    }
    if !declared.outputs.is_empty() && !declared.outputs.iter().any(|o| o.name == output.name) {
        let names: Vec<&str> = declared.outputs.iter().map(|o| o.name.as_str()).collect();
        return Err(fail(format!("it has no output {:?} (outputs: {})", output.name, names.join(", "))));
    }

    let spec = RemoteSpec {
        url: source.url.clone(),
        token_env: source.token_env.clone(),
        input: match &layout {
            Layout::Single { name } => Some(name.clone()),
            Layout::PerFeature { .. } => None,
        },
        feature_rank: match &layout {
            Layout::Single { .. } => None,
            Layout::PerFeature { rank, .. } => Some(*rank as u8),
        },
        datatype,
        binary,
        hedge: hedge.is_some(),
        hedge_url: hedge.flatten().map(str::to_string),
    };
    let model_run = RemoteModel::open(&spec, features, &output.name).map_err(fail)?;
    let probe_rows = |rows: usize| {
        let zeros = vec![0f32; rows * features.len()];
        model_run.infer(&zeros, rows, Instant::now() + REGISTRATION_TIMEOUT)
    };
    let one = probe_rows(1).map_err(|e| fail(format!("a probe inference on one row of zeros failed: {e}")))?;
    match (output.column, one.columns) {
        (Some(c), n) if c >= n => {
            return Err(fail(format!("output {:?} has {n} column(s); column {c} does not exist", output.name)))
        }
        (None, 2) if task == Task::Classification => {
            notes.push(format!(
                "output {:?} has 2 columns: column 1 (the positive class) is the prediction",
                output.name
            ));
            output.column = Some(1);
        }
        (None, n) if n > 1 => {
            return Err(fail(format!("output {:?} has {n} columns: pass --output {}:COLUMN", output.name, output.name)))
        }
        _ => {}
    }
    let value = one.values[output.column.unwrap_or(0)];
    if let Some(url) = &spec.hedge_url {
        let second = RemoteSpec { url: url.clone(), hedge: false, hedge_url: None, ..spec.clone() };
        let fail = |reason: String| Error::ModelLoad {
            model: model.to_string(),
            reason: format!("hedge URL {url}: {reason}"),
        };
        let answer = RemoteModel::open(&second, features, &output.name)
            .and_then(|m| m.infer(&vec![0f32; features.len()], 1, Instant::now() + REGISTRATION_TIMEOUT))
            .map_err(|e| fail(format!("a probe inference on one row of zeros failed: {e}")))?;
        let theirs = answer.values.get(output.column.unwrap_or(0)).copied().unwrap_or(f32::NAN);
        let agrees = (theirs - value).abs() <= 1e-4 * value.abs().max(1.0);
        if !agrees {
            return Err(fail(format!(
                "it answers {theirs} on a row of zeros where {} answers {value}: not the same model",
                source.url
            )));
        }
    }
    // Two rows: a server (or model) that cannot take batches is found here, not under load.
    let max_batch = match probe_rows(2) {
        Ok(_) => None,
        Err(why) => {
            notes.push(format!("a probe on two rows failed ({why}): requests carry one row each"));
            Some(1)
        }
    };
    if one.datatype != "FP32" {
        notes.push(format!("the server answers {}; converted to float32", one.datatype));
    }
    Ok(Registered { spec, output, metadata, value, max_batch, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_model_and_maybe_a_version_over_http_or_https() {
        let t = parse_url("http://127.0.0.1:8000/v2/models/deep/versions/3/").unwrap();
        assert_eq!((t.authority.as_str(), t.path.as_str()), ("127.0.0.1:8000", "/v2/models/deep/versions/3"));
        for bad in [
            "ftp://x/v2/models/m",
            "http://x/v1/models/m",
            "http://x/v2/models/m%20x",
            "http://user:pw@x/v2/models/m",
            "http://x/v2/models/m/versions",
            "http://x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let t = parse_url("https://x/v2/models/m").unwrap();
        assert_eq!((t.authority.as_str(), t.tls), ("x", true));
    }

    #[test]
    fn a_missing_token_variable_is_named_and_a_token_is_never_debug_printed() {
        assert!(authorization(Some("QUORUM_TEST_NO_SUCH_VAR")).unwrap_err().contains("QUORUM_TEST_NO_SUCH_VAR"));
        std::env::set_var("QUORUM_TEST_REMOTE_TOKEN", "s3cret-token");
        let spec = RemoteSpec {
            url: "http://127.0.0.1:9/v2/models/m".into(),
            token_env: Some("QUORUM_TEST_REMOTE_TOKEN".into()),
            input: Some("x".into()),
            feature_rank: None,
            datatype: "FP32".into(),
            binary: false,
            hedge: false,
            hedge_url: None,
        };
        let model = RemoteModel::open(&spec, &["a".into()], "y").unwrap();
        assert!(model.headers.iter().any(|h| h.contains("s3cret-token")));
        assert!(!format!("{model:?}").contains("s3cret"));
    }
}
