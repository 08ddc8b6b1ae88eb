//! The on-disk model repository, laid out like Triton's:
//!
//! ```text
//! <home>/models/<name>/<version>/model.onnx
//! <home>/models/<name>/<version>/metadata.json
//! <home>/models/<name>/default            (optional: the default version, else the latest)
//! ```
//!
//! A version is published by writing it into a hidden temporary directory and renaming that directory
//! into place, so a reader in another process sees a version completely or not at all. Entries whose
//! names start with `.` are never listed.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ort::value::ValueType;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::input_map::InputMap;
use crate::input_type::InputType;
pub use crate::model_spec::{ModelKind, OutputSpec, Task};
use crate::runtime::Runtime;
use crate::store;

const MODEL_FILE: &str = "model.onnx";
const METADATA_FILE: &str = "metadata.json";
const DEFAULT_FILE: &str = "default";

/// Where a version came from (filled by the optimizer; empty for a plain registration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// The version it was derived from.
    pub parent_version: Option<u32>,
    /// How (`int8-dynamic`, `fp16`, ...).
    pub method: String,
    /// What the optimizer measured and decided (free-form JSON).
    #[serde(default)]
    pub details: BTreeMap<String, serde_json::Value>,
}

/// Everything quorum records about one model version (`metadata.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// The model's name.
    pub name: String,
    /// Its version (1, 2, ...).
    pub version: u32,
    /// What it looks at.
    pub kind: ModelKind,
    /// Classification or regression.
    pub task: Task,
    /// The model's input columns, in the order its input tensor expects them.
    pub features: Vec<String>,
    /// Which output holds the prediction.
    pub output: OutputSpec,
    /// The sha256 of the stored ONNX file, in hex (checked by `verify`).
    pub sha256: String,
    /// The stored file's size, in bytes.
    pub size_bytes: u64,
    /// When it was registered (RFC 3339 UTC).
    pub created_at: String,
    /// Free-form metadata given at registration, plus what registration found (ZipMap, input types, ...).
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Where the version came from, for one the optimizer registered.
    #[serde(default)]
    pub lineage: Option<Lineage>,
    /// The most rows one ONNX Runtime call of the model takes: its input's batch dimension when
    /// that is fixed (`torch.onnx.export` without `dynamic_axes` writes 1), or 1 when a free
    /// dimension failed on two rows at registration. `None`: any number. Every batch path splits
    /// rows into calls of this size (a fixed size above 1 gets its short last call filled up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<u32>,
    /// The element type the model's input takes; features are converted into it once per call
    /// (see [`InputType`]). Absent in the metadata for float32.
    #[serde(default, skip_serializing_if = "InputType::is_float32")]
    pub input_type: InputType,
    /// For a model served by another server: how it is reached. It has no ONNX file then; its
    /// `sha256` is that of the server's model metadata read at registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::remote::RemoteSpec>,
}

impl ModelMetadata {
    /// Parses and validates a `metadata.json` document.
    ///
    /// # Errors
    ///
    /// `json` when it does not parse; `config` or `invalid_name` when it is inconsistent.
    pub fn from_json(bytes: &[u8]) -> Result<ModelMetadata> {
        let meta: ModelMetadata = serde_json::from_slice(bytes).map_err(|e| Error::json("model metadata", e))?;
        meta.validate()?;
        Ok(meta)
    }

    fn validate(&self) -> Result<()> {
        store::validate_name("model name", &self.name)?;
        validate_version(self.version)?;
        validate_features(&self.name, &self.features)?;
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Config(format!("model {:?}: sha256 {:?} is not 64 hex digits", self.name, self.sha256)));
        }
        Ok(())
    }
}

/// The highest model or ensemble version: versions fit a signed 32-bit column (PostgreSQL's
/// `integer`) and are exact in a JavaScript number.
pub const MAX_VERSION: u32 = i32::MAX as u32;

fn validate_version(version: u32) -> Result<()> {
    check_version("model version", f64::from(version)).map(|_| ())
}

/// A version given as a number by a caller (a JavaScript number, a Python int): an integer from 1
/// to [`MAX_VERSION`], else `invalid_name`, never silently truncated or wrapped.
///
/// # Errors
///
/// `invalid_name` for a value that is not a whole number from 1 to [`MAX_VERSION`].
pub fn check_version(what: &'static str, value: f64) -> Result<u32> {
    let invalid = |reason| Error::InvalidName { what, value: value.to_string(), reason };
    if value.fract() != 0.0 || !value.is_finite() {
        return Err(invalid("a version is a whole number"));
    }
    if value < 1.0 {
        return Err(invalid("versions start at 1"));
    }
    if value > f64::from(MAX_VERSION) {
        return Err(invalid("versions end at 2147483647"));
    }
    Ok(value as u32)
}

