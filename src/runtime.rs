//! ONNX Runtime: finding the shared library, threading, and pools of sessions.
//!
//! quorum links ONNX Runtime dynamically (ort's `load-dynamic`) and never downloads it. The library is
//! looked up, in order, at:
//! 1. the path given to [`RuntimeOptions::with_dylib_path`];
//! 2. `ORT_DYLIB_PATH`;
//! 3. the `onnxruntime` wheel of a virtualenv: `$VIRTUAL_ENV`, then `.venv/` in the working directory or
//!    any parent, then `.venv/` of the quorum source tree this crate was built from;
//! 4. the `onnxruntime-node` npm package under `node_modules/` in the working directory or any parent;
//! 5. `libonnxruntime.so` on the system's library path.
//!
//! A process can hold one ONNX Runtime: the first successful load wins and later calls reuse it.
//!
//! Threading: every session runs with one intra-op thread and no spinning, so a prediction runs on the
//! caller's thread and N concurrent callers use N cores, not N × (ORT pool) threads fighting over two.
//! The models quorum targets take microseconds per row, which is less than handing work to a thread
//! pool costs. The effect is measured by `cargo bench --bench ensemble` (`threads/*`); see README.md.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::initializers::SharedInitializers;

/// The command that installs a usable ONNX Runtime into the repository's virtualenv.
pub const INSTALL_HINT: &str = "install it with `python3 -m venv .venv && .venv/bin/pip install onnxruntime==1.32.0` \
(run `make venv` in the quorum repository), or point ORT_DYLIB_PATH at a libonnxruntime.so of version 1.30 to 1.32, \
e.g. .venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0";

/// How ONNX Runtime is loaded and how sessions are configured.
#[derive(Debug, Clone)]
#[must_use]
pub struct RuntimeOptions {
    dylib_path: Option<PathBuf>,
    intra_threads: usize,
    spinning: bool,
    sessions_per_model: usize,
    optimization: GraphOptimizationLevel,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        RuntimeOptions {
            dylib_path: None,
            intra_threads: 1,
            spinning: false,
            // One session per core lets every core run a prediction at once; more only costs memory.
            sessions_per_model: cores.clamp(1, 8),
            optimization: GraphOptimizationLevel::Level3,
        }
    }
}

impl RuntimeOptions {
    /// Load ONNX Runtime from this file instead of searching for it.
    pub fn with_dylib_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.dylib_path = Some(path.into());
        self
    }

    /// Intra-op threads per session (default 1: the caller's own thread).
    pub fn with_intra_threads(mut self, threads: usize) -> Self {
        self.intra_threads = threads;
        self
    }

    /// Whether idle intra-op threads spin waiting for work (default false).
    pub fn with_spinning(mut self, spinning: bool) -> Self {
        self.spinning = spinning;
        self
    }

    /// Sessions kept per loaded model; this many predictions can run one model at once (default: cores, at most 8).
    pub fn with_sessions_per_model(mut self, sessions: usize) -> Self {
        self.sessions_per_model = sessions;
        self
    }

    /// ONNX Runtime's graph optimisation level (default: all).
    pub fn with_optimization_level(mut self, level: GraphOptimizationLevel) -> Self {
        self.optimization = level;
        self
    }

    /// Sessions per model when the model options do not say (default 1).
    pub fn sessions_per_model(&self) -> usize {
        self.sessions_per_model
    }

    fn validate(&self) -> Result<()> {
        if self.intra_threads == 0 {
            return Err(Error::Config("intra_threads must be at least 1".into()));
        }
        if self.sessions_per_model == 0 {
            return Err(Error::Config("sessions_per_model must be at least 1".into()));
        }
        Ok(())
    }
}

/// A loaded ONNX Runtime plus the session settings quorum uses. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    environment: Environment,
    options: RuntimeOptions,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("options", &self.options).finish_non_exhaustive()
    }
}

