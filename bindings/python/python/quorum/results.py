"""The structures quorum's methods return (and the configurations they take), as TypedDicts.

They mirror the core crate's serde types, with the same names and keys as the Node package's
`results.d.ts`, the CLI's JSON and the HTTP API. `tests/test_types.py` checks real results against
these declarations, key by key.
"""

import sys
from typing import Dict, List, Literal, Optional, Tuple, Union

if sys.version_info >= (3, 11):
    from typing import NotRequired, TypedDict
else:  # TypedDict with NotRequired before 3.11
    from typing_extensions import NotRequired, TypedDict

__all__ = [
    "ArmStatus",
    "ArmsStatus",
    "BatchLatency",
    "Candidate",
    "Chosen",
    "Contribution",
    "Decision",
    "DriftEvent",
    "EnsembleConfig",
    "EnsembleConfigInput",
    "EnsembleMetrics",
    "ExecutorInfo",
    "ExperimentArm",
    "ExperimentConfig",
    "ExperimentConfigInput",
    "ExperimentMetric",
    "ExperimentStatus",
    "FusionStatus",
    "GroupMetrics",
    "Guardrails",
    "GuardrailsInput",
    "InferenceLogStats",
    "JsonValue",
    "Lineage",
    "MemberInput",
    "MemberSpec",
    "MetaOptions",
    "Metrics",
    "ModelBenchmark",
    "ModelKind",
    "ModelMetadata",
    "ModelServing",
    "ModelSummary",
    "NodeReport",
    "NonFinitePolicy",
    "OnlineOptions",
    "OptimizeMethod",
    "OptimizeReport",
    "OutputSpec",
    "PerformanceImprovement",
    "PredictionDict",
    "QuantizeReport",
    "Regime",
    "RegimeConfig",
    "RegimeInput",
    "RemoteSpec",
    "ReplicaStatus",
    "SharedStatus",
    "StrategyKind",
    "Task",
    "TrackedMetrics",
]

JsonValue = Union[str, int, float, bool, None, List["JsonValue"], Dict[str, "JsonValue"]]
"""Any JSON value (free-form metadata)."""

ModelKind = Literal["technical", "fundamental", "sentiment", "other"]
Task = Literal["classification", "regression"]
StrategyKind = Literal["soft-vote", "majority", "hedge", "boa", "mlpol", "ewa", "stacking", "blending"]
Regime = Literal["low", "normal", "high"]
ExperimentMetric = Literal["log_loss", "brier", "accuracy", "squared_error", "absolute_error", "business"]
OptimizeMethod = Literal[
    "fp32-optimized",
    "int8-dynamic",
    "int8-dynamic-per-channel",
    "int8-static-minmax",
    "int8-static-percentile",
    "int8-static-entropy",
    "fp16",
    "native",
    "native-gpu",
    "native-gpu-fp16",
]


class OutputSpec(TypedDict):
    """Which output of a model holds its prediction."""

    name: str
    column: Optional[int]
    """The column of a `[N, C]` output (0-based); None for a `[N]` or `[N, 1]` output."""
    label: NotRequired[str]


class Lineage(TypedDict):
    """Where a model version came from (filled by the optimizer)."""

    parent_version: Optional[int]
    method: str
    details: Dict[str, JsonValue]


class RemoteSpec(TypedDict):
    """How a remote model is reached (Open Inference Protocol v2); names its token's variable, never the token."""

    url: str
    token_env: NotRequired[str]
    input: NotRequired[str]
    feature_rank: NotRequired[int]
    datatype: str
    binary: bool
    hedge: NotRequired[bool]
    hedge_url: NotRequired[str]


class ModelMetadata(TypedDict):
    """Everything quorum records about one model version."""

    name: str
    version: int
    kind: ModelKind
    task: Task
    features: List[str]
    output: OutputSpec
    sha256: str
    size_bytes: int
    created_at: str
    """RFC 3339 UTC."""
    metadata: Dict[str, JsonValue]
    lineage: Optional[Lineage]
    max_batch: NotRequired[int]
    input_type: NotRequired[Literal["float64", "float16", "int64"]]
    remote: NotRequired[RemoteSpec]


class ModelSummary(TypedDict):
    """One model name with its versions, as listed."""

    name: str
    versions: List[int]
    default_version: int
    kind: ModelKind
    task: Task


