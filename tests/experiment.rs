//! A/B experiments: the decision rules' error rate and power on simulated outcomes, and the whole
//! loop on the real example models — routing, guardrails, rollback during a replay, promotion,
//! stickiness and a restart.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{features_of, holdout_features, market_engine, model_file, repo};
use quorum::experiment::simulate::{simulate, Scenario};
use quorum::{
    Arm, EnsembleConfig, ExperimentConfig, ExperimentState, Fault, InferenceEngine, MemberSpec, ModelRegistration,
    ReplayOptions,
};

fn members(names: [&str; 3]) -> Vec<MemberSpec> {
    names.map(|m| m.parse::<MemberSpec>().expect("member")).to_vec()
}

/// A version of the `market` ensemble with these members (weights as the example's).
fn market_version(engine: &InferenceEngine, names: [&str; 3]) -> u32 {
    let config = EnsembleConfig::new("market", members(names)).with_weights(vec![0.4, 0.4, 0.2]);
    engine.create_ensemble(config).expect("ensemble").version
}

/// The technical model with its output layer negated and sharpened six times: confidently wrong.
fn degraded_technical(dir: &Path) -> std::path::PathBuf {
    let bytes = std::fs::read(model_file("technical")).expect("model");
    let mut model = quorum::onnx::decode(&bytes).expect("decode");
    let graph = model.graph.as_mut().expect("graph");
    for t in graph.initializer.iter_mut() {
        if matches!(t.name.as_deref(), Some("coefficient2" | "intercepts2")) {
            let values: Vec<f32> = quorum::onnx::float_values(t).expect("floats").iter().map(|v| -6.0 * v).collect();
            *t = quorum::onnx::f32_tensor(t.name.as_deref().unwrap_or_default(), &t.dims.clone(), &values);
        }
    }
    let path = dir.join("technical_degraded.onnx");
    std::fs::write(&path, quorum::onnx::encode(&model)).expect("write");
    path
}

fn quick(config: &mut ExperimentConfig) {
    config.steps = vec![50.0, 100.0];
    config.min_outcomes_per_step = 100;
    config.guardrails.interval_ms = 100;
}

#[test]
fn an_aa_test_decides_at_most_alpha_while_a_naive_z_test_checked_as_often_does_not() {
    let mut config = ExperimentConfig::new("aa", "market", 1, 2);
    config.min_outcomes_per_step = 100;
    config.max_outcomes = 10_000;
    let runs = 1000;
    let r = simulate(&config, &Scenario { treatment_logit_noise: 0.0, runs, seed: 11 }).expect("simulate");
    let rate = r.decided() as f64 / runs as f64;
    // alpha plus three Monte Carlo standard errors.
    let bound = 0.05 + 3.0 * (0.05f64 * 0.95 / runs as f64).sqrt();
    assert!(rate <= bound, "A/A decided in {rate} of runs: {r:?}");
    let naive = r.naive_decisions as f64 / runs as f64;
    assert!(naive > 2.0 * bound, "the naive z-test decided in only {naive} of runs");
}

#[test]
fn a_treatment_with_worse_log_loss_is_rolled_back_in_at_least_nine_runs_of_ten() {
    let mut config = ExperimentConfig::new("power", "market", 1, 2);
    config.min_outcomes_per_step = 100;
    config.max_outcomes = 20_000;
    let r = simulate(&config, &Scenario { treatment_logit_noise: 0.8, runs: 300, seed: 5 }).expect("simulate");
    assert!(r.delta_log_loss > 0.05 && r.delta_log_loss < 0.1, "δ = {}", r.delta_log_loss);
    assert!(r.rolled_back * 10 >= r.runs * 9, "{r:?}");
    assert_eq!(r.promoted, 0, "{r:?}");
    assert!(r.median_outcomes_to_decision.is_some());
}

