//! Ensembles of ONNX models inside your own process: weighted, tracked, adaptive predictions in
//! microseconds.
//!
//! A trading engine hands quorum market features; quorum asks its models (technical, fundamental,
//! sentiment, ...), combines their answers with weights that can follow each model's live accuracy,
//! and returns one [`Prediction`] with a confidence and every model's contribution. A model that fails
//! or runs late is skipped, replaced by its fallback or cut off by its circuit breaker; the
//! prediction says so instead of failing.
//!
//! ```
//! use quorum::{EnsembleConfig, Features, InferenceEngine, MemberSpec, ModelKind, ModelRegistration};
//!
//! # fn main() -> quorum::Result<()> {
//! # let home = tempfile::tempdir().map_err(|e| quorum::Error::io("tempdir", e))?;
//! // One engine per process over a home directory (registry, ensembles, state); clone it freely.
//! let engine = InferenceEngine::builder(home.path()).build()?;
//! engine.register_model(
//!     ModelRegistration::new("sentiment", "examples/models/sentiment.onnx",
//!                            ["vix", "vix_chg_1d", "vix_chg_5d", "vix_rel_20d", "vix_zscore_60d"])
//!         .with_kind(ModelKind::Sentiment),
//! )?;
//! engine.create_ensemble(EnsembleConfig::new("market", ["sentiment".parse::<MemberSpec>()?]))?;
//!
//! let features = Features::new()
//!     .with("vix", 13.5).with("vix_chg_1d", -0.02).with("vix_chg_5d", 0.05)
//!     .with("vix_rel_20d", 0.01).with("vix_zscore_60d", -0.4);
//! let prediction = engine.predict("market", &features)?;
//! assert!((0.0..=1.0).contains(&prediction.prediction)); // a probability: classification
//!
//! // Later, when the market has spoken (1.0: the day went up):
//! engine.record_outcome(prediction.request_id, 1.0)?;
//! # Ok(())
//! # }
//! ```
//!
//! # A guide, in the order you meet things
//!
//! 1. [`InferenceEngine`] ([`engine`]) over a home directory, built with [`EngineBuilder`]: how models
//!    are served ([`ModelOptions`]: [`replicas`], [`batching`], [`breaker`], timeouts), the prediction
//!    [`cache`], fusion and native executors ([`native`]), tracking and state.
//! 2. [`Registry`] ([`registry`]): versioned ONNX models, registered with a [`ModelRegistration`]
//!    (file, feature names, output, [`ModelKind`], [`Task`]) and described by [`ModelMetadata`].
//! 3. [`EnsembleConfig`] ([`ensemble`]): members ([`MemberSpec`]), weights, quorum (`min_members`),
//!    fallbacks and the combining [`strategy`]: voting, stacking and blending ([`meta`]), online
//!    weights that follow each member's losses ([`online`], [`adaptive`]), per-regime choices
//!    ([`regime`]).
//! 4. [`Features`] and [`Batch`] ([`features`]): named values for one request, or a row-major or
//!    columnar batch; non-finite values are refused or replaced per [`NonFinitePolicy`].
//! 5. [`Prediction`] and [`BatchPrediction`] ([`prediction`]): the value, the confidence, the label,
//!    every member's [`ModelContribution`], and whether the answer was degraded, cached or stale.
//! 6. [`Error`] ([`error`]): one error type; [`Error::code`] is the stable code the CLI, the HTTP
//!    server and the Python and Node packages report.
//! 7. Outcomes: [`InferenceEngine::record_outcome`] joins realised outcomes with predictions
//!    ([`tracking`]: accuracy, precision, recall, F1, drift), persisted by [`state`]; A/B
//!    [`experiment`]s between ensemble versions roll back on their own; [`alerts`] and [`telemetry`]
//!    watch the live metrics.
//! 8. [`Optimizer`] ([`optimizer`], [`quantize`], [`calibrate`]): INT8 and FP16 rewrites of a model,
//!    kept only when measured faster and within an accuracy threshold.
//! 9. Tools over recorded data: [`replay`]; the walk-forward backtest of every combining method is
//!    the `quorum-backtest` crate.
//!
//! Lower-level modules: [`runtime`] (finding and configuring ONNX Runtime), [`input_map`] and
//! [`input_type`] (models with several or non-float32 inputs), [`stats`] and [`units`].
//!
//! # ONNX Runtime
//!
//! quorum loads ONNX Runtime 1.30 to 1.32 at run time and never downloads it: from
//! [`RuntimeOptions`], `ORT_DYLIB_PATH`, or the `onnxruntime` wheel of a virtualenv (`$VIRTUAL_ENV`,
//! then `.venv/` in the working directory or a parent). `pip install onnxruntime==1.32.0` is enough.
//!
//! # Feature flags
//!
//! None is on by default: `cargo add quorum` gives the library alone.
//!
//! | Feature | What it adds |
//! |---|---|
//! | `ndarray` | Batches in and out as `ndarray` arrays (`EnsembleHandle::predict_array`), zero-copy. |
//! | `postgres` | PostgreSQL as the state store (`postgres://...`), shared by several processes. |
//! | `cuda` | ONNX Runtime's CUDA execution provider ([`ExecutionProvider`]); needs an ONNX Runtime built with it (`onnxruntime-gpu`). Implies `nvml`. |
//! | `tensorrt` | ONNX Runtime's TensorRT execution provider; implies `cuda`. |
//! | `nvml` | GPU utilisation and memory in the metrics, read through NVML at run time. |
//! | `gpu` | Native MLP plans on an NVIDIA GPU (`native::gpu`): CUDA, cuBLAS and NVRTC loaded at run time. |
//! | `remote-tls` | `https://` remote members (rustls, trusting `SSL_CERT_FILE` or the system's CA bundle). |
//!
//! The GPU features load their libraries at run time: they build, and their tests pass, on a machine
//! without CUDA; docs.rs documents every feature.
//!
//! The command line is the `quorum-cli` crate and the HTTP server the `quorum-server` crate.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
// Every fallible public function says which error codes it returns.
#![warn(clippy::missing_errors_doc)]
// Library code reports errors; tests, benches and examples may unwrap.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