class MemberSpec(TypedDict):
    """One member of a saved ensemble."""

    model: str
    version: Union[Literal["default"], int]
    fallback: NotRequired[str]


class OnlineOptions(TypedDict):
    """Settings of the online strategies (Hedge, BOA, ML-Poly, EWA)."""

    eta: Optional[float]
    alpha: float
    floor: float
    loss_decay: float
    gradient: bool


class MetaOptions(TypedDict):
    """Settings of stacking and blending."""

    window: int
    refit_every: int
    min_rows: int
    l2: float


# Functional form: the key `lambda` is a Python keyword.
RegimeConfig = TypedDict(
    "RegimeConfig",
    {
        "feature": str,
        "lambda": float,
        "low_quantile": float,
        "high_quantile": float,
        "warmup": int,
        "strategies": Dict[Regime, StrategyKind],
    },
)
"""Regime detection (the return feature, EWMA decay, quantiles, warm-up) and a strategy per regime."""


NonFinitePolicy = Union[Literal["refuse"], Dict[str, Dict[str, JsonValue]]]
"""What a NaN or infinite feature does: "refuse", or `{"impute": {"value": v, "per_feature": {...}}}`."""


class EnsembleConfig(TypedDict):
    """A saved ensemble version, as `create_ensemble` returns it. `non_finite` is "refuse" or
    `{"impute": {"value": v, "per_feature": {...}}}`."""

    name: str
    version: int
    members: List[MemberSpec]
    strategy: StrategyKind
    weights: Optional[List[float]]
    non_finite: NonFinitePolicy
    min_members: Optional[int]
    online: OnlineOptions
    meta: MetaOptions
    regime: Optional[RegimeConfig]
    serve_stale: NotRequired[bool]
    latency_budget_ms: NotRequired[float]
    created_at: str


class MemberInput(TypedDict):
    """A member given as an object (or give `"model"` / `"model@version"` as a string)."""

    model: str
    version: NotRequired[Union[int, str]]
    fallback: NotRequired[str]


RegimeInput = TypedDict(
    "RegimeInput",
    {
        "feature": str,
        "lambda": NotRequired[float],
        "low_quantile": NotRequired[float],
        "high_quantile": NotRequired[float],
        "warmup": NotRequired[int],
        "strategies": NotRequired[Dict[Regime, StrategyKind]],
    },
)
"""Regimes as `create_ensemble` takes them: the return feature, the rest optional."""


class EnsembleConfigInput(TypedDict):
    """What `create_ensemble` takes: a name and members, every other field optional."""

    name: str
    members: List[Union[str, MemberInput]]
    strategy: NotRequired[StrategyKind]
    weights: NotRequired[Optional[List[float]]]
    non_finite: NotRequired[NonFinitePolicy]
    min_members: NotRequired[Optional[int]]
    online: NotRequired[Dict[str, Union[float, bool, None]]]
    meta: NotRequired[Dict[str, float]]
    regime: NotRequired[Optional[RegimeInput]]
    serve_stale: NotRequired[bool]
    latency_budget_ms: NotRequired[float]


class ModelServing(TypedDict, total=False):
    """How one model is served (`default_model` / `models` of `InferenceEngine`): replicas
    `[min, max]`, `load` eager or lazy, times in milliseconds, `batching` (`max_batch`,
    `max_delay_us`, `dispatchers`, `max_queued`), the execution `provider` (`{"kind": "cuda", ...}`),
    `provider_fallback`, `native_gpu` (`{"device", "precision", "min_rows"}`)."""

    replicas: Tuple[int, int]
    load: Literal["eager", "lazy"]
    timeout_ms: float
    latency_target_ms: float
    share_weights: bool
    batching: Dict[str, int]
    provider: Dict[str, Union[str, int, bool, None]]
    provider_fallback: Literal["cpu", "fail"]
    native_gpu: Dict[str, Union[str, int]]


class ExecutorInfo(TypedDict):
    """Which executor runs a model, and why."""

    kind: str
    reason: NotRequired[str]
    gpu: NotRequired[str]
    url: NotRequired[str]


