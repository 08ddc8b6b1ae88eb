//! `quorum.Registry`: the model registry of a quorum home, on its own or the one an engine uses.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::conversion::{from_python, guarded, to_py_err, to_python, version_spec, Version};

/// The models of a quorum home: `<home>/models/<name>/<version>/`. Thread-safe.
#[derive(Debug)]
#[pyclass(module = "quorum._quorum", frozen, subclass)]
pub struct Registry {
    inner: quorum::RegistryHandle,
}

impl Registry {
    pub fn of_engine(engine: &quorum::InferenceEngine) -> Registry {
        Registry { inner: engine.registry_handle() }
    }
}

#[pymethods]
impl Registry {
    #[new]
    #[pyo3(signature = (home, ort_library=None))]
    fn new(py: Python<'_>, home: std::path::PathBuf, ort_library: Option<std::path::PathBuf>) -> PyResult<Self> {
        let mut options = quorum::RuntimeOptions::default();
        if let Some(path) = ort_library {
            options = options.with_dylib_path(path);
        }
        let inner = guarded(py, || quorum::RegistryHandle::open(&home, options))?;
        Ok(Registry { inner })
    }

    /// Copies a model into the registry as a new version (ONNX Runtime loads it and its inputs and
    /// output are checked first); returns its metadata.
    /// `inputs` maps features to the inputs of a model with several (`"x1=a,b;x2=c,d"`); without
    /// it such a model's inputs must be named as the features.
    #[pyo3(signature = (name, file, features, output=None, kind="other", task="classification", version=None, inputs=None))]
    #[allow(clippy::too_many_arguments)] // mirrors the keyword arguments of the Python method
    fn register<'py>(
        &self,
        py: Python<'py>,
        name: String,
        file: std::path::PathBuf,
        features: Vec<String>,
        output: Option<&str>,
        kind: &str,
        task: &str,
        version: Option<Version>,
        inputs: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let parse = || -> quorum::Result<quorum::ModelRegistration> {
            let mut r =
                quorum::ModelRegistration::new(name, file, features).with_kind(kind.parse()?).with_task(task.parse()?);
            if let Some(output) = output {
                r = r.with_output(output.parse()?);
            }
            if let Some(inputs) = inputs {
                r = r.with_inputs(inputs.parse()?);
            }
            if let Some(v) = version {
                r = r.with_version(v.0);
            }
            Ok(r)
        };
        let registration = parse().map_err(to_py_err)?;
        let meta = guarded(py, || self.inner.register(registration))?;
        to_python(py, &meta)
    }

    /// Registers a model served by another server over the Open Inference Protocol v2 (Triton,
    /// KServe, MLServer, `quorum serve`) at `url`, after reading its metadata and probing it.
    /// Keyword options: `token_env` (the environment variable holding its bearer token; only the
    /// name is stored), `output`, `kind`, `task`, `version`, `hedge` (send late requests a second
    /// time) and `hedge_url` (a second server of the same model, where they go).
    #[pyo3(signature = (name, url, features, **options))]
    fn register_remote<'py>(
        &self,
        py: Python<'py>,
        name: String,
        url: String,
        features: Vec<String>,
        options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut document = match options {
            Some(options) => {
                from_python::<serde_json::Map<String, serde_json::Value>>(py, options.as_any(), "options")?
            }
            None => serde_json::Map::new(),
        };
        document.insert("name".into(), name.into());
        document.insert("url".into(), url.into());
        document.insert("features".into(), features.into());
        let registration = quorum::RemoteRegistration::from_json(document.into())
            .and_then(quorum::RemoteRegistration::into_registration)
            .map_err(to_py_err)?;
        let meta = guarded(py, || self.inner.register(registration))?;
        to_python(py, &meta)
    }

    /// Every registered model: name, versions, default version, kind, task.
    fn list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list = guarded(py, || self.inner.list())?;
        to_python(py, &list)
    }

    /// A model version's metadata (the default version when `version` is None).
    #[pyo3(signature = (name, version=None))]
    fn show<'py>(&self, py: Python<'py>, name: &str, version: Option<Version>) -> PyResult<Bound<'py, PyAny>> {
        let meta = guarded(py, || self.inner.show(name, version_spec(version)))?;
        to_python(py, &meta)
    }

    /// The model's versions, oldest first.
    fn versions(&self, py: Python<'_>, name: &str) -> PyResult<Vec<u32>> {
        guarded(py, || self.inner.versions(name))
    }

    /// Removes one version, or (`version` None) the whole model. Raises InUseError, naming them,
    /// when ensembles use it, unless `force`.
    #[pyo3(signature = (name, version=None, force=false))]
    fn remove(&self, py: Python<'_>, name: &str, version: Option<Version>, force: bool) -> PyResult<()> {
        guarded(py, || self.inner.remove(name, version.map(|v| v.0), force))
    }

    /// Makes `version` the model's default. Through an engine's registry, the engine's loaded
    /// ensembles move onto it at once (a hot swap); returns the ensembles reloaded.
    fn set_default(&self, py: Python<'_>, name: &str, version: Version) -> PyResult<Vec<String>> {
        guarded(py, || self.inner.set_default(name, version.0))
    }

    /// Checks a version's file against the sha256 recorded at registration; returns its metadata,
    /// or raises ChecksumMismatchError.
    #[pyo3(signature = (name, version=None))]
    fn verify<'py>(&self, py: Python<'py>, name: &str, version: Option<Version>) -> PyResult<Bound<'py, PyAny>> {
        let meta = guarded(py, || self.inner.verify(name, version_spec(version)))?;
        to_python(py, &meta)
    }

    fn __repr__(&self) -> String {
        format!("Registry(root={:?})", self.inner.registry().root())
    }
}
