//! Walk-forward validation: replay a dataset in time order and compare, on the same rows, every way
//! of combining the ensemble's members.
//!
//! For each row t, in file order: the engine predicts it (members run through ONNX Runtime), every
//! method makes its prediction from what it has learnt so far, the metrics record it, and only then is
//! row t's outcome shown to the learners. Nothing a method uses at row t depends on an outcome at or
//! after t; `tests/backtest.rs` checks that rewriting future outcomes changes no earlier prediction.
//!
//! Methods: each member alone; `equal` weights; `static` (the ensemble's configured weights); the
//! online rules `hedge` (Fixed-Share, AdaHedge's rate), `boa`, `mlpol` and `ewa` (see
//! [`quorum::online`]), each starting from the configured weights as its prior; `stacking` (logistic
//! regression on member logits, or ridge regression for a regression ensemble, walk-forward);
//! `blending` (convex weights on the recent window); `regime` (Hedge weights kept separately per
//! volatility regime). Stacking and blending predict with the configured weights until their first
//! fit. Classification ensembles are scored by accuracy, F1, log-loss and Brier score; regression
//! ensembles by RMSE, MAE and MAPE.
//!
//! Oracles are reported apart from the methods, because they are chosen in hindsight, after every
//! outcome is known: `best-member` (the member with the lowest squared error over all scored rows)
//! and `best-convex` (the constant convex combination of the members with the lowest squared error,
//! opera's `bestConvex`). They say how much a rule left on the table, never what was achievable live. Rows the engine refuses (non-finite features) are skipped by every
//! method and never reach the regime detector, exactly as in the engine; a member that fails on a row
//! is scored, for that row, with the equal-weight prediction of the others.
//!
//! The learners are the engine's own (`online`, `meta`, `regime`): an ensemble configured with
//! `hedge`, `boa`, `stacking` or `blending` and fed its outcomes in order predicts what this backtest
//! reports for that method (`tests/adaptive.rs` checks it).
//!
//! ```no_run
//! # fn main() -> quorum::Result<()> {
//! let engine = quorum::InferenceEngine::builder("quorum-home").build()?;
//! let mut options = quorum_backtest::BacktestOptions::new("next_day_up");
//! options.regime = Some(quorum::regime::RegimeOptions::new("ret_1d"));
//! let report = quorum_backtest::backtest(&engine, "market", "holdout.csv".as_ref(), &options)?;
//! let (json, svg) = report.write("reports/market".as_ref())?;
//! println!("{} and {}", json.display(), svg.display());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

mod chart;
mod oracle;

use quorum::meta::{MetaLearner, MetaOptions};
use quorum::online::{OnlineOptions, OnlineRule};
use quorum::regime::{Regime, RegimeDetector, RegimeOptions};
use quorum::registry::Task;
use quorum::replay::Table;
use quorum::strategy::{normalise_weights, StrategyKind};
use quorum::{Error, InferenceEngine, Result};

pub use oracle::Oracle;

/// What to backtest.
#[derive(Debug, Clone)]
pub struct BacktestOptions {
    /// The outcome column of the data (0/1 for classification, a value for regression).
    pub outcome: String,
    /// Settings of the online methods (Hedge, BOA, ...).
    pub online: OnlineOptions,
    /// Settings of stacking and blending (window, refits).
    pub meta: MetaOptions,
    /// Regime detection for the `regime` method; `None` uses the ensemble's own regime
    /// configuration, and when it has none the method is left out (with a note in the report).
    pub regime: Option<RegimeOptions>,
    /// Leave the `regime` method out even when the ensemble configures regimes.
    pub without_regimes: bool,
}

