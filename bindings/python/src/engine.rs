//! `quorum.InferenceEngine`, `Prediction` and `BatchPrediction`: thin wrappers over the core engine.

use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::conversion::{from_python, guarded, to_py_err, to_python, Version};
use crate::registry::Registry;

/// An engine over a quorum home. Thread-safe: share one per process; predictions release the GIL.
#[derive(Debug)]
#[pyclass(module = "quorum._quorum", frozen, subclass)]
pub struct InferenceEngine {
    inner: quorum::InferenceEngine,
}

impl InferenceEngine {
    /// The core engine, for the other classes of this module.
    pub fn core(&self) -> &quorum::InferenceEngine {
        &self.inner
    }
}

#[pymethods]
impl InferenceEngine {
    #[new]
    #[pyo3(signature = (home, ort_library=None, tracking=None, persistence=true, sessions_per_model=None, synchronous_refits=false, cache_capacity=None, cache_ttl_ms=None, default_model=None, models=None, memory_budget_bytes=None, fusion=true, state=None, inference_log=None, native=true))]
    #[allow(clippy::too_many_arguments)] // mirrors the keyword arguments of the Python constructor
    fn new(
        py: Python<'_>,
        home: std::path::PathBuf,
        ort_library: Option<std::path::PathBuf>,
        tracking: Option<Bound<'_, PyAny>>,
        persistence: bool,
        sessions_per_model: Option<usize>,
        synchronous_refits: bool,
        cache_capacity: Option<usize>,
        cache_ttl_ms: Option<f64>,
        default_model: Option<Bound<'_, PyAny>>,
        models: Option<Bound<'_, PyAny>>,
        memory_budget_bytes: Option<u64>,
        fusion: bool,
        state: Option<String>,
        inference_log: Option<Bound<'_, PyAny>>,
        native: bool,
    ) -> PyResult<Self> {
        // The keyword arguments as the core's options document: validated there, once, for every
        // language.
        let json = |value: Option<Bound<'_, PyAny>>| -> PyResult<serde_json::Value> {
            value.map_or(Ok(serde_json::Value::Null), |v| from_python(py, &v, "engine options"))
        };
        let mut document = serde_json::json!({
            "ort_library": ort_library,
            "tracking": json(tracking)?,
            "persistence": persistence,
            "sessions_per_model": sessions_per_model,
            "synchronous_refits": synchronous_refits,
            "cache_capacity": cache_capacity,
            "cache_ttl_ms": cache_ttl_ms,
            "default_model": json(default_model)?,
            "memory_budget_bytes": memory_budget_bytes,
            "fusion": fusion,
            "native": native,
            "state": state,
            "inference_log": json(inference_log)?,
        });
        if let Some(models) = models {
            // Anything but a dict of option dicts is refused by the core, with its error text.
            document["models"] = from_python(py, &models, "engine options")?;
        }
        let inner = guarded(py, || quorum::EngineOptions::from_json(document)?.builder(&home)?.build())?;
        Ok(InferenceEngine { inner })
    }

    /// The engine's model registry (a new default version set through it is hot-swapped in).
    #[getter]
    fn registry(&self) -> Registry {
        Registry::of_engine(&self.inner)
    }

    /// Makes `version` the model's default and moves loaded ensembles onto it (a hot swap: running
    /// predictions finish on the old version). Returns the ensembles reloaded.
    fn set_default_version(&self, py: Python<'_>, name: &str, version: Version) -> PyResult<Vec<String>> {
        guarded(py, || self.inner.set_default_version(name, version.0))
    }

    /// The replica pools of every loaded version of `model` (all models when None): replicas, idle,
    /// in flight, waiting, queued, batches, p95, estimated bytes.
    #[pyo3(signature = (model=None))]
    fn replicas<'py>(&self, py: Python<'py>, model: Option<&str>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.inner.replicas(model))
    }

    /// Whether the ensemble's members run as one fused ONNX model: `fused`, `sessions`, and `reason`
    /// when they do not.
    fn fusion<'py>(&self, py: Python<'py>, ensemble: &str) -> PyResult<Bound<'py, PyAny>> {
        let status = guarded(py, || Ok(self.inner.ensemble(ensemble)?.fusion()))?;
        to_python(py, &status)
    }

    /// The inference log's counters (`written`, `dropped`, `write_errors`, `waiting`, `last_error`),
    /// or None when logging is off.
    fn inference_log_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.inner.inference_log_stats())
    }

    /// Where this process stands in a shared (PostgreSQL) state's outcome log, or None.
    fn shared_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.inner.shared_status())
    }

    /// For tests and rehearsals: makes every call to `model` fail (`"fail"`), panic (`"panic"`),
    /// sleep `amount` milliseconds first (`"slow"`), or fail for a fraction `amount` of calls
    /// (`"fail_fraction"`), until `"none"`. Breakers, fallbacks and quorum then act as in production.
    #[pyo3(signature = (model, kind, amount=None))]
    fn inject_fault(&self, py: Python<'_>, model: &str, kind: &str, amount: Option<f64>) -> PyResult<()> {
        let fault = quorum::Fault::from_kind(kind, amount).map_err(to_py_err)?;
        guarded(py, || {
            self.inner.inject_fault(model, fault);
            Ok(())
        })
    }

    /// Drops the idle replicas of `model` (it loads again on its next call); returns how many.
    fn unload_model(&self, py: Python<'_>, name: &str) -> PyResult<usize> {
        guarded(py, || Ok(self.inner.unload_model(name)))
    }

    /// Creates (a new version of) an ensemble from a configuration dict with the keys of quorum's
    /// ensemble JSON: `name`, `members` (list of "model" / "model@version" strings or
    /// `{"model", "version"}` dicts), and optionally `strategy`, `weights`, `min_members`,
    /// `non_finite`, `online`, `meta`, `regime`. Returns the saved configuration.
    fn create_ensemble<'py>(&self, py: Python<'py>, config: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
        let parsed: quorum::EnsembleConfig = from_python(py, config.as_any(), "ensemble configuration")?;
        let saved = guarded(py, || self.inner.create_ensemble(parsed))?;
        to_python(py, &saved)
    }

    /// The features an ensemble consumes, in the column order `predict_batch` and `predict_row` use.
    fn feature_names(&self, py: Python<'_>, ensemble: &str) -> PyResult<Vec<String>> {
        guarded(py, || Ok(self.inner.ensemble(ensemble)?.feature_names().to_vec()))
    }

    /// Predicts one request given as `{feature name: value}`. With `deadline_ms`, a request that
    /// cannot finish within it raises DeadlineExceededError instead of answering late. While the
    /// ensemble runs an experiment, `routing_key` (a user, an account, a symbol) picks the arm.
    #[pyo3(signature = (ensemble, features, deadline_ms=None, routing_key=None))]
    fn predict(
        &self,
        py: Python<'_>,
        ensemble: &str,
        features: &Bound<'_, PyDict>,
        deadline_ms: Option<f64>,
        routing_key: Option<&str>,
    ) -> PyResult<Prediction> {
        let deadline = deadline_ms.map(quorum::units::deadline_after_ms).transpose().map_err(to_py_err)?;
        let handle = self.inner.ensemble(ensemble).map_err(to_py_err)?;
        let row = resolve(&handle, features, routing_key).map_err(to_py_err)?;
        let inner = guarded(py, || handle.predict_resolved(&row, deadline))?;
        Ok(Prediction { inner })
    }

    /// `predict` for asyncio callers: `await engine.predict_async(...)`. A lone request to an
    /// ensemble whose runs take microseconds runs at once; otherwise it is queued (batched with
    /// other queued requests) and the event loop is woken when it is answered.
    #[pyo3(signature = (ensemble, features, deadline_ms=None, routing_key=None))]
    async fn predict_async(
        &self,
        ensemble: String,
        features: Py<PyDict>,
        deadline_ms: Option<f64>,
        routing_key: Option<String>,
    ) -> PyResult<Prediction> {
        let deadline = deadline_ms.map(quorum::units::deadline_after_ms).transpose().map_err(to_py_err)?;
        let handle = self.inner.ensemble(&ensemble).map_err(to_py_err)?;
        let row =
            Python::attach(|py| resolve(&handle, features.bind(py), routing_key.as_deref())).map_err(to_py_err)?;
        let inner = handle.predict_resolved_async(row, deadline).await.map_err(to_py_err)?;
        Ok(Prediction { inner })
    }

    /// Predicts one row given as a sequence of floats in `feature_names(ensemble)` order (no per-name
    /// lookups); `deadline_ms` and `routing_key` as in `predict`.
    #[pyo3(signature = (ensemble, row, deadline_ms=None, routing_key=None))]
    fn predict_row(
        &self,
        py: Python<'_>,
        ensemble: &str,
        row: Vec<f32>,
        deadline_ms: Option<f64>,
        routing_key: Option<&str>,
    ) -> PyResult<Prediction> {
        let deadline = deadline_ms.map(quorum::units::deadline_after_ms).transpose().map_err(to_py_err)?;
        let inner = guarded(py, || self.inner.ensemble(ensemble)?.predict_row_routed(&row, routing_key, deadline))?;
        Ok(Prediction { inner })
    }

    /// Predicts every row of a float32 matrix whose columns are `feature_names` (default: the
    /// ensemble's own order). A C-contiguous float32 array is read in place, without a copy.
    /// During an experiment the batch is one request, routed to one arm by `routing_key`.
    #[pyo3(signature = (ensemble, rows, feature_names=None, routing_key=None))]
    fn predict_batch(
        &self,
        py: Python<'_>,
        ensemble: &str,
        rows: PyReadonlyArray2<'_, f32>,
        feature_names: Option<Vec<String>>,
        routing_key: Option<&str>,
    ) -> PyResult<BatchPrediction> {
        // A Fortran-ordered array is contiguous too, but its rows are not consecutive.
        let c_order = rows.is_c_contiguous();
        let values = rows.as_slice().ok().filter(|_| c_order).ok_or_else(|| {
            to_py_err(quorum::Error::InvalidInput(
                "rows must be a C-contiguous float32 array (use numpy.ascontiguousarray(rows, dtype=numpy.float32))"
                    .into(),
            ))
        })?;
        let width = rows.shape()[1];
        let inner = guarded(py, || {
            let handle = self.inner.ensemble(ensemble)?;
            let names = match &feature_names {
                Some(names) => names.clone(),
                None => handle.feature_names().to_vec(),
            };
            if names.len() != width {
                return Err(quorum::Error::InvalidInput(format!(
                    "wrong row width: the array has {width} columns but {} feature names apply",
                    names.len()
                )));
            }
            handle.predict_batch_routed(&quorum::Batch::row_major(&names, values)?, routing_key)
        })?;
        Ok(BatchPrediction { inner })
    }

    /// Joins a realised outcome with the prediction `request_id` (classification: 0 or 1), with
    /// its business value (e.g. the trade's P&L) for experiments whose metric is `business`.
    #[pyo3(signature = (request_id, outcome, business_value=None))]
    fn record_outcome(
        &self,
        py: Python<'_>,
        request_id: u64,
        outcome: f64,
        business_value: Option<f64>,
    ) -> PyResult<()> {
        guarded(py, || self.inner.record_outcome_valued(request_id, outcome, business_value))
    }

    /// Starts an A/B experiment from a dict with the keys of quorum's experiment JSON: `name`,
    /// `ensemble`, `control`, `treatment`, and optionally `steps`, `min_outcomes_per_step`,
    /// `metric`, `guardrails`, `alpha`, `max_outcomes`, `non_inferiority_margin`, `mixing_sd`,
    /// `seed`. Returns its status.
    fn start_experiment<'py>(&self, py: Python<'py>, config: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
        let parsed: quorum::ExperimentConfig = from_python(py, config.as_any(), "experiment configuration")?;
        let status = guarded(py, || self.inner.start_experiment(parsed))?;
        to_python(py, &status)
    }

    /// An experiment's arms, counts, metric and confidence sequence, p-value, step and decisions.
    fn experiment_status<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let status = guarded(py, || self.inner.experiment_status(name))?;
        to_python(py, &status)
    }

    /// Every experiment's status, by name.
    fn experiments<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list = guarded(py, || self.inner.experiments())?;
        to_python(py, &list)
    }

    /// Routes every request to the control until `resume_experiment`.
    fn pause_experiment<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let status = guarded(py, || self.inner.pause_experiment(name))?;
        to_python(py, &status)
    }

    fn resume_experiment<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let status = guarded(py, || self.inner.resume_experiment(name))?;
        to_python(py, &status)
    }

    /// Ends an experiment; the control stays the active version.
    #[pyo3(signature = (name, reason=""))]
    fn stop_experiment<'py>(&self, py: Python<'py>, name: &str, reason: &str) -> PyResult<Bound<'py, PyAny>> {
        let status = guarded(py, || self.inner.stop_experiment(name, reason))?;
        to_python(py, &status)
    }

    /// Tracked metrics of an ensemble: all-time, windows, per member, per regime, ranking.
    fn metrics<'py>(&self, py: Python<'py>, ensemble: &str) -> PyResult<Bound<'py, PyAny>> {
        let metrics = guarded(py, || self.inner.metrics(ensemble))?;
        to_python(py, &metrics)
    }

    /// Members whose loss drifted upwards (Page-Hinkley), oldest first.
    fn drift_events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.inner.drift_events())
    }

    /// Every metric the engine keeps, in the Prometheus text format, to serve on your own endpoint.
    fn metrics_text(&self, py: Python<'_>) -> String {
        py.detach(|| self.inner.metrics_text())
    }

    /// Writes learnt weights and tracked metrics to the home's state database now.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        guarded(py, || self.inner.flush())
    }

    fn __repr__(&self) -> String {
        format!("InferenceEngine(home={:?})", self.inner.home())
    }
}

