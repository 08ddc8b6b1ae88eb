// The structures quorum-engine's methods return and take as JSON-like objects, written once here.
// They mirror the core crate's serde types (snake_case keys, as the CLI, the HTTP server and the
// Python package show them); test/types.test.js checks them against real runtime objects, key by
// key, with the TypeScript compiler's own view of these declarations.

/** What a model looks at. */
export type ModelKind = 'technical' | 'fundamental' | 'sentiment' | 'other'
/** What a model predicts: a probability of the positive class, or a value. */
export type Task = 'classification' | 'regression'
/** How members' predictions are combined. */
export type StrategyKind = 'soft-vote' | 'majority' | 'hedge' | 'boa' | 'mlpol' | 'ewa' | 'stacking' | 'blending'
/** A market regime, by realised volatility. */
export type Regime = 'low' | 'normal' | 'high'
/** Any JSON value (free-form metadata). */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue }

/** Which output of a model holds its prediction. */
export interface OutputSpec {
  /** The ONNX output's name. */
  name: string
  /** The column of a `[N, C]` output (0-based); null for a `[N]` or `[N, 1]` output. */
  column: number | null
  /** The class label the column holds, when given as `name:LABEL`. */
  label?: string
}

/** Where a model version came from (filled by the optimizer). */
export interface Lineage {
  /** The version it was derived from. */
  parent_version: number | null
  /** How (`int8-dynamic`, `fp16`, ...). */
  method: string
  /** What the optimizer measured and decided. */
  details: Record<string, JsonValue>
}

/** Everything quorum records about one model version (`metadata.json`). */
export interface ModelMetadata {
  name: string
  version: number
  kind: ModelKind
  task: Task
  /** The model's input columns, in the order its input expects them. */
  features: string[]
  output: OutputSpec
  /** sha256 of the stored ONNX file, in hex. */
  sha256: string
  size_bytes: number
  /** RFC 3339 UTC. */
  created_at: string
  /** Free-form metadata, plus what registration found (ZipMap, input types, ...). */
  metadata: Record<string, JsonValue>
  lineage: Lineage | null
  /** The most rows one call takes, for a model exported with a fixed batch size. */
  max_batch?: number
  /** The input's element type, when it is not float32. */
  input_type?: 'float64' | 'float16' | 'int64'
  /** For a model served by another server: how it is reached. */
  remote?: RemoteSpec
}

/** How a remote model is reached (Open Inference Protocol v2); names its token's variable, never the token. */
export interface RemoteSpec {
  /** `http(s)://host:port/v2/models/MODEL[/versions/V]`. */
  url: string
  /** The environment variable holding the bearer token. */
  token_env?: string
  /** The input taking `[rows, features]`; absent when there is one input per feature. */
  input?: string
  /** With one input per feature: 1 for `[rows]`, 2 for `[rows, 1]`. */
  feature_rank?: number
  /** The input datatype sent: `FP32`, `FP64`, `INT64` or `INT32`. */
  datatype: string
  /** Whether requests use the binary tensor data extension. */
  binary: boolean
  /** Whether late requests are sent a second time (after the model's recent 95th percentile). */
  hedge?: boolean
  /** A second server of the same model, where hedged requests go. */
  hedge_url?: string
}

/** One model name with its versions, as listed. */
export interface ModelSummary {
  name: string
  /** Oldest first. */
  versions: number[]
  /** The version used when none is named. */
  default_version: number
  kind: ModelKind
  task: Task
}

/** One member of a saved ensemble. */
export interface MemberSpec {
  model: string
  /** `'default'` (follows the model's default version) or a fixed version. */
  version: 'default' | number
  /** A model (its default version) that answers when this member fails. */
  fallback?: string
}

/** Settings of the online strategies (Hedge, BOA, ML-Poly, EWA). */
export interface OnlineOptions {
  /** Learning rate; null: tuned automatically. */
  eta: number | null
  /** Fixed-share mixing towards uniform weights. */
  alpha: number
  /** Least weight a member keeps. */
  floor: number
  /** Decay of the recent loss reported per member. */
  loss_decay: number
  /** Linearised (gradient) losses instead of the raw ones. */
  gradient: boolean
}