impl BacktestOptions {
    /// Backtest against the outcome column `outcome`, with default settings.
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

/// The online rules a backtest runs, in report order.
pub const ONLINE_METHODS: [StrategyKind; 4] =
    [StrategyKind::Hedge, StrategyKind::Boa, StrategyKind::Mlpol, StrategyKind::Ewa];

/// Metrics of one method over some rows. Classification: accuracy, F1, log-loss and Brier score;
/// regression: RMSE, MAE (outcome units) and MAPE (a fraction, over rows whose outcome is not 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct MethodMetrics {
    /// Rows scored.
    pub count: usize,
    /// Classification: share of rows whose label matched the outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Classification: F1 score of the positive class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1_score: Option<f64>,
    /// Classification: mean binary cross-entropy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<f64>,
    /// Classification: mean squared error of the probability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brier: Option<f64>,
    /// Regression: root mean squared error, in outcome units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Regression: mean absolute error, in outcome units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Regression: mean absolute percentage error, as a fraction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mape: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Scores {
    count: usize,
    correct: usize,
    tp: usize,
    fp: usize,
    fn_: usize,
    log_loss: f64,
    squared: f64,
    absolute: f64,
    percentage: f64,
    percentage_count: usize,
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
        self.squared += (p - y).powi(2);
        self.absolute += (p - y).abs();
        if y != 0.0 {
            self.percentage += ((p - y) / y).abs();
            self.percentage_count += 1;
        }
    }

    fn metrics(&self, task: Task) -> MethodMetrics {
        let n = self.count.max(1) as f64;
        let mut m = MethodMetrics { count: self.count, ..MethodMetrics::default() };
        match task {
            Task::Classification => {
                let f1_den = 2 * self.tp + self.fp + self.fn_;
                m.accuracy = Some(self.correct as f64 / n);
                m.f1_score = Some(if f1_den == 0 { 0.0 } else { 2.0 * self.tp as f64 / f1_den as f64 });
                m.log_loss = Some(self.log_loss / n);
                m.brier = Some(self.squared / n);
            }
            Task::Regression => {
                m.rmse = Some((self.squared / n).sqrt());
                m.mae = Some(self.absolute / n);
                m.mape = (self.percentage_count > 0).then(|| self.percentage / self.percentage_count as f64);
            }
        }
        m
    }
}

fn log_loss(p: f64, y: f64) -> f64 {
    let p = p.clamp(CLIP, 1.0 - CLIP);
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

/// The result of a backtest.
#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    /// `classification` or `regression`: which metrics the methods carry.
    pub task: Task,
    /// Data rows in the file.
    pub rows: usize,
    /// Rows every method was scored on.
    pub scored: usize,
    /// Rows the engine refused (skipped by every method).
    pub refused: usize,
    /// Classification: share of scored rows whose outcome is 1. Regression: mean outcome.
    pub base_rate: f64,
    /// Method names in report order: members, then the combinations.
    pub method_order: Vec<String>,
    /// Each method's metrics over every scored row, by name.
    pub methods: BTreeMap<String, MethodMetrics>,
    /// Hindsight oracles (not methods: they see every outcome in advance), by name:
    /// `best-member` and `best-convex`.
    pub oracles: BTreeMap<String, Oracle>,
    /// Per regime, each method's and oracle's metrics on that regime's rows.
    pub regimes: BTreeMap<String, BTreeMap<String, MethodMetrics>>,
    /// Per scored row, in order: the row's index in the file, its regime and each method's prediction.
    pub timeline: Timeline,
    /// What the reader should know about how it ran (a method left out and why).
    pub notes: Vec<String>,
}

/// Row-by-row record of the backtest (for the report file and the chart).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Timeline {
    /// The row's index in the file (0-based, header excluded).
    pub row: Vec<usize>,
    /// The regime the row was in.
    pub regime: Vec<Regime>,
    /// The row's outcome.
    pub outcome: Vec<f64>,
    /// Method → its prediction at each scored row.
    pub predictions: BTreeMap<String, Vec<f64>>,
    /// Member names, the order of the weight vectors below.
    pub members: Vec<String>,
    /// Method (`hedge`, `boa`, `mlpol`, `ewa`, `blending`) → the weights in force at each scored row.
    pub weights: BTreeMap<String, Vec<Vec<f64>>>,
}

