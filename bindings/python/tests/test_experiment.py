"""A/B experiments from Python: routing keys, business values, status, pause and stop."""

from typing import Dict, List

import pytest

import quorum


def _second_version(engine: quorum.InferenceEngine) -> None:
    engine.create_ensemble(
        {"name": "market", "members": ["technical", "fundamental", "sentiment"], "weights": [0.2, 0.5, 0.3]}
    )


def test_keys_stick_to_their_arm_and_outcomes_reach_the_experiment(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    _second_version(engine)
    status = engine.start_experiment(
        {"name": "ab", "ensemble": "market", "control": 1, "treatment": 2, "steps": [50], "metric": "business"}
    )
    assert status["state"] == "running"
    features = {k: v for k, v in rows[0].items() if k != "next_day_up"}
    for i in range(100):
        key = f"acct-{i % 10}"
        p = engine.predict("market", features, routing_key=key)
        again = engine.predict("market", features, routing_key=key)
        assert p.experiment is not None and p.experiment == again.experiment and p.experiment["name"] == "ab"
        assert p.ensemble_version == (2 if p.experiment["arm"] == "treatment" else 1)
        engine.record_outcome(p.request_id, 1.0, business_value=float(i % 3) - 1.0)
    status = engine.experiment_status("ab")
    assert status["arms"]["control"]["outcomes"] + status["arms"]["treatment"]["outcomes"] == 100
    assert {d["action"] for d in status["decisions"]} == {"started"}
    assert engine.pause_experiment("ab")["state"] == "paused"
    assert engine.predict("market", features).experiment is None
    assert engine.stop_experiment("ab", "done")["state"] == "stopped"
    with pytest.raises(quorum.errors.ConfigError):
        engine.resume_experiment("ab")
    assert [e["name"] for e in engine.experiments()] == ["ab"]
