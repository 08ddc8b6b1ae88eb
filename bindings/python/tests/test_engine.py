from pathlib import Path
from typing import Dict, List

import numpy
import pytest

import quorum
from quorum.results import EnsembleConfigInput, InferenceLogStats, StrategyKind


def features(engine: quorum.InferenceEngine, row: Dict[str, float]) -> Dict[str, float]:
    return {name: row[name] for name in engine.feature_names("market")}


def test_predict_returns_the_story_fields(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    p = engine.predict("market", features(engine, rows[0]))
    assert 0.0 <= p.prediction <= 1.0 and 0.0 <= p.confidence <= 1.0
    assert p.label == int(p.prediction >= 0.5)
    assert p.degraded is False and p.skipped == []
    contributions = p.model_contributions
    assert set(contributions) == {"technical", "fundamental", "sentiment"}
    answers = [(c["weight"], c["prediction"]) for c in contributions.values()]
    weighted = sum(w * p for w, p in answers if p is not None)
    assert all(p is not None for _, p in answers)
    assert weighted == pytest.approx(p.prediction, abs=1e-5)
    names = engine.feature_names("market")
    assert engine.predict_row("market", [rows[0][n] for n in names]).prediction == pytest.approx(p.prediction, abs=1e-6)
    d = p.to_dict()
    for key in ("prediction", "confidence", "model_contributions", "latency_ms", "request_id"):
        assert key in d


def test_batch_matches_single_rows_and_reads_numpy_in_place(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    names = engine.feature_names("market")
    matrix = numpy.array([[r[n] for n in names] for r in rows[:64]], dtype=numpy.float32)
    batch = engine.predict_batch("market", matrix)
    assert len(batch) == 64
    assert batch.member_predictions.shape == (64, 3)
    assert batch.members == ["technical", "fundamental", "sentiment"]
    singles = numpy.array([engine.predict("market", features(engine, r)).prediction for r in rows[:64]])
    numpy.testing.assert_allclose(batch.predictions, singles, atol=1e-6)
    assert batch.row(3).prediction == pytest.approx(batch.predictions[3])
    # Other layouts and dtypes are converted, with the right result.
    numpy.testing.assert_allclose(engine.predict_batch("market", numpy.asfortranarray(matrix)).predictions, singles, atol=1e-6)
    numpy.testing.assert_allclose(engine.predict_batch("market", matrix.astype(numpy.float64)).predictions, singles, atol=1e-6)
    # Columns in another order, named.
    reordered = matrix[:, ::-1].copy()
    out = engine.predict_batch("market", reordered, feature_names=names[::-1])
    numpy.testing.assert_allclose(out.predictions, singles, atol=1e-6)


def test_prediction_cache(tmp_path: Path, rows: List[Dict[str, float]]) -> None:
    from conftest import MODELS, manifest

    e = quorum.InferenceEngine(tmp_path / "cached", cache_capacity=100)
    for m in manifest():
        e.register_model(m["name"], MODELS / f"{m['name']}.onnx", m["features"])
    e.create_ensemble({"name": "market", "members": ["technical", "fundamental", "sentiment"]})
    f = {n: rows[0][n] for n in e.feature_names("market")}
    assert not e.predict("market", f).cached
    assert e.predict("market", f).cached


def test_outcomes_metrics_and_registry(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    for i, r in enumerate(rows[:30]):
        p = engine.predict("market", features(engine, r))
        engine.record_outcome(p.request_id, float(i % 2))
    m = engine.metrics("market")
    assert m["metrics"]["all_time"]["count"] == 30
    assert len(m["ranking"]) == 3
    models = engine.list_models()
    assert [x["name"] for x in models] == ["fundamental", "sentiment", "technical"]
    assert engine.model("technical")["kind"] == "technical"
    assert engine.drift_events() == []
    engine.flush()


def test_adaptive_strategy_learns_through_the_binding(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    engine.create_ensemble({"name": "adaptive", "members": ["technical", "fundamental", "sentiment"], "strategy": "hedge"})
    for r in rows[:50]:
        p = engine.predict("adaptive", features(engine, r))
        technical = p.model_contributions["technical"]["prediction"]
        assert technical is not None
        engine.record_outcome(p.request_id, 1.0 if technical >= 0.5 else 0.0)
    p = engine.predict("adaptive", features(engine, rows[0]))
    assert p.weights_epoch == 50
    weights = {k: v["weight"] for k, v in p.model_contributions.items()}
    assert weights["technical"] == max(weights.values())


@pytest.mark.parametrize("strategy", ["mlpol", "ewa", "boa"])
def test_online_rules_take_their_options_from_the_configuration(engine: quorum.InferenceEngine, rows: List[Dict[str, float]], strategy: StrategyKind) -> None:
    name = f"online-{strategy}"
    config: EnsembleConfigInput = {
        "name": name,
        "members": ["technical", "fundamental", "sentiment"],
        "strategy": strategy,
        "online": {"floor": 0.0, "gradient": True},
    }
    saved = engine.create_ensemble(config)
    assert saved["online"]["floor"] == 0.0 and saved["strategy"] == strategy
    for r in rows[:60]:
        p = engine.predict(name, features(engine, r))
        technical = p.model_contributions["technical"]["prediction"]
        assert technical is not None
        engine.record_outcome(p.request_id, 1.0 if technical >= 0.5 else 0.0)
    p = engine.predict(name, features(engine, rows[0]))
    weights = {k: v["weight"] for k, v in p.model_contributions.items()}
    assert weights["technical"] == max(weights.values()), weights
    with pytest.raises(quorum.ConfigError):
        engine.create_ensemble({**config, "online": {"floor": 2.0}})


def test_metrics_text_is_the_prometheus_exposition_of_what_was_counted(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    for r in rows[:3]:
        engine.predict("market", r)
    text = engine.metrics_text()
    assert 'quorum_predictions_total{ensemble="market"} 3\n' in text
    assert "# TYPE quorum_request_duration_seconds histogram\n" in text
    assert 'quorum_request_duration_seconds_count{ensemble="market"} 3\n' in text


def test_inference_log_writes_every_prediction_to_the_state_store(tmp_path: Path, rows: List[Dict[str, float]]) -> None:
    import sqlite3
    import time

    from conftest import MODELS, manifest

    state = tmp_path / "elsewhere.sqlite"
    e = quorum.InferenceEngine(tmp_path / "logged", state=f"sqlite:{state}", inference_log={"flush_ms": 5})
    for m in manifest():
        e.register_model(m["name"], MODELS / f"{m['name']}.onnx", m["features"])
    e.create_ensemble({"name": "market", "members": ["technical", "fundamental", "sentiment"]})
    ids = [e.predict("market", {n: r[n] for n in e.feature_names("market")}).request_id for r in rows[:20]]
    deadline = time.time() + 10
    def stats() -> InferenceLogStats:
        current = e.inference_log_stats()
        assert current is not None
        return current

    while stats()["written"] < 20 and time.time() < deadline:
        time.sleep(0.02)
    assert stats()["dropped"] == 0
    assert e.shared_status() is None
    logged = sqlite3.connect(state).execute("SELECT request_id FROM inference_logs ORDER BY id").fetchall()
    assert [int(r[0]) for r in logged] == ids


def test_a_bad_state_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(quorum.ConfigError) as info:
        quorum.InferenceEngine(tmp_path / "h", state="mysql://root:secret@db/q")
    assert info.value.code == "config"
    assert "secret" not in str(info.value)