impl BacktestReport {
    /// The object `quorum backtest --json` prints: `{"task", "rows", "methods", "oracles", "regimes"}`
    /// (plus `refused` and `notes`).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "task": self.task,
            "rows": self.rows,
            "refused": self.refused,
            "methods": self.methods,
            "oracles": self.oracles,
            "regimes": self.regimes,
            "notes": self.notes,
        })
    }

    /// The per-row loss the chart accumulates: log-loss (classification) or squared error (regression).
    fn row_loss(&self, p: f64, y: f64) -> f64 {
        match self.task {
            Task::Classification => log_loss(p, y),
            Task::Regression => (p - y).powi(2),
        }
    }

    /// Cumulative loss of `method` (or an oracle) at each scored row: log-loss for classification,
    /// squared error for regression.
    pub fn cumulative_loss(&self, method: &str) -> Vec<f64> {
        let mut total = 0.0;
        self.timeline.predictions.get(method).map_or_else(Vec::new, |p| {
            p.iter()
                .zip(&self.timeline.outcome)
                .map(|(p, y)| {
                    total += self.row_loss(*p, *y);
                    total
                })
                .collect()
        })
    }

    /// Writes `backtest.json` (everything, including the timeline) and `backtest.svg` (weights over
    /// time, cumulative loss per method) into `dir`.
    ///
    /// # Errors
    ///
    /// `io` when a file cannot be written.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::json("backtest report", e))?;
        let svg = chart::backtest_svg(self)?;
        let json_path = dir.join("backtest.json");
        let svg_path = dir.join("backtest.svg");
        write_whole(&json_path, &json)?;
        write_whole(&svg_path, svg.as_bytes())?;
        Ok((json_path, svg_path))
    }
}

/// Writes `bytes` beside `path` and renames it over `path`: a reader, or a run killed mid-write,
/// sees the previous report or the whole new one.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("writing {}", path.display()), e)
    })
}

/// Runs the backtest of `ensemble` over the CSV file `data`.
///
/// # Errors
///
/// `not_found` for an unknown ensemble; `io` or `invalid_input` when the file cannot be read or lacks a feature or the
/// outcome column; `config` for invalid options.
pub fn backtest(
    engine: &InferenceEngine,
    ensemble: &str,
    data: &Path,
    options: &BacktestOptions,
) -> Result<BacktestReport> {
    backtest_table(engine, ensemble, &Table::read(data)?, options)
}