class ReplicaStatus(TypedDict):
    """One loaded model version's replica pool."""

    model: str
    version: int
    replicas: int
    idle: int
    in_flight: int
    waiting: int
    queued: int
    batches: int
    batched_rows: int
    min: int
    max: int
    p95_ms: Optional[float]
    calls: int
    estimated_bytes: int
    idle_for_ms: float
    provider: str
    provider_fallback: NotRequired[str]
    executor: ExecutorInfo


class FusionStatus(TypedDict):
    """Whether an ensemble's members run as one fused ONNX model."""

    fused: bool
    sessions: int
    reason: NotRequired[str]
    native: List[str]
    members: List[str]
    left_out: NotRequired[Dict[str, str]]
    opsets: NotRequired[Dict[str, int]]


class InferenceLogStats(TypedDict):
    """The inference log's counters."""

    written: int
    dropped: int
    write_errors: int
    waiting: int
    last_error: Optional[str]


class SharedStatus(TypedDict):
    """Where this process stands in a shared (PostgreSQL) state's outcome log."""

    instance: int
    applied_position: int
    start_position: int
    caught_up: bool
    applied: int
    skipped: int
    read_errors: int


class Metrics(TypedDict):
    """Metrics over some outcomes; those that do not apply to the task are None."""

    count: int
    accuracy: Optional[float]
    precision: Optional[float]
    recall: Optional[float]
    f1_score: Optional[float]
    log_loss: Optional[float]
    brier: Optional[float]
    mae: Optional[float]
    rmse: Optional[float]


class TrackedMetrics(TypedDict):
    """All-time and sliding-window metrics of one predictor."""

    all_time: Metrics
    window: Metrics
    recent: Metrics


class GroupMetrics(TypedDict):
    """Metrics of the ensemble and each member for one regime."""

    metrics: TrackedMetrics
    members: List[Tuple[str, TrackedMetrics]]


class EnsembleMetrics(TypedDict):
    """Tracked metrics of one ensemble version and each of its members."""

    ensemble: str
    version: int
    metrics: TrackedMetrics
    members: List[Tuple[str, TrackedMetrics]]
    regimes: List[Tuple[Regime, GroupMetrics]]
    ranking: List[str]


class DriftEvent(TypedDict):
    """A member whose loss drifted upwards (Page-Hinkley)."""

    ensemble: str
    version: int
    member: str
    observations: int
    statistic: float
    window_loss: float


class Guardrails(TypedDict):
    """Limits on an experiment's treatment that roll it back at once."""

    max_error_rate: float
    max_degraded_rate: float
    max_p95_latency_ms: float
    failure_limit: int
    min_requests: int
    interval_ms: int


class ExperimentConfig(TypedDict):
    """An experiment's configuration, as saved."""

    name: str
    ensemble: str
    control: int
    treatment: int
    steps: List[float]
    min_outcomes_per_step: int
    metric: Optional[ExperimentMetric]
    guardrails: Guardrails
    alpha: float
    max_outcomes: int
    non_inferiority_margin: Optional[float]
    mixing_sd: float
    seed: Optional[int]


class GuardrailsInput(TypedDict, total=False):
    """Guardrails as `start_experiment` takes them: any subset, the rest default."""

    max_error_rate: float
    max_degraded_rate: float
    max_p95_latency_ms: float
    failure_limit: int
    min_requests: int
    interval_ms: int


class ExperimentConfigInput(TypedDict):
    """What `start_experiment` takes: names and versions, every other field optional."""

    name: str
    ensemble: str
    control: int
    treatment: int
    steps: NotRequired[List[float]]
    min_outcomes_per_step: NotRequired[int]
    metric: NotRequired[Optional[ExperimentMetric]]
    guardrails: NotRequired[GuardrailsInput]
    alpha: NotRequired[float]
    max_outcomes: NotRequired[int]
    non_inferiority_margin: NotRequired[Optional[float]]
    mixing_sd: NotRequired[float]
    seed: NotRequired[Optional[int]]


class ArmStatus(TypedDict):
    """One arm in an experiment's status."""

    version: int
    share_percent: float
    outcomes: int
    mean: Optional[float]
    sd: Optional[float]
    requests: NotRequired[int]
    errors: NotRequired[int]
    degraded: NotRequired[int]


class ArmsStatus(TypedDict):
    """Both arms of an experiment."""

    control: ArmStatus
    treatment: ArmStatus


