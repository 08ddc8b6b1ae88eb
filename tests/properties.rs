//! Property tests: strategies, and quorum's parsers on arbitrary input (the fuzz target's stable twin).

use proptest::prelude::*;
use quorum::strategy::normalise_weights;
use quorum::{EnsembleConfig, Features, MajorityVote, MemberSpec, ModelMetadata, OutputSpec, SoftVote, Strategy, Task};

fn members() -> impl proptest::strategy::Strategy<Value = Vec<(f32, f32)>> {
    prop::collection::vec((0.0f32..=1.0, 0.001f32..10.0), 1..8)
}

proptest! {
    #[test]
    fn weights_normalise_to_one(raw in prop::collection::vec(0.0f32..100.0, 1..16)) {
        prop_assume!(raw.iter().sum::<f32>() > 0.0);
        let w = normalise_weights(Some(&raw), raw.len()).unwrap();
        prop_assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        prop_assert!(w.iter().all(|x| *x >= 0.0));
    }

    #[test]
    fn soft_vote_of_identical_members_is_the_member(p in 0.0f32..=1.0, raw in prop::collection::vec(0.001f32..10.0, 1..8)) {
        let w = normalise_weights(Some(&raw), raw.len()).unwrap();
        let values = vec![p; w.len()];
        for task in [Task::Classification, Task::Regression] {
            let c = SoftVote.combine(task, &values, &w);
            prop_assert!((c.prediction - p).abs() < 1e-5, "{} vs {}", c.prediction, p);
        }
        let c = SoftVote.combine(Task::Classification, &values, &w);
        prop_assert!((c.confidence - (2.0 * p - 1.0).abs()).abs() < 1e-4, "identical members: confidence is decisiveness");
    }

    #[test]
    fn member_order_does_not_matter(ms in members(), rotation in 0usize..8) {
        let (values, raw): (Vec<f32>, Vec<f32>) = ms.iter().copied().unzip();
        let w = normalise_weights(Some(&raw), raw.len()).unwrap();
        let k = rotation % values.len();
        let (mut v2, mut w2) = (values.clone(), w.clone());
        v2.rotate_left(k);
        w2.rotate_left(k);
        v2.reverse();
        w2.reverse();
        for strategy in [&SoftVote as &dyn Strategy, &MajorityVote] {
            let a = strategy.combine(Task::Classification, &values, &w);
            let b = strategy.combine(Task::Classification, &v2, &w2);
            prop_assert!((a.prediction - b.prediction).abs() < 1e-5);
            prop_assert!((a.confidence - b.confidence).abs() < 1e-4);
        }
    }

    #[test]
    fn outputs_stay_in_range(ms in members()) {
        let (values, raw): (Vec<f32>, Vec<f32>) = ms.iter().copied().unzip();
        let w = normalise_weights(Some(&raw), raw.len()).unwrap();
        for strategy in [&SoftVote as &dyn Strategy, &MajorityVote] {
            let c = strategy.combine(Task::Classification, &values, &w);
            prop_assert!((0.0..=1.0).contains(&c.prediction));
            prop_assert!((0.0..=1.0).contains(&c.confidence));
            let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if strategy.name() == "soft-vote" {
                prop_assert!(c.prediction >= lo - 1e-5 && c.prediction <= hi + 1e-5, "a weighted mean lies between its members");
            }
        }
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = ModelMetadata::from_json(&bytes);
        let _ = EnsembleConfig::from_json(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = Features::from_json(&text);
        let _ = quorum::replay::Table::parse(&text);
        let _ = text.parse::<OutputSpec>();
        let _ = text.parse::<MemberSpec>();
    }

    #[test]
    fn parsers_never_panic_on_json_shaped_input(
        name in "[a-z./]{0,6}",
        number in prop::num::f64::ANY,
        text in "\\PC{0,12}",
        features in prop::collection::vec("[a-z]{0,3}", 0..4),
    ) {
        let doc = serde_json::json!({
            "name": name, "version": number, "members": [{"model": text, "version": number}],
            "weights": [number], "strategy": text, "kind": "technical", "task": "regression",
            "features": features, "output": {"name": text, "column": number}, "sha256": text,
            "size_bytes": number, "created_at": text, "min_members": number,
        });
        let bytes = serde_json::to_vec(&doc).unwrap();
        let _ = ModelMetadata::from_json(&bytes);
        let _ = EnsembleConfig::from_json(&bytes);
        let _ = Features::from_json(&serde_json::json!({ name: number }).to_string());
    }
}