static LOADED_FROM: OnceLock<PathBuf> = OnceLock::new();

/// ONNX Runtime allows one environment per process; every [`Runtime`] shares it.
fn environment() -> Result<Environment> {
    static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);
    let mut slot = ENVIRONMENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(env) = slot.as_ref() {
        return Ok(env.clone());
    }
    let env = ort::init()
        .with_name("quorum")
        .with_telemetry(false)
        .build()
        .map_err(|e| Error::RuntimeUnavailable(format!("creating the ONNX Runtime environment failed: {e}")))?;
    *slot = Some(env.clone());
    Ok(env)
}

impl Runtime {
    /// Loads ONNX Runtime (once per process) and prepares an environment.
    ///
    /// # Errors
    ///
    /// `runtime_unavailable` when the library cannot be found or loaded, or its version is outside 1.30 to 1.32;
    /// `config` for invalid options.
    pub fn new(options: RuntimeOptions) -> Result<Runtime> {
        options.validate()?;
        load_library(options.dylib_path.as_deref())?;
        Ok(Runtime { environment: environment()?, options })
    }

    /// The options it was created with.
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    /// The process-wide ONNX Runtime environment, for building sessions of your own beside quorum's.
    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    /// ONNX Runtime's build string (it names the release, e.g. `git-branch=rel-1.32.0`).
    pub fn build_info(&self) -> &'static str {
        ort::info()
    }

    /// Where the ONNX Runtime library in use was loaded from.
    pub fn library_path() -> Option<&'static Path> {
        LOADED_FROM.get().map(PathBuf::as_path)
    }

    /// Builds one session on `bytes` with quorum's threading settings, on the CPU, using `shared`
    /// weights (one copy for every replica of the model) instead of its own when given.
    pub(crate) fn session(&self, model: &str, bytes: &[u8], shared: Option<&SharedInitializers>) -> Result<Session> {
        self.session_on(model, bytes, shared, &ExecutionProvider::Cpu, ProviderFallback::Fail).map(|(s, _)| s)
    }

    /// [`Runtime::session`] on `provider`. When the provider cannot be registered (the loaded ONNX
    /// Runtime lacks it, or no device), `fallback` decides: run on the CPU and say why (the second
    /// value), or fail with [`Error::ModelLoad`].
    pub(crate) fn session_on(
        &self,
        model: &str,
        bytes: &[u8],
        shared: Option<&SharedInitializers>,
        provider: &ExecutionProvider,
        fallback: ProviderFallback,
    ) -> Result<(Session, Option<String>)> {
        let load_error = |reason: String| Error::ModelLoad { model: model.to_string(), reason };
        let options_error = |e: ort::Error<SessionBuilder>| load_error(format!("session options: {e}"));
        let mut builder = self.configured_builder().map_err(|e| load_error(format!("session options: {e}")))?;
        if let Some(shared) = shared.filter(|s| !s.values.is_empty()) {
            // A prepacked weight is a private copy: off, so the shared one is what runs.
            builder = builder.with_prepacking(false).map_err(options_error)?;
            for (name, value) in &shared.values {
                builder = builder.with_initializer(name, Arc::clone(value)).map_err(options_error)?;
            }
        }
        let mut fell_back = None;
        match provider.dispatch() {
            Ok(dispatch) if dispatch.is_empty() => {}
            Ok(dispatch) => match builder.with_execution_providers(&dispatch) {
                Ok(b) => builder = b,
                Err(e) => {
                    let reason = format!("the {} execution provider is unavailable: {e}", provider.name());
                    if fallback == ProviderFallback::Fail {
                        return Err(load_error(reason));
                    }
                    fell_back = Some(reason);
                    builder = e.recover();
                }
            },
            Err(reason) if fallback == ProviderFallback::Fail => return Err(load_error(reason)),
            Err(reason) => fell_back = Some(reason),
        }
        let session = builder.commit_from_memory(bytes).map_err(|e| load_error(e.to_string()))?;
        Ok((session, fell_back))
    }

    /// Applies ONNX Runtime's graph optimisations up to `level` to `bytes` and saves the result at `path`.
    pub(crate) fn save_optimized(&self, bytes: &[u8], path: &Path, level: GraphOptimizationLevel) -> Result<()> {
        let optimize_error =
            |reason: String| Error::Optimize(format!("ONNX Runtime's graph optimisation failed: {reason}"));
        let text = |e: ort::Error<SessionBuilder>| optimize_error(e.to_string());
        let builder = self.configured_builder().map_err(optimize_error)?;
        let builder = builder.with_optimization_level(level).map_err(text)?;
        builder
            .with_optimized_model_path(path)
            .map_err(text)?
            .commit_from_memory(bytes)
            .map_err(|e| optimize_error(e.to_string()))?;
        Ok(())
    }

    fn configured_builder(&self) -> std::result::Result<SessionBuilder, String> {
        let o = &self.options;
        let text = |e: ort::Error<SessionBuilder>| e.to_string();
        let builder = Session::builder(&self.environment).map_err(|e| e.to_string())?;
        builder
            .with_intra_threads(o.intra_threads)
            .map_err(text)?
            .with_inter_threads(1)
            .map_err(text)?
            .with_intra_op_spinning(o.spinning)
            .map_err(text)?
            .with_inter_op_spinning(o.spinning)
            .map_err(text)?
            .with_optimization_level(o.optimization)
            .map_err(text)
    }
}

