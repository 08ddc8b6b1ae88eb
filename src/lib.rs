#![doc = include_str!("../README.md")]
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
#[doc(hidden)] // the ONNX protobuf, public only for the optimizer's integration tests
pub mod onnx;
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

// Tools: replaying and backtesting recorded data.
pub mod backtest;
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
pub use prediction::{BatchPrediction, ExperimentArm, MemberRun, ModelContribution, Prediction};
pub use registry::{
    check_version, Lineage, ModelKind, ModelMetadata, ModelRegistration, ModelSummary, OutputSpec, Registry, Task,
    VersionSpec, MAX_VERSION,
};
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
