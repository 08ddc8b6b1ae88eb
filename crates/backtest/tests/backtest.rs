//! Walk-forward backtest: JSON contract, no look-ahead, and no skill on shuffled outcomes.

#[path = "../../../tests/common/mod.rs"]
mod common;

use quorum::regime::RegimeOptions;
use quorum::replay::Table;
use quorum_backtest::{backtest_table, BacktestOptions, BacktestReport};

const METHODS: [&str; 12] = [
    "technical",
    "fundamental",
    "sentiment",
    "equal",
    "static",
    "hedge",
    "boa",
    "mlpol",
    "ewa",
    "stacking",
    "blending",
    "regime",
];

/// The holdout CSV with its outcome column rewritten by `rewrite(row_index, outcome)`.
fn holdout_with(rewrite: impl Fn(usize, &str) -> String) -> Table {
    let text = std::fs::read_to_string(common::repo().join("examples/data/holdout.csv")).unwrap();
    let mut lines = text.lines();
    let mut out = vec![lines.next().unwrap().to_string()];
    for (i, line) in lines.enumerate() {
        let (rest, outcome) = line.rsplit_once(',').unwrap();
        out.push(format!("{rest},{}", rewrite(i, outcome)));
    }
    Table::parse(&out.join("\n")).unwrap()
}

fn options() -> BacktestOptions {
    let mut o = BacktestOptions::new("next_day_up");
    o.regime = Some(RegimeOptions::new("ret_1d"));
    o
}

fn run(engine: &quorum::InferenceEngine, table: &Table) -> BacktestReport {
    backtest_table(engine, "market", table, &options()).unwrap()
}

#[test]
fn every_method_is_scored_on_the_same_rows() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let report = run(&engine, &holdout_with(|_, y| y.to_string()));
    assert_eq!((report.rows, report.scored, report.refused), (501, 499, 2));
    for name in METHODS {
        let m = report.methods.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(m.count, 499, "{name}");
        assert!((0.0..=1.0).contains(&m.accuracy.unwrap()) && m.log_loss.unwrap() > 0.0 && m.brier.unwrap() > 0.0);
        assert!(m.rmse.is_none(), "a classification backtest reports classification metrics");
    }
    let per_regime: usize = report.regimes.values().map(|r| r["equal"].count).sum();
    assert_eq!(per_regime, 499);
    assert!(report.regimes.keys().all(|r| ["low", "normal", "high"].contains(&r.as_str())));
    let summary = report.summary();
    assert_eq!(summary["rows"], 501);
    for name in METHODS {
        for key in ["accuracy", "f1_score", "log_loss", "brier"] {
            assert!(summary["methods"][name][key].is_number(), "{name}.{key}");
        }
    }
    let dir = home.path().join("report");
    let (json, svg) = report.write(&dir).unwrap();
    assert!(std::fs::read_to_string(svg).unwrap().contains("<svg"));
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    for rule in ["hedge", "boa", "mlpol", "ewa", "blending"] {
        assert_eq!(written["timeline"]["weights"][rule].as_array().unwrap().len(), 499, "{rule}");
    }
    for oracle in ["best-member", "best-convex"] {
        assert_eq!(summary["oracles"][oracle]["hindsight"], true);
        assert!(summary["methods"].get(oracle).is_none(), "an oracle is never listed as a method");
    }
}

#[test]
fn rewriting_future_outcomes_changes_no_earlier_prediction() {
    // If any method peeked at row t's outcome (or later ones) before predicting row t, flipping the
    // outcomes from row k on would change some prediction at a row ≤ k.
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let original = run(&engine, &holdout_with(|_, y| y.to_string()));
    for k in [0usize, 100, 250, 400] {
        let flipped = run(
            &engine,
            &holdout_with(|i, y| {
                if i >= k {
                    if y == "1" {
                        "0".into()
                    } else {
                        "1".into()
                    }
                } else {
                    y.to_string()
                }
            }),
        );
        let last_unaffected = original.timeline.row.iter().position(|&r| r >= k).unwrap();
        for name in METHODS {
            let (a, b) = (&original.timeline.predictions[name], &flipped.timeline.predictions[name]);
            assert_eq!(
                a[..=last_unaffected],
                b[..=last_unaffected],
                "{name} used outcomes from row {k} on before predicting row {k}"
            );
        }
        assert_ne!(
            original.timeline.predictions["hedge"], flipped.timeline.predictions["hedge"],
            "the learners do learn"
        );
    }
}