// The table of contents, by layer, lowest first. There is no import loop among these modules; a few
// model-store types name what they configure higher up (an ensemble's strategy, regime and learner
// options; the runtime that checks a registration).

// Foundations: the one error type and small shared helpers.
pub mod error;
pub mod stats;
mod store;
pub mod telemetry;
pub mod units;

// Model store: ONNX files, their metadata and versions, ensembles' configurations.
mod batch_size;
pub mod ensemble;
mod exported;
pub mod features;
pub mod input_map;
pub mod input_type;
mod model_spec;
#[doc(no_inline)]
pub use quorum_onnx as onnx;
pub mod registry;

// Execution: ONNX Runtime, replica pools, batching queues, fusion, circuit breakers, the engine.
pub mod batching;
pub mod breaker;
pub mod cache;
pub mod engine;
mod fusion;
mod initializers;
pub mod native;
pub mod prediction;
pub mod remote;
pub mod replicas;
pub mod runtime;

// Combination: strategies (voting, stacking) and how confidence is defined.
pub mod strategy;

// Learning and tracking: online weights, meta-learners, regimes, outcome tracking, A/B experiments,
// persisted state.
pub mod adaptive;
pub mod experiment;
pub mod meta;
pub mod online;
pub mod regime;
pub mod state;
pub mod tracking;

// Optimisation: quantization rewrites, calibration, benchmarks and the optimizer's decision.
pub mod calibrate;
pub mod optimizer;
pub mod quantize;

// Operations: alert rules evaluated on the engine's live metrics.
pub mod alerts;

// Tools: replaying recorded data (the walk-forward backtest is the quorum-backtest crate).
pub mod replay;

pub use batching::BatchingOptions;
pub use breaker::{BreakerOptions, BreakerState, SlidingWindow};
pub use cache::{CacheOptions, CacheStats};
pub use engine::{
    AutoscaleSettings, CurrentWeights, EngineBuilder, EngineOptions, EnsembleHandle, Fault, FusionStatus,
    InferenceEngine, InferenceLogSetting, RegistryHandle, ResolvedRow, SharedStatus, TrackingSetting, TrackingTable,
};
pub use ensemble::{EnsembleConfig, EnsembleStore, MemberSpec};
pub use error::{Error, Result};
pub use experiment::{
    Arm, ExperimentConfig, ExperimentState, ExperimentStatus, Guardrails, Metric as ExperimentMetric,
};
pub use features::{Batch, Features, NonFinitePolicy};
pub use input_map::InputMap;
/// A model's declared inputs and outputs, as serving protocols describe them.
pub use onnx::{graph_io, GraphIo, TensorInfo};
pub use optimizer::{OptimizeOptions, OptimizeReport, Optimizer};
pub use prediction::{BatchPrediction, ExperimentArm, MemberRun, ModelContribution, Name, Prediction};
pub use registry::{
    check_version, Lineage, ModelKind, ModelMetadata, ModelRegistration, ModelSummary, OutputSpec, Registry,
    RemoteRegistration, Task, VersionSpec, MAX_VERSION,
};
pub use remote::{RemoteSource, RemoteSpec};
pub use replay::{ReplayOptions, ReplayReport};
pub use replicas::{LoadPolicy, ModelOptions, ReplicaStatus};
pub use runtime::{ExecutionProvider, ProviderFallback, Runtime, RuntimeOptions};
pub use state::{InferenceLogOptions, InferenceLogStats, PersistOptions, StateStore, StateUrl};
pub use stats::LatencyPercentiles;
/// The rule every name in a home follows (models, ensembles, datasets of tools built on quorum), and
/// the crash-safe write the stores use: exported for servers and tools that keep files in a home.
pub use store::{validate_name, write_atomic};
pub use strategy::{Combined, MajorityVote, SoftVote, Stacking, Strategy, StrategyKind};
pub use tracking::{
    DriftEvent, DriftOptions, EnsembleMetrics, GroupMetrics, Metrics, MetricsAccumulator, TrackedMetrics,
    TrackingOptions,
};

/// The repository README's examples run as doctests too (the crate docs above are the library's own
/// guide), in the repository only (`make test` sets the cfg): the published crate ships a README of
/// its own instead.
#[cfg(all(doctest, quorum_repo_readme))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The published crate's README, whose example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../docs/crate-README.md")]
pub struct CrateReadmeDoctests;