/// The version after `last`, or `config` when `last` is the highest there can be.
pub(crate) fn next_version(what: &str, name: &str, last: u32) -> Result<u32> {
    if last >= MAX_VERSION {
        return Err(Error::Config(format!(
            "{what} {name:?} has reached the highest version ({MAX_VERSION}); register under a new name"
        )));
    }
    Ok(last + 1)
}

pub(crate) fn validate_features(model: &str, features: &[String]) -> Result<()> {
    if features.is_empty() {
        return Err(Error::Config(format!("model {model:?} declares no input features")));
    }
    let mut seen = std::collections::HashSet::new();
    for f in features {
        if f.is_empty() || f.chars().any(char::is_control) {
            return Err(Error::Config(format!(
                "model {model:?}: feature name {f:?} is empty or has control characters"
            )));
        }
        if !seen.insert(f.as_str()) {
            return Err(Error::Config(format!("model {model:?}: feature {f:?} is declared twice")));
        }
    }
    Ok(())
}

/// What to register: built with [`ModelRegistration::new`] and `with_*` setters.
#[derive(Debug, Clone)]
#[must_use]
pub struct ModelRegistration {
    name: String,
    file: PathBuf,
    features: Vec<String>,
    /// `None`: registration picks the obvious output (see [`ModelRegistration::with_output`]).
    output: Option<OutputSpec>,
    /// `None`: one `[batch, features]` input, or inputs named as the features.
    inputs: Option<InputMap>,
    kind: ModelKind,
    task: Task,
    version: Option<u32>,
    metadata: BTreeMap<String, serde_json::Value>,
    lineage: Option<Lineage>,
    max_bytes: u64,
    /// A model served by another server instead of a file.
    remote: Option<crate::remote::RemoteSource>,
    /// Hedged requests for a remote model: `Some(None)` to the same server, `Some(Some(url))` to a
    /// second one.
    hedge: Option<Option<String>>,
}

/// A remote model's registration as one document — what Python's `register_remote`, Node's
/// `registerRemote` and the command line hand over: `{name, url, features, token_env?, output?,
/// kind?, task?, version?, hedge?, hedge_url?}` (camelCase accepted), read and checked in one place.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteRegistration {
    /// The model's name in this registry.
    pub name: String,
    /// `http(s)://host:port/v2/models/MODEL[/versions/V]`.
    pub url: String,
    /// The features it takes, in order.
    pub features: Vec<String>,
    /// The environment variable holding the server's bearer token.
    #[serde(default, alias = "tokenEnv")]
    pub token_env: Option<String>,
    /// `name`, `name:column` or `name:CLASS`.
    #[serde(default)]
    pub output: Option<String>,
    /// technical, fundamental, sentiment or other.
    #[serde(default)]
    pub kind: Option<String>,
    /// classification or regression.
    #[serde(default)]
    pub task: Option<String>,
    /// An explicit version (a whole number from 1 to 2147483647).
    #[serde(default)]
    pub version: Option<f64>,
    /// Hedged requests (see [`ModelRegistration::with_hedge`]); implied by `hedge_url`.
    #[serde(default)]
    pub hedge: bool,
    /// A second server of the same model, where hedged requests go.
    #[serde(default, alias = "hedgeUrl")]
    pub hedge_url: Option<String>,
}

impl RemoteRegistration {
    /// Reads the document.
    ///
    /// # Errors
    /// [`Error::Json`] for a malformed document or an unknown field.
    pub fn from_json(value: serde_json::Value) -> Result<RemoteRegistration> {
        serde_json::from_value(value).map_err(|e| Error::json("remote registration", e))
    }

    /// The registration it describes.
    ///
    /// # Errors
    /// [`Error::Config`] or [`Error::InvalidName`] for an output, kind, task or version that does
    /// not parse.
    pub fn into_registration(self) -> Result<ModelRegistration> {
        let mut r = ModelRegistration::remote(self.name, self.url, self.token_env, self.features);
        if let Some(output) = self.output {
            r = r.with_output(output.parse()?);
        }
        if let Some(kind) = self.kind {
            r = r.with_kind(kind.parse()?);
        }
        if let Some(task) = self.task {
            r = r.with_task(task.parse()?);
        }
        if let Some(version) = self.version {
            r = r.with_version(check_version("version", version)?);
        }
        if self.hedge || self.hedge_url.is_some() {
            r = r.with_hedge(self.hedge_url);
        }
        Ok(r)
    }
}

/// The default limit on a model file's size: 2 GiB, protobuf's own limit on one ONNX file.
pub const DEFAULT_MAX_MODEL_BYTES: u64 = 2 << 30;

