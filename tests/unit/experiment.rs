//! Unit tests of `src/experiment/mod.rs` (its private items), kept out of `src/` so that the published
//! crate stays within its size budget (`make package`).

use super::*;

fn config() -> ExperimentConfig {
    let mut c = ExperimentConfig::new("exp", "market", 1, 2);
    c.min_outcomes_per_step = 50;
    c
}

#[test]
fn buckets_are_stable_and_spread() {
    // Fixed values: assignment must not change between releases.
    assert_eq!(bucket(0, b"account-1"), bucket(0, b"account-1"));
    assert_ne!(bucket(1, b"account-1"), bucket(2, b"account-1"));
    let below = (0..100_000u32).filter(|i| bucket(7, i.to_string().as_bytes()) < 500).count();
    assert!((4_700..5_300).contains(&below), "{below} of 100000 keys under a 5% split");
}

#[test]
fn a_worse_treatment_is_rolled_back_and_a_step_advances_first() {
    let mut e = Experiment::new(config(), Task::Classification).unwrap();
    assert_eq!(e.split_percent(), 5.0);
    let mut action = None;
    for i in 0..10_000 {
        let noise = ((i * 7919) % 101) as f64 / 100.0;
        let arm = if i % 2 == 0 { Arm::Control } else { Arm::Treatment };
        let value = if arm == Arm::Control { 0.6 + noise } else { 0.9 + noise };
        if let Some(a) = e.record(arm, value) {
            action = Some(a);
            if a == Action::RolledBack {
                break;
            }
        }
    }
    assert_eq!(action, Some(Action::RolledBack));
    assert_eq!(e.state, ExperimentState::RolledBack);
    assert_eq!(e.split_percent(), 0.0);
    assert!(e.decisions.iter().any(|d| d.action == Action::Advanced), "{:?}", e.decisions);
    assert!(e.p_value <= 0.05);
}

#[test]
fn guardrails_act_after_the_failure_limit() {
    let mut e = Experiment::new(config(), Task::Classification).unwrap();
    let bad = ArmWindow { requests: 100, errors: 10, degraded: 0, p95_ms: Some(1.0) };
    assert_eq!(e.check_guardrails(&bad), None);
    assert_eq!(e.check_guardrails(&ArmWindow { errors: 0, ..bad }), None);
    assert_eq!(e.breaches, 0);
    assert_eq!(e.check_guardrails(&bad), None);
    assert_eq!(e.check_guardrails(&bad), None);
    assert_eq!(e.check_guardrails(&bad), Some(Action::RolledBack));
    assert!(e.decisions.last().unwrap().reason.contains("error rate 10.0%"));
}

#[test]
fn a_quiet_interval_is_not_judged() {
    let mut e = Experiment::new(config(), Task::Classification).unwrap();
    let few = ArmWindow { requests: 5, errors: 5, degraded: 0, p95_ms: None };
    for _ in 0..10 {
        assert_eq!(e.check_guardrails(&few), None);
    }
}

#[test]
fn a_metric_must_fit_the_task() {
    let mut c = config();
    c.metric = Some(Metric::SquaredError);
    assert!(Experiment::new(c, Task::Classification).is_err());
}

#[test]
fn hand_actions_follow_the_state() {
    let mut e = Experiment::new(config(), Task::Classification).unwrap();
    e.act(Action::Paused, "").unwrap();
    assert_eq!(e.split_percent(), 0.0);
    assert!(e.record(Arm::Treatment, 1.0).is_none() && e.arms[1].count == 0);
    assert!(e.act(Action::Paused, "").is_err());
    e.act(Action::Resumed, "").unwrap();
    e.act(Action::Stopped, "done").unwrap();
    assert!(e.act(Action::Resumed, "").is_err());
}
