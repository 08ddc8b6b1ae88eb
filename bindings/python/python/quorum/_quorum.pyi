import builtins
import os
from typing import Mapping, Optional, Sequence, Union, final

import numpy
import numpy.typing
from typing_extensions import Self, disjoint_base

from .results import (
    Contribution,
    DriftEvent,
    EnsembleConfig,
    EnsembleConfigInput,
    EnsembleMetrics,
    ExperimentArm,
    ExperimentConfigInput,
    ExperimentStatus,
    FusionStatus,
    InferenceLogStats,
    ModelBenchmark,
    ModelMetadata,
    ModelServing,
    ModelSummary,
    OptimizeReport,
    PredictionDict,
    QuantizeReport,
    ReplicaStatus,
    SharedStatus,
)

_Path = Union[str, os.PathLike[str]]

__all__ = ["BatchPrediction", "ERROR_CODES", "InferenceEngine", "Optimizer", "Prediction", "Registry", "__version__"]
__version__: str
ERROR_CODES: list[str]

@final
class Prediction:
    @property
    def request_id(self) -> int: ...
    @property
    def ensemble(self) -> str: ...
    @property
    def ensemble_version(self) -> int: ...
    @property
    def strategy(self) -> str: ...
    @property
    def prediction(self) -> float: ...
    @property
    def confidence(self) -> float: ...
    @property
    def label(self) -> Optional[int]: ...
    @property
    def regime(self) -> Optional[str]: ...
    @property
    def weights_epoch(self) -> int: ...
    @property
    def experiment(self) -> Optional[ExperimentArm]: ...
    @property
    def degraded(self) -> bool: ...
    @property
    def skipped(self) -> list[str]: ...
    @property
    def cached(self) -> bool: ...
    @property
    def stale(self) -> bool: ...
    @property
    def fused(self) -> bool: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def model_contributions(self) -> dict[str, Contribution]: ...
    def to_dict(self) -> PredictionDict: ...

@final
class BatchPrediction:
    def __len__(self) -> int: ...
    @property
    def predictions(self) -> numpy.typing.NDArray[numpy.float32]: ...
    @property
    def confidences(self) -> numpy.typing.NDArray[numpy.float32]: ...
    @property
    def member_predictions(self) -> numpy.typing.NDArray[numpy.float32]: ...
    @property
    def request_ids(self) -> numpy.typing.NDArray[numpy.uint64]: ...
    @property
    def members(self) -> list[str]: ...
    @property
    def latency_ms(self) -> float: ...
    def row(self, index: int) -> Prediction: ...

@disjoint_base
class InferenceEngine:
    def __new__(
        cls,
        home: _Path,
        ort_library: Optional[_Path] = None,
        tracking: Optional[Union[bool, Mapping[str, float]]] = None,
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
        inference_log: Union[bool, Mapping[str, float], None] = None,
        native: bool = True,
    ) -> Self: ...
    @property
    def registry(self) -> Registry: ...
    def set_default_version(self, name: str, version: int) -> list[str]: ...
    def replicas(self, model: Optional[str] = None) -> list[ReplicaStatus]: ...
    def fusion(self, ensemble: str) -> FusionStatus: ...
    def inference_log_stats(self) -> Optional[InferenceLogStats]: ...
    def shared_status(self) -> Optional[SharedStatus]: ...
    def inject_fault(self, model: str, kind: str, amount: Optional[float] = None) -> None: ...
    def unload_model(self, name: str) -> int: ...
    def create_ensemble(self, config: EnsembleConfigInput) -> EnsembleConfig: ...
    def feature_names(self, ensemble: str) -> list[str]: ...
    def predict(
        self,
        ensemble: str,
        features: dict[str, float],
        deadline_ms: Optional[float] = None,
        routing_key: Optional[str] = None,
    ) -> Prediction: ...
    async def predict_async(
        self,
        ensemble: str,
        features: dict[str, float],
        deadline_ms: Optional[float] = None,
        routing_key: Optional[str] = None,
    ) -> Prediction: ...
    def predict_row(
        self,
        ensemble: str,
        row: list[float],
        deadline_ms: Optional[float] = None,
        routing_key: Optional[str] = None,
    ) -> Prediction: ...
    def predict_batch(
        self,
        ensemble: str,
        rows: numpy.typing.NDArray[numpy.float32],
        feature_names: Optional[list[str]] = None,
        routing_key: Optional[str] = None,
    ) -> BatchPrediction: ...
    def record_outcome(self, request_id: int, outcome: float, business_value: Optional[float] = None) -> None: ...
    def start_experiment(self, config: ExperimentConfigInput) -> ExperimentStatus: ...
    def experiment_status(self, name: str) -> ExperimentStatus: ...
    def experiments(self) -> list[ExperimentStatus]: ...
    def pause_experiment(self, name: str) -> ExperimentStatus: ...
    def resume_experiment(self, name: str) -> ExperimentStatus: ...
    def stop_experiment(self, name: str, reason: str = "") -> ExperimentStatus: ...
    def metrics(self, ensemble: str) -> EnsembleMetrics: ...
    def drift_events(self) -> list[DriftEvent]: ...
    def metrics_text(self) -> str: ...
    def flush(self) -> None: ...

@disjoint_base
class Registry:
    def __new__(cls, home: _Path, ort_library: Optional[_Path] = None) -> Self: ...
    def register(
        self,
        name: str,
        file: _Path,
        features: builtins.list[str],
        output: Optional[str] = None,
        kind: str = "other",
        task: str = "classification",
        version: Optional[int] = None,
        inputs: Optional[str] = None,
    ) -> ModelMetadata: ...
    def register_remote(
        self,
        name: str,
        url: str,
        features: builtins.list[str],
        *,
        token_env: Optional[str] = None,
        output: Optional[str] = None,
        kind: str = "other",
        task: str = "classification",
        version: Optional[int] = None,
        hedge: bool = False,
        hedge_url: Optional[str] = None,
    ) -> ModelMetadata: ...
    def list(self) -> builtins.list[ModelSummary]: ...
    def show(self, name: str, version: Optional[int] = None) -> ModelMetadata: ...
    def versions(self, name: str) -> builtins.list[int]: ...
    def remove(self, name: str, version: Optional[int] = None, force: bool = False) -> None: ...
    def set_default(self, name: str, version: int) -> builtins.list[str]: ...
    def verify(self, name: str, version: Optional[int] = None) -> ModelMetadata: ...

@final
class Optimizer:
    def __new__(cls, engine: InferenceEngine) -> Self: ...
    def benchmark(
        self, model: str, data: _Path, outcome: Optional[str] = None, version: Optional[int] = None
    ) -> ModelBenchmark: ...
    def optimize(
        self,
        model: str,
        data: _Path,
        outcome: str,
        accuracy_threshold: Optional[float] = None,
        methods: Optional[list[str]] = None,
        target_latency_ms: Optional[float] = None,
        version: Optional[int] = None,
        batch_sizes: Optional[Mapping[int, float]] = None,
    ) -> OptimizeReport: ...
    def quantize(
        self,
        file: _Path,
        out: _Path,
        method: str,
        per_channel: bool = False,
        data: Optional[_Path] = None,
        features: Optional[list[str]] = None,
    ) -> QuantizeReport: ...
