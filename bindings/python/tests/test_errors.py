import numpy
import pytest

import quorum
from conftest import MODELS


def test_every_error_is_a_quorum_error_with_a_code(engine, rows):
    names = engine.feature_names("market")
    good = {n: rows[0][n] for n in names}
    cases = [
        (lambda: engine.predict("market", {"ret_1d": 0.1}), quorum.MissingFeatureError, "missing_feature"),
        (lambda: engine.predict("nope", good), quorum.NotFoundError, "not_found"),
        (lambda: engine.predict("market", {**good, "vix": float("nan")}), quorum.NonFiniteError, "non_finite"),
        (lambda: engine.predict("market", {**good, "vix": float("inf")}), quorum.NonFiniteError, "non_finite"),
        (lambda: engine.predict("market", {**good, "vix": "high"}), quorum.InvalidInputError, "invalid_input"),
        (lambda: engine.predict("market", {**good, "vix": None}), quorum.InvalidInputError, "invalid_input"),
        (lambda: engine.predict_batch("market", numpy.zeros((3, 5), numpy.float32)), quorum.InvalidInputError, "invalid_input"),
        (lambda: engine.predict_batch("market", numpy.zeros((0, len(names)), numpy.float32)), quorum.InvalidInputError, "invalid_input"),
        (lambda: engine.predict_batch("market", numpy.zeros(5, numpy.float32)), quorum.InvalidInputError, "invalid_input"),
        (lambda: engine.record_outcome(123456, 1.0), quorum.OutcomeError, "outcome"),
        (lambda: engine.register_model("../x", MODELS / "sentiment.onnx", ["a"]), quorum.InvalidNameError, "invalid_name"),
        (lambda: engine.register_model("x", MODELS / "missing.onnx", ["a"]), quorum.StorageError, "io"),
        (lambda: engine.register_model("x", MODELS / "sentiment.onnx", ["a", "b"]), quorum.ModelLoadError, "model_load"),
        (lambda: engine.create_ensemble({"name": "e", "members": ["technical"], "weights": [1, 2]}), quorum.ConfigError, "config"),
        (lambda: engine.create_ensemble({"name": "e", "members": ["technical"], "strategy": "vibes"}), quorum.JSONError, "json"),
        (lambda: engine.create_ensemble({"name": "e"}), quorum.JSONError, "json"),
    ]
    for call, kind, code in cases:
        with pytest.raises(kind) as caught:
            call()
        assert isinstance(caught.value, quorum.QuorumError)
        assert caught.value.code == code, (kind, caught.value)


def test_builtin_bases_are_natural(engine):
    assert issubclass(quorum.NotFoundError, LookupError)
    assert issubclass(quorum.InvalidInputError, ValueError)
    assert issubclass(quorum.StorageError, OSError)
    with pytest.raises(LookupError):
        engine.predict("nope", {})


def test_a_second_onnxruntime_library_is_refused(tmp_path):
    # A process can load one ONNX Runtime: the one in use is kept and a different path is an error
    # (the "how to install it" message is tested by the Rust CLI tests, in a fresh process).
    with pytest.raises(quorum.QuorumError) as caught:
        quorum.InferenceEngine(tmp_path, ort_library="/nonexistent/libonnxruntime.so")
    assert caught.value.code in ("config", "runtime_unavailable")
