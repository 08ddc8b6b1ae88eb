//! [`RegistryHandle`]: a home's model registry with what its operations need — an ONNX Runtime to
//! check registrations, and the engine (when there is one) whose loaded ensembles follow a new
//! default version. What the Python and Node `Registry` classes wrap.

use std::path::Path;

use super::InferenceEngine;
use crate::ensemble::EnsembleStore;
use crate::error::Result;
use crate::registry::{ModelMetadata, ModelRegistration, ModelSummary, Registry, VersionSpec};
use crate::runtime::{Runtime, RuntimeOptions};

/// A registry on its own, or an engine's. Cheap to clone.
#[derive(Debug, Clone)]
pub enum RegistryHandle {
    /// The engine's registry: setting a default version hot-swaps the engine's loaded ensembles.
    Engine(InferenceEngine),
    /// A home opened without an engine.
    Standalone {
        /// The home's registry.
        registry: Registry,
        /// The ONNX Runtime that checks registrations.
        runtime: Runtime,
    },
}

impl RegistryHandle {
    /// Opens the registry of `home` without an engine.
    ///
    /// # Errors
    ///
    /// `runtime_unavailable` when ONNX Runtime cannot be loaded; `io` when the home cannot be opened.
    pub fn open(home: &Path, runtime: RuntimeOptions) -> Result<RegistryHandle> {
        Ok(RegistryHandle::Standalone { registry: Registry::open(home)?, runtime: Runtime::new(runtime)? })
    }

    /// The registry itself.
    pub fn registry(&self) -> &Registry {
        match self {
            RegistryHandle::Engine(engine) => engine.registry(),
            RegistryHandle::Standalone { registry, .. } => registry,
        }
    }

    /// See [`Registry::register`].
    ///
    /// # Errors
    ///
    /// As [`Registry::register`].
    pub fn register(&self, registration: ModelRegistration) -> Result<ModelMetadata> {
        let runtime = match self {
            RegistryHandle::Engine(engine) => engine.runtime(),
            RegistryHandle::Standalone { runtime, .. } => runtime,
        };
        self.registry().register(runtime, registration)
    }

    /// Every registered model with its versions.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) or [`Error::Json`](crate::Error::Json) when the registry cannot be read.
    pub fn list(&self) -> Result<Vec<ModelSummary>> {
        self.registry().list()
    }

    /// A model version's metadata.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) (code `not_found`) for an unknown model or version.
    pub fn show(&self, name: &str, version: VersionSpec) -> Result<ModelMetadata> {
        self.registry().resolve(name, version)
    }

    /// A model's versions, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) (code `not_found`) for an unknown model.
    pub fn versions(&self, name: &str) -> Result<Vec<u32>> {
        self.registry().versions(name)
    }

    /// See [`EnsembleStore::remove_model`]: refused while this home's ensembles use it, unless `force`.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown model or version; `in_use` while ensembles use it (without `force`).
    pub fn remove(&self, name: &str, version: Option<u32>, force: bool) -> Result<()> {
        let registry = self.registry();
        EnsembleStore::open(registry.home())?.remove_model(registry, name, version, force)
    }

    /// Makes `version` the model's default; through an engine, its loaded ensembles move onto it
    /// (see [`InferenceEngine::set_default_version`]). Returns the ensembles reloaded.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown model or version.
    pub fn set_default(&self, name: &str, version: u32) -> Result<Vec<String>> {
        match self {
            RegistryHandle::Engine(engine) => engine.set_default_version(name, version),
            RegistryHandle::Standalone { registry, .. } => registry.set_default(name, version).map(|()| Vec::new()),
        }
    }

    /// Checks a version's file against the sha256 recorded at registration (a remote model has
    /// none to check); returns its metadata.
    ///
    /// # Errors
    ///
    /// `not_found` for an unknown model or version; `checksum_mismatch` when the file was changed.
    pub fn verify(&self, name: &str, version: VersionSpec) -> Result<ModelMetadata> {
        let meta = self.registry().resolve(name, version)?;
        if meta.remote.is_none() {
            self.registry().read_verified(&meta)?;
        }
        Ok(meta)
    }
}
