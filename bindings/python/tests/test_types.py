"""Real results against the TypedDicts the stubs declare (quorum.results): every required key present,
no key undeclared, every value of the declared type, down to the leaves. mypy checks the other half
(that the stubs name these types) in `make python-test`."""

from __future__ import annotations

import os
import sys
import typing
from pathlib import Path
from typing import Any, Dict, ForwardRef, List, Literal, Tuple, Union

import numpy
import pytest

import quorum
from quorum import results
from quorum.results import (
    DriftEvent,
    EnsembleConfig,
    EnsembleConfigInput,
    EnsembleMetrics,
    ExperimentConfigInput,
    ExperimentStatus,
    FusionStatus,
    InferenceLogStats,
    ModelBenchmark,
    ModelMetadata,
    ModelSummary,
    OptimizeReport,
    PredictionDict,
    QuantizeReport,
    ReplicaStatus,
)

from conftest import HOLDOUT, MODELS, REPO, manifest

if sys.version_info >= (3, 10):
    from types import UnionType
else:  # no `X | Y` types before 3.10
    UnionType = type(Union[int, str])


def mismatches(value: object, tp: Any, where: str) -> List[str]:
    """Every way `value` fails to be a `tp`, as `where: reason` strings (empty: it conforms)."""
    if isinstance(tp, ForwardRef):
        tp = getattr(results, tp.__forward_arg__)
    if tp is Any:
        return [f"{where}: declared Any"]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None) or tp is None:
        return [] if value is None else [f"{where}: expected None, got {value!r:.60}"]
    if origin is Union or origin is UnionType:
        each = [mismatches(value, t, where) for t in args]
        if any(not m for m in each):
            return []
        return [f"{where}: {value!r:.80} is none of {tp} ({'; '.join(m for ms in each for m in ms[:1])})"]
    if origin is Literal:
        return [] if value in args and type(value) is type(args[args.index(value)]) else [f"{where}: {value!r} not in {args}"]
    if typing.is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{where}: expected a {tp.__name__} dict, got {type(value).__name__}"]
        hints = typing.get_type_hints(tp)
        found = [f"{where}.{k}: missing" for k in sorted(tp.__required_keys__) if k not in value]
        found += [f"{where}.{k}: unexpected key (not in {tp.__name__})" for k in value if k not in hints]
        for key, item in value.items():
            if key in hints:
                found += mismatches(item, hints[key], f"{where}.{key}")
        return found
    if origin in (list, List):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [m for i, v in enumerate(value) for m in mismatches(v, args[0], f"{where}[{i}]")]
    if origin in (tuple, Tuple):
        if not isinstance(value, tuple) or len(value) != len(args):
            return [f"{where}: expected a {len(args)}-tuple, got {value!r:.60}"]
        return [m for i, (v, t) in enumerate(zip(value, args)) for m in mismatches(v, t, f"{where}[{i}]")]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            return [f"{where}: expected a dict, got {type(value).__name__}"]
        found = []
        for k, v in value.items():
            found += mismatches(k, args[0], f"{where} key {k!r}")
            found += mismatches(v, args[1], f"{where}[{k!r}]")
        return found
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{where}: expected a bool, got {value!r:.40}"]
    if tp is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{where}: expected an int, got {value!r:.40}"]
    if tp is float:  # an int is a float (PEP 484)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected a float, got {value!r:.40}"]
    if tp is str:
        return [] if isinstance(value, str) else [f"{where}: expected a str, got {value!r:.40}"]
    return [f"{where}: cannot check {tp}"]


def check(value: object, tp: Any, label: str) -> None:
    found = mismatches(value, tp, label)
    assert not found, "\n".join(found[:20])


