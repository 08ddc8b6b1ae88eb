//! The engine's adaptive strategies, fed their outcomes in order, predict what the walk-forward
//! backtest reports for the same methods.

#[path = "../../../tests/common/mod.rs"]
mod common;

use quorum::adaptive::RegimeConfig;
use quorum::regime::RegimeOptions;
use quorum::replay::Table;
use quorum::{EnsembleConfig, MemberSpec, StrategyKind};
use quorum_backtest::{backtest_table, BacktestOptions};

fn members() -> [MemberSpec; 3] {
    ["technical", "fundamental", "sentiment"].map(|m| m.parse().unwrap())
}

/// Replays the holdout through `ensemble`, recording each outcome right after its prediction;
/// returns the ensemble's prediction for every row it accepted.
fn replay(engine: &quorum::InferenceEngine, ensemble: &str) -> Vec<f32> {
    let handle = engine.ensemble(ensemble).unwrap();
    let table = Table::read(&common::repo().join("examples/data/holdout.csv")).unwrap();
    let columns: Vec<usize> = handle.feature_names().iter().map(|f| table.column_index(f).unwrap()).collect();
    let outcome = table.column_index("next_day_up").unwrap();
    let mut out = Vec::new();
    for row in 0..table.rows() {
        let values: Vec<f32> = columns.iter().map(|&c| table.feature(row, c).unwrap()).collect();
        let Ok(p) = handle.predict_row(&values) else { continue };
        engine.record_outcome(p.request_id, table.cell(row, outcome).unwrap()).unwrap();
        out.push(p.prediction);
    }
    out
}

#[test]
fn engine_strategies_predict_what_the_backtest_reports() {
    let home = tempfile::tempdir().unwrap();
    common::market_engine(home.path());
    // Refits inside record_outcome: every prediction sees the fits due before it, as in the backtest.
    let engine = quorum::InferenceEngine::builder(home.path()).with_synchronous_refits().build().unwrap();
    let regimes = RegimeConfig { detector: RegimeOptions::new("ret_1d"), strategies: Default::default() };
    let configs = [
        ("hedge", EnsembleConfig::new("e-hedge", members()).with_strategy(StrategyKind::Hedge)),
        ("boa", EnsembleConfig::new("e-boa", members()).with_strategy(StrategyKind::Boa)),
        ("mlpol", EnsembleConfig::new("e-mlpol", members()).with_strategy(StrategyKind::Mlpol)),
        ("ewa", EnsembleConfig::new("e-ewa", members()).with_strategy(StrategyKind::Ewa)),
        ("stacking", EnsembleConfig::new("e-stacking", members()).with_strategy(StrategyKind::Stacking)),
        ("blending", EnsembleConfig::new("e-blending", members()).with_strategy(StrategyKind::Blending)),
        ("regime", EnsembleConfig::new("e-regime", members()).with_strategy(StrategyKind::Hedge).with_regimes(regimes)),
    ];
    let mut options = BacktestOptions::new("next_day_up");
    options.regime = Some(RegimeOptions::new("ret_1d"));
    let table = Table::read(&common::repo().join("examples/data/holdout.csv")).unwrap();
    let report = backtest_table(&engine, "market", &table, &options).unwrap();
    for (method, config) in configs {
        let name = config.name.clone();
        engine.create_ensemble(config.with_weights(vec![0.4, 0.4, 0.2])).unwrap();
        let live = replay(&engine, &name);
        let offline = &report.timeline.predictions[method];
        assert_eq!(live.len(), offline.len());
        let worst = live.iter().zip(offline).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-4, "{method}: the engine and the backtest differ by {worst}");
        let first_change = live.windows(2).position(|w| w[0] != w[1]);
        assert!(first_change.is_some());
    }
}