impl ModelRegistration {
    /// A classifier by default, whose prediction registration picks (see
    /// [`ModelRegistration::with_output`]).
    pub fn new(
        name: impl Into<String>,
        file: impl Into<PathBuf>,
        features: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        ModelRegistration {
            name: name.into(),
            file: file.into(),
            features: features.into_iter().map(Into::into).collect(),
            output: None,
            inputs: None,
            kind: ModelKind::Other,
            task: Task::Classification,
            version: None,
            metadata: BTreeMap::new(),
            lineage: None,
            max_bytes: DEFAULT_MAX_MODEL_BYTES,
            remote: None,
            hedge: None,
        }
    }

    /// A model served by another server over the Open Inference Protocol v2, at `url`
    /// (`http(s)://host:port/v2/models/MODEL[/versions/V]`). Registration reads the server's model
    /// metadata, checks it against the features and output, and probes it on one row of zeros and
    /// on two. `token_env` names the environment variable holding its bearer token: the name is
    /// stored, the token is read when the model loads and never written anywhere.
    pub fn remote(
        name: impl Into<String>,
        url: impl Into<String>,
        token_env: Option<String>,
        features: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let mut registration = ModelRegistration::new(name, PathBuf::new(), features);
        registration.remote = Some(crate::remote::RemoteSource { url: url.into(), token_env });
        registration
    }

    /// A remote model's requests hedged: one not answered by the model's recent 95th percentile
    /// of answer times goes out a second time, to `url` (a second server of the same model, which
    /// registration probes; a request that fails outright is tried there too) or, without one, to
    /// the same server on another connection. The first good answer wins. Registering a local
    /// file with it is an `Error::Config`.
    pub fn with_hedge(mut self, url: Option<String>) -> Self {
        self.hedge = Some(url);
        self
    }
    /// The largest file accepted, in bytes (default [`DEFAULT_MAX_MODEL_BYTES`]).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }
    /// The output holding the prediction. Without it registration picks: `probabilities:1`
    /// (sklearn-onnx's convention) when the model has it, else its only ZipMap (cut back to its
    /// probability tensor, the second class) or its only float output; otherwise the error lists
    /// the candidates. What it picked is in the metadata's `exported` note.
    pub fn with_output(mut self, output: OutputSpec) -> Self {
        self.output = Some(output);
        self
    }
    /// Which features feed which input, for a model with several inputs (see [`InputMap`]).
    /// Without it a model with several inputs (or one `[batch]` input) must name its inputs as
    /// the features. Either way the stored model takes one `[batch, features]` input; the map is
    /// in the metadata's `inputs` entry.
    pub fn with_inputs(mut self, inputs: InputMap) -> Self {
        self.inputs = Some(inputs);
        self
    }
    /// Sets what the model looks at (default `other`).
    pub fn with_kind(mut self, kind: ModelKind) -> Self {
        self.kind = kind;
        self
    }
    /// Sets the task (default classification).
    pub fn with_task(mut self, task: Task) -> Self {
        self.task = task;
        self
    }
    /// An explicit version; by default the next after the highest registered one.
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }
    /// Adds a free-form metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }
    /// Records where the version came from.
    pub fn with_lineage(mut self, lineage: Lineage) -> Self {
        self.lineage = Some(lineage);
        self
    }
}

/// One model name with its versions, as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSummary {
    /// The model's name.
    pub name: String,
    /// Its versions, oldest first.
    pub versions: Vec<u32>,
    /// The version used when none is named.
    pub default_version: u32,
    /// What the default version looks at.
    pub kind: ModelKind,
    /// The default version's task.
    pub task: Task,
}

/// Which version of a model: the default one or a fixed number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VersionSpec {
    /// The default version (which may change: ensembles follow it).
    #[default]
    Default,
    /// A fixed version.
    Exact(u32),
}

impl FromStr for VersionSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "" | "default" => Ok(VersionSpec::Default),
            n => match n.parse::<u32>() {
                Ok(v) if v > 0 => Ok(VersionSpec::Exact(v)),
                _ => Err(Error::InvalidName {
                    what: "model version",
                    value: n.to_string(),
                    reason: "expected \"default\" or a positive integer",
                }),
            },
        }
    }
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSpec::Default => f.write_str("default"),
            VersionSpec::Exact(v) => write!(f, "{v}"),
        }
    }
}

impl Serialize for VersionSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            VersionSpec::Default => s.serialize_str("default"),
            VersionSpec::Exact(v) => s.serialize_u32(*v),
        }
    }
}

