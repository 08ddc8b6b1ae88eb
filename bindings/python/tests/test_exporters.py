"""Models as exporters write them, through the Python binding: a DataFrame export with one input per
column and a ZipMap, a graph whose inputs need a map, a batch fixed to one row, a string input.
Each answers as onnxruntime does on the original file. Fixtures: scripts/make_*_fixtures.py."""

from pathlib import Path
from typing import Dict, List

import numpy
import numpy.typing
import onnxruntime  # type: ignore[import-untyped]  # onnxruntime ships no type information
import pytest

import quorum
from conftest import REPO, rows  # noqa: F401  (rows is a fixture)


EXPORTERS = REPO / "tests" / "fixtures" / "exporters"
FEATURES = ["ret_1d", "ret_5d", "vix"]


def matrix(rows: List[Dict[str, float]], n: int) -> numpy.typing.NDArray[numpy.float32]:
    return numpy.array([[r[f] for f in FEATURES] for r in rows[:n]], dtype=numpy.float32)


def reference(name: str, x: numpy.typing.NDArray[numpy.float32]) -> numpy.typing.NDArray[numpy.float32]:
    session = onnxruntime.InferenceSession(str(EXPORTERS / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    feeds: Dict[str, numpy.typing.NDArray[numpy.generic]]
    if name == "frame_pipeline_plain":
        feeds = {
            "ret_1d": x[:, :1].astype(numpy.float64),
            "ret_5d": x[:, 1:2].astype(numpy.float64),
            "vix": numpy.round(x[:, 2:3]).astype(numpy.int64),  # numpy rounds halves to even, as ONNX Round
        }
    elif name == "grouped_inputs":
        feeds = {"x1": x[:, :2], "x2": x[:, 2]}
    else:
        feeds = {"X": x}
    return numpy.asarray(session.run(["probabilities"], feeds)[0])[:, 1]


def alone(engine: quorum.InferenceEngine, name: str) -> str:
    engine.create_ensemble({"name": f"{name}_alone", "members": [name]})
    return f"{name}_alone"


def test_a_dataframe_export_registers_by_its_input_names_and_reports_its_class(tmp_path: Path, rows: List[Dict[str, float]]) -> None:
    engine = quorum.InferenceEngine(tmp_path / "home", persistence=False)
    meta = engine.register_model("frame_pipeline", EXPORTERS / "frame_pipeline.onnx", FEATURES)
    assert meta["metadata"]["inputs"] == "ret_1d=ret_1d;ret_5d=ret_5d;vix=vix"
    assert "ZipMap" in str(meta["metadata"]["exported"])
    x = matrix(rows, 50)
    batch = engine.predict_batch(alone(engine, "frame_pipeline"), x, FEATURES)
    numpy.testing.assert_allclose(batch.member_predictions[:, 0], reference("frame_pipeline_plain", x), atol=1e-6)
    one = engine.predict("frame_pipeline_alone", dict(zip(FEATURES, map(float, x[0]))))
    assert one.model_contributions["frame_pipeline"]["class"] == "1"
    assert abs(one.prediction - reference("frame_pipeline_plain", x[:1])[0]) < 1e-6


def test_grouped_inputs_take_a_map_and_a_wrong_one_is_a_model_load_error(tmp_path: Path, rows: List[Dict[str, float]]) -> None:
    engine = quorum.InferenceEngine(tmp_path / "home", persistence=False)
    with pytest.raises(quorum.ModelLoadError, match="--inputs"):
        engine.register_model("grouped_inputs", EXPORTERS / "grouped_inputs.onnx", FEATURES)
    with pytest.raises(quorum.ModelLoadError, match="takes 2 columns"):
        engine.register_model("grouped_inputs", EXPORTERS / "grouped_inputs.onnx", FEATURES, inputs="x1=vix;x2=ret_1d")
    with pytest.raises(quorum.ConfigError):
        engine.register_model("grouped_inputs", EXPORTERS / "grouped_inputs.onnx", FEATURES, inputs="x1")
    engine.register_model(
        "grouped_inputs", EXPORTERS / "grouped_inputs.onnx", FEATURES, inputs="x1=ret_1d,ret_5d;x2=vix"
    )
    x = matrix(rows, 40)
    batch = engine.predict_batch(alone(engine, "grouped_inputs"), x, FEATURES)
    numpy.testing.assert_allclose(batch.member_predictions[:, 0], reference("grouped_inputs", x), atol=1e-6)


def test_a_batch_fixed_to_one_row_takes_any_batch(tmp_path: Path, rows: List[Dict[str, float]]) -> None:
    engine = quorum.InferenceEngine(tmp_path / "home", persistence=False)
    assert engine.register_model("fixed_batch1", EXPORTERS / "fixed_batch1.onnx", FEATURES)["max_batch"] == 1
    x = matrix(rows, 30)
    batch = engine.predict_batch(alone(engine, "fixed_batch1"), x, FEATURES)
    expected = numpy.concatenate([reference("fixed_batch1", x[i : i + 1]) for i in range(len(x))])
    numpy.testing.assert_allclose(batch.member_predictions[:, 0], expected, atol=1e-6)


def test_a_string_input_is_refused_with_what_to_change(tmp_path: Path) -> None:
    engine = quorum.InferenceEngine(tmp_path / "home", persistence=False)
    with pytest.raises(quorum.ModelLoadError, match="takes strings.*encode"):
        engine.register_model("string_input", EXPORTERS / "string_input.onnx", ["ret_1d", "sector"])


def test_models_at_three_opsets_fuse_and_say_so(tmp_path: Path) -> None:
    from conftest import MODELS, manifest

    engine = quorum.InferenceEngine(tmp_path / "home", persistence=False, native=False)
    for m in manifest():
        engine.register_model(m["name"], MODELS / "mixed" / f"{m['name']}.onnx", m["features"], kind=m["kind"])
    engine.create_ensemble({"name": "market", "members": ["technical", "fundamental", "sentiment"]})
    status = engine.fusion("market")
    assert status["fused"], status
    assert status["members"] == ["technical", "fundamental", "sentiment"]
    assert status["opsets"] == {"ai.onnx": 22, "ai.onnx.ml": 1}
    assert "left_out" not in status
