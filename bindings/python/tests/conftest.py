import csv
import json
from pathlib import Path
from typing import Any, Dict, List

import numpy
import pytest

import quorum


REPO = Path(__file__).resolve().parents[3]
MODELS = REPO / "examples" / "models"
HOLDOUT = REPO / "examples" / "data" / "holdout.csv"


def manifest() -> List[Dict[str, Any]]:
    models: List[Dict[str, Any]] = json.loads((MODELS / "manifest.json").read_text())["models"]
    return models


def holdout_rows() -> List[Dict[str, float]]:
    with HOLDOUT.open() as f:
        return [{k: float(v) for k, v in row.items() if k != "date"} for row in csv.DictReader(f)]


@pytest.fixture()
def engine(tmp_path: Path) -> quorum.InferenceEngine:
    e = quorum.InferenceEngine(tmp_path / "home")
    for m in manifest():
        e.register_model(m["name"], MODELS / f"{m['name']}.onnx", m["features"], kind=m["kind"])
    e.create_ensemble({"name": "market", "members": ["technical", "fundamental", "sentiment"], "weights": [0.4, 0.4, 0.2]})
    return e


@pytest.fixture()
def rows() -> List[Dict[str, float]]:
    return [r for r in holdout_rows() if all(numpy.isfinite(v) for v in r.values())]
