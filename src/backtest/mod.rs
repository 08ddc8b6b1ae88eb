//! Walk-forward validation: replay a dataset in time order and compare, on the same rows, every way
//! of combining the ensemble's members.
//!
//! For each row t, in file order: the engine predicts it (members run through ONNX Runtime), every
//! method makes its prediction from what it has learnt so far, the metrics record it, and only then is
//! row t's outcome shown to the learners. Nothing a method uses at row t depends on an outcome at or
//! after t; `tests/backtest.rs` checks that rewriting future outcomes changes no earlier prediction.
//!
//! Methods: each member alone; `equal` weights; `static` (the ensemble's configured weights); `hedge`
//! (Hedge + Fixed-Share); `boa` (the parameter-free rule, opera's BOA); `stacking` (logistic regression
//! on member logits, walk-forward); `blending` (convex weights on the recent window); `regime` (Hedge
//! weights kept separately per volatility regime). Stacking and blending predict with the configured
//! weights until their first fit. Rows the engine refuses (non-finite features) are skipped by every
//! method and never reach the regime detector, exactly as in the engine; a member that fails on a row
//! is scored, for that row, with the equal-weight prediction of the others.
//!
//! The learners are the engine's own (`online`, `meta`, `regime`): an ensemble configured with
//! `hedge`, `boa`, `stacking` or `blending` and fed its outcomes in order predicts what this backtest
//! reports for that method (`tests/adaptive.rs` checks it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

mod chart;

use crate::engine::InferenceEngine;
use crate::error::{Error, Result};
use crate::meta::{MetaLearner, MetaOptions};
use crate::online::{Boa, Hedge, OnlineOptions, OnlineWeights};
use crate::regime::{Regime, RegimeDetector, RegimeOptions};
use crate::registry::Task;
use crate::replay::Table;
use crate::store;
use crate::strategy::normalise_weights;

/// What to backtest.
#[derive(Debug, Clone)]
pub struct BacktestOptions {
    pub outcome: String,
    pub online: OnlineOptions,
    pub meta: MetaOptions,
    /// Regime detection for the `regime` method; `None` uses the ensemble's own regime
    /// configuration, and when it has none the method is left out (with a note in the report).
    pub regime: Option<RegimeOptions>,
    /// Leave the `regime` method out even when the ensemble configures regimes.
    pub without_regimes: bool,
}

impl BacktestOptions {
    pub fn new(outcome: impl Into<String>) -> BacktestOptions {
        BacktestOptions {
            outcome: outcome.into(),
            online: OnlineOptions::default(),
            meta: MetaOptions::default(),
            regime: None,
            without_regimes: false,
        }
    }
}

/// Classification metrics of one method over some rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct MethodMetrics {
    pub count: usize,
    pub accuracy: f64,
    pub f1_score: f64,
    pub log_loss: f64,
    pub brier: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Scores {
    count: usize,
    correct: usize,
    tp: usize,
    fp: usize,
    fn_: usize,
    log_loss: f64,
    brier: f64,
}

const CLIP: f64 = 1e-6;

impl Scores {
    fn add(&mut self, p: f64, y: f64) {
        let (predicted, actual) = (p >= 0.5, y >= 0.5);
        self.count += 1;
        self.correct += usize::from(predicted == actual);
        self.tp += usize::from(predicted && actual);
        self.fp += usize::from(predicted && !actual);
        self.fn_ += usize::from(!predicted && actual);
        self.log_loss += log_loss(p, y);
        self.brier += (p - y).powi(2);
    }

    fn metrics(&self) -> MethodMetrics {
        let n = self.count.max(1) as f64;
        let f1_den = 2 * self.tp + self.fp + self.fn_;
        MethodMetrics {
            count: self.count,
            accuracy: self.correct as f64 / n,
            f1_score: if f1_den == 0 { 0.0 } else { 2.0 * self.tp as f64 / f1_den as f64 },
            log_loss: self.log_loss / n,
            brier: self.brier / n,
        }
    }
}

fn log_loss(p: f64, y: f64) -> f64 {
    let p = p.clamp(CLIP, 1.0 - CLIP);
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

/// The result of a backtest.
#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    /// Data rows in the file.
    pub rows: usize,
    /// Rows every method was scored on.
    pub scored: usize,
    /// Rows the engine refused (skipped by every method).
    pub refused: usize,
    /// Share of scored rows whose outcome is 1.
    pub base_rate: f64,
    /// Method names in report order: members, then the combinations.
    pub method_order: Vec<String>,
    pub methods: BTreeMap<String, MethodMetrics>,
    pub regimes: BTreeMap<String, BTreeMap<String, MethodMetrics>>,
    /// Per scored row, in order: the row's index in the file, its regime and each method's prediction.
    pub timeline: Timeline,
    /// What the reader should know about how it ran (a method left out and why).
    pub notes: Vec<String>,
}