#[test]
fn with_shuffled_outcomes_no_method_beats_the_base_rate_beyond_noise() {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let text = std::fs::read_to_string(common::repo().join("examples/data/holdout.csv")).unwrap();
    let mut outcomes: Vec<String> = text.lines().skip(1).map(|l| l.rsplit_once(',').unwrap().1.to_string()).collect();
    for seed in [1u64, 2, 3] {
        // Fisher–Yates with a fixed xorshift stream: the same shuffles on every run.
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for i in (1..outcomes.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            outcomes.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let report = run(&engine, &holdout_with(|i, _| outcomes[i].clone()));
        let base = report.base_rate.max(1.0 - report.base_rate);
        let noise = 3.0 * (base * (1.0 - base) / report.scored as f64).sqrt();
        let base_brier = report.base_rate * (1.0 - report.base_rate);
        for name in METHODS {
            let m = report.methods[name];
            let (accuracy, brier) = (m.accuracy.unwrap(), m.brier.unwrap());
            assert!(
                accuracy <= base + noise,
                "seed {seed}: {name} accuracy {accuracy} beats base rate {base} + {noise}"
            );
            assert!(brier >= base_brier - 0.02, "seed {seed}: {name} Brier {brier} beats {base_brier}");
        }
    }
}

/// A regression ensemble over `tests/fixtures/linear.onnx` (2·first + second): member `ab` = 2a + b,
/// `ba` = 2b + a. The outcome is 0.8·ab + 0.2·ba plus a little noise, so the best constant convex
/// combination is near (0.8, 0.2) and beats either member alone.
fn regression_engine(home: &std::path::Path) -> (quorum::InferenceEngine, Table) {
    let engine = common::engine(home);
    let linear = common::repo().join("tests/fixtures/linear.onnx");
    for (name, features) in [("ab", ["a", "b"]), ("ba", ["b", "a"])] {
        let reg = quorum::ModelRegistration::new(name, &linear, features)
            .with_task(quorum::Task::Regression)
            .with_output("variable".parse::<quorum::OutputSpec>().unwrap());
        engine.register_model(reg).unwrap();
    }
    let members = ["ab", "ba"].map(|m| m.parse::<quorum::MemberSpec>().unwrap());
    engine.create_ensemble(quorum::EnsembleConfig::new("values", members)).unwrap();
    let mut csv = String::from("a,b,ret,y\n");
    for t in 0..400 {
        let (a, b) = (100.0 * (t as f64 * 0.13).sin() + 300.0, 80.0 * (t as f64 * 0.029).cos() + 250.0);
        let (ab, ba) = (2.0 * a + b, 2.0 * b + a);
        let noise = 3.0 * (t as f64 * 2.1).sin();
        csv.push_str(&format!("{a},{b},{},{}\n", 0.01 * (t as f64 * 0.7).sin(), 0.8 * ab + 0.2 * ba + noise));
    }
    (engine, Table::parse(&csv).unwrap())
}

#[test]
fn a_regression_backtest_reports_rmse_mae_mape_and_hindsight_oracles() {
    let home = tempfile::tempdir().unwrap();
    let (engine, table) = regression_engine(home.path());
    let mut options = BacktestOptions::new("y");
    options.regime = Some(RegimeOptions::new("ret"));
    let report = backtest_table(&engine, "values", &table, &options).unwrap();
    assert_eq!(report.scored, 400);
    for name in &report.method_order {
        let m = report.methods[name];
        assert!(m.rmse.unwrap() > 0.0 && m.mae.unwrap() > 0.0 && m.mape.unwrap() > 0.0, "{name}: {m:?}");
        assert!(m.accuracy.is_none() && m.log_loss.is_none(), "{name}: regression has no classification metrics");
    }
    let convex = &report.oracles["best-convex"];
    assert!((convex.weights["ab"] - 0.8).abs() < 0.02, "{:?}", convex.weights);
    let best_member = report.oracles["best-member"].metrics.rmse.unwrap();
    assert!(convex.metrics.rmse.unwrap() < best_member);
    // Every online rule learns the mixture: better than the best member alone, near the oracle.
    for rule in ["hedge", "boa", "mlpol", "ewa"] {
        let rmse = report.methods[rule].rmse.unwrap();
        assert!(rmse < best_member, "{rule}: RMSE {rmse} vs best member {best_member}");
    }
    assert!(report.regimes.values().all(|r| r.contains_key("best-convex") && r.contains_key("mlpol")));
    let text = report.to_string();
    assert!(text.contains("rmse") && text.contains("hindsight oracles"), "{text}");
    let (json, svg) = report.write(&home.path().join("r")).unwrap();
    assert!(std::fs::read_to_string(svg).unwrap().contains("squared error"));
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert_eq!(written["task"], "regression");
    assert_eq!(written["timeline"]["predictions"]["best-convex"].as_array().unwrap().len(), 400);
}

#[test]
fn a_regression_backtest_does_not_look_ahead() {
    let home = tempfile::tempdir().unwrap();
    let (engine, table) = regression_engine(home.path());
    let original = backtest_table(&engine, "values", &table, &BacktestOptions::new("y")).unwrap();
    // Rewrite every outcome from row 200 on: predictions up to row 200 must not move.
    let mut csv = String::from("a,b,ret,y\n");
    for row in 0..table.rows() {
        let cells: Vec<f64> = (0..4).map(|c| table.cell(row, c).unwrap()).collect();
        let y = if row >= 200 { -cells[3] } else { cells[3] };
        csv.push_str(&format!("{},{},{},{y}\n", cells[0], cells[1], cells[2]));
    }
    let rewritten =
        backtest_table(&engine, "values", &Table::parse(&csv).unwrap(), &BacktestOptions::new("y")).unwrap();
    for name in &original.method_order {
        let (a, b) = (&original.timeline.predictions[name], &rewritten.timeline.predictions[name]);
        assert_eq!(a[..=200], b[..=200], "{name} looked ahead");
    }
    assert_ne!(original.timeline.predictions["mlpol"], rewritten.timeline.predictions["mlpol"]);
}