impl<'de> Deserialize<'de> for VersionSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(0) => Err(serde::de::Error::custom("model versions start at 1")),
            Raw::Number(v) => Ok(VersionSpec::Exact(v)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A model repository rooted at `<home>/models`. Cheap to clone; safe to share across threads and
/// processes (all writes are atomic renames).
///
/// ```
/// use quorum::{ModelKind, ModelRegistration, Registry, Runtime, RuntimeOptions, Task, VersionSpec};
///
/// # fn main() -> quorum::Result<()> {
/// # let home = tempfile::tempdir().map_err(|e| quorum::Error::io("tempdir", e))?;
/// let registry = Registry::open(home.path())?;
/// let runtime = Runtime::new(RuntimeOptions::default())?; // ONNX Runtime checks each registration
/// let v1 = registry.register(&runtime, ModelRegistration::new("sentiment", "examples/models/sentiment.onnx",
///     ["vix", "vix_chg_1d", "vix_chg_5d", "vix_rel_20d", "vix_zscore_60d"]).with_kind(ModelKind::Sentiment))?;
/// assert_eq!((v1.version, v1.task), (1, Task::Classification));
/// assert_eq!(v1.output.to_string(), "probabilities:1"); // found in the model: P(class 1)
///
/// let v2 = registry.register(&runtime, ModelRegistration::new("sentiment", "examples/models/sentiment.onnx",
///     ["vix", "vix_chg_1d", "vix_chg_5d", "vix_rel_20d", "vix_zscore_60d"]))?;
/// assert_eq!(registry.versions("sentiment")?, [1, 2]);
/// registry.set_default("sentiment", 1)?;
/// assert_eq!(registry.resolve("sentiment", VersionSpec::Default)?.sha256, v2.sha256); // same file
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// Opens the registry under `home`. Nothing is created until a model is registered, so that
    /// reading a mistyped home does not make one; leftovers of killed writes are cleared here.
    ///
    /// # Errors
    ///
    /// `io` when the home exists but cannot be read.
    pub fn open(home: impl AsRef<Path>) -> Result<Registry> {
        let registry = Registry { root: home.as_ref().join("models") };
        registry.clear_leftovers();
        Ok(registry)
    }

    /// The directory the models live in (`<home>/models`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The quorum home this registry belongs to.
    pub fn home(&self) -> &Path {
        self.root.parent().unwrap_or(&self.root)
    }

    /// Removes the staging and trash folders (`.tmp-*`) that a registration or removal killed
    /// mid-way left behind, unless a live process of this machine is still writing them.
    fn clear_leftovers(&self) {
        let Ok(models) = fs::read_dir(&self.root) else {
            return;
        };
        store::clear_abandoned(&self.root);
        for model in models.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()) {
            store::clear_abandoned(&model.path());
        }
    }

    fn model_dir(&self, name: &str) -> Result<PathBuf> {
        store::validate_name("model name", name)?;
        Ok(self.root.join(name))
    }

    fn version_dir(&self, name: &str, version: u32) -> Result<PathBuf> {
        validate_version(version)?;
        Ok(self.model_dir(name)?.join(version.to_string()))
    }

    /// Copies the artifact in after checking that ONNX Runtime loads it, that it has one float input
    /// whose width matches the declared features, and that the declared output exists with a usable
    /// shape (one row of zeros is run through it). A remote model ([`ModelRegistration::remote`]) is
    /// checked the same way against its server's metadata and a probe inference.
    ///
    /// # Errors
    ///
    /// `invalid_name` for a bad name or version; `already_exists` for a version that exists; `io` when the file cannot
    /// be read or copied; `too_large` over the size limit; `model_load` when ONNX Runtime refuses it or its inputs do
    /// not match the features, or when a remote server cannot be reached or answers otherwise than declared;
    /// `output_shape` when its output is not what `output` says; `config` for an inconsistent registration.
    pub fn register(&self, runtime: &Runtime, registration: ModelRegistration) -> Result<ModelMetadata> {
        let r = registration;
        store::validate_name("model name", &r.name)?;
        validate_features(&r.name, &r.features)?;
        if let Some(source) = &r.remote {
            return self.register_remote(source.clone(), r);
        }
        if r.hedge.is_some() {
            return Err(Error::Config(format!("model {}: only a remote model's requests are hedged", r.name)));
        }
        let bytes = read_model_file(&r.file, r.max_bytes)?;
        let mut metadata = r.metadata;
        let mut notes = Vec::new();
        // Several inputs are joined into one over the declared features.
        let bytes = match crate::input_map::join(&bytes, &r.features, r.inputs.as_ref())
            .map_err(|reason| Error::ModelLoad { model: r.name.clone(), reason })?
        {
            Some(joined) => {
                metadata.insert("inputs".into(), serde_json::Value::String(joined.map.to_string()));
                notes.push(joined.note);
                joined.bytes
            }
            None => bytes,
        };
        // A ZipMap output is cut back to its probability tensor, a class label resolved to a column.
        let declared = match r.output {
            Some(OutputSpec { name, column, label }) => crate::exported::Declared { name, column, label, pick: false },
            None => {
                crate::exported::Declared { name: "probabilities".into(), column: Some(1), label: None, pick: true }
            }
        };
        let settled = crate::exported::settle(&bytes, &declared)
            .map_err(|reason| Error::ModelLoad { model: r.name.clone(), reason })?;
        let bytes = settled.bytes.unwrap_or(bytes);
        let crate::exported::Declared { name, column, label, .. } = settled.output;
        let output = OutputSpec { name, column, label };
        notes.extend(settled.note);
        if !notes.is_empty() {
            metadata.insert("exported".into(), serde_json::Value::String(notes.join("; ")));
        }
        let trial = check_model(runtime, &r.name, &bytes, &r.features, &output)?;
        trial.check_task(&r.name, r.task)?;

        let model_dir = self.model_dir(&r.name)?;
        store::create_dir_all(&model_dir)?;
        let meta = ModelMetadata {
            name: r.name.clone(),
            version: 0,
            kind: r.kind,
            task: r.task,
            features: r.features,
            output,
            sha256: sha256_hex(&bytes),
            size_bytes: bytes.len() as u64,
            created_at: store::now_rfc3339(),
            metadata,
            lineage: r.lineage,
            max_batch: trial.max_batch.map(|n| n as u32),
            input_type: trial.input_type,
            remote: None,
        };
        self.publish_next(&model_dir, meta, r.version, Some(&bytes))
    }

    /// [`Registry::register`] for a remote model: its server's metadata and probes instead of a file.
    fn register_remote(&self, source: crate::remote::RemoteSource, r: ModelRegistration) -> Result<ModelMetadata> {
        if !r.file.as_os_str().is_empty() || r.inputs.is_some() {
            return Err(Error::Config(format!(
                "model {}: a remote model has no file and takes its inputs as its server declares them",
                r.name
            )));
        }
        let found = crate::remote::register(
            &r.name,
            &source,
            &r.features,
            r.output.as_ref(),
            r.task,
            r.hedge.as_ref().map(Option::as_deref),
        )?;
        TrialRun { value: found.value, max_batch: None, input_type: InputType::Float32 }.check_task(&r.name, r.task)?;
        let mut metadata = r.metadata;
        if !found.notes.is_empty() {
            metadata.insert("remote".into(), serde_json::Value::String(found.notes.join("; ")));
        }
        let model_dir = self.model_dir(&r.name)?;
        store::create_dir_all(&model_dir)?;
        let meta = ModelMetadata {
            name: r.name.clone(),
            version: 0,
            kind: r.kind,
            task: r.task,
            features: r.features,
            output: found.output,
            sha256: sha256_hex(&found.metadata),
            size_bytes: 0,
            created_at: store::now_rfc3339(),
            metadata,
            lineage: r.lineage,
            max_batch: found.max_batch,
            input_type: InputType::Float32,
            remote: Some(found.spec),
        };
        self.publish_next(&model_dir, meta, r.version, None)
    }

    /// Publishes `meta` as version `version`, or as the next free one.
    fn publish_next(
        &self,
        model_dir: &Path,
        mut meta: ModelMetadata,
        version: Option<u32>,
        bytes: Option<&[u8]>,
    ) -> Result<ModelMetadata> {
        if let Some(v) = version {
            validate_version(v)?;
            meta.version = v;
            self.publish(model_dir, &meta, bytes)?;
            return Ok(meta);
        }
        // Another writer may take the version we picked between listing and renaming: pick again.
        for _ in 0..32 {
            meta.version = next_version("model", &meta.name, highest_numbered_entry(model_dir))?;
            match self.publish(model_dir, &meta, bytes) {
                Err(Error::AlreadyExists { .. }) => continue,
                other => return other.map(|()| meta),
            }
        }
        Err(Error::AlreadyExists {
            what: "model version",
            name: format!("{}@{} (32 attempts raced)", meta.name, meta.version),
        })
    }

    /// Writes the version into a hidden staging directory, then renames it into place.
    /// `bytes`: the ONNX file (none for a remote model).
    fn publish(&self, model_dir: &Path, meta: &ModelMetadata, bytes: Option<&[u8]>) -> Result<()> {
        let version = meta.version;
        let already = || Error::AlreadyExists { what: "model version", name: format!("{}@{version}", meta.name) };
        let final_dir = model_dir.join(version.to_string());
        if final_dir.exists() {
            return Err(already());
        }
        let staging = model_dir.join(store::temporary_name(&version.to_string()));
        let publish = || -> Result<()> {
            store::create_dir_all(&staging)?;
            if let Some(bytes) = bytes {
                store::write_synced(&staging.join(MODEL_FILE), bytes)?;
            }
            let json = serde_json::to_vec_pretty(meta).map_err(|e| Error::json("model metadata", e))?;
            store::write_synced(&staging.join(METADATA_FILE), &json)?;
            store::sync_dir(&staging);
            // rename(2) refuses to replace a non-empty directory: a concurrent registration of the
            // same version loses cleanly instead of mixing files.
            fs::rename(&staging, &final_dir).map_err(|e| {
                if final_dir.exists() {
                    already()
                } else {
                    Error::io(format!("publishing {}", final_dir.display()), e)
                }
            })?;
            store::sync_dir(model_dir);
            Ok(())
        };
        let published = publish();
        if published.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        published
    }

    /// Every registered model, by name.
    ///
    /// # Errors
    /// `not_found` when the home itself does not exist.
    pub fn list(&self) -> Result<Vec<ModelSummary>> {
        let Some(entries) = store::read_dir_in_home(&self.root)? else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| store::validate_name("model name", n).is_ok())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let versions = self.versions(&name)?;
            let Some(&latest) = versions.last() else {
                continue;
            };
            let default_version = self.default_version(&name)?;
            let meta = self.get(&name, latest)?;
            out.push(ModelSummary { name, versions, default_version, kind: meta.kind, task: meta.task });
        }
        Ok(out)
    }

    /// The published versions of `name`, ascending (empty when the model is unknown).
    ///
    /// # Errors
    ///
    /// `invalid_name` for a bad name; `io` when the registry cannot be read.
    pub fn versions(&self, name: &str) -> Result<Vec<u32>> {
        let dir = self.model_dir(name)?;
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut versions: Vec<u32> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
            .filter(|v| *v > 0 && dir.join(v.to_string()).join(METADATA_FILE).is_file())
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// The metadata of one version.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown model or version; `json` for a damaged `metadata.json`.
    pub fn get(&self, name: &str, version: u32) -> Result<ModelMetadata> {
        let path = self.version_dir(name, version)?.join(METADATA_FILE);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found("model version", format!("{name}@{version}")),
            _ => Error::io(format!("reading {}", path.display()), e),
        })?;
        let meta = ModelMetadata::from_json(&bytes)?;
        if meta.name != name || meta.version != version {
            return Err(Error::Config(format!(
                "{} describes {}@{}, not {name}@{version}",
                path.display(),
                meta.name,
                meta.version
            )));
        }
        Ok(meta)
    }

    /// The highest version of `name`.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown model.
    pub fn latest(&self, name: &str) -> Result<ModelMetadata> {
        let version = *self.versions(name)?.last().ok_or_else(|| Error::not_found("model", name))?;
        self.get(name, version)
    }

    /// The version set with [`Registry::set_default`], else the latest.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown model.
    pub fn default_version(&self, name: &str) -> Result<u32> {
        let path = self.model_dir(name)?.join(DEFAULT_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let version = text
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| Error::Config(format!("{} holds {:?}, not a version", path.display(), text.trim())))?;
                Ok(version)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(self.latest(name)?.version),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Resolves a [`VersionSpec`] to registered metadata.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown model or version.
    pub fn resolve(&self, name: &str, version: VersionSpec) -> Result<ModelMetadata> {
        match version {
            VersionSpec::Default => self.get(name, self.default_version(name)?),
            VersionSpec::Exact(v) => self.get(name, v),
        }
    }

    /// Makes `version` the one `default` resolves to.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown model or version; `io` when it cannot be written.
    pub fn set_default(&self, name: &str, version: u32) -> Result<()> {
        self.get(name, version)?;
        store::write_atomic(&self.model_dir(name)?.join(DEFAULT_FILE), format!("{version}\n").as_bytes())
    }

    /// Removes one version, or the whole model when `version` is `None`.
    ///
    /// This does not look at ensembles: [`crate::EnsembleStore::remove_model`], what the CLI and the
    /// bindings call, refuses while active ensembles use the model.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown model or version; `io` when it cannot be removed.
    pub fn remove(&self, name: &str, version: Option<u32>) -> Result<()> {
        let model_dir = self.model_dir(name)?;
        let (target, label) = match version {
            Some(v) => {
                self.get(name, v)?;
                (self.version_dir(name, v)?, format!("{name}@{v}"))
            }
            None => {
                if self.versions(name)?.is_empty() {
                    return Err(Error::not_found("model", name));
                }
                (model_dir.clone(), name.to_string())
            }
        };
        // Rename out of sight first: readers never see a half-deleted version.
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        let trash = parent.join(store::temporary_name("removed"));
        fs::rename(&target, &trash).map_err(|e| Error::io(format!("removing {label}"), e))?;
        store::sync_dir(&parent);
        let _ = fs::remove_dir_all(&trash);
        if let Some(v) = version {
            let default_path = model_dir.join(DEFAULT_FILE);
            let pointed = fs::read_to_string(&default_path).ok().and_then(|t| t.trim().parse::<u32>().ok());
            if pointed == Some(v) {
                let _ = fs::remove_file(&default_path);
            }
        }
        Ok(())
    }

    /// Path of a version's ONNX file.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown model or version.
    pub fn model_path(&self, name: &str, version: u32) -> Result<PathBuf> {
        Ok(self.version_dir(name, version)?.join(MODEL_FILE))
    }

    /// Reads a version's ONNX bytes and verifies them against the recorded sha256.
    ///
    /// # Errors
    ///
    /// `io` when the file cannot be read; `checksum_mismatch` when it changed since registration;
    /// `invalid_input` for a remote model, which has no file.
    pub fn read_verified(&self, meta: &ModelMetadata) -> Result<Vec<u8>> {
        if let Some(remote) = &meta.remote {
            return Err(Error::InvalidInput(format!(
                "model {}@{} is served remotely ({}): it has no ONNX file here",
                meta.name, meta.version, remote.url
            )));
        }
        let path = self.model_path(&meta.name, meta.version)?;
        let bytes = fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(&meta.sha256) {
            return Err(Error::ChecksumMismatch { path, expected: meta.sha256.clone(), actual });
        }
        Ok(bytes)
    }
}

