#![doc = include_str!("../README.md")]
// Library code reports errors; tests, benches and examples may unwrap.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod adaptive;
pub mod backtest;
pub mod batching;
pub mod breaker;
pub mod cache;
pub mod calibrate;
mod chart;
pub mod engine;
pub mod ensemble;
pub mod error;
pub mod features;
mod fusion;
mod initializers;
pub mod meta;
pub mod online;
pub mod onnx;
pub mod optimizer;
pub mod persist;
pub mod quantize;
pub mod regime;
pub mod registry;
pub mod replay;
pub mod replicas;
pub mod runtime;
pub mod store;
pub mod strategy;
pub mod tracking;

pub use batching::BatchingOptions;
pub use breaker::{BreakerOptions, BreakerState, SlidingWindow};
pub use cache::{CacheOptions, CacheStats};
pub use engine::{
    AutoscaleSettings, BatchPrediction, EngineBuilder, EnsembleHandle, Fault, FusionStatus, InferenceEngine, MemberRun,
    ModelContribution, Prediction, ResolvedRow,
};
pub use ensemble::{EnsembleConfig, EnsembleStore, MemberSpec};
pub use error::{Error, Result};
pub use features::{Batch, Features, NonFinitePolicy};
pub use optimizer::{OptimizeOptions, OptimizeReport, Optimizer};
pub use persist::{PersistOptions, StateStore};
pub use registry::{
    Lineage, ModelKind, ModelMetadata, ModelRegistration, ModelSummary, OutputSpec, Registry, Task, VersionSpec,
};
pub use replay::{ReplayOptions, ReplayReport};
pub use replicas::{ExecutionProvider, LoadPolicy, ModelOptions, ProviderFallback, ReplicaStatus};
pub use runtime::{Runtime, RuntimeOptions};
pub use strategy::{Combined, MajorityVote, SoftVote, Stacking, Strategy, StrategyKind};
pub use tracking::{
    DriftEvent, DriftOptions, EnsembleMetrics, GroupMetrics, Metrics, MetricsAccumulator, TrackedMetrics,
    TrackingOptions,
};
