use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::telemetry::{EnsembleReading, Histogram, ModelReading, ProcessStats, Snapshot};

fn spec(condition: &str, action: &str, for_: &str, cooldown: &str) -> RuleSpec {
    RuleSpec {
        condition: condition.into(),
        action: action.into(),
        severity: Some("critical".into()),
        for_: Some(for_.into()),
        cooldown: Some(cooldown.into()),
        min_samples: None,
    }
}

/// A snapshot at `t` seconds with `requests` so far, of which `slow` took 200 ms and the rest 1 ms.
fn snapshot(start: Instant, t: u64, requests: u64, slow: u64, calls: u64, errors: u64) -> Snapshot {
    let h = Histogram::latency();
    for _ in 0..requests - slow {
        h.observe(1_000_000);
    }
    for _ in 0..slow {
        h.observe(200_000_000);
    }
    Snapshot {
        at: start + Duration::from_secs(t),
        ensembles: vec![EnsembleReading {
            name: "market".into(),
            requests,
            errors: 0,
            duration: h.snapshot(),
            accuracy: Some(0.6),
            window_outcomes: 40,
            members: vec![("technical".into(), Some(0.6))],
        }],
        models: vec![ModelReading { name: "technical".into(), calls, errors }],
        process: ProcessStats::default(),
        gpus: vec![],
        cpus: 2,
    }
}

#[test]
fn the_default_rules_are_the_story_four() {
    let specs: BTreeMap<String, RuleSpec> = [
        ("latency_alert", spec("p95_latency > 100ms", "scale_up_inference_workers", "30s", "2m")),
        ("model_failure", spec("model_error_rate > 5%", "activate_fallback_model", "10s", "2m")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let rules = rules_from_specs(&specs).unwrap();
    assert_eq!(rules[0].name, "latency_alert");
    assert_eq!(rules[0].min_samples, 20);
    assert_eq!(rules[1].action, AlertAction::ActivateFallbackModel);
    assert!(DEFAULT_RULES.contains("latency_alert:") && DEFAULT_RULES.contains("gpu_usage > 90%"));
}

#[test]
fn a_bad_rule_names_the_alert_and_the_problem() {
    for (s, says) in [
        (spec("p95_latency > 100ms", "reboot", "0s", "1m"), "unknown action"),
        (spec("p95_latency > 100ms", "activate_fallback_model", "0s", "1m"), "must be on model_error_rate"),
        (spec("p95_latency > 100ms", "log", "soon", "1m"), "not a duration"),
        (spec("p95_latency > 100", "log", "0s", "1m"), "needs a unit"),
    ] {
        let e = AlertRule::from_spec("latency_alert", &s).unwrap_err();
        assert!(e.to_string().contains("latency_alert") && e.to_string().contains(says), "{e}");
    }
    let mut severe = spec("p95_latency > 100ms", "log", "0s", "1m");
    severe.severity = Some("apocalyptic".into());
    assert!(AlertRule::from_spec("x", &severe).unwrap_err().to_string().contains("unknown severity"));
}

#[test]
fn latency_goes_pending_fires_after_for_resolves_and_cools_down() {
    let rule = AlertRule::from_spec("latency_alert", &spec("p95_latency > 100ms over 2s", "log", "2s", "1h")).unwrap();
    let mut alerting = Alerting::new(vec![rule]);
    let start = Instant::now();
    // 50 fast requests a second, then half of them slow from t = 3.
    let mut total = 0;
    let mut slow = 0;
    let mut fired_at = None;
    let mut resolved_at = None;
    for t in 0..20 {
        total += 50;
        if (3..9).contains(&t) {
            slow += 25;
        }
        let events = alerting.evaluate(snapshot(start, t, total, slow, 0, 0));
        let active = alerting.active();
        if t == 3 {
            assert_eq!(active.len(), 1, "pending at once: {active:?}");
            assert_eq!(active[0].state, "pending");
        }
        for e in events {
            match e.state {
                EventState::Firing => fired_at = Some(t),
                EventState::Resolved => resolved_at = Some(t),
            }
            assert_eq!(e.subject.get("ensemble").map(String::as_str), Some("market"));
            alerting.log(e);
        }
    }
    assert_eq!(fired_at, Some(5), "fires once it held for 2 s");
    let resolved = resolved_at.unwrap();
    assert!((9..=11).contains(&resolved), "resolves once the window is fast again: {resolved}");
    assert_eq!(alerting.events().len(), 2);
    assert!(alerting.events()[0].value.unwrap() > 0.1);

    // Slow again within the cooldown: pending, but it does not fire again.
    for t in 20..30 {
        total += 50;
        slow += 25;
        assert!(alerting.evaluate(snapshot(start, t, total, slow, 0, 0)).is_empty());
    }
    assert_eq!(alerting.active()[0].state, "pending");
}

#[test]
fn error_rates_need_their_minimum_calls_and_accuracy_its_outcomes() {
    let rules = vec![
        AlertRule::from_spec("model_failure", &spec("model_error_rate > 5% over 1s", "log", "0s", "1m")).unwrap(),
        AlertRule::from_spec("accuracy_degradation", &spec("model_accuracy < 0.75", "log", "0s", "1m")).unwrap(),
    ];
    let mut alerting = Alerting::new(rules);
    let start = Instant::now();
    // 10 calls, 5 failed: under the 20-call minimum. Accuracy 0.6 on 40 outcomes: under 50.
    assert!(alerting.evaluate(snapshot(start, 0, 10, 0, 10, 5)).is_empty());
    let events = alerting.evaluate(snapshot(start, 1, 20, 0, 40, 15));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].alert, "model_failure");
    assert_eq!(events[0].subject.get("model").map(String::as_str), Some("technical"));
    assert!((events[0].value.unwrap() - 10.0 / 30.0).abs() < 1e-9);
    // The model is silent (its calls went to a fallback): no data resolves the alert.
    let events = alerting.evaluate(snapshot(start, 3, 20, 0, 40, 15));
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].state, events[0].value), (EventState::Resolved, None));
}
