"""The production runtime through the binding: per-model options, replicas, deadlines, hot swap."""

import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import quorum
from conftest import MODELS, manifest


def make_engine(home: Path, **options: Any) -> quorum.InferenceEngine:
    e = quorum.InferenceEngine(home, persistence=False, **options)
    for m in manifest():
        e.register_model(m["name"], MODELS / f"{m['name']}.onnx", m["features"], kind=m["kind"])
    e.create_ensemble({"name": "market", "members": ["technical", "fundamental", "sentiment"]})
    return e


def test_model_options_batching_and_replicas(tmp_path: Path, rows: List[Dict[str, float]]) -> None:
    e = make_engine(
        tmp_path / "home",
        default_model={"replicas": [1, 2], "batching": {"max_batch": 32}},
        models={"sentiment": {"load": "lazy", "replicas": [0, 1], "timeout_ms": 1000}},
    )
    names = e.feature_names("market")
    expected = [e.predict_row("market", [r[n] for n in names]).prediction for r in rows[:40]]
    got: List[Optional[float]] = [None] * 40

    def work(offset: int) -> None:
        for i in range(offset, 40, 4):
            got[i] = e.predict_row("market", [rows[i][n] for n in names]).prediction

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == pytest.approx(expected, abs=1e-5)
    status = {s["model"]: s for s in e.replicas()}
    assert set(status) == {"technical", "fundamental", "sentiment"}
    assert status["technical"]["min"] == 1 and status["technical"]["max"] == 2
    assert status["sentiment"]["replicas"] <= 1
    assert e.unload_model("sentiment") in (0, 1)
    assert not e.predict_row("market", [rows[0][n] for n in names]).degraded


def test_bad_model_options_are_config_errors(tmp_path: Path) -> None:
    for options in [{"replicas": [3, 1]}, {"replica": [1, 2]}, {"timeout_ms": -5}, {"batching": {"max_batch": 0}}]:
        with pytest.raises((quorum.ConfigError, quorum.JSONError)):
            quorum.InferenceEngine(tmp_path / "bad", default_model=options)  # type: ignore[arg-type]  # deliberately wrong
    # Per-model options must be a dict of option dicts.
    for models in [["technical"], {"technical": 3}]:
        with pytest.raises(quorum.JSONError):
            quorum.InferenceEngine(tmp_path / "bad", models=models)  # type: ignore[arg-type]


def test_a_deadline_that_cannot_be_met_raises_deadline_exceeded(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    f = {n: rows[0][n] for n in engine.feature_names("market")}
    assert engine.predict("market", f, deadline_ms=5000).prediction > 0
    with pytest.raises(quorum.DeadlineExceededError) as caught:
        engine.predict("market", f, deadline_ms=0)
    assert caught.value.code == "deadline_exceeded"
    assert isinstance(caught.value, TimeoutError)
    with pytest.raises(quorum.InvalidInputError):
        engine.predict("market", f, deadline_ms=-1)


def test_hot_swap_moves_the_ensemble_to_the_new_default(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    technical = next(m for m in manifest() if m["name"] == "technical")
    engine.register_model("technical", MODELS / "technical.onnx", technical["features"])
    f = {n: rows[0][n] for n in engine.feature_names("market")}
    assert engine.predict("market", f).model_contributions["technical"]["version"] == 1
    assert engine.set_default_version("technical", 2) == ["market"]
    assert engine.predict("market", f).model_contributions["technical"]["version"] == 2
    assert [s["version"] for s in engine.replicas("technical")] == [2]


def test_optimize_and_benchmark(tmp_path: Path) -> None:
    from conftest import HOLDOUT

    technical = next(m for m in manifest() if m["name"] == "technical")
    e = quorum.InferenceEngine(tmp_path / "opt", persistence=False)
    e.register_model("technical", MODELS / "technical.onnx", technical["features"])
    report = e.optimize(
        "technical", HOLDOUT, "next_day_up", accuracy_threshold=0.01, methods=["int8-dynamic"], batch_sizes={1: 0.5, 64: 0.5}
    )
    assert [c["method"] for c in report["candidates"]] == ["int8-dynamic"]
    assert set(report["candidates"][0]["latency_ratio"]) == {1, 64}, report["candidates"][0]
    with pytest.raises(quorum.ConfigError):
        e.optimize("technical", HOLDOUT, "next_day_up", batch_sizes={3: 1.0})
    assert set(report) >= {"candidates", "chosen", "performance_improvement", "deployment_ready"}
    bench = e.benchmark("technical", HOLDOUT, outcome="next_day_up")
    assert [l["batch"] for l in bench["latency"]] == [1, 8, 64, 512]
    fundamental = next(m for m in manifest() if m["name"] == "fundamental")
    e.register_model("fundamental", MODELS / "fundamental.onnx", fundamental["features"])
    report = e.optimize("fundamental", HOLDOUT, "next_day_up", methods=["int8-dynamic"])
    assert report["chosen"] is None and "nothing to quantize" in report["candidates"][0]["reason"]
    with pytest.raises(quorum.ConfigError):
        e.optimize("technical", HOLDOUT, "next_day_up", methods=["int4"])


def test_the_example_models_run_natively_and_fusion_says_why_it_has_nothing_to_fuse(tmp_path: Path, rows: List[Dict[str, float]]) -> None:
    fused = make_engine(tmp_path / "fused")
    separate = make_engine(tmp_path / "separate", fusion=False)
    status = fused.fusion("market")
    assert status["fused"] is False and "native" in status["reason"]
    assert status["native"] == ["technical", "fundamental", "sentiment"]
    assert all(r["executor"]["kind"] == "native" for r in fused.replicas())
    status = separate.fusion("market")
    assert status["fused"] is False and "with_fusion" in status["reason"]
    names = fused.feature_names("market")
    for r in rows[:50]:
        features = {n: r[n] for n in names}
        a, b = fused.predict("market", features), separate.predict("market", features)
        assert not a.fused and not b.fused
        assert (a.prediction, a.confidence) == (b.prediction, b.confidence)
    with pytest.raises(quorum.NotFoundError):
        fused.fusion("nope")