/// One prediction: `prediction`, `confidence`, `model_contributions`, `latency_ms`, …
#[derive(Debug)]
#[pyclass(module = "quorum._quorum", frozen)]
pub struct Prediction {
    inner: quorum::Prediction,
}

#[pymethods]
impl Prediction {
    #[getter]
    fn request_id(&self) -> u64 {
        self.inner.request_id
    }
    #[getter]
    fn ensemble(&self) -> &str {
        &self.inner.ensemble
    }
    #[getter]
    fn ensemble_version(&self) -> u32 {
        self.inner.ensemble_version
    }
    #[getter]
    fn strategy(&self) -> &str {
        self.inner.strategy
    }
    #[getter]
    fn prediction(&self) -> f32 {
        self.inner.prediction
    }
    #[getter]
    fn confidence(&self) -> f32 {
        self.inner.confidence
    }
    #[getter]
    fn label(&self) -> Option<u8> {
        self.inner.label
    }
    #[getter]
    fn regime(&self) -> Option<&'static str> {
        self.inner.regime.map(|r| r.as_str())
    }
    #[getter]
    fn weights_epoch(&self) -> u64 {
        self.inner.weights_epoch
    }
    /// `{"name", "arm"}` while the ensemble runs an experiment, else None.
    #[getter]
    fn experiment<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.inner.experiment.as_ref().map(|e| to_python(py, e)).transpose()
    }
    /// A member failed, was skipped by its circuit breaker, or was replaced by its fallback.
    #[getter]
    fn degraded(&self) -> bool {
        self.inner.degraded
    }
    /// Served from the prediction cache.
    #[getter]
    fn cached(&self) -> bool {
        self.inner.cached
    }
    /// Quorum was lost and this is the last good prediction for the same features.
    #[getter]
    fn stale(&self) -> bool {
        self.inner.stale
    }
    /// Every member ran in one call of the ensemble's fused model.
    #[getter]
    fn fused(&self) -> bool {
        self.inner.fused
    }
    /// Members that gave no prediction.
    #[getter]
    fn skipped(&self) -> Vec<String> {
        self.inner.skipped.iter().map(|s| s.to_string()).collect()
    }
    #[getter]
    fn latency_ms(&self) -> f64 {
        self.inner.latency_ms
    }
    /// `{model: {"version", "class"?, "prediction", "weight", "latency_ms", "recent_loss"?, "error"?, "fallback"?}}`
    #[getter]
    fn model_contributions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.to_dict(py)?.get_item("model_contributions")
    }
    /// The prediction in the story's JSON shape, as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.inner)
    }
    fn __repr__(&self) -> String {
        format!(
            "Prediction(request_id={}, prediction={:.6}, confidence={:.6}, ensemble={:?})",
            self.inner.request_id, self.inner.prediction, self.inner.confidence, &*self.inner.ensemble
        )
    }
}

