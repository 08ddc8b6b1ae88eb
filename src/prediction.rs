//! What a prediction returns: [`Prediction`] (one row, with every member's [`ModelContribution`]) and
//! [`BatchPrediction`] (a batch by column, with each member's [`MemberRun`]). Below the engine, so the
//! cache and the bindings can hold predictions without importing the engine.

use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::adaptive::Published;
use crate::experiment::Arm;
use crate::meta::FitWindow;
use crate::regime::Regime;
use crate::registry::Task;
use crate::strategy::StrategyKind;

/// A model, ensemble or experiment name in a prediction: cheap to clone (a name of up to 23 bytes is
/// stored inline, a longer one shares one allocation), so that handing every row its members' names
/// touches no reference count shared between threads (measured: on 2 cores, contended reference
/// counts of shared names took 8% of a queued prediction's time).
pub type Name = smol_str::SmolStr;

/// `shared` as a [`Name`]: copied inline when short, otherwise sharing `shared`'s allocation.
pub(crate) fn name_of(shared: &Arc<str>) -> Name {
    if shared.len() <= 23 {
        Name::new(&**shared)
    } else {
        Name::from(Arc::clone(shared))
    }
}

/// The experiment arm that served a request (see [`crate::experiment`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExperimentArm {
    /// The experiment's name.
    pub name: Name,
    /// Which arm: the control (the version serving before the experiment) or the treatment.
    pub arm: Arm,
}

/// One member's part in a prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelContribution {
    /// The member's model name (the key of `model_contributions` when serialised).
    #[serde(skip)]
    pub model: Name,
    /// The model version that ran.
    pub version: u32,
    /// The class its prediction is the probability of, as the model labels it (`up`, `1`), when
    /// the model has class labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<Name>,
    /// The member's own prediction; `None` when it failed.
    pub prediction: Option<f32>,
    /// The weight it carried in this prediction (renormalised over the members that answered); for
    /// stacking, its coefficient on the member's logit.
    pub weight: f32,
    /// Wall time of the member's ONNX Runtime call (for a batch: the whole batch's call).
    pub latency_ms: f64,
    /// Adaptive strategies: the member's recent squared error, which its weight follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_loss: Option<f32>,
    /// Why the member did not answer itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The fallback model whose prediction stood in for the member's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Name>,
}

/// The answer to one request (one row).
///
/// ```
/// use quorum::Features;
///
/// # fn main() -> quorum::Result<()> {
/// # let home = tempfile::tempdir().map_err(|e| quorum::Error::io("tempdir", e))?;
/// # let engine = quorum::InferenceEngine::builder(home.path()).build()?;
/// # engine.register_model(quorum::ModelRegistration::new("sentiment", "examples/models/sentiment.onnx",
/// #     ["vix", "vix_chg_1d", "vix_chg_5d", "vix_rel_20d", "vix_zscore_60d"]))?;
/// # engine.create_ensemble(quorum::EnsembleConfig::new("market", ["sentiment".parse()?]))?;
/// let features = Features::new().with("vix", 13.5).with("vix_chg_1d", -0.02).with("vix_chg_5d", 0.05)
///     .with("vix_rel_20d", 0.01).with("vix_zscore_60d", -0.4);
/// let p = engine.predict("market", &features)?;
/// assert_eq!(p.label, Some(u8::from(p.prediction >= 0.5))); // a classifier's label
/// assert!((0.0..=1.0).contains(&p.confidence));
/// let member = &p.model_contributions[0];
/// assert_eq!((member.model.as_str(), member.weight), ("sentiment", 1.0));
/// assert!(!p.degraded); // every member answered
///
/// // The JSON form the CLI, the server and the bindings print: contributions keyed by model.
/// let json = serde_json::to_value(&p).unwrap();
/// assert!(json["model_contributions"]["sentiment"]["prediction"].is_number());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Unique within the engine: pass it to [`crate::InferenceEngine::record_outcome`] later.
    pub request_id: u64,
    /// The ensemble's name.
    pub ensemble: Name,
    /// The ensemble version that served the request.
    pub ensemble_version: u32,
    /// The combining strategy's name (`soft-vote`, `majority`, `stacking`, `hedge`, ...).
    pub strategy: &'static str,
    /// Classification: probability of the positive class (or vote share, for majority voting).
    /// Regression: the predicted value.
    pub prediction: f32,
    /// See [`crate::strategy`] for the definition.
    pub confidence: f32,
    /// Classification only: 1 when `prediction ≥ 0.5`, else 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<u8>,
    /// Every member's part, in the ensemble's member order (serialised as an object keyed by model name).
    #[serde(serialize_with = "contributions_by_model")]
    pub model_contributions: Vec<ModelContribution>,
    /// The market regime in force, for ensembles with regimes configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regime: Option<Regime>,
    /// Stacking and blending: the rows their current fit was made on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit_window: Option<FitWindow>,
    /// Increases whenever learning changes the weights.
    pub weights_epoch: u64,
    /// True when a member failed, was skipped by its circuit breaker, or was replaced by its fallback.
    pub degraded: bool,
    /// Served from the prediction cache (a new request id; the rest as first computed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// The ensemble lost its quorum and this is the last good prediction for the same features
    /// (ensembles with `serve_stale`); `degraded` is set too.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// Every member ran in one call of the ensemble's fused model (see [`crate::EnsembleHandle::fusion`]);
    /// each member's `latency_ms` is then that call's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fused: bool,
    /// Members that gave no prediction (neither they nor a fallback answered).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Name>,
    /// The experiment and arm that served the request, while the ensemble runs an experiment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentArm>,
    /// Wall time inside the engine (for a batch: the whole batch; for a queued request: from the
    /// call to its batch's answer, the caller's wake-up after it left out).
    pub latency_ms: f64,
}

