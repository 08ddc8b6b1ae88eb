//! Unit tests of `src/tracking.rs` (its private items), kept out of `src/` so that the published
//! crate stays within its size budget (`make package`).

use super::*;
use crate::strategy::StrategyKind;

fn key(names: &[&str]) -> EnsembleKey {
    let m = names.len();
    let learning = Learning::new(
        Task::Classification,
        StrategyKind::SoftVote,
        vec![1.0 / m as f32; m],
        None,
        Default::default(),
        Default::default(),
    );
    EnsembleKey {
        name: "e".into(),
        version: 1,
        members: names.iter().map(|n| Arc::from(*n)).collect(),
        member_versions: names.iter().map(|_| 1).collect(),
        learning: Arc::new(learning),
    }
}

#[test]
fn classification_metrics_match_hand_count() {
    let mut acc = MetricsAccumulator::default();
    // tp, tp, fp, tn, fn
    for (p, o) in [(0.9, 1.0), (0.6, 1.0), (0.7, 0.0), (0.2, 0.0), (0.1, 1.0)] {
        acc.add(p, o);
    }
    let m = acc.metrics(Task::Classification);
    assert_eq!(m.count, 5);
    assert_eq!(m.accuracy, Some(3.0 / 5.0));
    assert_eq!(m.precision, Some(2.0 / 3.0));
    assert_eq!(m.recall, Some(2.0 / 3.0));
    assert_eq!(m.f1_score, Some(4.0 / 6.0));
    assert_eq!(m.mae, None);
}

#[test]
fn the_time_window_keeps_sixty_slices_whatever_the_rate_and_drops_whole_old_ones() {
    let window = Duration::from_secs(3600);
    let start = Instant::now();
    let mut buckets = TimeBuckets::default();
    // 200 000 outcomes over two hours: one every 36 ms.
    let n = 200_000u32;
    let step = window * 2 / n;
    for i in 0..n {
        buckets.add(1.0, 1.0, start + step * i, window);
        assert!(buckets.slices.len() <= TIME_WINDOW_BUCKETS as usize);
    }
    let now = start + step * (n - 1);
    let recent = buckets.sums(now, window).count;
    // The last hour's outcomes, to within one slice (a minute: 1 667 outcomes).
    let exact = u64::from(n / 2);
    let slice = exact / u64::from(TIME_WINDOW_BUCKETS);
    assert!(recent <= exact + 1 && recent + slice + 1 >= exact, "{recent} vs {exact}");
    // Two hours of silence empty it.
    assert_eq!(buckets.sums(now + window * 2, window).count, 0);
    assert!(buckets.slices.is_empty());
}

#[test]
fn regression_metrics_and_window() {
    let key = key(&["a", "b"]);
    let tracker = Tracker::new(TrackingOptions { window: 2, ..TrackingOptions::default() }).unwrap();
    for (id, (p, o)) in [(1.0f32, 0.0f32), (2.0, 2.0), (3.0, 1.0)].into_iter().enumerate() {
        tracker.record_prediction(
            id as u64,
            Instant::now(),
            &key,
            &Logged { task: Task::Regression, regime: None, prediction: p, members: &[p, f32::NAN] },
        );
        tracker.record_outcome(id as u64, f64::from(o)).unwrap();
    }
    let m = &tracker.metrics("e")[0];
    assert_eq!(m.metrics.all_time.mae, Some(1.0));
    assert_eq!(m.metrics.window.count, 2);
    assert_eq!(m.metrics.window.mae, Some(1.0));
    assert!((m.metrics.window.rmse.unwrap() - 2f64.sqrt()).abs() < 1e-9);
    assert_eq!(m.members[1].1.all_time.count, 0, "a member that did not answer is not scored");
}

#[test]
fn unknown_expired_and_repeated_outcomes_are_errors() {
    let key = key(&["m"]);
    let tracker = Tracker::new(TrackingOptions { pending_capacity: 2, ..TrackingOptions::default() }).unwrap();
    assert!(tracker.record_outcome(7, 1.0).is_err(), "never predicted");
    for id in 0..3 {
        tracker.record_prediction(
            id,
            Instant::now(),
            &key,
            &Logged { task: Task::Classification, regime: None, prediction: 0.7, members: &[0.7] },
        );
    }
    assert!(tracker.record_outcome(0, 1.0).is_err(), "evicted by newer predictions");
    assert!(tracker.record_outcome(2, 0.5).is_err(), "not a class");
    tracker.record_outcome(2, 1.0).unwrap();
    assert!(tracker.record_outcome(2, 1.0).is_err(), "counted twice");
}

#[test]
fn log_loss_brier_regimes_ranking_and_time_window() {
    let key = key(&["sharp", "dull"]);
    let options = TrackingOptions { window_duration: Duration::from_millis(50), ..TrackingOptions::default() };
    let tracker = Tracker::new(options).unwrap();
    for id in 0..10u64 {
        let y = (id % 2) as f32;
        let regime = if id < 4 { Regime::Low } else { Regime::High };
        let sharp = if y == 1.0 { 0.9 } else { 0.1 };
        tracker.record_prediction(
            id,
            Instant::now(),
            &key,
            &Logged { task: Task::Classification, regime: Some(regime), prediction: 0.5, members: &[sharp, 0.5] },
        );
        tracker.record_outcome(id, f64::from(y)).unwrap();
    }
    let m = &tracker.metrics("e")[0];
    let sharp = m.members[0].1.all_time;
    assert!((sharp.log_loss.unwrap() - (-(0.9f64.ln()))).abs() < 1e-6);
    assert!((sharp.brier.unwrap() - 0.01).abs() < 1e-6);
    assert_eq!(m.ranking, vec!["sharp", "dull"]);
    let counts: Vec<(Regime, u64)> = m.regimes.iter().map(|(r, g)| (*r, g.metrics.all_time.count)).collect();
    assert_eq!(counts, vec![(Regime::Low, 4), (Regime::High, 6)]);
    assert_eq!(m.metrics.recent.count, 10);
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(tracker.metrics("e")[0].metrics.recent.count, 0, "the time window forgets old outcomes");
    assert_eq!(tracker.metrics("e")[0].metrics.all_time.count, 10);
}

#[test]
fn page_hinkley_flags_a_member_whose_loss_jumps_and_stays_quiet_otherwise() {
    let key = key(&["steady", "breaks"]);
    let tracker = Tracker::new(TrackingOptions::default()).unwrap();
    for id in 0..400u64 {
        let y = (id % 2) as f32;
        let good = if y == 1.0 { 0.7 } else { 0.3 };
        let breaks = if id < 300 { good } else { 1.0 - good };
        tracker.record_prediction(
            id,
            Instant::now(),
            &key,
            &Logged { task: Task::Classification, regime: None, prediction: 0.5, members: &[good, breaks] },
        );
        tracker.record_outcome(id, f64::from(y)).unwrap();
    }
    let events = tracker.drift_events();
    assert!(!events.is_empty(), "no drift flagged");
    assert!(events.iter().all(|e| e.member == "breaks"), "{events:?}");
    assert!(events[0].observations > 300 && events[0].observations < 340, "{events:?}");
}
