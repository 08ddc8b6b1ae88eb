"""quorum: ensembles of ONNX models in your own process.

    import quorum
    engine = quorum.InferenceEngine("./quorum-home")
    p = engine.predict("market", {"ret_1d": 0.001, ...})

ONNX Runtime comes from the `onnxruntime` package this one depends on (or `onnxruntime-gpu`, if that
is what is installed): its bundled library is loaded, so nothing else needs installing.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from typing import List, Mapping, Optional, Sequence, Union

import numpy
import numpy.typing

from . import errors, results
from ._quorum import BatchPrediction, Optimizer, Prediction, __version__
from ._quorum import InferenceEngine as _NativeEngine
from ._quorum import Registry as _NativeRegistry
from .errors import *  # noqa: F401,F403  (the exception classes are part of the package's API)
from .results import ModelBenchmark, ModelMetadata, ModelServing, ModelSummary, OptimizeReport


def onnxruntime_library() -> Optional[str]:
    """The ONNX Runtime shared library inside the installed `onnxruntime` package, if any."""
    explicit = os.environ.get("ORT_DYLIB_PATH")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(location, "capi", "libonnxruntime.so*")))
        found += sorted(glob.glob(os.path.join(location, "capi", "libonnxruntime*.dylib")))
        found += sorted(glob.glob(os.path.join(location, "capi", "onnxruntime.dll")))
        if found:
            return found[-1]
    return None


class InferenceEngine(_NativeEngine):
    """An engine over a quorum home (created if absent). Share one per process across threads."""

    def __new__(
        cls,
        home: "str | os.PathLike[str]",
        ort_library: "Optional[str | os.PathLike[str]]" = None,
        tracking: Union[bool, Mapping[str, float]] = True,
        persistence: bool = True,
        sessions_per_model: Optional[int] = None,
        synchronous_refits: bool = False,
        cache_capacity: Optional[int] = None,
        cache_ttl_ms: Optional[float] = None,
        default_model: Optional[ModelServing] = None,
        models: Optional[Mapping[str, ModelServing]] = None,
        memory_budget_bytes: Optional[int] = None,
        fusion: bool = True,
        state: Optional[str] = None,
        inference_log: "bool | Mapping[str, float] | None" = None,
        native: bool = True,
    ) -> "InferenceEngine":
        """`default_model` and `models` (by model name) say how models are served, each a dict with
        any of: `replicas` ([min, max]; the autoscaler moves within), `load` ("eager" | "lazy"),
        `timeout_ms`, `latency_target_ms`, `share_weights`, and `batching` ({`max_batch`,
        `max_delay_us`, `dispatchers`}). `cache_capacity` puts a prediction cache in front (entries
        served for `cache_ttl_ms`, default 1000). `memory_budget_bytes` unloads idle models over it.
        `fusion` runs each ensemble's members as one fused ONNX model when they can be (see
        `fusion()`). `native` runs models whose graphs compile (trees, linear models, small MLPs)
        on native plans instead of ONNX Runtime (see `replicas()`' `executor`). `state` is where learnt weights, metrics and the inference log live:
        "sqlite:<path>" (default `<home>/state.sqlite`) or "postgres://..." (shared by several
        processes). `inference_log` (True, or a dict of `sample`, `queue_capacity`, `batch_rows`,
        `flush_ms`) logs every prediction off the prediction path. The engine's `registry` and
        `optimizer` are the `Registry` and `Optimizer` of its home; the model methods below are
        shortcuts to them."""
        return super().__new__(
            cls,
            os.fspath(home),
            os.fspath(ort_library) if ort_library is not None else onnxruntime_library(),
            tracking,
            persistence,
            sessions_per_model,
            synchronous_refits,
            cache_capacity,
            cache_ttl_ms,
            default_model,
            models,
            memory_budget_bytes,
            fusion,
            state,
            inference_log,
            native,
        )

    @property
    def optimizer(self) -> Optimizer:
        """An `Optimizer` over the engine's registry."""
        return Optimizer(self)

    def register_model(
        self,
        name: str,
        file: "str | os.PathLike[str]",
        features: Sequence[str],
        output: Optional[str] = None,
        kind: str = "other",
        task: str = "classification",
        version: Optional[int] = None,
        inputs: Optional[str] = None,
    ) -> ModelMetadata:
        """`Registry.register` on the engine's registry. `inputs` maps features to the inputs of a
        model with several (`"x1=a,b;x2=c,d"`); without it they must be named as the features."""
        return self.registry.register(name, file, list(features), output, kind, task, version, inputs)

    def list_models(self) -> List[ModelSummary]:
        """`Registry.list` on the engine's registry."""
        return self.registry.list()

    def model(self, name: str, version: Optional[int] = None) -> ModelMetadata:
        """`Registry.show` on the engine's registry."""
        return self.registry.show(name, version)

    def remove_model(self, name: str, version: Optional[int] = None, force: bool = False) -> None:
        """`Registry.remove` on the engine's registry."""
        self.registry.remove(name, version, force)

    def optimize(
        self,
        model: str,
        data: "str | os.PathLike[str]",
        outcome: str,
        accuracy_threshold: Optional[float] = None,
        methods: Optional[Sequence[str]] = None,
        target_latency_ms: Optional[float] = None,
        version: Optional[int] = None,
        batch_sizes: Optional[Mapping[int, float]] = None,
    ) -> OptimizeReport:
        """`Optimizer.optimize` on the engine's registry; `batch_sizes` ({1: 0.2, 64: 0.8}) is the
        workload the decision weighs (default single rows)."""
        listed = list(methods) if methods is not None else None
        return self.optimizer.optimize(
            model, data, outcome, accuracy_threshold, listed, target_latency_ms, version, batch_sizes
        )

    def benchmark(
        self,
        model: str,
        data: "str | os.PathLike[str]",
        outcome: Optional[str] = None,
        version: Optional[int] = None,
    ) -> ModelBenchmark:
        """`Optimizer.benchmark` on the engine's registry."""
        return self.optimizer.benchmark(model, data, outcome, version)

    def predict_batch(
        self,
        ensemble: str,
        rows: numpy.typing.ArrayLike,
        feature_names: Optional[Sequence[str]] = None,
        routing_key: Optional[str] = None,
    ) -> BatchPrediction:
        """Predicts every row of a 2-D array (any array-like). A C-contiguous float32 array is read in
        place; anything else is converted once (numpy.ascontiguousarray). During an experiment the
        batch is one request, routed to one arm by `routing_key`."""
        matrix = numpy.ascontiguousarray(rows, dtype=numpy.float32)
        if matrix.ndim != 2:
            raise errors.InvalidInputError(f"rows must be 2-D (rows x features), got {matrix.ndim}-D", "invalid_input")
        names = list(feature_names) if feature_names is not None else None
        return super().predict_batch(ensemble, matrix, names, routing_key)


class Registry(_NativeRegistry):
    """The models of a quorum home, opened on its own (an engine's is `engine.registry`). A
    registration is checked by ONNX Runtime, from the installed `onnxruntime` package by default."""

    def __new__(cls, home: "str | os.PathLike[str]", ort_library: "Optional[str | os.PathLike[str]]" = None) -> "Registry":
        library = os.fspath(ort_library) if ort_library is not None else onnxruntime_library()
        return super().__new__(cls, os.fspath(home), library)


__all__ = [
    "InferenceEngine",
    "Registry",
    "Optimizer",
    "Prediction",
    "BatchPrediction",
    "errors",
    "results",
    "onnxruntime_library",
    "__version__",
]
__all__ += errors.__all__