/// Reads a model file: a regular file (not a device, a FIFO or a folder, which could be read
/// forever) of at most `max_bytes`, read no further than that even if it grows meanwhile.
///
/// # Errors
/// `invalid_input` for anything but a regular file; `too_large` over `max_bytes`; `io`.
pub fn read_model_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let context = || format!("reading model file {}", path.display());
    let file = fs::File::open(path).map_err(|e| Error::io(context(), e))?;
    let meta = file.metadata().map_err(|e| Error::io(context(), e))?;
    if !meta.is_file() {
        return Err(Error::InvalidInput(format!(
            "model file {} is not a regular file (a device, a pipe or a folder): give the path of an .onnx file",
            path.display()
        )));
    }
    let too_large =
        |size: String| Error::TooLarge { what: format!("model file {}", path.display()), size, limit: max_bytes };
    if meta.len() > max_bytes {
        return Err(too_large(format!("{} bytes", meta.len())));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| Error::io(context(), e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large("more, and it grew while read".into()));
    }
    Ok(bytes)
}

/// The highest number among the entries of `dir`, complete versions or not (0 when none).
fn highest_numbered_entry(dir: &Path) -> u32 {
    fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).max().unwrap_or(0))
        .unwrap_or(0)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads `bytes` in ONNX Runtime and checks them against the declared features and output.
