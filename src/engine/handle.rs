//! [`EnsembleHandle`]: the public ways to predict with one ensemble — by name or in schema order,
//! single rows or batches, with or without a deadline, blocking or as a future — each turning its
//! input into dense schema-ordered rows and handing a [`Call`] to the pipeline.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::lease::Lease;
use super::loaded::LoadedEnsemble;
use super::pipeline::{predict_queued, Call};
use super::route::{EnsembleSlot, RunningExperiment};
use super::InferenceEngine;
use crate::ensemble::EnsembleConfig;
use crate::error::Result;
use crate::experiment::Arm;
use crate::features::{Batch, Features};
use crate::prediction::{BatchPrediction, Prediction};
use crate::registry::Task;

/// One request's features in an ensemble's schema order, tied to the load they were resolved
/// against (see [`EnsembleHandle::resolve_row`]).
pub struct ResolvedRow {
    pub(super) ens: Arc<LoadedEnsemble>,
    pub(super) values: Vec<f32>,
    /// The experiment arm it was routed to.
    pub(super) arm: Option<(Arc<RunningExperiment>, Arm)>,
}

impl std::fmt::Debug for ResolvedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedRow").field("ensemble", &self.ens.config.name).field("values", &self.values).finish()
    }
}

impl ResolvedRow {
    /// The values in the ensemble's feature order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }
}

/// See [`EnsembleHandle::fusion`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FusionStatus {
    /// Whether the members run as one fused ONNX model.
    pub fused: bool,
    /// Fused sessions built so far (they grow on demand up to the members' largest replica count).
    pub sessions: usize,
    /// Why the members are not fused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Members that run on their native plans, beside the fused call (they need no ONNX Runtime
    /// call; see [`crate::native`]).
    pub native: Vec<String>,
    /// The members that share the fused session (empty when not fused).
    pub members: Vec<String>,
    /// Members on ONNX Runtime that run on their own sessions beside the fused call, with the
    /// reason (partial fusion).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub left_out: BTreeMap<String, String>,
    /// The opset of each domain the fused members were lifted to (`ai.onnx`, `ai.onnx.ml`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub opsets: BTreeMap<String, i64>,
}

/// An ensemble's current weights (see [`EnsembleHandle::current_weights`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CurrentWeights {
    /// Increases whenever learning changes the weights.
    pub epoch: u64,
    /// The ensemble's strategy (a regime may use its own).
    pub strategy: &'static str,
    /// Regime name (`low`, `normal`, `high`; `all` without regimes) → member → weight. For stacking
    /// once fitted, the coefficients on the members' logits.
    pub regimes: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f32>>,
}

/// A loaded ensemble. Cheap to clone. It follows the engine: when the ensemble is reloaded (a new
/// version, or a member's default version swapped by [`InferenceEngine::set_default_version`]), the
/// next call uses the new load while calls already running finish on the old one.
#[derive(Clone)]
pub struct EnsembleHandle {
    pub(super) engine: InferenceEngine,
    pub(super) slot: Arc<EnsembleSlot>,
}

impl std::fmt::Debug for EnsembleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ensemble = self.slot.load();
        f.debug_struct("EnsembleHandle")
            .field("name", &ensemble.config.name)
            .field("version", &ensemble.config.version)
            .finish_non_exhaustive()
    }
}

impl EnsembleHandle {
    /// The configuration of the ensemble's current load.
    pub fn config(&self) -> EnsembleConfig {
        self.slot.load().config.clone()
    }

    /// Every feature the ensemble consumes, in the order [`EnsembleHandle::predict_row`] expects.
    /// A reload can change it (a new member version with other features): read it again after one.
    pub fn feature_names(&self) -> Vec<String> {
        self.slot.load().schema.names().to_vec()
    }