fn load_library(explicit: Option<&Path>) -> Result<()> {
    if let Some(loaded) = LOADED_FROM.get() {
        return match explicit {
            Some(wanted) if wanted != loaded => Err(Error::Config(format!(
                "ONNX Runtime is already loaded from {} in this process; it cannot switch to {}",
                loaded.display(),
                wanted.display()
            ))),
            _ => Ok(()),
        };
    }
    let candidates = candidate_paths(explicit);
    let mut tried = Vec::new();
    for path in candidates {
        if path.is_absolute() && !path.exists() {
            tried.push(format!("{} (absent)", path.display()));
            continue;
        }
        match ort::init_from(&path) {
            Ok(_) => {
                let _ = LOADED_FROM.set(path);
                return Ok(());
            }
            Err(e) => {
                // An explicit choice that fails is an error, not a reason to silently pick another library.
                if explicit.is_some() || std::env::var_os("ORT_DYLIB_PATH").is_some_and(|v| !v.is_empty()) {
                    return Err(Error::RuntimeUnavailable(format!("{e}; {INSTALL_HINT}")));
                }
                tried.push(format!("{} ({e})", path.display()));
            }
        }
    }
    Err(Error::RuntimeUnavailable(format!("no libonnxruntime found (tried: {}); {INSTALL_HINT}", tried.join("; "))))
}

fn candidate_paths(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_path_buf()];
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(path)];
    }
    let mut found = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        found.extend(wheel_library(Path::new(&venv)));
    }
    let cwd = std::env::current_dir().ok();
    for dir in cwd.iter().flat_map(|d| d.ancestors()) {
        found.extend(wheel_library(&dir.join(".venv")));
    }
    found.extend(wheel_library(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv")));
    for dir in cwd.iter().flat_map(|d| d.ancestors()) {
        found.extend(node_library(&dir.join("node_modules").join("onnxruntime-node")));
    }
    found.push(PathBuf::from(format!("{}onnxruntime{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)));
    found
}

/// `<venv>/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.<version>`
fn wheel_library(venv: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for python in read_dir_sorted(&venv.join("lib")) {
        let capi = python.join("site-packages").join("onnxruntime").join("capi");
        found.extend(read_dir_sorted(&capi).into_iter().filter(|p| {
            file_name_starts(p, "libonnxruntime.so.")
                || file_name_starts(p, "libonnxruntime.") && p.extension().is_some_and(|e| e == "dylib")
        }));
    }
    found
}

/// `onnxruntime-node/bin/napi-v*/<os>/<arch>/libonnxruntime.so.1`
fn node_library(package: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let (os, arch) = (std::env::consts::OS, node_arch());
    for napi in read_dir_sorted(&package.join("bin")) {
        let dir = napi.join(os).join(arch);
        found.extend(read_dir_sorted(&dir).into_iter().filter(|p| file_name_starts(p, "libonnxruntime.so")));
    }
    found
}

fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn file_name_starts(path: &Path, prefix: &str) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix))
}

fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    // Newest version last in name order; prefer it.
    entries.sort();
    entries.reverse();
    entries
}

