//! An ensemble's learning state in the engine: the regime detector, the online and meta learners for
//! each regime, and the weights they publish for predictions.
//!
//! Predictions never wait for learning: they read an immutable `Published` snapshot (an `Arc` taken
//! under a read lock held for a pointer copy) and, when regimes are configured, feed the detector one
//! return (a mutex held for a few arithmetic operations). An outcome updates the learners of the
//! regime its prediction was made in, in O(members) (a stacking or blending refit, on its schedule,
//! costs O(window × members²)), then swaps in a new snapshot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::meta::{FitWindow, MetaKind, MetaLearner, MetaOptions};
use crate::online::{OnlineOptions, OnlineRule};
use crate::regime::{Regime, RegimeDetector, RegimeOptions};
use crate::registry::Task;
use crate::strategy::StrategyKind;

/// Regimes in an ensemble configuration: how to detect them, and which strategy each one uses
/// (regimes not listed use the ensemble's strategy). Learners keep separate state per regime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegimeConfig {
    /// How regimes are detected (the return feature, thresholds, decay).
    #[serde(flatten)]
    pub detector: RegimeOptions,
    /// The strategy used in each regime (regimes not listed use the ensemble's own).
    #[serde(default)]
    pub strategies: BTreeMap<Regime, StrategyKind>,
}

/// What one regime publishes for predictions.
#[derive(Debug, Clone)]
pub(crate) struct RegimeWeights {
    pub strategy: StrategyKind,
    /// Member weights (summing to 1), or stacking's coefficients once fitted.
    pub weights: Vec<f32>,
    /// Stacking's intercept; `None` means "combine by weighted mean with `weights`".
    pub intercept: Option<f32>,
    /// Recent squared error per member (`None` before any outcome).
    pub recent_loss: Vec<Option<f32>>,
    pub fit_window: Option<FitWindow>,
}

/// The snapshot predictions read.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    /// Indexed by [`Regime::index`]; a single entry when no regimes are configured.
    pub regimes: Vec<RegimeWeights>,
    /// Increases with every change of weights.
    pub epoch: u64,
}