#[test]
fn a_treatment_failing_a_tenth_of_calls_is_rolled_back_by_the_guardrail_within_seconds() {
    let home = tempfile::tempdir().expect("home");
    let engine = market_engine(home.path());
    engine
        .register_model(ModelRegistration::new("candidate", model_file("technical"), features_of("technical")))
        .expect("register");
    let treatment = market_version(&engine, ["candidate", "fundamental", "sentiment"]);
    let mut config = ExperimentConfig::new("faulty", "market", 1, treatment);
    quick(&mut config);
    let status = engine.start_experiment(config).expect("start");
    assert_eq!(status.state, ExperimentState::Running);
    engine.inject_fault("candidate", Some(Fault::FailFraction(0.1)));
    let handle = engine.ensemble("market").expect("handle");
    let rows = holdout_features(400);
    let started = Instant::now();
    let mut treated = 0;
    while engine.experiment_status("faulty").expect("status").state == ExperimentState::Running {
        assert!(started.elapsed() < Duration::from_secs(10), "no rollback after 10 s");
        for features in &rows {
            if let Ok(p) = handle.predict(features) {
                // None once the experiment has ended.
                let Some(arm) = p.experiment.as_ref().map(|e| e.arm) else { break };
                treated += usize::from(arm == Arm::Treatment);
                // Outcomes too: the guardrail must act before the test on them could.
                let _ = engine.record_outcome(p.request_id, 1.0);
            }
        }
    }
    let status = engine.experiment_status("faulty").expect("status");
    eprintln!("rolled back by the guardrail after {:.2} s", started.elapsed().as_secs_f64());
    assert_eq!(status.state, ExperimentState::RolledBack, "{status:?}");
    let decision = status.decisions.last().expect("decision");
    // The ensemble answers without the failed member (degraded), or fails below its quorum.
    let rate = decision.reason.contains("degraded rate") || decision.reason.contains("error rate");
    assert!(decision.reason.contains("guardrail") && rate, "{decision:?}");
    // Before the test on the outcomes could decide anything.
    assert!(decision.p_value.is_none_or(|p| p > 0.05), "{decision:?}");
    assert!(treated > 0);
    // Rolled back: everything goes to the control, untagged.
    let p = handle.predict(&rows[0]).expect("predict");
    assert_eq!((p.ensemble_version, p.experiment), (1, None));
}

#[test]
fn a_degraded_model_is_rolled_back_during_a_replay_and_the_unchanged_ensemble_is_not() {
    let data = repo().join("examples/data/holdout.csv");
    let options = ReplayOptions { outcome: "next_day_up".into() };
    for degraded in [true, false] {
        let home = tempfile::tempdir().expect("home");
        let engine = market_engine(home.path());
        let treatment = if degraded {
            let file = degraded_technical(home.path());
            engine
                .register_model(ModelRegistration::new("technical_v2", file, features_of("technical")))
                .expect("register");
            market_version(&engine, ["technical_v2", "fundamental", "sentiment"])
        } else {
            market_version(&engine, ["technical", "fundamental", "sentiment"])
        };
        let mut config = ExperimentConfig::new("replayed", "market", 1, treatment);
        quick(&mut config);
        engine.start_experiment(config).expect("start");
        for _ in 0..3 {
            quorum::replay::replay(&engine, "market", &data, &options).expect("replay");
            if engine.experiment_status("replayed").expect("status").state != ExperimentState::Running {
                break;
            }
        }
        let status = engine.experiment_status("replayed").expect("status");
        let counts = (status.arms.control.outcomes, status.arms.treatment.outcomes);
        let last = status.decisions.last().expect("decision");
        eprintln!("degraded {degraded}: {} after {counts:?} outcomes: {}", status.state.as_str(), last.reason);
        if degraded {
            assert_eq!(status.state, ExperimentState::RolledBack, "{status:#?}");
            let reason = &last.reason;
            assert!(reason.contains("significantly worse on log_loss"), "{reason}");
            assert!(status.p_value <= 0.05);
        } else {
            assert_ne!(status.state, ExperimentState::RolledBack, "{status:#?}");
            // The control's count stops growing once the treatment takes 100%.
            assert!(counts.0 >= 100 && counts.1 > 300, "{counts:?}");
        }
    }
}