pub(crate) fn check_model(
    runtime: &Runtime,
    name: &str,
    bytes: &[u8],
    features: &[String],
    output: &OutputSpec,
) -> Result<TrialRun> {
    let mut session = runtime.session(name, bytes, None)?;
    let load_error = |reason: String| Error::ModelLoad { model: name.to_string(), reason };
    let (input_width, input_type) = model_input(&session).map_err(load_error)?;
    if let Some(width) = input_width {
        if width != features.len() {
            return Err(load_error(format!(
                "its input takes {width} features but {} were declared ({})",
                features.len(),
                features.join(",")
            )));
        }
    }
    let output_names: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
    if !output_names.contains(&output.name) {
        return Err(load_error(format!("it has no output {:?} (outputs: {})", output.name, output_names.join(", "))));
    }
    // One row of zeros (as many as a fixed batch takes), then, when the batch is free, two rows:
    // a model that cannot take batches despite a free dimension is found here, not under load.
    let fixed = crate::batch_size::fixed_batch(&session);
    let trial = |session: &mut ort::session::Session, rows: usize| -> Result<f32> {
        let zeros = vec![0f32; rows * features.len()];
        let tensor = input_type.tensor(rows, features.len(), &zeros)?;
        let outputs = session.run(ort::inputs![tensor]).map_err(|e| {
            let what = if rows == 1 { "one row".to_string() } else { format!("{rows} rows") };
            load_error(format!("a trial run on {what} of zeros failed: {e}"))
        })?;
        let value = outputs
            .get(&output.name)
            .ok_or_else(|| load_error(format!("a trial run did not produce output {:?}", output.name)))?;
        read_output_column(name, value, output, rows).map(|column| column.get(0))
    };
    let value = trial(&mut session, fixed.unwrap_or(1))?;
    let max_batch = match fixed {
        Some(n) => Some(n),
        None => trial(&mut session, 2).err().map(|_| 1),
    };
    Ok(TrialRun { value, max_batch, input_type })
}