impl Published {
    pub fn for_regime(&self, regime: Option<Regime>) -> &RegimeWeights {
        &self.regimes[regime.map_or(0, Regime::index).min(self.regimes.len() - 1)]
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Learners {
    strategy: StrategyKind,
    /// Exponentially weighted recent squared error per member (explanations), and whether seen.
    recent: Vec<f64>,
    seen: Vec<bool>,
    loss_decay: f64,
    online: Option<OnlineRule>,
    meta: Option<MetaLearner>,
    /// A meta-learner refit is due and not yet done.
    #[serde(skip)]
    refit_due: bool,
}

impl Learners {
    fn new(strategy: StrategyKind, task: Task, prior: &[f64], online: OnlineOptions, meta: MetaOptions) -> Learners {
        let m = prior.len();
        Learners {
            strategy,
            recent: vec![0.0; m],
            seen: vec![false; m],
            loss_decay: online.loss_decay,
            online: OnlineRule::new(strategy, prior, online),
            meta: match strategy {
                StrategyKind::Stacking => Some(MetaLearner::stacking(task, meta)),
                StrategyKind::Blending => Some(MetaLearner::blending(task, meta)),
                _ => None,
            },
            refit_due: false,
        }
    }

    fn publish(&self, prior: &[f32]) -> RegimeWeights {
        let m = prior.len();
        let all = vec![true; m];
        let mut w = vec![0.0f64; m];
        let mut out = RegimeWeights {
            strategy: self.strategy,
            weights: prior.to_vec(),
            intercept: None,
            recent_loss: vec![None; m],
            fit_window: None,
        };
        if let Some(rule) = &self.online {
            rule.rule().weights(&all, &mut w);
            out.weights = w.iter().map(|&x| x as f32).collect();
        }
        if self.strategy.is_adaptive() {
            out.recent_loss = self.recent.iter().zip(&self.seen).map(|(&l, &s)| s.then_some(l as f32)).collect();
        }
        if let Some(meta) = &self.meta {
            match (meta.kind(), meta.params()) {
                (MetaKind::Stacking, Some(beta)) => {
                    out.intercept = Some(beta[0] as f32);
                    out.weights = beta[1..].iter().map(|&b| b as f32).collect();
                }
                (MetaKind::Blending, Some(weights)) => out.weights = weights.iter().map(|&x| x as f32).collect(),
                (_, None) => {}
            }
            out.fit_window = meta.fit_window();
        }
        out
    }

    fn update(&mut self, members: &[Option<f64>], outcome: f64) {
        track_loss(&mut self.recent, &mut self.seen, members, outcome, self.loss_decay);
        if let Some(rule) = &mut self.online {
            rule.rule_mut().update(members, outcome);
        }
        // The meta-learners need every member's prediction for a row.
        let complete: Option<Vec<f64>> = members.iter().copied().collect();
        if let (Some(x), Some(meta)) = (complete, &mut self.meta) {
            self.refit_due |= meta.observe(&x, outcome);
        }
    }
}

/// Updates each answering member's exponentially weighted squared error.
fn track_loss(recent: &mut [f64], seen: &mut [bool], predictions: &[Option<f64>], outcome: f64, decay: f64) {
    for ((r, s), p) in recent.iter_mut().zip(seen.iter_mut()).zip(predictions) {
        if let Some(p) = p {
            let loss = (p - outcome).powi(2);
            *r = if *s { decay * *r + (1.0 - decay) * loss } else { loss };
            *s = true;
        }
    }
}

/// An ensemble's learning state. Shared (`Arc`) by the loaded ensemble and its pending predictions,
/// so an outcome that arrives after a reload still teaches the version that made the prediction.
#[derive(Debug)]
pub(crate) struct Learning {
    prior: Vec<f32>,
    detector: Option<(usize, Mutex<RegimeDetector>)>,
    learners: Mutex<Vec<Learners>>,
    published: RwLock<Arc<Published>>,
    adaptive: bool,
    /// The epoch last written to the state database.
    flushed: AtomicU64,
}

/// What is saved to resume learning after a restart.
#[derive(Debug, Serialize, Deserialize)]
struct LearningState {
    epoch: u64,
    learners: Vec<Learners>,
    detector: Option<RegimeDetector>,
}

/// A snapshot for the state database.
#[derive(Debug)]
pub(crate) struct LearningSnapshot {
    pub epoch: u64,
    pub strategy: &'static str,
    pub weights: serde_json::Value,
    pub state: String,
}

impl Learning {
    /// `regime_column` is the position of the regime feature in the ensemble's schema.
    pub fn new(
        task: Task,
        strategy: StrategyKind,
        prior: Vec<f32>,
        regime: Option<(&RegimeConfig, usize)>,
        online: OnlineOptions,
        meta: MetaOptions,
    ) -> Learning {
        let prior64: Vec<f64> = prior.iter().map(|&w| f64::from(w)).collect();
        let strategies: Vec<StrategyKind> = match regime {
            Some((config, _)) => {
                Regime::ALL.iter().map(|r| config.strategies.get(r).copied().unwrap_or(strategy)).collect()
            }
            None => vec![strategy],
        };
        let learners: Vec<Learners> =
            strategies.iter().map(|&s| Learners::new(s, task, &prior64, online, meta)).collect();
        let published = Published { regimes: learners.iter().map(|l| l.publish(&prior)).collect(), epoch: 0 };
        Learning {
            adaptive: strategies.iter().any(|s| s.is_adaptive()),
            detector: regime.map(|(config, column)| (column, Mutex::new(RegimeDetector::new(config.detector.clone())))),
            prior,
            learners: Mutex::new(learners),
            published: RwLock::new(Arc::new(published)),
            flushed: AtomicU64::new(0),
        }
    }

    /// The learners' state if it changed since the last call that was marked flushed (or always,
    /// with `force`). Member names label the weights.
    pub fn snapshot(&self, members: &[Arc<str>], force: bool) -> Option<LearningSnapshot> {
        let learners = self.learners.lock().unwrap_or_else(|p| p.into_inner());
        let published = self.published();
        if !force && published.epoch == self.flushed.load(Ordering::Acquire) {
            return None;
        }
        let named = |r: &RegimeWeights| -> serde_json::Value {
            members
                .iter()
                .zip(&r.weights)
                .map(|(m, w)| (m.to_string(), serde_json::json!(w)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let weights = if self.detector.is_some() {
            Regime::ALL
                .iter()
                .zip(&published.regimes)
                .map(|(r, w)| (r.as_str().to_string(), named(w)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        } else {
            named(&published.regimes[0])
        };
        let detector = self.detector.as_ref().map(|(_, d)| d.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let state = LearningState { epoch: published.epoch, learners: Vec::new(), detector };
        // Serialise the learners in place rather than cloning them (stacking keeps a window of rows).
        let mut value = serde_json::to_value(&state).ok()?;
        value["learners"] = serde_json::to_value(&*learners).ok()?;
        let strategy = published.regimes[0].strategy.as_str();
        Some(LearningSnapshot { epoch: published.epoch, strategy, weights, state: value.to_string() })
    }

    pub fn mark_flushed(&self, epoch: u64) {
        self.flushed.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Resumes from a saved state; a state that does not fit this configuration is ignored (returns false).
    pub fn restore(&self, state: &str) -> bool {
        let Ok(saved) = serde_json::from_str::<LearningState>(state) else { return false };
        let mut learners = self.learners.lock().unwrap_or_else(|p| p.into_inner());
        let fits = saved.learners.len() == learners.len()
            && saved.learners.iter().zip(learners.iter()).all(|(a, b)| a.strategy == b.strategy);
        if !fits {
            return false;
        }
        *learners = saved.learners;
        if let (Some((_, detector)), Some(saved)) = (&self.detector, saved.detector) {
            *detector.lock().unwrap_or_else(|p| p.into_inner()) = saved;
        }
        let regimes = learners.iter().map(|l| l.publish(&self.prior)).collect();
        *self.published.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Published { regimes, epoch: saved.epoch });
        self.flushed.store(saved.epoch, Ordering::Release);
        true
    }

    /// The current snapshot.
    pub fn published(&self) -> Arc<Published> {
        Arc::clone(&self.published.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn has_regimes(&self) -> bool {
        self.detector.is_some()
    }

    /// Feeds the regime detector with a dense schema row; `None` when no regimes are configured.
    pub fn observe(&self, dense_row: &[f32]) -> Option<Regime> {
        let (column, detector) = self.detector.as_ref()?;
        let mut detector = detector.lock().unwrap_or_else(|p| p.into_inner());
        Some(detector.observe(f64::from(dense_row[*column])))
    }

    /// Learns one outcome for a prediction made in `regime` (members: NaN = did not answer).
    /// Returns true when a stacking or blending refit became due: the caller runs [`Learning::refit`]
    /// (the engine does it on its background thread, so an outcome costs O(members)).
    pub fn learn(&self, regime: Option<Regime>, members: &[f32], outcome: f64) -> bool {
        if !self.adaptive {
            return false;
        }
        let members: Vec<Option<f64>> = members.iter().map(|&v| (!v.is_nan()).then_some(f64::from(v))).collect();
        let mut learners = self.learners.lock().unwrap_or_else(|p| p.into_inner());
        let index = regime.map_or(0, Regime::index).min(learners.len() - 1);
        learners[index].update(&members, outcome);
        self.republish(&learners, &[index]);
        learners[index].refit_due
    }

    /// Runs the due meta-learner fits. The data is copied out under the learners' lock and fitted
    /// without it, so outcomes keep flowing meanwhile.
    pub fn refit(&self) {
        let prepared: Vec<(usize, crate::meta::PreparedFit)> = {
            let mut learners = self.learners.lock().unwrap_or_else(|p| p.into_inner());
            learners
                .iter_mut()
                .enumerate()
                .filter(|(_, l)| l.refit_due)
                .filter_map(|(i, l)| {
                    l.refit_due = false;
                    l.meta.as_ref().map(|m| (i, m.prepare()))
                })
                .collect()
        };
        if prepared.is_empty() {
            return;
        }
        let fitted: Vec<(usize, crate::meta::Fitted)> =
            prepared.into_iter().filter_map(|(i, p)| p.fit().map(|f| (i, f))).collect();
        let mut learners = self.learners.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = Vec::new();
        for (i, f) in fitted {
            if let Some(meta) = &mut learners[i].meta {
                meta.install(f);
                changed.push(i);
            }
        }
        self.republish(&learners, &changed);
    }

    /// Publishes the given regimes' weights as a new epoch. Called with the learners locked, so
    /// concurrent updates publish in the order they learnt.
    fn republish(&self, learners: &[Learners], regimes: &[usize]) {
        let mut published = self.published.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Published::clone(&published);
        for &i in regimes {
            next.regimes[i] = learners[i].publish(&self.prior);
        }
        next.epoch += 1;
        *published = Arc::new(next);
    }
}