/// Runs the backtest over an already-read table.
///
/// # Errors
///
/// As [`backtest`]: `not_found`, `invalid_input` (a missing column) or `config`.
pub fn backtest_table(
    engine: &InferenceEngine,
    ensemble: &str,
    table: &Table,
    options: &BacktestOptions,
) -> Result<BacktestReport> {
    options.online.validate()?;
    let handle = engine.ensemble(ensemble)?;
    let task = handle.task();
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
    method_order.extend(["equal", "static"].map(String::from));
    method_order.extend(ONLINE_METHODS.iter().map(|k| k.as_str().to_string()));
    method_order.extend(["stacking", "blending"].map(String::from));
    if regime_column.is_some() {
        method_order.push("regime".into());
    }
    let mut overall: Vec<Scores> = vec![Scores::default(); method_order.len()];
    let mut by_regime: BTreeMap<Regime, Vec<Scores>> = BTreeMap::new();
    let mut timeline = Timeline { members: members.clone(), ..Timeline::default() };
    let mut series: Vec<Vec<f64>> = vec![Vec::new(); method_order.len()];
    let mut weight_series: Vec<Vec<Vec<f64>>> = vec![Vec::new(); ONLINE_METHODS.len() + 1];
    // Filled-in member predictions per scored row, for the oracles.
    let mut member_rows: Vec<f64> = Vec::new();

    let new_rule = |kind| OnlineRule::new(kind, &static_weights, options.online).expect("an online rule");
    let mut rules: Vec<OnlineRule> = ONLINE_METHODS.iter().map(|&k| new_rule(k)).collect();
    let mut per_regime: Vec<OnlineRule> = Regime::ALL.iter().map(|_| new_rule(StrategyKind::Hedge)).collect();
    let mut stacker = MetaLearner::stacking(task, options.meta);
    let mut blender = MetaLearner::blending(task, options.meta);
    let mut detector = regime_options.map(RegimeDetector::new);

    let (mut refused, mut outcome_sum) = (0, 0.0);
    let mut row_values = Vec::with_capacity(feature_columns.len());
    let mut weights = vec![0.0; m];
    let mut predictions: Vec<f64> = Vec::with_capacity(method_order.len());
    for row in 0..table.rows() {
        let Ok(outcome) = table.cell(row, outcome_column) else {
            refused += 1;
            continue;
        };
        row_values.clear();
        let readable =
            feature_columns.iter().try_for_each(|&c| table.feature(row, c).map(|v| row_values.push(v)).map_err(|_| ()));
        let prediction = match readable {
            Ok(()) if outcome.is_finite() => handle.predict_row(&row_values).ok(),
            _ => None,
        };
        let Some(prediction) = prediction else {
            refused += 1;
            continue;
        };
        let regime = match (&mut detector, regime_column) {
            (Some(d), Some(c)) => d.observe(table.cell(row, c).unwrap_or(f64::NAN)),
            _ => Regime::Normal,
        };
        let y = outcome;
        outcome_sum += y;
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
        predictions.extend(member_values.iter().map(|v| v.unwrap_or(equal)));
        member_rows.extend_from_slice(&predictions);
        predictions.push(equal);
        predictions.push(weighted(&static_weights));
        for (rule, kept) in rules.iter().zip(&mut weight_series) {
            rule.rule().weights(&answered, &mut weights);
            kept.push(weights.clone());
            predictions.push(weighted(&weights));
        }
        let complete: Option<Vec<f64>> = member_values.iter().copied().collect();
        let stacked = complete.as_deref().and_then(|x| stacker.predict(x)).unwrap_or_else(|| weighted(&static_weights));
        predictions.push(stacked);
        let blend = blender.params().map_or_else(|| static_weights.clone(), <[f64]>::to_vec);
        predictions.push(weighted(&blend));
        weight_series[ONLINE_METHODS.len()].push(blend);
        if detector.is_some() {
            per_regime[regime.index()].rule().weights(&answered, &mut weights);
            predictions.push(weighted(&weights));
        }

        timeline.row.push(row);
        timeline.regime.push(regime);
        timeline.outcome.push(y);
        let regime_scores = by_regime.entry(regime).or_insert_with(|| vec![Scores::default(); method_order.len()]);
        for (i, &p) in predictions.iter().enumerate() {
            overall[i].add(p, y);
            regime_scores[i].add(p, y);
            series[i].push(p);
        }

        // Only now does the outcome of row t reach the learners.
        for rule in &mut rules {
            rule.rule_mut().update(&member_values, y);
        }
        per_regime[regime.index()].rule_mut().update(&member_values, y);
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
    let oracles = oracle::oracles(&members, &member_rows, &timeline.outcome);
    let mut regimes: BTreeMap<String, BTreeMap<String, MethodMetrics>> = by_regime
        .into_iter()
        .map(|(r, scores)| {
            let named = method_order.iter().zip(&scores).map(|(n, s)| (n.clone(), s.metrics(task))).collect();
            (r.as_str().to_string(), named)
        })
        .collect();
    for (name, o) in &oracles {
        let mut per: BTreeMap<Regime, Scores> = BTreeMap::new();
        for ((p, y), r) in o.predictions.iter().zip(&timeline.outcome).zip(&timeline.regime) {
            per.entry(*r).or_default().add(*p, *y);
        }
        for (r, s) in per {
            regimes.entry(r.as_str().to_string()).or_default().insert(name.clone(), s.metrics(task));
        }
    }
    let mut oracles: BTreeMap<String, Oracle> = oracles.into_iter().collect();
    for o in oracles.values_mut() {
        let mut s = Scores::default();
        o.predictions.iter().zip(&timeline.outcome).for_each(|(p, y)| s.add(*p, *y));
        o.metrics = s.metrics(task);
    }
    for (name, o) in &oracles {
        timeline.predictions.insert(name.clone(), o.predictions.clone());
    }
    timeline.predictions.extend(method_order.iter().cloned().zip(series));
    let weighted_methods = ONLINE_METHODS.iter().map(|k| k.as_str()).chain(["blending"]);
    timeline.weights = weighted_methods.map(String::from).zip(weight_series).collect();
    Ok(BacktestReport {
        task,
        notes,
        rows: table.rows(),
        scored,
        refused,
        base_rate: outcome_sum / scored as f64,
        methods: method_order.iter().cloned().zip(overall.iter().map(|s| s.metrics(task))).collect(),
        oracles,
        regimes,
        method_order,
        timeline,
    })
}

impl std::fmt::Display for BacktestReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let base = match self.task {
            Task::Classification => "base rate (share of 1s)",
            Task::Regression => "mean outcome",
        };
        writeln!(
            f,
            "rows {}  scored {}  refused {}  {base} {:.4}",
            self.rows, self.scored, self.refused, self.base_rate
        )?;
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        let regimes: Vec<&String> = self.regimes.keys().collect();
        let (headers, regime_metric): ([&str; 4], &str) = match self.task {
            Task::Classification => (["accuracy", "f1", "log_loss", "brier"], "acc"),
            Task::Regression => (["rmse", "mae", "mape", ""], "rmse"),
        };
        write!(f, "\n{:<12}", "method")?;
        for h in headers {
            write!(f, " {h:>11}")?;
        }
        for r in &regimes {
            write!(f, " {:>16}", format!("{regime_metric}[{r}]"))?;
        }
        writeln!(f)?;
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, m: &MethodMetrics| -> std::fmt::Result {
            let cells = match self.task {
                Task::Classification => [m.accuracy, m.f1_score, m.log_loss, m.brier],
                Task::Regression => [m.rmse, m.mae, m.mape.map(|p| p * 100.0), None],
            };
            write!(f, "{name:<12}")?;
            for (c, h) in cells.iter().zip(headers) {
                match (c, h) {
                    (_, "") => {}
                    (Some(v), "mape") => write!(f, " {:>10.2}%", v)?,
                    (Some(v), _) => write!(f, " {v:>11.4}")?,
                    (None, _) => write!(f, " {:>11}", "-")?,
                }
            }
            for r in &regimes {
                let cell = self.regimes[*r].get(name).map_or("-".into(), |m| {
                    let v = match self.task {
                        Task::Classification => m.accuracy,
                        Task::Regression => m.rmse,
                    };
                    format!("{:.4} ({})", v.unwrap_or(f64::NAN), m.count)
                });
                write!(f, " {cell:>16}")?;
            }
            writeln!(f)
        };
        for name in &self.method_order {
            row(f, name, &self.methods[name])?;
        }
        if !self.oracles.is_empty() {
            writeln!(f, "hindsight oracles (chosen after seeing every outcome; not methods):")?;
            for (name, o) in &self.oracles {
                row(f, name, &o.metrics)?;
            }
            for (name, o) in &self.oracles {
                let weights: Vec<String> = o.weights.iter().map(|(m, w)| format!("{m} {w:.3}")).collect();
                writeln!(f, "  {name}: {}", weights.join(", "))?;
            }
        }
        Ok(())
    }
}