    /// Whether the ensemble's members run as one fused ONNX model, and why not when they do not.
    ///
    /// Fusion merges the members' graphs into one model that one ONNX Runtime call runs (see
    /// `fusion`): for small models, whose cost is mostly ONNX Runtime's per-call overhead,
    /// it makes a prediction markedly faster. It is used for inline predictions (`predict`,
    /// `predict_row`, `predict_batch`) and for queued batches while every member's breaker is
    /// closed; any call the fused model fails runs the members one by one.
    pub fn fusion(&self) -> FusionStatus {
        let ens = self.slot.load();
        let native =
            ens.members.iter().filter(|m| m.model.native.is_some()).map(|m| m.model.meta.name.clone()).collect();
        match &ens.fused {
            Ok(fused) => {
                let opsets = [("ai.onnx", fused.opsets.default), ("ai.onnx.ml", fused.opsets.ml)];
                FusionStatus {
                    fused: true,
                    sessions: fused.sessions.sessions(),
                    reason: None,
                    native,
                    members: fused.which.iter().map(|&i| ens.members[i].model.meta.name.clone()).collect(),
                    left_out: fused.left_out.iter().cloned().collect(),
                    opsets: opsets.into_iter().filter_map(|(d, v)| Some((d.to_string(), v?))).collect(),
                }
            }
            Err(reason) => FusionStatus {
                fused: false,
                sessions: 0,
                reason: Some(reason.clone()),
                native,
                members: Vec::new(),
                left_out: BTreeMap::new(),
                opsets: BTreeMap::new(),
            },
        }
    }

    /// Classification or regression.
    pub fn task(&self) -> Task {
        self.slot.load().task
    }

    /// The status of the experiment the ensemble runs (or holds paused), if any.
    pub fn experiment(&self) -> Option<crate::experiment::ExperimentStatus> {
        self.slot.experiment.load().as_ref().map(|running| running.status())
    }

    /// The weights predictions use now, per regime, and their epoch (what learning has moved them to).
    pub fn current_weights(&self) -> CurrentWeights {
        let ens = self.slot.load();
        let learning = &ens.key.learning;
        let published = learning.published();
        let named = |r: &crate::adaptive::RegimeWeights| {
            ens.key.members.iter().zip(&r.weights).map(|(m, &w)| (m.to_string(), w)).collect()
        };
        let regimes = if learning.has_regimes() {
            crate::regime::Regime::ALL
                .iter()
                .zip(&published.regimes)
                .map(|(regime, w)| (regime.as_str().to_string(), named(w)))
                .collect()
        } else {
            std::iter::once(("all".to_string(), named(&published.regimes[0]))).collect()
        };
        CurrentWeights { epoch: published.epoch, strategy: published.regimes[0].strategy.as_str(), regimes }
    }

    /// Predicts one request given by name.
    ///
    /// # Errors
    ///
    /// `missing_feature` or `non_finite` for the features; `quorum_not_reached` when too few members answer;
    /// `deadline_exceeded` when the ensemble's latency budget runs out first; `overloaded` when its queue is full.
    pub fn predict(&self, features: &Features) -> Result<Prediction> {
        self.predict_routed(features, None, None)
    }

    /// [`EnsembleHandle::predict`] that must finish by `deadline` (see [`EnsembleHandle::predict_row_by`]).
    ///
    /// # Errors
    ///
    /// As [`EnsembleHandle::predict`], and `deadline_exceeded` when `deadline` cannot be met.
    pub fn predict_by(&self, features: &Features, deadline: Instant) -> Result<Prediction> {
        self.predict_routed(features, None, Some(deadline))
    }

    /// [`EnsembleHandle::predict`] with a routing key (a user id, an account, a symbol): while the
    /// ensemble runs an experiment, the key's hash picks the arm, so the same key lands in the same
    /// arm on every call and in every process; without a key each request is assigned on its own.
    /// Without an experiment the key is ignored.
    ///
    /// # Errors
    ///
    /// As [`EnsembleHandle::predict`].
    pub fn predict_routed(
        &self,
        features: &Features,
        routing_key: Option<&str>,
        deadline: Option<Instant>,
    ) -> Result<Prediction> {
        let started = Instant::now();
        let ens = self.slot.load();
        let mut dense = Vec::with_capacity(ens.schema.names().len());
        ens.schema.fill_from_features(features, &mut dense)?;
        self.single(&ens, &dense, started, deadline, routing_key)
    }

    /// Resolves one request against the ensemble as loaded now, asking `value_of` for each feature by
    /// name (`Ok(None)`: missing; values checked as [`EnsembleHandle::predict`] checks them), for
    /// callers whose features live in a map of their own — the Python and Node bindings read their
    /// dict / object this way, without building [`Features`], then predict with
    /// [`EnsembleHandle::predict_resolved`] (which they can run without holding their interpreter lock).
    ///
    /// # Errors
    ///
    /// `missing_feature` or `non_finite`, or the error `value_of` returns.
    pub fn resolve_row(&self, value_of: impl FnMut(&str) -> Result<Option<f32>>) -> Result<ResolvedRow> {
        self.resolve_row_routed(value_of, None)
    }

