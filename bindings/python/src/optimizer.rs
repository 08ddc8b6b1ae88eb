//! `quorum.Optimizer`: benchmarks, optimizes and quantizes models of an engine's registry.

use pyo3::prelude::*;

use crate::conversion::{guarded, to_py_err, to_python, version_spec, Version};
use crate::engine::InferenceEngine;

/// Measures and rewrites models: benchmark, optimize (candidates judged on data, the winner
/// registered as a new version), quantize (one rewrite of one file).
#[derive(Debug)]
#[pyclass(module = "quorum._quorum", frozen)]
pub struct Optimizer {
    inner: quorum::Optimizer,
}

#[pymethods]
impl Optimizer {
    #[new]
    fn new(engine: PyRef<'_, InferenceEngine>) -> Self {
        Optimizer { inner: quorum::Optimizer::new(engine.core()) }
    }

    /// Latency at batch 1/8/64/512, throughput, size, session memory and (with `outcome`) accuracy of
    /// a registered model on a CSV file.
    #[pyo3(signature = (model, data, outcome=None, version=None))]
    fn benchmark<'py>(
        &self,
        py: Python<'py>,
        model: &str,
        data: std::path::PathBuf,
        outcome: Option<String>,
        version: Option<Version>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let bench = guarded(py, || self.inner.benchmark(model, version_spec(version), &data, outcome.as_deref()))?;
        to_python(py, &bench)
    }

    /// Builds INT8 / optimised candidates of a registered model and measures its native plan,
    /// benchmarks them on a CSV file and registers the fastest one within `accuracy_threshold` as a
    /// new version (or keeps the original; a native winner registers nothing, `chosen.registered`
    /// is false). Returns the report: `candidates`, `chosen`, `performance_improvement`,
    /// `deployment_ready`.
    #[pyo3(signature = (model, data, outcome, accuracy_threshold=None, methods=None, target_latency_ms=None, version=None, batch_sizes=None))]
    #[allow(clippy::too_many_arguments)] // mirrors the keyword arguments of the Python method
    fn optimize<'py>(
        &self,
        py: Python<'py>,
        model: &str,
        data: std::path::PathBuf,
        outcome: &str,
        accuracy_threshold: Option<f64>,
        methods: Option<Vec<String>>,
        target_latency_ms: Option<f64>,
        version: Option<Version>,
        batch_sizes: Option<std::collections::BTreeMap<usize, f64>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let document = serde_json::json!({
            "accuracy_threshold": accuracy_threshold,
            "methods": methods,
            "target_latency_ms": target_latency_ms,
            "batch_sizes": batch_sizes,
        });
        let options = quorum::OptimizeOptions::from_json(document).map_err(to_py_err)?;
        let report = guarded(py, || self.inner.optimize(model, version_spec(version), &data, outcome, &options))?;
        to_python(py, &report)
    }

    /// Rewrites the ONNX file `file` with one method into `out` (int8-dynamic,
    /// int8-dynamic-per-channel, int8-static-minmax / -percentile / -entropy with `data` and
    /// `features` to calibrate on, fp16). Returns `out`, `bytes` and the per-node report.
    #[pyo3(signature = (file, out, method, per_channel=false, data=None, features=None))]
    #[allow(clippy::too_many_arguments)] // mirrors the keyword arguments of the Python method
    fn quantize<'py>(
        &self,
        py: Python<'py>,
        file: std::path::PathBuf,
        out: std::path::PathBuf,
        method: &str,
        per_channel: bool,
        data: Option<std::path::PathBuf>,
        features: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let options = quorum::optimizer::QuantizeOptions {
            method: method.parse().map_err(to_py_err)?,
            per_channel,
            calibration: data.map(|d| (d, features.unwrap_or_default())),
        };
        let report = guarded(py, || self.inner.quantize(&file, &out, &options))?;
        to_python(py, &report)
    }
}