/** Settings of stacking and blending. */
export interface MetaOptions {
  /** Rows the meta-model is fitted on (the most recent). */
  window: number
  /** Outcomes between refits. */
  refit_every: number
  /** Outcomes before the first fit. */
  min_rows: number
  /** L2 penalty of the stacking regression. */
  l2: number
}

/** Regime detection and a strategy per regime. */
export interface RegimeConfig {
  /** The request feature holding the period's return. */
  feature: string
  /** EWMA decay of squared returns. */
  lambda: number
  low_quantile: number
  high_quantile: number
  /** Observations before leaving `normal`. */
  warmup: number
  /** The strategy of each regime listed (others use the ensemble's). */
  strategies: Partial<Record<Regime, StrategyKind>>
}

/** What a NaN or infinite feature does: refused, or imputed. */
export type NonFinitePolicy = 'refuse' | { impute: { value: number; per_feature?: Record<string, number> } }

/** A saved ensemble version, as `createEnsemble` returns it. */
export interface EnsembleConfig {
  name: string
  /** Assigned when saved: 1, 2, ... */
  version: number
  members: MemberSpec[]
  strategy: StrategyKind
  /** Raw weights, one per member; null: equal. */
  weights: number[] | null
  non_finite: NonFinitePolicy
  /** Members that must answer; null: a majority. */
  min_members: number | null
  online: OnlineOptions
  meta: MetaOptions
  regime: RegimeConfig | null
  /** Answer with the last good prediction, marked stale, when quorum is lost. */
  serve_stale?: boolean
  /** How long the members may take for one request, in milliseconds. */
  latency_budget_ms?: number
  /** RFC 3339 UTC. */
  created_at: string
}

/** What `createEnsemble` takes: the saved form with every field but the name and members optional
 * (keys in snake_case or camelCase); members may be `"model"` / `"model@version"` strings. */
export interface EnsembleConfigInput {
  name: string
  members: Array<string | { model: string; version?: 'default' | number | string; fallback?: string }>
  strategy?: StrategyKind
  weights?: number[] | null
  non_finite?: NonFinitePolicy
  nonFinite?: NonFinitePolicy
  min_members?: number | null
  minMembers?: number | null
  online?: Partial<OnlineOptions>
  meta?: Partial<MetaOptions>
  regime?: { feature: string } & Partial<RegimeConfig> | null
  serve_stale?: boolean
  serveStale?: boolean
  latency_budget_ms?: number
  latencyBudgetMs?: number
}

/** How one model is served (`defaultModel` / `models` of the engine options). */
export interface ModelServing {
  /** `[min, max]` replicas; the autoscaler moves between them. */
  replicas?: [number, number]
  load?: 'eager' | 'lazy'
  /** A call running longer is cut off, in milliseconds. */
  timeoutMs?: number
  /** The p95 latency the autoscaler aims for, in milliseconds. */
  latencyTargetMs?: number
  /** Replicas share one copy of the weights. */
  shareWeights?: boolean
  batching?: { maxBatch?: number; maxDelayUs?: number; dispatchers?: number; maxQueued?: number }
  provider?: { kind: 'cpu' } | { kind: 'cuda'; device_id?: number } |
    { kind: 'tensor_rt'; device_id?: number; fp16?: boolean; int8?: boolean; engine_cache?: string | null }
  /** When the provider cannot be used: run on the CPU (default) or refuse to load. */
  providerFallback?: 'cpu' | 'fail'
  /** Large batches of a native MLP on a GPU (feature `gpu`). */
  nativeGpu?: { device?: number; precision: 'f32' | 'f16'; minRows: number }
}

/** Which executor runs a model, and why. */
export interface ExecutorInfo {
  /** `native`, `onnxruntime` or `remote`. */
  kind: string
  /** Why the model is not native. */
  reason?: string
  /** Where large batches of a native MLP run, or why not on a GPU. */
  gpu?: string
  /** For a remote model: the URL it is served at (never its token). */
  url?: string
}