/// Where a model's sessions run. GPU providers need an ONNX Runtime built with them (PyPI's
/// `onnxruntime-gpu`, for instance); quorum's cargo features `cuda` / `tensorrt` are only needed when
/// ort itself provides the library.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum ExecutionProvider {
    /// ONNX Runtime's CPU provider (the default).
    #[default]
    Cpu,
    /// NVIDIA CUDA (feature `cuda`, an ONNX Runtime built with it).
    Cuda {
        /// The GPU's index.
        #[serde(default)]
        device_id: i32,
    },
    /// TensorRT, with CUDA behind it for the nodes TensorRT does not take.
    TensorRt {
        /// The GPU's index.
        #[serde(default)]
        device_id: i32,
        /// Let TensorRT use float16 kernels.
        #[serde(default)]
        fp16: bool,
        /// Let TensorRT use INT8 kernels (needs calibration tables).
        #[serde(default)]
        int8: bool,
        /// Where built engines are cached (rebuilding one takes seconds to minutes).
        #[serde(default)]
        engine_cache: Option<std::path::PathBuf>,
    },
}

impl ExecutionProvider {
    /// `cpu`, `cuda` or `tensorrt`.
    pub fn name(&self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "cpu",
            ExecutionProvider::Cuda { .. } => "cuda",
            ExecutionProvider::TensorRt { .. } => "tensorrt",
        }
    }

    /// Whether the provider runs on a GPU.
    pub fn is_gpu(&self) -> bool {
        !matches!(self, ExecutionProvider::Cpu)
    }

    /// ort's registrations, failing loudly (the caller decides about falling back); an error when
    /// this build of quorum lacks the provider's cargo feature.
    pub(crate) fn dispatch(&self) -> std::result::Result<Vec<ort::ep::ExecutionProviderDispatch>, String> {
        match self {
            ExecutionProvider::Cpu => Ok(Vec::new()),
            #[cfg(feature = "cuda")]
            ExecutionProvider::Cuda { device_id } => {
                Ok(vec![ort::ep::CUDA::default().with_device_id(*device_id).build().error_on_failure()])
            }
            #[cfg(all(feature = "tensorrt", feature = "cuda"))]
            ExecutionProvider::TensorRt { device_id, fp16, int8, engine_cache } => {
                let mut trt = ort::ep::TensorRT::default().with_device_id(*device_id).with_fp16(*fp16).with_int8(*int8);
                if let Some(dir) = engine_cache {
                    trt = trt.with_engine_cache(true).with_engine_cache_path(dir.display());
                }
                Ok(vec![
                    trt.build().error_on_failure(),
                    ort::ep::CUDA::default().with_device_id(*device_id).build().error_on_failure(),
                ])
            }
            #[allow(unreachable_patterns)]
            other => Err(format!(
                "this build of quorum has no {} support (build it with the cargo feature `{}`)",
                other.name(),
                if matches!(other, ExecutionProvider::TensorRt { .. }) { "tensorrt" } else { "cuda" }
            )),
        }
    }
}

/// What happens when a model's execution provider cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderFallback {
    /// Run on the CPU; the model's status says so and why.
    #[default]
    Cpu,
    /// Refuse to load the model.
    Fail,
}