/// A batch's answers by column, as numpy arrays.
#[derive(Debug)]
#[pyclass(module = "quorum._quorum", frozen)]
pub struct BatchPrediction {
    inner: quorum::BatchPrediction,
}

#[pymethods]
impl BatchPrediction {
    fn __len__(&self) -> usize {
        self.inner.len()
    }
    #[getter]
    fn predictions<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        self.inner.predictions.clone().into_pyarray(py)
    }
    #[getter]
    fn confidences<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        self.inner.confidences.clone().into_pyarray(py)
    }
    /// `rows × members`; NaN where a member failed.
    #[getter]
    fn member_predictions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let m = self.inner.members.len();
        self.inner.member_predictions.clone().into_pyarray(py).reshape([self.inner.len(), m])
    }
    #[getter]
    fn request_ids<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u64>> {
        (0..self.inner.len()).map(|r| self.inner.request_id(r)).collect::<Vec<_>>().into_pyarray(py)
    }
    #[getter]
    fn members(&self) -> Vec<String> {
        self.inner.members.iter().map(|m| m.model.to_string()).collect()
    }
    #[getter]
    fn latency_ms(&self) -> f64 {
        self.inner.latency_ms
    }
    /// Row `index` as a `Prediction`.
    fn row(&self, index: usize) -> PyResult<Prediction> {
        if index >= self.inner.len() {
            return Err(to_py_err(quorum::Error::InvalidInput(format!(
                "row {index} is out of range for a batch of {}",
                self.inner.len()
            ))));
        }
        Ok(Prediction { inner: self.inner.row(index) })
    }
    fn __repr__(&self) -> String {
        format!("BatchPrediction(rows={}, ensemble={:?})", self.inner.len(), &*self.inner.ensemble)
    }
}

/// Reads the ensemble's features from `features` under the GIL (no String or map built per
/// request; keys the ensemble does not use are ignored).
fn resolve(
    handle: &quorum::EnsembleHandle,
    features: &Bound<'_, PyDict>,
    routing_key: Option<&str>,
) -> quorum::Result<quorum::ResolvedRow> {
    handle.resolve_row_routed(
        |name| match features.get_item(name) {
            // A bool is an int to Python, but never a market feature: refused, as in Node.
            Ok(Some(value)) if value.is_instance_of::<pyo3::types::PyBool>() => {
                Err(quorum::Error::InvalidInput(format!("feature {name:?}: a bool is not a number")))
            }
            Ok(Some(value)) => value.extract::<f32>().map(Some).map_err(|_| {
                let type_name = value.get_type().name().map_or_else(|_| "?".to_string(), |n| n.to_string());
                quorum::Error::InvalidInput(format!("feature {name:?}: a {type_name} is not a number"))
            }),
            Ok(None) => Ok(None),
            Err(e) => Err(quorum::Error::InvalidInput(format!("feature {name:?}: {e}"))),
        },
        routing_key,
    )
}