fn contributions_by_model<S: Serializer>(list: &[ModelContribution], s: S) -> std::result::Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(list.len()))?;
    for c in list {
        map.serialize_entry(&*c.model, c)?;
    }
    map.end()
}

/// One member's run within a batch: shared by every row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberRun {
    /// The member's model name.
    pub model: Name,
    /// The model version that ran.
    pub version: u32,
    /// The class its predictions are the probability of, as the model labels it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<Name>,
    /// Wall time of the member's call(s) for the whole batch (its fallback's included).
    pub latency_ms: f64,
    /// Why the member itself did not answer (failure, open circuit breaker, panic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The model that answered in its place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Name>,
}

impl MemberRun {
    /// Whether the member (or its fallback) produced predictions.
    pub fn answered(&self) -> bool {
        self.error.is_none() || self.fallback.is_some()
    }
}

/// The answers to a batch, stored by column: one allocation per array, not per row.
///
/// [`BatchPrediction::row`] gives any row as a [`Prediction`]; serialised, a batch is the array of its
/// rows in the single-prediction format.
#[derive(Debug, Clone)]
pub struct BatchPrediction {
    /// The ensemble's name.
    pub ensemble: Name,
    /// The ensemble version that served the batch.
    pub ensemble_version: u32,
    /// Classification or regression: whether rows get a label.
    pub task: Task,
    /// Row `i` has request id `first_request_id + i`.
    pub first_request_id: u64,
    /// One combined prediction per row (probability of the positive class, or the regression value).
    pub predictions: Vec<f32>,
    /// One confidence per row, in `[0, 1]` (see [`crate::strategy`]).
    pub confidences: Vec<f32>,
    /// Row-major `rows × members`; NaN where a member failed.
    pub member_predictions: Vec<f32>,
    /// The weight (or stacking coefficient) each member carried: `members` values shared by every row,
    /// or row-major `rows × members` when regimes give rows different weights. See [`BatchPrediction::weights_of`].
    pub weights: Vec<f32>,
    /// The regime each row was predicted in (ensembles with regimes configured).
    pub regimes: Vec<Option<Regime>>,
    /// Every member's run, in the ensemble's member order (the columns of `member_predictions`).
    pub members: Vec<MemberRun>,
    /// The learning snapshot the batch was combined with (strategy, recent losses, fit windows).
    pub(crate) published: Arc<Published>,
    /// Every member ran in one call of the ensemble's fused model.
    pub fused: bool,
    /// The experiment and arm that served the batch (a batch is routed as one request).
    pub experiment: Option<ExperimentArm>,
    /// Wall time of the whole batch inside the engine.
    pub latency_ms: f64,
}

impl BatchPrediction {
    /// How many rows the batch answered.
    pub fn len(&self) -> usize {
        self.predictions.len()
    }

    /// Whether the batch had no rows.
    pub fn is_empty(&self) -> bool {
        self.predictions.is_empty()
    }

    /// The request id of row `row` (0-based), for [`crate::InferenceEngine::record_outcome`].
    pub fn request_id(&self, row: usize) -> u64 {
        self.first_request_id + row as u64
    }

    /// The weights row `row` was combined with, one per member.
    pub fn weights_of(&self, row: usize) -> &[f32] {
        let m = self.members.len();
        if self.weights.len() == m {
            &self.weights
        } else {
            &self.weights[row * m..(row + 1) * m]
        }
    }

    /// Row `row` as a standalone prediction (panics if `row >= len()`, like slice indexing).
    pub fn row(&self, row: usize) -> Prediction {
        let m = self.members.len();
        let prediction = self.predictions[row];
        let regime = self.regimes[row];
        let choice = self.published.for_regime(regime);
        let fitted = choice.intercept.is_some() || choice.strategy != StrategyKind::Stacking;
        Prediction {
            request_id: self.request_id(row),
            ensemble: self.ensemble.clone(),
            ensemble_version: self.ensemble_version,
            strategy: if fitted { choice.strategy.as_str() } else { "stacking (unfitted: configured weights)" },
            prediction,
            confidence: self.confidences[row],
            label: (self.task == Task::Classification).then_some(u8::from(prediction >= 0.5)),
            model_contributions: self
                .members
                .iter()
                .enumerate()
                .map(|(i, run)| ModelContribution {
                    model: run.model.clone(),
                    version: run.version,
                    class: run.class.clone(),
                    prediction: run.answered().then_some(self.member_predictions[row * m + i]),
                    weight: self.weights_of(row)[i],
                    latency_ms: run.latency_ms,
                    recent_loss: choice.recent_loss[i],
                    error: run.error.clone(),
                    fallback: run.fallback.clone(),
                })
                .collect(),
            degraded: self.members.iter().any(|r| r.error.is_some()),
            cached: false,
            stale: false,
            fused: self.fused,
            skipped: self.members.iter().filter(|r| !r.answered()).map(|r| r.model.clone()).collect(),
            regime,
            fit_window: choice.fit_window,
            weights_epoch: self.published.epoch,
            experiment: self.experiment.clone(),
            latency_ms: self.latency_ms,
        }
    }

    /// Every row as a [`Prediction`].
    pub fn rows(&self) -> impl ExactSizeIterator<Item = Prediction> + '_ {
        (0..self.len()).map(|i| self.row(i))
    }
}

impl Serialize for BatchPrediction {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.rows())
    }
}