def test_what_the_engine_registry_and_optimizer_return_matches_the_typeddicts(tmp_path: Path) -> None:
    engine = quorum.InferenceEngine(tmp_path / "home")
    models = {m["name"]: m for m in manifest()}
    for name in ("technical", "fundamental", "sentiment"):
        check(
            engine.register_model(name, MODELS / f"{name}.onnx", models[name]["features"], kind=models[name]["kind"]),
            ModelMetadata,
            "register_model",
        )
    check(engine.register_model("technical", MODELS / "technical.onnx", models["technical"]["features"]), ModelMetadata, "v2")
    check(engine.list_models(), List[ModelSummary], "list_models")
    market: EnsembleConfigInput = {"name": "market", "members": ["technical@2", "fundamental", {"model": "sentiment", "fallback": "technical"}]}
    check(engine.create_ensemble(market), EnsembleConfig, "create_ensemble")
    check(engine.create_ensemble({**market, "weights": [0.4, 0.4, 0.2]}), EnsembleConfig, "create_ensemble v2")
    adaptive: EnsembleConfigInput = {
        "name": "adaptive",
        "members": ["technical", "fundamental", "sentiment"],
        "strategy": "hedge",
        "regime": {"feature": "ret_1d", "strategies": {"high": "majority"}},
        "serve_stale": True,
        "latency_budget_ms": 50,
    }
    check(engine.create_ensemble(adaptive), EnsembleConfig, "create_ensemble")

    import csv

    with HOLDOUT.open() as f:
        rows = [{k: float(v) for k, v in r.items() if k != "date"} for r in csv.DictReader(f)]
    rows = [r for r in rows if all(numpy.isfinite(v) for v in r.values())][:150]
    for r in rows:
        p = engine.predict("market", {n: r[n] for n in engine.feature_names("market")})
        check(p.to_dict(), PredictionDict, "Prediction.to_dict")
        engine.record_outcome(p.request_id, r["next_day_up"], 1.0)
        q = engine.predict("adaptive", {n: r[n] for n in engine.feature_names("adaptive")})
        check(q.to_dict(), PredictionDict, "Prediction.to_dict (regimes)")
        engine.record_outcome(q.request_id, r["next_day_up"])
    check(engine.replicas(), List[ReplicaStatus], "replicas")
    check(engine.fusion("market"), FusionStatus, "fusion")
    check(engine.inference_log_stats(), Union[InferenceLogStats, None], "inference_log_stats")
    check(engine.metrics("market"), EnsembleMetrics, "metrics")
    check(engine.metrics("adaptive"), EnsembleMetrics, "metrics (regimes)")
    check(engine.drift_events(), List[DriftEvent], "drift_events")

    experiment: ExperimentConfigInput = {"name": "ab", "ensemble": "market", "control": 1, "treatment": 2, "steps": [50], "metric": "business"}
    check(engine.start_experiment(experiment), ExperimentStatus, "start_experiment")
    for r in rows[:80]:
        p = engine.predict("market", {n: r[n] for n in engine.feature_names("market")}, routing_key=f"user-{r['ret_1d']}")
        check(p.to_dict(), PredictionDict, "Prediction.to_dict (experiment)")
        engine.record_outcome(p.request_id, r["next_day_up"], r["ret_1d"])
    check(engine.experiment_status("ab"), ExperimentStatus, "experiment_status")
    check(engine.pause_experiment("ab"), ExperimentStatus, "pause_experiment")
    check(engine.resume_experiment("ab"), ExperimentStatus, "resume_experiment")
    check(engine.experiments(), List[ExperimentStatus], "experiments")
    check(engine.stop_experiment("ab", "checked"), ExperimentStatus, "stop_experiment")

    check(engine.benchmark("technical", HOLDOUT, "next_day_up"), ModelBenchmark, "benchmark")
    report = engine.optimize("technical", HOLDOUT, "next_day_up", methods=["int8-dynamic", "native"])
    check(report, OptimizeReport, "optimize")
    check(engine.optimizer.quantize(MODELS / "technical.onnx", tmp_path / "q.onnx", "int8-dynamic"), QuantizeReport, "quantize")
    check(engine.registry.show("technical"), ModelMetadata, "show")
    check(engine.registry.verify("technical", 1), ModelMetadata, "verify")

    logging = quorum.InferenceEngine(tmp_path / "logged", inference_log=True)
    check(logging.inference_log_stats(), InferenceLogStats, "inference_log_stats")


def test_a_result_that_differs_from_its_typeddict_is_caught() -> None:
    good = {"fused": True, "sessions": 1, "native": [], "members": ["a"]}
    assert mismatches(good, FusionStatus, "f") == []
    assert mismatches({k: v for k, v in good.items() if k != "sessions"}, FusionStatus, "f") == ["f.sessions: missing"]
    assert "unexpected key" in mismatches({**good, "extra": 1}, FusionStatus, "f")[0]
    assert "expected a str" in mismatches({**good, "members": [1]}, FusionStatus, "f")[0]
    assert mismatches({**good, "fused": 1}, FusionStatus, "f") != []
    pair: Any = ["technical", {}]  # a list where the typing says tuple
    assert "tuple" in mismatches(pair, Tuple[str, Dict[str, int]], "p")[0]


def test_the_wheel_carries_the_workspace_version() -> None:
    cargo = (REPO / "Cargo.toml").read_text()
    workspace = next(line.split('"')[1] for line in cargo.splitlines() if line.startswith("version = "))
    assert quorum.__version__ == workspace
    assert os.path.basename(quorum.__file__) == "__init__.py"


@pytest.mark.parametrize("name", results.__all__)
def test_every_name_in_quorum_results_exists(name: str) -> None:
    assert hasattr(results, name)