    /// [`EnsembleHandle::resolve_row`] that also picks the request's experiment arm by its routing
    /// key (see [`EnsembleHandle::predict_routed`]): the row is resolved against that arm's load.
    ///
    /// # Errors
    ///
    /// As [`EnsembleHandle::resolve_row`].
    pub fn resolve_row_routed(
        &self,
        value_of: impl FnMut(&str) -> Result<Option<f32>>,
        routing_key: Option<&str>,
    ) -> Result<ResolvedRow> {
        let ens = self.slot.load_full();
        let mut values = Vec::with_capacity(ens.schema.names().len());
        ens.schema.fill_from(value_of, &mut values)?;
        let Some(running) = self.running_experiment(&ens) else { return Ok(ResolvedRow { ens, values, arm: None }) };
        match running.route(routing_key) {
            (arm, Some(treatment)) => {
                let values = running.treatment_rows(&values).into_owned();
                Ok(ResolvedRow { ens: treatment, values, arm: Some((running, arm)) })
            }
            (arm, None) => Ok(ResolvedRow { ens, values, arm: Some((running, arm)) }),
        }
    }

    /// Identifies the feature order [`EnsembleHandle::feature_names`] gives now: it changes only when
    /// a reload changes the ensemble's features, so a caller that cached the names (to fill rows
    /// itself) can check them with [`EnsembleHandle::predict_row_for_schema`].
    pub fn schema_id(&self) -> u64 {
        self.slot.load().schema_id
    }

    /// [`EnsembleHandle::predict_row`] if the ensemble's features are still those of `schema_id`,
    /// checked and predicted on the same load; `Ok(None)` when they changed (fetch the names again).
    /// `routing_key` as in [`EnsembleHandle::predict_routed`].
    ///
    /// # Errors
    ///
    /// `invalid_input` when the row's length does not match the schema, or the schema is no longer the ensemble's;
    /// otherwise as [`EnsembleHandle::predict`].
    pub fn predict_row_for_schema(
        &self,
        schema_id: u64,
        row: &[f32],
        deadline: Option<Instant>,
        routing_key: Option<&str>,
    ) -> Result<Option<Prediction>> {
        let started = Instant::now();
        let ens = self.slot.load();
        if ens.schema_id != schema_id {
            return Ok(None);
        }
        let dense = ens.schema.dense_row(row)?;
        self.single(&ens, &dense, started, deadline, routing_key).map(Some)
    }

    /// Predicts a [`ResolvedRow`] on the load it was resolved against (after a hot swap in between,
    /// on the old one, as a call already running would), by `deadline` if given.
    ///
    /// # Errors
    ///
    /// As [`EnsembleHandle::predict`]; `deadline_exceeded` when `deadline` cannot be met.
    pub fn predict_resolved(&self, row: &ResolvedRow, deadline: Option<Instant>) -> Result<Prediction> {
        let started = Instant::now();
        let result = self.engine.inner.single(&Call { ens: &row.ens, dense: &row.values, rows: 1, started, deadline });
        match &row.arm {
            Some((running, arm)) => tag(running, *arm, result, started),
            None => result,
        }
    }

    /// [`EnsembleHandle::predict_resolved`] without blocking the calling executor, as
    /// [`EnsembleHandle::predict_row_async_by`] (the deadline optional).
    pub fn predict_resolved_async(
        &self,
        row: ResolvedRow,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Prediction>> + Send + 'static {
        tagged(Lease::of(&self.engine, &row.ens), Ok(row.values), Instant::now(), deadline, row.arm)
    }

    /// Predicts one row given in [`EnsembleHandle::feature_names`] order (no name lookups).
    ///
    /// # Errors
    ///
    /// `invalid_input` when the row's length is not the number of features; otherwise as [`EnsembleHandle::predict`].
    pub fn predict_row(&self, row: &[f32]) -> Result<Prediction> {
        self.predict_row_routed(row, None, None)
    }

    /// [`EnsembleHandle::predict_row`] with a routing key and an optional deadline (see
    /// [`EnsembleHandle::predict_routed`]). The row is in the control's feature order; a treatment
    /// that consumes fewer or reordered features gets its own columns picked from it.
    ///
    /// # Errors
    ///
    /// As [`EnsembleHandle::predict_row`].
    pub fn predict_row_routed(
        &self,
        row: &[f32],
        routing_key: Option<&str>,
        deadline: Option<Instant>,
    ) -> Result<Prediction> {
        let started = Instant::now();
        let ens = self.slot.load();
        let dense = ens.schema.dense_row(row)?;
        self.single(&ens, &dense, started, deadline, routing_key)
    }

