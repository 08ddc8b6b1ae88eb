"""Registry, Optimizer and InferenceEngine as three types over one home, in one process."""

from pathlib import Path

import pytest

import quorum
from conftest import HOLDOUT, MODELS, manifest


def test_a_standalone_registry_and_an_engine_share_one_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registry = quorum.Registry(home)
    m = manifest()[2]
    meta = registry.register(m["name"], MODELS / f"{m['name']}.onnx", m["features"], kind=m["kind"])
    assert meta["version"] == 1
    engine = quorum.InferenceEngine(home, persistence=False)
    # The engine sees what the standalone registry wrote, and the reverse.
    assert [s["name"] for s in engine.registry.list()] == [m["name"]]
    engine.register_model(m["name"], MODELS / f"{m['name']}.onnx", m["features"], kind=m["kind"])
    assert registry.versions(m["name"]) == [1, 2]
    assert registry.show(m["name"], 2)["sha256"] == registry.verify(m["name"], 2)["sha256"]
    assert engine.model(m["name"])["version"] == registry.show(m["name"])["version"]


def test_set_default_through_the_engine_registry_hot_swaps_loaded_ensembles(engine: quorum.InferenceEngine) -> None:
    t = manifest()[0]
    engine.registry.register(t["name"], MODELS / f"{t['name']}.onnx", t["features"], kind=t["kind"])
    assert engine.registry.set_default(t["name"], 2) == ["market"]
    contributions = engine.predict_row("market", [0.0] * len(engine.feature_names("market"))).model_contributions
    assert contributions[t["name"]]["version"] == 2


def test_a_registry_verify_reports_a_tampered_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registry = quorum.Registry(home)
    m = manifest()[2]
    registry.register(m["name"], MODELS / f"{m['name']}.onnx", m["features"])
    model_file = home / "models" / m["name"] / "1" / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[-1] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(quorum.ChecksumMismatchError):
        registry.verify(m["name"])


def test_the_optimizer_quantizes_one_file_and_benchmarks_a_registered_model(engine: quorum.InferenceEngine, tmp_path: Path) -> None:
    optimizer = quorum.Optimizer(engine)
    out = tmp_path / "technical-int8.onnx"
    report = optimizer.quantize(MODELS / "technical.onnx", out, "int8-dynamic")
    assert out.stat().st_size == report["bytes"] > 0
    assert any(n["rewritten"] for n in report["nodes"])
    with pytest.raises(quorum.ConfigError):
        optimizer.quantize(MODELS / "technical.onnx", out, "int8-static-minmax")
    with pytest.raises(quorum.ConfigError):
        optimizer.quantize(MODELS / "technical.onnx", out, "int4")
    bench = engine.optimizer.benchmark("sentiment", HOLDOUT, "next_day_up")
    assert len(bench["latency"]) == 4 and bench["accuracy"] > 0.4