/** One loaded model version's replica pool. */
export interface ReplicaStatus {
  model: string
  version: number
  /** Sessions in the pool now. */
  replicas: number
  idle: number
  in_flight: number
  /** Callers waiting for a replica. */
  waiting: number
  /** Rows queued for the dispatchers. */
  queued: number
  batches: number
  batched_rows: number
  min: number
  max: number
  /** p95 of recent call latencies, in milliseconds, when the pool scales and has seen calls. */
  p95_ms: number | null
  calls: number
  /** Estimated memory, in bytes. */
  estimated_bytes: number
  /** Since the last call, in milliseconds. */
  idle_for_ms: number
  /** `cpu`, `cuda` or `tensorrt`. */
  provider: string
  /** Why the configured provider is not in use. */
  provider_fallback?: string
  executor: ExecutorInfo
}

/** Whether an ensemble's members run as one fused ONNX model. */
export interface FusionStatus {
  fused: boolean
  /** Fused sessions built so far. */
  sessions: number
  /** Why it is not fused. */
  reason?: string
  /** Members that run on native plans. */
  native: string[]
  /** Members inside the fused model. */
  members: string[]
  /** Members left out of the fused model, and why. */
  left_out?: Record<string, string>
  /** The opset of each domain the fused model was lifted to. */
  opsets?: Record<string, number>
}

/** The inference log's counters. */
export interface InferenceLogStats {
  written: number
  dropped: number
  write_errors: number
  /** Rows queued for the writer. */
  waiting: number
  last_error: string | null
}

/** Where this process stands in a shared (PostgreSQL) state's outcome log. */
export interface SharedStatus {
  instance: number
  applied_position: number
  start_position: number
  caught_up: boolean
  applied: number
  skipped: number
  read_errors: number
}

/** Metrics over some outcomes; fields that do not apply to the task are null. */
export interface Metrics {
  count: number
  accuracy: number | null
  precision: number | null
  recall: number | null
  f1_score: number | null
  log_loss: number | null
  brier: number | null
  mae: number | null
  rmse: number | null
}

/** All-time and sliding-window metrics of one predictor. */
export interface TrackedMetrics {
  all_time: Metrics
  /** The last `window` outcomes. */
  window: Metrics
  /** Outcomes within the last `window_seconds`. */
  recent: Metrics
}

/** Metrics of the ensemble and of each member for one regime. */
export interface GroupMetrics {
  metrics: TrackedMetrics
  members: Array<[string, TrackedMetrics]>
}

/** Tracked metrics of one ensemble version and each of its members. */
export interface EnsembleMetrics {
  ensemble: string
  version: number
  metrics: TrackedMetrics
  /** `[member, metrics]` in member order. */
  members: Array<[string, TrackedMetrics]>
  /** `[regime, metrics]` for ensembles with regimes. */
  regimes: Array<[Regime, GroupMetrics]>
  /** Members from best to worst by their count-window loss. */
  ranking: string[]
}

/** A member whose loss drifted upwards (Page-Hinkley). */
export interface DriftEvent {
  ensemble: string
  version: number
  member: string
  observations: number
  statistic: number
  window_loss: number
}

/** Limits on an experiment's treatment that roll it back at once. */
export interface Guardrails {
  max_error_rate: number
  max_degraded_rate: number
  max_p95_latency_ms: number
  /** Consecutive breached intervals that roll back. */
  failure_limit: number
  /** Requests an interval needs before it is judged. */
  min_requests: number
  interval_ms: number
}

/** An experiment's primary metric. */
export type ExperimentMetric = 'log_loss' | 'brier' | 'accuracy' | 'squared_error' | 'absolute_error' | 'business'

/** An experiment's configuration, as saved. */
export interface ExperimentConfig {
  name: string
  ensemble: string
  control: number
  treatment: number
  /** The treatment's share at each step, in percent. */
  steps: number[]
  min_outcomes_per_step: number
  metric: ExperimentMetric | null
  guardrails: Guardrails
  alpha: number
  max_outcomes: number
  non_inferiority_margin: number | null
  mixing_sd: number
  seed: number | null
}