    /// [`EnsembleHandle::predict_row`] that must finish by `deadline`: a request that cannot (it
    /// would queue past it, or the deadline has passed) fails with
    /// [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded).
    ///
    /// # Errors
    ///
    /// As [`EnsembleHandle::predict_row`], and `deadline_exceeded`.
    pub fn predict_row_by(&self, row: &[f32], deadline: Instant) -> Result<Prediction> {
        self.predict_row_routed(row, None, Some(deadline))
    }

    /// Predicts one row without blocking the calling executor: the row is queued to the ensemble's
    /// dispatcher threads (batched with other queued rows when a member batches) and the future
    /// resolves when its batch has run. A lone caller of an ensemble whose runs take microseconds
    /// runs inline in the first poll instead, where a hand-off would cost more than the run.
    /// Runtime-agnostic (tokio, async-std, a hand-rolled executor).
    pub fn predict_row_async(&self, row: &[f32]) -> impl Future<Output = Result<Prediction>> + Send + 'static {
        self.predict_row_async_routed(row, None, None)
    }

    /// [`EnsembleHandle::predict_row_async`] with a deadline, as in [`EnsembleHandle::predict_row_by`].
    /// The future has no timer of its own: it resolves when its batch has run, and an answer that
    /// comes after the deadline is an [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded). Wrap it in your
    /// runtime's timeout
    /// to stop waiting at the deadline.
    pub fn predict_row_async_by(
        &self,
        row: &[f32],
        deadline: Instant,
    ) -> impl Future<Output = Result<Prediction>> + Send + 'static {
        self.predict_row_async_routed(row, None, Some(deadline))
    }

    /// [`EnsembleHandle::predict`] without blocking the calling executor.
    pub fn predict_async(&self, features: &Features) -> impl Future<Output = Result<Prediction>> + Send + 'static {
        let started = Instant::now();
        let ens = self.slot.load();
        let mut dense = Vec::with_capacity(ens.schema.names().len());
        let filled = ens.schema.fill_from_features(features, &mut dense);
        self.queued(&ens, filled.map(|()| dense), started, None, None)
    }

    /// [`EnsembleHandle::predict_row_async`] with a routing key and an optional deadline (see
    /// [`EnsembleHandle::predict_routed`] and [`EnsembleHandle::predict_row_by`]).
    pub fn predict_row_async_routed(
        &self,
        row: &[f32],
        routing_key: Option<&str>,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Prediction>> + Send + 'static {
        let started = Instant::now();
        let ens = self.slot.load();
        let dense = ens.schema.dense_row(row).map(Cow::into_owned);
        self.queued(&ens, dense, started, deadline, routing_key)
    }

    /// [`EnsembleHandle::predict_row_async_routed`] if the ensemble's features are still those of
    /// `schema_id`, checked and queued on the same load; `None` when they changed (as
    /// [`EnsembleHandle::predict_row_for_schema`]).
    pub fn predict_row_async_for_schema(
        &self,
        schema_id: u64,
        row: &[f32],
        deadline: Option<Instant>,
        routing_key: Option<&str>,
    ) -> Option<impl Future<Output = Result<Prediction>> + Send + 'static> {
        let started = Instant::now();
        let ens = self.slot.load();
        if ens.schema_id != schema_id {
            return None;
        }
        let dense = ens.schema.dense_row(row).map(Cow::into_owned);
        Some(self.queued(&ens, dense, started, deadline, routing_key))
    }

    /// The queued pipeline on the control's load, or on the arm's during an experiment.
    /// The request holds the load through its thread's [`Lease`] on it.
    fn queued(
        &self,
        ens: &Arc<LoadedEnsemble>,
        dense: Result<Vec<f32>>,
        started: Instant,
        deadline: Option<Instant>,
        routing_key: Option<&str>,
    ) -> impl Future<Output = Result<Prediction>> + Send + 'static {
        let Some(running) = self.running_experiment(ens) else {
            return tagged(Lease::of(&self.engine, ens), dense, started, deadline, None);
        };
        let (arm, treatment) = running.route(routing_key);
        let (lease, dense) = match treatment {
            Some(treatment) => {
                (Lease::of(&self.engine, &treatment), dense.map(|d| running.treatment_rows(&d).into_owned()))
            }
            None => (Lease::of(&self.engine, ens), dense),
        };
        tagged(lease, dense, started, deadline, Some((running, arm)))
    }

    /// Predicts every row of `batch`; each member runs once for the whole batch.
    ///
    /// # Errors
    ///
    /// `missing_feature` when a column the members need is absent, `non_finite` (with the row), `quorum_not_reached`,
    /// `too_large` over the batch limit.
    pub fn predict_batch(&self, batch: &Batch<'_>) -> Result<BatchPrediction> {
        self.run_batch(batch, Instant::now(), None)
    }

    /// [`EnsembleHandle::predict_batch`] with a routing key: during an experiment the whole batch is
    /// one request and goes to one arm (see [`EnsembleHandle::predict_routed`]).
    ///
    /// # Errors
    ///
    /// As [`EnsembleHandle::predict_batch`].
    pub fn predict_batch_routed(&self, batch: &Batch<'_>, routing_key: Option<&str>) -> Result<BatchPrediction> {
        self.run_batch(batch, Instant::now(), routing_key)
    }

    /// A batch through the pipeline (every member inline, once for all rows).
    pub(super) fn run_batch(
        &self,
        batch: &Batch<'_>,
        started: Instant,
        routing_key: Option<&str>,
    ) -> Result<BatchPrediction> {
        let ens = self.slot.load();
        let dense = ens.schema.dense_batch(batch)?;
        let rows = batch.rows();
        let run = |ens: &LoadedEnsemble, dense: &[f32]| {
            let call = Call { ens, dense, rows, started, deadline: None };
            let result = self.engine.inner.run(&call, ens.key.learning.published());
            ens.telemetry.batch(&result, rows, started);
            result
        };
        let Some(running) = self.running_experiment(&ens) else { return run(&ens, &dense) };
        let (arm, treatment) = running.route(routing_key);
        let mut result = match &treatment {
            None => run(&ens, &dense),
            Some(treatment) => run(treatment, &running.treatment_rows(&dense)),
        };
        let degraded = result.as_ref().is_ok_and(|b| b.members.iter().any(|m| m.error.is_some()));
        let arm_tag = running.observe(arm, &result, degraded, started);
        if let Ok(batch) = &mut result {
            batch.experiment = Some(arm_tag);
        }
        result
    }

    /// The experiment routing requests made on `control` (the slot's load), if one is running.
    fn running_experiment(&self, control: &LoadedEnsemble) -> Option<Arc<RunningExperiment>> {
        let experiment = self.slot.experiment.load();
        experiment.as_ref().filter(|e| e.routes(control)).map(Arc::clone)
    }

    /// One dense row through the synchronous pipeline, on the control's load or, during an
    /// experiment, on the arm its routing key picks.
    fn single(
        &self,
        ens: &LoadedEnsemble,
        dense: &[f32],
        started: Instant,
        deadline: Option<Instant>,
        routing_key: Option<&str>,
    ) -> Result<Prediction> {
        let inner = &self.engine.inner;
        let experiment = self.slot.experiment.load();
        let Some(running) = experiment.as_ref().filter(|e| e.routes(ens)) else {
            return inner.single(&Call { ens, dense, rows: 1, started, deadline });
        };
        let (arm, treatment) = running.route(routing_key);
        let result = match &treatment {
            None => inner.single(&Call { ens, dense, rows: 1, started, deadline }),
            Some(treatment) => {
                let dense = running.treatment_rows(dense);
                inner.single(&Call { ens: treatment, dense: &dense, rows: 1, started, deadline })
            }
        };
        tag(running, arm, result, started)
    }
}

/// The queued pipeline on `ens`, its answer tagged with the experiment arm it was routed to.
fn tagged(
    lease: Arc<Lease>,
    dense: Result<Vec<f32>>,
    started: Instant,
    deadline: Option<Instant>,
    route: Option<(Arc<RunningExperiment>, Arm)>,
) -> impl Future<Output = Result<Prediction>> + Send + 'static {
    predict_queued(lease, dense, started, deadline, move |result| match route {
        Some((running, arm)) => tag(&running, arm, result, started),
        None => result,
    })
}

/// Counts a routed request for its arm's guardrails and marks its prediction with the arm.
fn tag(running: &RunningExperiment, arm: Arm, mut result: Result<Prediction>, started: Instant) -> Result<Prediction> {
    let degraded = result.as_ref().is_ok_and(|p| p.degraded);
    let arm_tag = running.observe(arm, &result, degraded, started);
    if let Ok(p) = &mut result {
        p.experiment = Some(arm_tag);
    }
    result
}