/// Row-by-row record of the backtest (for the report file and the chart).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Timeline {
    pub row: Vec<usize>,
    pub regime: Vec<Regime>,
    pub outcome: Vec<f64>,
    /// Method → its prediction at each scored row.
    pub predictions: BTreeMap<String, Vec<f64>>,
    /// Member names, the order of the weight vectors below.
    pub members: Vec<String>,
    /// Weights in force at each scored row.
    pub hedge_weights: Vec<Vec<f64>>,
    pub boa_weights: Vec<Vec<f64>>,
    pub blending_weights: Vec<Vec<f64>>,
}

impl BacktestReport {
    /// The object `quorum backtest --json` prints: `{"rows", "methods", "regimes"}` (plus `refused`).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "rows": self.rows,
            "refused": self.refused,
            "methods": self.methods,
            "regimes": self.regimes,
            "notes": self.notes,
        })
    }

    /// Cumulative log-loss of `method` at each scored row.
    pub fn cumulative_log_loss(&self, method: &str) -> Vec<f64> {
        let mut total = 0.0;
        self.timeline.predictions.get(method).map_or_else(Vec::new, |p| {
            p.iter()
                .zip(&self.timeline.outcome)
                .map(|(p, y)| {
                    total += log_loss(*p, *y);
                    total
                })
                .collect()
        })
    }

    /// Writes `backtest.json` (everything, including the timeline) and `backtest.svg` (weights over
    /// time, cumulative log-loss per method) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        store::create_dir_all(dir)?;
        let json_path = dir.join("backtest.json");
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::json("backtest report", e))?;
        store::write_atomic(&json_path, &json)?;
        let svg_path = dir.join("backtest.svg");
        chart::backtest_svg(self, &svg_path)?;
        Ok((json_path, svg_path))
    }
}

/// Runs the backtest of `ensemble` over the CSV file `data`.
pub fn backtest(
    engine: &InferenceEngine,
    ensemble: &str,
    data: &Path,
    options: &BacktestOptions,
) -> Result<BacktestReport> {
    backtest_table(engine, ensemble, &Table::read(data)?, options)
}