/** What `startExperiment` takes: the saved form with defaults for every optional field. */
export interface ExperimentConfigInput {
  name: string
  ensemble: string
  control: number
  treatment: number
  steps?: number[]
  min_outcomes_per_step?: number
  metric?: ExperimentMetric | null
  guardrails?: Partial<Guardrails>
  alpha?: number
  max_outcomes?: number
  non_inferiority_margin?: number | null
  mixing_sd?: number
  seed?: number | null
}

/** One arm in an experiment's status. */
export interface ArmStatus {
  version: number
  share_percent: number
  outcomes: number
  mean: number | null
  sd: number | null
  /** Live counts since this process took the experiment up. */
  requests?: number
  errors?: number
  degraded?: number
}

/** One decision of an experiment. */
export interface Decision {
  /** RFC 3339 UTC. */
  at: string
  action: 'started' | 'advanced' | 'rolled_back' | 'promoted' | 'no_difference' | 'paused' | 'resumed' | 'stopped'
  reason: string
  split_percent: number
  control_outcomes: number
  treatment_outcomes: number
  estimate?: number
  p_value?: number
}

/** An experiment's status. */
export interface ExperimentStatus {
  name: string
  ensemble: string
  state: 'running' | 'paused' | 'rolled_back' | 'promoted' | 'no_difference' | 'stopped'
  /** 1-based index of the current step. */
  step: number
  steps: number[]
  split_percent: number
  metric: ExperimentMetric
  higher_is_better: boolean
  alpha: number
  arms: { control: ArmStatus; treatment: ArmStatus }
  /** Treatment − control on the metric. */
  estimate: number | null
  /** The always-valid confidence sequence, `[lower, upper]`. */
  confidence_sequence: [number, number] | null
  p_value: number
  guardrail_breaches: number
  decisions: Decision[]
  config: ExperimentConfig
}

/** Latency at one batch size. */
export interface BatchLatency {
  batch: number
  p50_ms: number
  p95_ms: number
  p99_ms: number
  /** Rows per second (one thread). */
  throughput: number
}

/** What a benchmark measured. */
export interface ModelBenchmark {
  size_bytes: number
  session_memory_bytes?: number
  latency: BatchLatency[]
  accuracy?: number
  agreement?: number
  max_abs_diff?: number
  mean_abs_diff?: number
}

/** What happened to one node in a rewrite. */
export interface NodeReport {
  node: string
  op_type: string
  rewritten: boolean
  reason?: string
}

/** A rewrite the optimizer can try. */
export type OptimizeMethod = 'fp32-optimized' | 'int8-dynamic' | 'int8-dynamic-per-channel' | 'int8-static-minmax' |
  'int8-static-percentile' | 'int8-static-entropy' | 'fp16' | 'native' | 'native-gpu' | 'native-gpu-fp16'

/** One candidate as the optimizer's decision saw it. */
export interface Candidate {
  method: OptimizeMethod
  accepted: boolean
  reason?: string
  accuracy?: number
  agreement?: number
  /** p50 latency per batch size, in milliseconds. */
  latency_ms: Record<string, number>
  /** The candidate's p50 over the original's, per batch size of the workload. */
  latency_ratio?: Record<string, number>
  size_bytes: number
  benchmark?: ModelBenchmark
  nodes?: NodeReport[]
}

/** What the optimizer decided, and why. */
export interface OptimizeReport {
  model: string
  version: number
  original: ModelBenchmark
  candidates: Candidate[]
  /** null when the original is kept. */
  chosen: { method: OptimizeMethod; version: number; registered: boolean; note?: string } | null
  performance_improvement: {
    latency_reduction: number
    speedup: Record<string, number>
    size_reduction: number
    accuracy_change?: number
  }
  deployment_ready: boolean
}

/** What `quantize` wrote. */
export interface QuantizeReport {
  out: string
  bytes: number
  nodes: NodeReport[]
}
