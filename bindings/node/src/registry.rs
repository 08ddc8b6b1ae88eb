//! `Registry`: the model registry of a quorum home, on its own or the one an engine uses.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::{guarded, to_json, ModelOptions, RemoteModelOptions};

/// Options of `new Registry(home, options)`.
#[derive(Debug)]
#[napi(object)]
pub struct RegistryOptions {
    /// Path of libonnxruntime (default: the one bundled in `onnxruntime-node`).
    pub ort_library: Option<String>,
}

/// The models of a quorum home: `<home>/models/<name>/<version>/`.
#[derive(Debug)]
#[napi(js_name = "Registry")]
pub struct JsRegistry {
    inner: quorum::RegistryHandle,
}

impl JsRegistry {
    pub fn of_engine(engine: &quorum::InferenceEngine) -> JsRegistry {
        JsRegistry { inner: engine.registry_handle() }
    }
}

#[napi]
impl JsRegistry {
    /// Opens (or creates) the registry of the quorum home `home`, without an engine.
    #[napi(constructor)]
    pub fn new(home: String, options: Option<RegistryOptions>) -> Result<Self> {
        let mut runtime = quorum::RuntimeOptions::default();
        if let Some(path) = options.and_then(|o| o.ort_library) {
            runtime = runtime.with_dylib_path(path);
        }
        Ok(JsRegistry { inner: guarded(|| quorum::RegistryHandle::open(std::path::Path::new(&home), runtime))? })
    }

    /// Copies a model into the registry as a new version (ONNX Runtime loads it and its inputs and
    /// output are checked first); returns its metadata.
    #[napi(ts_return_type = "ModelMetadata")]
    pub fn register(
        &self,
        name: String,
        file: String,
        features: Vec<String>,
        options: Option<ModelOptions>,
    ) -> Result<serde_json::Value> {
        let meta = guarded(|| {
            let mut r = quorum::ModelRegistration::new(name, file, features);
            if let Some(o) = options {
                if let Some(output) = o.output {
                    r = r.with_output(output.parse()?);
                }
                if let Some(inputs) = o.inputs {
                    r = r.with_inputs(inputs.parse()?);
                }
                if let Some(kind) = o.kind {
                    r = r.with_kind(kind.parse()?);
                }
                if let Some(task) = o.task {
                    r = r.with_task(task.parse()?);
                }
                if let Some(v) = o.version {
                    r = r.with_version(quorum::check_version("version", v)?);
                }
            }
            self.inner.register(r)
        })?;
        to_json(&meta)
    }

    /// Registers a model served by another server over the Open Inference Protocol v2 (Triton,
    /// KServe, MLServer, `quorum serve`) at `url`, after reading its metadata and probing it.
    #[napi(ts_return_type = "ModelMetadata")]
    pub fn register_remote(
        &self,
        name: String,
        url: String,
        features: Vec<String>,
        options: Option<RemoteModelOptions>,
    ) -> Result<serde_json::Value> {
        let o = options.unwrap_or(RemoteModelOptions {
            token_env: None,
            output: None,
            kind: None,
            task: None,
            version: None,
            hedge: None,
            hedge_url: None,
        });
        let meta = guarded(|| {
            let document = quorum::RemoteRegistration {
                name,
                url,
                features,
                token_env: o.token_env,
                output: o.output,
                kind: o.kind,
                task: o.task,
                version: o.version,
                hedge: o.hedge.unwrap_or(false),
                hedge_url: o.hedge_url,
            };
            self.inner.register(document.into_registration()?)
        })?;
        to_json(&meta)
    }

    /// Every registered model: name, versions, default version, kind, task.
    #[napi(ts_return_type = "ModelSummary[]")]
    pub fn list(&self) -> Result<serde_json::Value> {
        to_json(&guarded(|| self.inner.list())?)
    }

    /// A model's metadata: `name` (its default version) or `name@version`.
    #[napi(ts_return_type = "ModelMetadata")]
    pub fn show(&self, model: String) -> Result<serde_json::Value> {
        to_json(&guarded(|| {
            let spec: quorum::MemberSpec = model.parse()?;
            self.inner.show(&spec.model, spec.version)
        })?)
    }

    /// The model's versions, oldest first.
    #[napi]
    pub fn versions(&self, name: String) -> Result<Vec<u32>> {
        guarded(|| self.inner.versions(&name))
    }

    /// Removes one version, or (no version) the whole model. Throws `in_use`, naming them, when
    /// ensembles use it, unless `force`.
    #[napi]
    pub fn remove(&self, name: String, version: Option<f64>, force: Option<bool>) -> Result<()> {
        guarded(|| {
            let version = version.map(|v| quorum::check_version("version", v)).transpose()?;
            self.inner.remove(&name, version, force.unwrap_or(false))
        })
    }

    /// Makes `version` the model's default. Through an engine's registry, the engine's loaded
    /// ensembles move onto it at once (a hot swap); returns the ensembles reloaded.
    #[napi]
    pub fn set_default(&self, name: String, version: f64) -> Result<Vec<String>> {
        guarded(|| self.inner.set_default(&name, quorum::check_version("version", version)?))
    }

    /// Checks a model's file (`name` or `name@version`) against the sha256 recorded at registration;
    /// returns its metadata, or throws `checksum_mismatch`.
    #[napi(ts_return_type = "ModelMetadata")]
    pub fn verify(&self, model: String) -> Result<serde_json::Value> {
        to_json(&guarded(|| {
            let spec: quorum::MemberSpec = model.parse()?;
            self.inner.verify(&spec.model, spec.version)
        })?)
    }
}