/// Runs the backtest over an already-read table.
pub fn backtest_table(
    engine: &InferenceEngine,
    ensemble: &str,
    table: &Table,
    options: &BacktestOptions,
) -> Result<BacktestReport> {
    let handle = engine.ensemble(ensemble)?;
    if handle.task() != Task::Classification {
        return Err(Error::Config(
            "backtest compares classification ensembles (accuracy, F1, log-loss, Brier); this one is a regression"
                .into(),
        ));
    }
    let outcome_column = table.column_index(&options.outcome)?;
    let feature_columns = handle.feature_names().iter().map(|f| table.column_index(f)).collect::<Result<Vec<_>>>()?;
    let config = handle.config();
    let mut notes = Vec::new();
    let regime_options = match (&options.regime, &config.regime) {
        _ if options.without_regimes => None,
        (Some(r), _) => Some(r.clone()),
        (None, Some(own)) => Some(own.detector.clone()),
        (None, None) => {
            notes.push(format!(
                "no regime method: ensemble {ensemble:?} configures no regimes and no regime feature was given"
            ));
            None
        }
    };
    let regime_column = match &regime_options {
        Some(r) => {
            r.validate()?;
            Some(table.column_index(&r.feature)?)
        }
        None => None,
    };
    let members: Vec<String> = config.members.iter().map(|m| m.model.clone()).collect();
    let m = members.len();
    let static_weights: Vec<f64> =
        normalise_weights(config.weights.as_deref(), m)?.into_iter().map(f64::from).collect();

    let mut method_order = members.clone();
    method_order.extend(["equal", "static", "hedge", "boa", "stacking", "blending"].map(String::from));
    if regime_column.is_some() {
        method_order.push("regime".into());
    }
    let mut overall: BTreeMap<String, Scores> = method_order.iter().map(|n| (n.clone(), Scores::default())).collect();
    let mut by_regime: BTreeMap<Regime, BTreeMap<String, Scores>> = BTreeMap::new();
    let mut timeline = Timeline { members: members.clone(), ..Timeline::default() };
    for name in &method_order {
        timeline.predictions.insert(name.clone(), Vec::new());
    }

    let mut hedge = Hedge::with_prior(&static_weights, options.online);
    let mut boa = Boa::new(m, options.online);
    let mut per_regime: Vec<Hedge> =
        Regime::ALL.iter().map(|_| Hedge::with_prior(&static_weights, options.online)).collect();
    let mut stacker = MetaLearner::stacking(Task::Classification, options.meta);
    let mut blender = MetaLearner::blending(Task::Classification, options.meta);
    let mut detector = regime_options.map(RegimeDetector::new);

    let (mut refused, mut positives) = (0, 0.0);
    let mut row_values = Vec::with_capacity(feature_columns.len());
    let mut weights = vec![0.0; m];
    let mut predictions: Vec<(usize, f64)> = Vec::with_capacity(method_order.len());
    for row in 0..table.rows() {
        let Ok(outcome) = table.cell(row, outcome_column) else {
            refused += 1;
            continue;
        };
        row_values.clear();
        let readable =
            feature_columns.iter().try_for_each(|&c| table.cell(row, c).map(|v| row_values.push(v)).map_err(|_| ()));
        let prediction = match readable {
            Ok(()) if outcome.is_finite() => handle.predict_row(&row_values).ok(),
            _ => None,
        };
        let Some(prediction) = prediction else {
            refused += 1;
            continue;
        };
        let regime = match (&mut detector, regime_column) {
            (Some(d), Some(c)) => d.observe(table.cell(row, c).map_or(f64::NAN, f64::from)),
            _ => Regime::Normal,
        };
        let y = f64::from(outcome);
        positives += y;
        let member_values: Vec<Option<f64>> =
            prediction.model_contributions.iter().map(|c| c.prediction.map(f64::from)).collect();
        let answered: Vec<bool> = member_values.iter().map(Option::is_some).collect();
        let weighted = |w: &[f64]| -> f64 {
            let total: f64 = w.iter().zip(&answered).filter(|(_, a)| **a).map(|(w, _)| w).sum();
            member_values.iter().zip(w).filter_map(|(v, w)| v.map(|v| v * w)).sum::<f64>()
                / total.max(f64::MIN_POSITIVE)
        };
        let equal = weighted(&vec![1.0; m]);

        // Every method predicts from what it knew before this row's outcome.
        predictions.clear();
        for (i, v) in member_values.iter().enumerate() {
            predictions.push((i, v.unwrap_or(equal)));
        }
        predictions.push((m, equal));
        predictions.push((m + 1, weighted(&static_weights)));
        hedge.weights(&answered, &mut weights);
        timeline.hedge_weights.push(weights.clone());
        predictions.push((m + 2, weighted(&weights)));
        boa.weights(&answered, &mut weights);
        timeline.boa_weights.push(weights.clone());
        predictions.push((m + 3, weighted(&weights)));
        let complete: Option<Vec<f64>> = member_values.iter().copied().collect();
        let stacked = complete.as_deref().and_then(|x| stacker.predict(x)).unwrap_or_else(|| weighted(&static_weights));
        predictions.push((m + 4, stacked));
        let blend = blender.params().map_or_else(|| static_weights.clone(), <[f64]>::to_vec);
        timeline.blending_weights.push(blend.clone());
        predictions.push((m + 5, weighted(&blend)));
        if detector.is_some() {
            per_regime[regime.index()].weights(&answered, &mut weights);
            predictions.push((m + 6, weighted(&weights)));
        }

        timeline.row.push(row);
        timeline.regime.push(regime);
        timeline.outcome.push(y);
        let regime_scores = by_regime
            .entry(regime)
            .or_insert_with(|| method_order.iter().map(|n| (n.clone(), Scores::default())).collect());
        for &(method, p) in &predictions {
            let name = &method_order[method];
            if let Some(s) = overall.get_mut(name) {
                s.add(p, y);
            }
            if let Some(s) = regime_scores.get_mut(name) {
                s.add(p, y);
            }
            if let Some(series) = timeline.predictions.get_mut(name) {
                series.push(p);
            }
        }

        // Only now does the outcome of row t reach the learners.
        hedge.update(&member_values, y);
        boa.update(&member_values, y);
        per_regime[regime.index()].update(&member_values, y);
        if let Some(x) = &complete {
            for learner in [&mut stacker, &mut blender] {
                if learner.observe(x, y) {
                    learner.refit();
                }
            }
        }
    }
    let scored = table.rows() - refused;
    if scored == 0 {
        return Err(Error::InvalidInput(format!(
            "no row of {} could be scored: each lacked a finite {:?} outcome or a readable, accepted set of features",
            table.rows(),
            options.outcome
        )));
    }
    Ok(BacktestReport {
        notes,
        rows: table.rows(),
        scored,
        refused,
        base_rate: if scored > 0 { positives / scored as f64 } else { 0.0 },
        methods: overall.into_iter().map(|(n, s)| (n, s.metrics())).collect(),
        regimes: by_regime
            .into_iter()
            .map(|(r, scores)| (r.as_str().to_string(), scores.into_iter().map(|(n, s)| (n, s.metrics())).collect()))
            .collect(),
        method_order,
        timeline,
    })
}

impl std::fmt::Display for BacktestReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "rows {}  scored {}  refused {}  base rate (share of 1s) {:.4}",
            self.rows, self.scored, self.refused, self.base_rate
        )?;
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        let regimes: Vec<&String> = self.regimes.keys().collect();
        write!(f, "\n{:<12} {:>9} {:>9} {:>9} {:>9}", "method", "accuracy", "f1", "log_loss", "brier")?;
        for r in &regimes {
            write!(f, " {:>12}", format!("acc[{r}]"))?;
        }
        writeln!(f)?;
        for name in &self.method_order {
            let m = &self.methods[name];
            write!(f, "{name:<12} {:>9.4} {:>9.4} {:>9.4} {:>9.4}", m.accuracy, m.f1_score, m.log_loss, m.brier)?;
            for r in &regimes {
                let cell =
                    self.regimes[*r].get(name).map_or("-".into(), |m| format!("{:.4} ({})", m.accuracy, m.count));
                write!(f, " {cell:>12}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
