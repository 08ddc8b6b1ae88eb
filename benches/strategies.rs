//! Per-strategy costs: a single-row prediction of the three-model ensemble under each strategy, the
//! combine step alone, `record_outcome` (tracking plus the online update) and each online rule's
//! update alone (`online_update`, three members, after 2 000 outcomes). `cargo bench --bench strategies`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use quorum::adaptive::RegimeConfig;
use quorum::online::{OnlineOptions, OnlineRule};
use quorum::regime::RegimeOptions;
use quorum::{EnsembleConfig, MemberSpec, SoftVote, Stacking, Strategy, StrategyKind, Task};

fn members() -> [MemberSpec; 3] {
    ["technical", "fundamental", "sentiment"].map(|m| m.parse().unwrap())
}

fn bench(c: &mut Criterion) {
    let home = tempfile::tempdir().unwrap();
    let engine = common::market_engine(home.path());
    let rows = common::holdout_features(200);
    let regimes = RegimeConfig { detector: RegimeOptions::new("ret_1d"), strategies: Default::default() };
    let configs = [
        ("soft-vote", EnsembleConfig::new("b-soft", members())),
        ("majority", EnsembleConfig::new("b-majority", members()).with_strategy(StrategyKind::Majority)),
        ("hedge", EnsembleConfig::new("b-hedge", members()).with_strategy(StrategyKind::Hedge)),
        ("boa", EnsembleConfig::new("b-boa", members()).with_strategy(StrategyKind::Boa)),
        ("mlpol", EnsembleConfig::new("b-mlpol", members()).with_strategy(StrategyKind::Mlpol)),
        ("ewa", EnsembleConfig::new("b-ewa", members()).with_strategy(StrategyKind::Ewa)),
        ("stacking", EnsembleConfig::new("b-stacking", members()).with_strategy(StrategyKind::Stacking)),
        ("blending", EnsembleConfig::new("b-blending", members()).with_strategy(StrategyKind::Blending)),
        (
            "regime-hedge",
            EnsembleConfig::new("b-regime", members()).with_strategy(StrategyKind::Hedge).with_regimes(regimes),
        ),
    ];
    let mut names = Vec::new();
    for (label, config) in configs {
        let name = config.name.clone();
        engine.create_ensemble(config).unwrap();
        // Teach every ensemble 200 outcomes so that stacking and blending are fitted.
        for (i, f) in rows.iter().enumerate() {
            let p = engine.predict(&name, f).unwrap();
            engine.record_outcome(p.request_id, (i % 2) as f64).unwrap();
        }
        assert!(label != "stacking" || engine.predict(&name, &rows[0]).unwrap().fit_window.is_some());
        names.push((label, name));
    }
    let schema = engine.ensemble("b-soft").unwrap().feature_names().to_vec();
    let row: Vec<f32> = schema.iter().map(|n| rows[0].get(n).unwrap()).collect();

    let mut predict = c.benchmark_group("predict_row");
    for (label, name) in &names {
        let handle = engine.ensemble(name).unwrap();
        predict.bench_function(*label, |b| b.iter(|| handle.predict_row(black_box(&row)).unwrap()));
    }
    predict.finish();

    let mut combine = c.benchmark_group("combine");
    let (values, weights, coefficients) = ([0.55f32, 0.48, 0.61], [0.4f32, 0.4, 0.2], [0.9f32, 0.7, 0.3]);
    combine.bench_function("soft-vote", |b| {
        b.iter(|| SoftVote.combine(Task::Classification, black_box(&values), black_box(&weights)))
    });
    combine.bench_function("stacking", |b| {
        b.iter(|| {
            Stacking { intercept: 0.05 }.combine(Task::Classification, black_box(&values), black_box(&coefficients))
        })
    });
    combine.finish();

    let mut outcome = c.benchmark_group("record_outcome");
    for (label, name) in &names {
        let handle = engine.ensemble(name).unwrap();
        outcome.bench_function(*label, |b| {
            b.iter_batched(
                || handle.predict_row(&row).unwrap().request_id,
                |id| engine.record_outcome(id, 1.0).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    outcome.finish();

    // The rule alone: regression-scale outcomes (hundreds), three members, one of them asleep 1 in 10.
    let round = |t: usize| -> (Vec<Option<f64>>, f64) {
        let y = 150.0 + 100.0 * (t as f64 * 0.01).sin();
        let x =
            vec![Some(y * 1.1), (!t.is_multiple_of(10)).then_some(y * 0.8 + 5.0), Some(y + 20.0 * (t as f64).cos())];
        (x, y)
    };
    let mut update = c.benchmark_group("online_update");
    for kind in [StrategyKind::Hedge, StrategyKind::Boa, StrategyKind::Mlpol, StrategyKind::Ewa] {
        let mut rule = OnlineRule::new(kind, &[0.4, 0.4, 0.2], OnlineOptions::default()).unwrap();
        for t in 0..2000 {
            let (x, y) = round(t);
            rule.rule_mut().update(&x, y);
        }
        let mut t = 2000;
        update.bench_function(kind.as_str(), |b| {
            b.iter(|| {
                let (x, y) = round(t);
                t += 1;
                rule.rule_mut().update(black_box(&x), black_box(y));
            })
        });
    }
    update.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(50);
    targets = bench
}
criterion_main!(benches);