class Decision(TypedDict):
    """One decision of an experiment."""

    at: str
    action: Literal["started", "advanced", "rolled_back", "promoted", "no_difference", "paused", "resumed", "stopped"]
    reason: str
    split_percent: float
    control_outcomes: int
    treatment_outcomes: int
    estimate: NotRequired[float]
    p_value: NotRequired[float]


class ExperimentStatus(TypedDict):
    """An experiment's status."""

    name: str
    ensemble: str
    state: Literal["running", "paused", "rolled_back", "promoted", "no_difference", "stopped"]
    step: int
    steps: List[float]
    split_percent: float
    metric: ExperimentMetric
    higher_is_better: bool
    alpha: float
    arms: ArmsStatus
    estimate: Optional[float]
    confidence_sequence: Optional[Tuple[float, float]]
    p_value: float
    guardrail_breaches: int
    decisions: List[Decision]
    config: ExperimentConfig


class BatchLatency(TypedDict):
    """Latency at one batch size, in milliseconds; throughput in rows per second."""

    batch: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput: float


class ModelBenchmark(TypedDict):
    """What a benchmark measured."""

    size_bytes: int
    session_memory_bytes: NotRequired[int]
    latency: List[BatchLatency]
    accuracy: NotRequired[float]
    agreement: NotRequired[float]
    max_abs_diff: NotRequired[float]
    mean_abs_diff: NotRequired[float]


class NodeReport(TypedDict):
    """What happened to one node in a rewrite."""

    node: str
    op_type: str
    rewritten: bool
    reason: NotRequired[str]


class Candidate(TypedDict):
    """One candidate as the optimizer's decision saw it (latencies by batch size)."""

    method: OptimizeMethod
    accepted: bool
    reason: NotRequired[str]
    accuracy: NotRequired[float]
    agreement: NotRequired[float]
    latency_ms: Dict[int, float]
    latency_ratio: NotRequired[Dict[int, float]]
    size_bytes: int
    benchmark: NotRequired[ModelBenchmark]
    nodes: NotRequired[List[NodeReport]]


class Chosen(TypedDict):
    """The candidate the optimizer chose."""

    method: OptimizeMethod
    version: int
    registered: bool
    note: NotRequired[str]


class PerformanceImprovement(TypedDict):
    """The chosen model against the original, as measured."""

    latency_reduction: float
    speedup: Dict[int, float]
    size_reduction: float
    accuracy_change: NotRequired[float]


class OptimizeReport(TypedDict):
    """What the optimizer decided, and why."""

    model: str
    version: int
    original: ModelBenchmark
    candidates: List[Candidate]
    chosen: Optional[Chosen]
    performance_improvement: PerformanceImprovement
    deployment_ready: bool


class QuantizeReport(TypedDict):
    """What `quantize` wrote."""

    out: str
    bytes: int
    nodes: List[NodeReport]


class ExperimentArm(TypedDict):
    """The experiment and arm that served a request."""

    name: str
    arm: Literal["control", "treatment"]


# Functional form: the key `class` is a Python keyword.
Contribution = TypedDict(
    "Contribution",
    {
        "version": int,
        "class": NotRequired[str],
        "prediction": Optional[float],
        "weight": float,
        "latency_ms": float,
        "recent_loss": NotRequired[float],
        "error": NotRequired[str],
        "fallback": NotRequired[str],
    },
)
"""One member's part in a prediction (`class`: the class its prediction is the probability of)."""


class PredictionDict(TypedDict):
    """`Prediction.to_dict()`: one prediction in the JSON shape the CLI and the HTTP API print (flags
    and lists that are false or empty are left out)."""

    request_id: int
    ensemble: str
    ensemble_version: int
    strategy: str
    prediction: float
    confidence: float
    label: NotRequired[int]
    model_contributions: Dict[str, Contribution]
    regime: NotRequired[Regime]
    fit_window: NotRequired[Dict[str, int]]
    """Stacking and blending: `fitted_at` and `rows` of the current fit."""
    weights_epoch: int
    degraded: bool
    cached: NotRequired[bool]
    stale: NotRequired[bool]
    fused: NotRequired[bool]
    skipped: NotRequired[List[str]]
    latency_ms: float
    experiment: NotRequired[ExperimentArm]
