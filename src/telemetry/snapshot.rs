//! One reading of the engine's live figures (what alert conditions are computed from): cumulative
//! counts and histograms, which a later reading minus an earlier one turns into a window.

use std::time::Instant;

use super::{GpuReading, HistogramSnapshot, ProcessStats};

/// The engine's figures at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken.
    pub at: Instant,
    /// One per ensemble served.
    pub ensembles: Vec<EnsembleReading>,
    /// One per model name (its loaded versions summed).
    pub models: Vec<ModelReading>,
    /// The process's CPU, memory, files and threads.
    pub process: ProcessStats,
    /// GPU utilisation (0–1) per device name; empty when no GPU provider is configured or NVML does
    /// not answer.
    pub gpus: Vec<GpuReading>,
    /// Logical CPUs available to the process (for CPU use as a share).
    pub cpus: usize,
}

/// One ensemble's figures in a [`Snapshot`].
#[derive(Debug, Clone)]
pub struct EnsembleReading {
    /// The ensemble's name.
    pub name: String,
    /// Requests served since start.
    pub requests: u64,
    /// Requests that failed since start.
    pub errors: u64,
    /// Request latency in nanoseconds ([`super::LATENCY_BOUNDS_NS`]).
    pub duration: HistogramSnapshot,
    /// Tracked accuracy over the count window, and the outcomes in it.
    pub accuracy: Option<f64>,
    /// See `accuracy`.
    pub window_outcomes: u64,
    /// Each member's tracked accuracy over the count window.
    pub members: Vec<(String, Option<f64>)>,
}

/// One model's figures in a [`Snapshot`].
#[derive(Debug, Clone)]
pub struct ModelReading {
    /// The model's name.
    pub name: String,
    /// Calls since start (every loaded version).
    pub calls: u64,
    /// Calls that failed since start.
    pub errors: u64,
}