/// What a model answered to one row of zeros at registration, and the most rows it takes per call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrialRun {
    pub value: f32,
    pub max_batch: Option<usize>,
    pub input_type: InputType,
}

impl TrialRun {
    /// A classifier's declared output must be a probability (a regression's anything finite).
    pub fn check_task(self, model: &str, task: Task) -> Result<()> {
        if task == Task::Classification {
            check_probability(model, self.value, 0).map_err(|e| Error::ModelLoad {
                model: model.to_string(),
                reason: format!(
                    "{e}; register the probabilities output (--output NAME:CLASS) or the model as --task regression"
                ),
            })?;
        }
        Ok(())
    }
}

/// Rounding in a softmax may leave a probability this far outside [0, 1].
const PROBABILITY_SLACK: f32 = 1e-5;

/// `Ok` when `value` can be a classifier's probability; else `output_shape` naming it.
#[inline]
pub(crate) fn check_probability(model: &str, value: f32, row: usize) -> Result<()> {
    if is_probability(value) {
        return Ok(());
    }
    Err(Error::OutputShape {
        model: model.to_string(),
        expected: "a probability in [0, 1] (a classifier)".into(),
        found: format!("{value} in row {row}"),
    })
}

/// Whether a classifier's score is a probability (within the slack float arithmetic leaves).
#[inline]
pub(crate) fn is_probability(value: f32) -> bool {
    (-PROBABILITY_SLACK..=1.0 + PROBABILITY_SLACK).contains(&value)
}