#[test]
fn a_significantly_better_treatment_is_promoted_by_a_hot_swap() {
    let home = tempfile::tempdir().expect("home");
    let engine = market_engine(home.path());
    let file = degraded_technical(home.path());
    engine.register_model(ModelRegistration::new("technical_v2", file, features_of("technical"))).expect("register");
    // The degraded ensemble serves; the example's is the candidate.
    let control = market_version(&engine, ["technical_v2", "fundamental", "sentiment"]);
    let mut config = ExperimentConfig::new("better", "market", control, 1);
    quick(&mut config);
    // One step at half the traffic: the control keeps its share until the decision.
    config.steps = vec![50.0];
    engine.start_experiment(config).expect("start");
    let data = repo().join("examples/data/holdout.csv");
    let options = ReplayOptions { outcome: "next_day_up".into() };
    for _ in 0..3 {
        quorum::replay::replay(&engine, "market", &data, &options).expect("replay");
    }
    let status = engine.experiment_status("better").expect("status");
    assert_eq!(status.state, ExperimentState::Promoted, "{status:#?}");
    let p = engine.predict("market", &holdout_features(1)[0]).expect("predict");
    assert_eq!((p.ensemble_version, p.experiment), (1, None));
    assert_eq!(engine.ensemble_store().default_version("market").expect("pin"), 1);
}

#[test]
fn the_same_keys_land_in_the_same_arm_in_two_engines_and_the_split_holds() {
    let arms = |home: &Path| {
        let engine = market_engine(home);
        market_version(&engine, ["technical", "fundamental", "sentiment"]);
        let mut config = ExperimentConfig::new("sticky", "market", 1, 2);
        config.steps = vec![20.0, 100.0];
        engine.start_experiment(config).expect("start");
        let handle = engine.ensemble("market").expect("handle");
        let features = &holdout_features(1)[0];
        (0..2000)
            .map(|i| {
                let key = format!("account-{i}");
                let p = handle.predict_routed(features, Some(&key), None).expect("predict");
                let again = handle.predict_routed(features, Some(&key), None).expect("predict");
                assert_eq!(p.experiment, again.experiment);
                p.experiment.expect("routed").arm
            })
            .collect::<Vec<Arm>>()
    };
    let (a, b) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
    let first = arms(a.path());
    assert_eq!(first, arms(b.path()));
    let share = first.iter().filter(|a| **a == Arm::Treatment).count() as f64 / first.len() as f64;
    // 20% of 2000 keys: three binomial standard errors are 2.7 points.
    assert!((share - 0.2).abs() < 0.03, "treatment share {share}");
}

#[test]
fn an_async_request_is_tagged_with_the_arm_a_synchronous_one_with_its_key_gets() {
    let home = tempfile::tempdir().expect("home");
    let engine = market_engine(home.path());
    market_version(&engine, ["technical", "fundamental", "sentiment"]);
    let mut config = ExperimentConfig::new("async", "market", 1, 2);
    config.steps = vec![50.0, 100.0];
    engine.start_experiment(config).expect("start");
    let handle = engine.ensemble("market").expect("handle");
    let features = &holdout_features(1)[0];
    let row: Vec<f32> = handle.feature_names().iter().map(|n| features.get(n).expect("feature")).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let mut treated = 0;
    for i in 0..200 {
        let key = format!("account-{i}");
        let sync = handle.predict_routed(features, Some(&key), None).expect("predict");
        let queued = runtime.block_on(handle.predict_row_async_routed(&row, Some(&key), None)).expect("predict");
        let arm = queued.experiment.expect("tagged").arm;
        assert_eq!(sync.experiment.expect("tagged").arm, arm, "{key}");
        treated += usize::from(arm == Arm::Treatment);
    }
    assert!(treated > 0 && treated < 200, "{treated} of 200 keys treated");
}

