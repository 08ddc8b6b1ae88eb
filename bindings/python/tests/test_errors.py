from pathlib import Path
from typing import Callable, Dict, List, Tuple, Type

import numpy
import pytest

import quorum
from conftest import MODELS


def test_every_error_is_a_quorum_error_with_a_code(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    names = engine.feature_names("market")
    good = {n: rows[0][n] for n in names}
    cases: List[Tuple[Callable[[], object], Type[quorum.QuorumError], str]] = [
        (lambda: engine.predict("market", {"ret_1d": 0.1}), quorum.MissingFeatureError, "missing_feature"),
        (lambda: engine.predict("nope", good), quorum.NotFoundError, "not_found"),
        (lambda: engine.predict("market", {**good, "vix": float("nan")}), quorum.NonFiniteError, "non_finite"),
        (lambda: engine.predict("market", {**good, "vix": float("inf")}), quorum.NonFiniteError, "non_finite"),
        # Deliberately wrong types below: the runtime must refuse them with typed errors.
        (lambda: engine.predict("market", {**good, "vix": "high"}), quorum.InvalidInputError, "invalid_input"),  # type: ignore[dict-item]
        (lambda: engine.predict("market", {**good, "vix": None}), quorum.InvalidInputError, "invalid_input"),  # type: ignore[dict-item]
        (lambda: engine.predict_batch("market", numpy.zeros((3, 5), numpy.float32)), quorum.InvalidInputError, "invalid_input"),
        (lambda: engine.predict_batch("market", numpy.zeros((0, len(names)), numpy.float32)), quorum.InvalidInputError, "invalid_input"),
        (lambda: engine.predict_batch("market", numpy.zeros(5, numpy.float32)), quorum.InvalidInputError, "invalid_input"),
        (lambda: engine.record_outcome(123456, 1.0), quorum.OutcomeError, "outcome"),
        (lambda: engine.register_model("../x", MODELS / "sentiment.onnx", ["a"]), quorum.InvalidNameError, "invalid_name"),
        (lambda: engine.register_model("x", MODELS / "missing.onnx", ["a"]), quorum.StorageError, "io"),
        (lambda: engine.register_model("x", MODELS / "sentiment.onnx", ["a", "b"]), quorum.ModelLoadError, "model_load"),
        (lambda: engine.create_ensemble({"name": "e", "members": ["technical"], "weights": [1, 2]}), quorum.ConfigError, "config"),
        (lambda: engine.create_ensemble({"name": "e", "members": ["technical"], "strategy": "vibes"}), quorum.JSONError, "json"),  # type: ignore[typeddict-item]
        (lambda: engine.create_ensemble({"name": "e"}), quorum.JSONError, "json"),  # type: ignore[typeddict-item]
    ]
    for call, kind, code in cases:
        with pytest.raises(kind) as caught:
            call()
        assert isinstance(caught.value, quorum.QuorumError)
        assert caught.value.code == code, (kind, caught.value)


def test_builtin_bases_are_natural(engine: quorum.InferenceEngine) -> None:
    assert issubclass(quorum.NotFoundError, LookupError)
    assert issubclass(quorum.InvalidInputError, ValueError)
    assert issubclass(quorum.StorageError, OSError)
    with pytest.raises(LookupError):
        engine.predict("nope", {})


def test_a_second_onnxruntime_library_is_refused(engine: quorum.InferenceEngine, tmp_path: Path) -> None:
    # A process can load one ONNX Runtime (the `engine` fixture loaded it): the one in use is kept and
    # a different path is a configuration error (a missing library in a fresh process is
    # runtime_unavailable: tested by the Rust CLI tests, each in its own process).
    with pytest.raises(quorum.ConfigError) as caught:
        quorum.InferenceEngine(tmp_path, ort_library="/nonexistent/libonnxruntime.so")
    assert caught.value.code == "config"
    assert "already loaded" in str(caught.value)


def test_every_core_error_code_has_its_exception_class() -> None:
    # The core's list of codes, from the native module: a new code without a class fails here.
    codes = quorum._quorum.ERROR_CODES
    assert len(codes) == len(set(codes)) and "internal" in codes
    assert sorted(quorum.errors.BY_CODE) == sorted(codes)
    for code, cls in quorum.errors.BY_CODE.items():
        assert issubclass(cls, quorum.QuorumError), code
        assert cls.__name__ in quorum.errors.__all__, code
    # Classes are distinct per code, so callers can tell every category apart.
    assert len(set(quorum.errors.BY_CODE.values())) == len(codes)


def test_tracking_disabled_is_one_category_for_outcomes_and_metrics(tmp_path: Path) -> None:
    e = quorum.InferenceEngine(tmp_path, tracking=False, persistence=False)
    for call in (lambda: e.record_outcome(1, 1.0), lambda: e.metrics("market")):
        with pytest.raises(quorum.TrackingDisabledError) as caught:
            call()
        assert caught.value.code == "tracking_disabled"


def test_versions_and_booleans_follow_one_rule_with_node(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    names = engine.feature_names("market")
    good = {n: rows[0][n] for n in names}
    with pytest.raises(quorum.InvalidInputError) as caught:
        engine.predict("market", {**good, "vix": True})
    assert "bool" in str(caught.value)
    for bad in (-1, 0, 1.5, True, 2**32, 2**70):
        with pytest.raises(quorum.InvalidNameError):
            engine.set_default_version("technical", bad)  # type: ignore[arg-type]  # deliberately not an int
        with pytest.raises(quorum.InvalidNameError):
            engine.register_model("vh", MODELS / "technical.onnx", engine.registry.show("technical")["features"], version=bad)  # type: ignore[arg-type]
    assert engine.registry.versions("vh") == []


def test_a_model_in_use_is_removed_only_when_forced(engine: quorum.InferenceEngine) -> None:
    with pytest.raises(quorum.InUseError) as caught:
        engine.remove_model("sentiment")
    assert caught.value.code == "in_use" and "market@" in str(caught.value)
    engine.remove_model("sentiment", force=True)
    assert "sentiment" not in [m["name"] for m in engine.list_models()]


def test_a_second_engine_on_one_state_is_refused_and_tracking_bounds_are_settable(tmp_path: Path) -> None:
    other_home = tmp_path / "other"
    bounded = quorum.InferenceEngine(str(other_home), tracking={"window": 50, "window_seconds": 60})
    with pytest.raises(quorum.LockedError) as caught:
        quorum.InferenceEngine(str(other_home))
    assert caught.value.code == "locked" and "pid" in str(caught.value)
    with pytest.raises(quorum.JSONError):
        quorum.InferenceEngine(str(tmp_path / "third"), tracking={"windw": 5})
    del bounded


def test_faults_can_be_injected_to_rehearse_failures(engine: quorum.InferenceEngine, rows: List[Dict[str, float]]) -> None:
    names = engine.feature_names("market")
    good = {n: rows[0][n] for n in names}
    engine.inject_fault("sentiment", "fail")
    p = engine.predict("market", good)
    assert p.degraded and p.model_contributions["sentiment"]["prediction"] is None
    engine.inject_fault("sentiment", "none")
    assert not engine.predict("market", good).degraded
    with pytest.raises(quorum.InvalidInputError):
        engine.inject_fault("sentiment", "slow")
    with pytest.raises(quorum.InvalidInputError):
        engine.inject_fault("sentiment", "melt")