/// The model's one input: its width (`None` when dynamic) and element type, for a
/// `[batch, width]` tensor of a type quorum feeds ([`InputType`]).
pub(crate) fn model_input(session: &ort::session::Session) -> std::result::Result<(Option<usize>, InputType), String> {
    let inputs = session.inputs();
    if inputs.len() != 1 {
        return Err(format!(
            "quorum runs models with exactly one input [batch, features]; this one has {} inputs ({}) \
             (registration joins several inputs named as the features, or mapped with --inputs)",
            inputs.len(),
            inputs.iter().map(|i| i.name().to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    let refusal = |what: String| {
        format!(
            "its input {:?} is {what}; quorum needs a [batch, features] tensor of float32, float64, float16 or \
             int64 (cast the data to float32 before exporting, e.g. to_onnx(model, X[:1].astype(numpy.float32)))",
            inputs[0].name()
        )
    };
    match inputs[0].dtype() {
        ValueType::Tensor { ty, shape, .. } if shape.len() == 2 => match InputType::of(*ty) {
            Some(input_type) => Ok(((shape[1] >= 0).then_some(shape[1] as usize), input_type)),
            None => Err(refusal(format!("a tensor of {ty:?}"))),
        },
        ValueType::Tensor { shape, .. } => Err(refusal(format!("a tensor of rank {}", shape.len()))),
        other => Err(refusal(format!("{other:?}"))),
    }
}

/// A view of column `output.column` of a `[rows, C]` float32 or float64 output (or of a `[rows]` /
/// `[rows, 1]` output without a column); any other shape or type is an [`Error::OutputShape`].
pub(crate) fn read_output_column<'v>(
    model: &str,
    value: &'v ort::value::DynValue,
    output: &OutputSpec,
    rows: usize,
) -> Result<OutputColumn<'v>> {
    let shape_error = |found: String| Error::OutputShape {
        model: model.to_string(),
        expected: match output.column {
            Some(c) => format!("float32 or float64 {} of shape [{rows}, >{c}]", output.name),
            None => format!("float32 or float64 {} of shape [{rows}] or [{rows}, 1]", output.name),
        },
        found,
    };
    let (shape, data) = match value.try_extract_tensor::<f32>() {
        Ok((shape, data)) => (shape, Values::F32(data)),
        Err(_) => match value.try_extract_tensor::<f64>() {
            Ok((shape, data)) => (shape, Values::F64(data)),
            Err(_) => return Err(shape_error(format!("{:?}", value.dtype()))),
        },
    };
    let dims: &[i64] = shape;
    let found = || format!("shape {dims:?}");
    let (stride, column) = match (dims, output.column) {
        ([n], None | Some(0)) if *n as usize == rows => (1, 0),
        ([n, c], None) if *n as usize == rows && *c == 1 => (1, 0),
        ([n, c], Some(col)) if *n as usize == rows && (col as i64) < *c => (*c as usize, col),
        _ => return Err(shape_error(found())),
    };
    Ok(OutputColumn { data, stride, column })
}

/// A strided view of one output column.
#[derive(Debug)]
pub(crate) struct OutputColumn<'v> {
    data: Values<'v>,
    stride: usize,
    column: usize,
}

/// An output's values: float32, or float64 (read as float32).
#[derive(Debug)]
enum Values<'v> {
    F32(&'v [f32]),
    F64(&'v [f64]),
}

impl OutputColumn<'_> {
    #[inline]
    pub fn get(&self, row: usize) -> f32 {
        let at = row * self.stride + self.column;
        match self.data {
            Values::F32(data) => data[at],
            Values::F64(data) => data[at] as f32,
        }
    }
}