#[test]
fn a_restarted_engine_continues_the_experiment_where_it_was() {
    let home = tempfile::tempdir().expect("home");
    let before = {
        let engine = market_engine(home.path());
        market_version(&engine, ["technical", "fundamental", "sentiment"]);
        let mut config = ExperimentConfig::new("restart", "market", 1, 2);
        quick(&mut config);
        config.min_outcomes_per_step = 10_000;
        engine.start_experiment(config).expect("start");
        for (i, features) in holdout_features(200).iter().enumerate() {
            let p = engine.predict("market", features).expect("predict");
            engine.record_outcome(p.request_id, (i % 2) as f64).expect("outcome");
        }
        engine.experiment_status("restart").expect("status")
    };
    assert!(before.arms.treatment.outcomes > 50 && before.arms.control.outcomes > 50, "{before:?}");
    let engine = quorum::InferenceEngine::builder(home.path()).build().expect("engine");
    // Read from the state store before the ensemble is loaded, then live once it is.
    let stored = engine.experiment_status("restart").expect("status");
    assert_eq!(
        (stored.state, stored.arms.treatment.outcomes),
        (ExperimentState::Running, before.arms.treatment.outcomes)
    );
    let p = engine.predict("market", &holdout_features(1)[0]).expect("predict");
    assert!(p.experiment.is_some(), "the experiment routes again after the restart");
    let live = engine.experiment_status("restart").expect("status");
    assert_eq!(live.arms.control.outcomes, before.arms.control.outcomes);
    assert_eq!(live.step, before.step);
    assert_eq!(live.decisions.len(), before.decisions.len());
    engine.pause_experiment("restart").expect("pause");
    // Predictions made while paused are not the experiment's, even when their outcomes arrive later.
    let paused: Vec<u64> = holdout_features(20)
        .iter()
        .map(|f| {
            let p = engine.predict("market", f).expect("predict");
            assert_eq!(p.experiment, None);
            p.request_id
        })
        .collect();
    engine.resume_experiment("restart").expect("resume");
    for id in paused {
        engine.record_outcome(id, 1.0).expect("outcome");
    }
    let resumed = engine.experiment_status("restart").expect("status");
    assert_eq!(resumed.arms.control.outcomes, before.arms.control.outcomes);
    let stopped = engine.stop_experiment("restart", "enough").expect("stop");
    assert_eq!(stopped.state, ExperimentState::Stopped);
    assert!(engine.start_experiment(ExperimentConfig::new("restart", "market", 1, 2)).is_err(), "names are unique");
}

#[test]
fn one_experiment_per_ensemble_and_bad_configurations_are_refused() {
    let home = tempfile::tempdir().expect("home");
    let engine = market_engine(home.path());
    // The candidate is saved without serving a request before the experiment routes some to it.
    let config = EnsembleConfig::new("market", members(["technical", "fundamental", "sentiment"]));
    assert_eq!(engine.create_ensemble_inactive(config).expect("candidate").version, 2);
    assert_eq!(engine.predict("market", &holdout_features(1)[0]).expect("predict").ensemble_version, 1);
    assert_eq!(
        InferenceEngine::builder(home.path())
            .without_persistence()
            .build()
            .expect("engine")
            .ensemble("market")
            .expect("load")
            .config()
            .version,
        1
    );
    assert!(engine.start_experiment(ExperimentConfig::new("same", "market", 1, 1)).is_err());
    assert!(engine.start_experiment(ExperimentConfig::new("missing", "market", 1, 9)).is_err());
    let mut bad = ExperimentConfig::new("steps", "market", 1, 2);
    bad.steps = vec![50.0, 20.0];
    assert_eq!(engine.start_experiment(bad).unwrap_err().code(), "config");
    engine.start_experiment(ExperimentConfig::new("first", "market", 1, 2)).expect("start");
    let second = engine.start_experiment(ExperimentConfig::new("second", "market", 1, 2)).unwrap_err();
    assert!(second.to_string().contains("already has experiment \"first\""), "{second}");
    assert_eq!(engine.experiments().expect("list").len(), 1);
    let untracked =
        InferenceEngine::builder(home.path()).without_tracking().without_persistence().build().expect("engine");
    let refused = untracked.start_experiment(ExperimentConfig::new("blind", "market", 1, 2)).unwrap_err();
    assert_eq!(refused.code(), "tracking_disabled");
}
