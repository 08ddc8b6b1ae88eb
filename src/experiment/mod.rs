//! A/B experiments between two versions of an ensemble, as pure state: the configuration, the
//! per-outcome metric, sticky assignment, and the state machine that advances, rolls back or
//! promotes on the always-valid test ([`msprt`]) and the guardrails. The engine
//! (`engine/experiment.rs`) routes predictions, credits outcomes and applies the decisions.
//!
//! Rules, in the order they are checked after every outcome:
//! 1. **Roll back** as soon as the confidence sequence of treatment − control lies wholly on the
//!    worse side (the test rejected "no difference" and the treatment is worse), or when a guardrail
//!    (checked every `guardrails.interval_ms` on the treatment's live requests) has breached
//!    `failure_limit` times in a row.
//! 2. At the last step, once it has `min_outcomes_per_step` treatment outcomes, **promote** when the
//!    treatment was found significantly better, or (with a `non_inferiority_margin`) when the
//!    confidence sequence shows it is not worse by more than the margin.
//! 3. At `max_outcomes` outcomes (both arms) conclude **no difference** and keep the control.
//! 4. Otherwise **advance** to the next step once this step has `min_outcomes_per_step` treatment
//!    outcomes and the guardrails are clear.

pub mod msprt;
pub mod simulate;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::registry::Task;
use msprt::{Look, Moments, Msprt};

/// The per-outcome value an experiment compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// −[y ln p + (1−y) ln(1−p)], p clamped to [1e-6, 1 − 1e-6] (classification; lower is better).
    LogLoss,
    /// (p − y)² (classification; lower is better).
    Brier,
    /// 1 when p ≥ 0.5 matches y, else 0 (classification; higher is better).
    Accuracy,
    /// (p − y)² (regression; lower is better).
    SquaredError,
    /// |p − y| (regression; lower is better).
    AbsoluteError,
    /// The business value recorded with each outcome (e.g. the trade's P&L; higher is better).
    /// Outcomes recorded without one are not counted.
    Business,
}

impl Metric {
    /// Every metric, in the order `parse` lists them.
    pub const ALL: [Metric; 6] = [
        Metric::LogLoss,
        Metric::Brier,
        Metric::Accuracy,
        Metric::SquaredError,
        Metric::AbsoluteError,
        Metric::Business,
    ];

    /// The metric's name in configurations and JSON (`log_loss`, `brier`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::LogLoss => "log_loss",
            Metric::Brier => "brier",
            Metric::Accuracy => "accuracy",
            Metric::SquaredError => "squared_error",
            Metric::AbsoluteError => "absolute_error",
            Metric::Business => "business",
        }
    }

    /// The metric named `name`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (code `config`) for an unknown name, listing the known ones.
    pub fn parse(name: &str) -> Result<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == name).ok_or_else(|| {
            let names: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
            Error::Config(format!("unknown experiment metric {name:?} (one of: {})", names.join(", ")))
        })
    }

    /// Whether a larger value is better (accuracy, business value) or worse (the losses).
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Accuracy | Metric::Business)
    }

    /// The default for a task: log-loss for classification, squared error for regression.
    pub fn default_for(task: Task) -> Metric {
        match task {
            Task::Classification => Metric::LogLoss,
            Task::Regression => Metric::SquaredError,
        }
    }

    fn check_task(self, task: Task) -> Result<()> {
        let fits = match self {
            Metric::LogLoss | Metric::Brier | Metric::Accuracy => task == Task::Classification,
            Metric::SquaredError | Metric::AbsoluteError => task == Task::Regression,
            Metric::Business => true,
        };
        if fits {
            Ok(())
        } else {
            Err(Error::Config(format!("the experiment metric {} does not apply to a {task:?} ensemble", self.as_str())))
        }
    }

    /// The metric of one outcome (`None`: not counted, a business metric without a value).
    pub fn value(self, prediction: f32, outcome: f32, business_value: Option<f64>) -> Option<f64> {
        let (p, y) = (f64::from(prediction), f64::from(outcome));
        let value = match self {
            Metric::LogLoss => {
                let p = p.clamp(1e-6, 1.0 - 1e-6);
                -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
            }
            Metric::Brier | Metric::SquaredError => (p - y) * (p - y),
            Metric::Accuracy => f64::from(u8::from((p >= 0.5) == (y >= 0.5))),
            Metric::AbsoluteError => (p - y).abs(),
            Metric::Business => business_value?,
        };
        value.is_finite().then_some(value)
    }
}

/// Checks on the treatment's live requests, each interval (defaults in the spirit of the story's
/// alerts). A breach needs at least `min_requests` treatment requests in the interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Guardrails {
    /// Failed predictions / requests (default 0.05).
    pub max_error_rate: f64,
    /// Degraded answers (a member failed, a fallback or a stale answer) / requests (default 0.05).
    pub max_degraded_rate: f64,
    /// 95th percentile of the treatment's prediction latency (default 100 ms).
    pub max_p95_latency_ms: f64,
    /// Consecutive breached intervals before the treatment is rolled back (default 3).
    pub failure_limit: u32,
    /// Requests an interval needs before it is judged (default 20).
    pub min_requests: u64,
    /// How often the guardrails are checked (default 1000 ms).
    pub interval_ms: u64,
}

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails {
            max_error_rate: 0.05,
            max_degraded_rate: 0.05,
            max_p95_latency_ms: 100.0,
            failure_limit: 3,
            min_requests: 20,
            interval_ms: 1000,
        }
    }
}

/// What [`crate::InferenceEngine::start_experiment`] takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The experiment's name (unique among running experiments).
    pub name: String,
    /// The ensemble whose versions it compares.
    pub ensemble: String,
    /// The ensemble version serving now, which stays the default unless the treatment is promoted.
    pub control: u32,
    /// The candidate version (new member versions, weights, strategy or members over the control's
    /// features).
    pub treatment: u32,
    /// The treatment's share of traffic at each step, in percent, increasing (default 5, 25, 50, 100).
    #[serde(default = "default_steps")]
    pub steps: Vec<f64>,
    /// Treatment outcomes a step needs before the next step (and, at the last, a promotion).
    #[serde(default = "default_min_outcomes")]
    pub min_outcomes_per_step: u64,
    /// The primary metric (default: log-loss for classification, squared error for regression).
    #[serde(default)]
    pub metric: Option<Metric>,
    /// Limits on the treatment's live errors, degraded answers and latency that roll it back at once.
    #[serde(default)]
    pub guardrails: Guardrails,
    /// The test's error rate, valid however often it is looked at (default 0.05).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Outcomes (both arms) after which the experiment concludes "no difference" (default 100 000).
    #[serde(default = "default_max_outcomes")]
    pub max_outcomes: u64,
    /// Promote at the last step when the treatment is not worse than the control by more than this
    /// (in the metric's units, with the confidence sequence), even without being significantly better.
    #[serde(default)]
    pub non_inferiority_margin: Option<f64>,
    /// τ of the test's normal mixture in pooled standard deviations (default 0.1; see [`msprt`]).
    #[serde(default = "default_mixing_sd")]
    pub mixing_sd: f64,
    /// The assignment seed (default: a hash of name, ensemble and both versions, so every process
    /// that starts the same experiment assigns keys alike).
    #[serde(default)]
    pub seed: Option<u64>,
}

fn default_steps() -> Vec<f64> {
    vec![5.0, 25.0, 50.0, 100.0]
}
fn default_min_outcomes() -> u64 {
    200
}
fn default_alpha() -> f64 {
    0.05
}
fn default_max_outcomes() -> u64 {
    100_000
}
fn default_mixing_sd() -> f64 {
    0.1
}

impl ExperimentConfig {
    /// An experiment with every default but its name, ensemble and versions.
    pub fn new(name: impl Into<String>, ensemble: impl Into<String>, control: u32, treatment: u32) -> Self {
        ExperimentConfig {
            name: name.into(),
            ensemble: ensemble.into(),
            control,
            treatment,
            steps: default_steps(),
            min_outcomes_per_step: default_min_outcomes(),
            metric: None,
            guardrails: Guardrails::default(),
            alpha: default_alpha(),
            max_outcomes: default_max_outcomes(),
            non_inferiority_margin: None,
            mixing_sd: default_mixing_sd(),
            seed: None,
        }
    }

    /// Parses a JSON configuration (unknown fields refused).
    ///
    /// # Errors
    ///
    /// `json` when it does not parse or has unknown fields.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::json("experiment configuration", e))
    }

    /// Checks the configuration on its own (steps increasing within (0, 100], alpha in (0, 1), ...).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (code `config`) naming the first invalid field.
    pub fn validate(&self) -> Result<()> {
        crate::store::validate_name("experiment name", &self.name)?;
        crate::store::validate_name("ensemble name", &self.ensemble)?;
        let bad = |what: String| Err(Error::Config(format!("experiment {:?}: {what}", self.name)));
        if self.control == self.treatment {
            return bad(format!("control and treatment are both version {}", self.control));
        }
        if self.steps.is_empty() || self.steps.len() > 20 {
            return bad("steps: give 1 to 20 traffic percentages".into());
        }
        let mut previous = 0.0;
        for &s in &self.steps {
            if !(s > previous && s <= 100.0) {
                return bad(format!("steps must increase within (0, 100] percent; got {:?}", self.steps));
            }
            previous = s;
        }
        if self.min_outcomes_per_step == 0 {
            return bad("min_outcomes_per_step must be at least 1".into());
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return bad(format!("alpha must be in (0, 0.5), got {}", self.alpha));
        }
        if self.max_outcomes < 2 * msprt::MIN_ARM_OUTCOMES {
            return bad(format!("max_outcomes must be at least {}", 2 * msprt::MIN_ARM_OUTCOMES));
        }
        if !(self.mixing_sd > 0.0 && self.mixing_sd.is_finite()) {
            return bad(format!("mixing_sd must be positive, got {}", self.mixing_sd));
        }
        if let Some(m) = self.non_inferiority_margin {
            if !(m >= 0.0 && m.is_finite()) {
                return bad(format!("non_inferiority_margin must be a non-negative number, got {m}"));
            }
        }
        let g = &self.guardrails;
        let rate = |r: f64| (0.0..=1.0).contains(&r);
        if !rate(g.max_error_rate) || !rate(g.max_degraded_rate) {
            return bad("guardrail rates must be within [0, 1]".into());
        }
        let latency_ok = g.max_p95_latency_ms > 0.0 && g.max_p95_latency_ms.is_finite();
        if !latency_ok || g.failure_limit == 0 || !(10..=3_600_000).contains(&g.interval_ms) {
            return bad("guardrails: max_p95_latency_ms > 0, failure_limit ≥ 1, interval_ms in 10..=3600000".into());
        }
        Ok(())
    }

    /// The seed assignment hashes keys with.
    pub fn assignment_seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            let identity = format!("{}\u{0}{}\u{0}{}\u{0}{}", self.name, self.ensemble, self.control, self.treatment);
            fnv1a(0, identity.as_bytes())
        })
    }
}

/// An arm of an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// The version serving before the experiment.
    Control,
    /// The candidate version.
    Treatment,
}

impl Arm {
    /// `control` or `treatment`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Control => "control",
            Arm::Treatment => "treatment",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Assignment buckets: a key's bucket is in `0..BUCKETS`; the treatment takes the buckets below its
/// share (so a key in the treatment stays there as the share grows).
pub const BUCKETS: u32 = 10_000;

/// The bucket of `key` under `seed`: FNV-1a 64 of the key's bytes started from the seed, then the
/// splitmix64 finaliser, modulo [`BUCKETS`]. Stable across processes, platforms and releases.
pub fn bucket(seed: u64, key: &[u8]) -> u32 {
    let mut z = fnv1a(seed, key);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % u64::from(BUCKETS)) as u32
}

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Where an experiment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentState {
    /// Routing a share of traffic to the treatment and counting outcomes.
    Running,
    /// Stopped by hand for now: all traffic on the control, outcomes not counted.
    Paused,
    /// Ended: the treatment was worse (or breached a guardrail); the control serves everything.
    RolledBack,
    /// Ended: the treatment was better (or not worse, under a non-inferiority margin) and is now the default.
    Promoted,
    /// Ended: `max_outcomes` were counted without a conclusion; the control stays.
    NoDifference,
    /// Ended by hand; the control stays.
    Stopped,
}

impl ExperimentState {
    /// The state's name in JSON (`running`, `rolled_back`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentState::Running => "running",
            ExperimentState::Paused => "paused",
            ExperimentState::RolledBack => "rolled_back",
            ExperimentState::Promoted => "promoted",
            ExperimentState::NoDifference => "no_difference",
            ExperimentState::Stopped => "stopped",
        }
    }

    /// Still routing (running) or able to resume (paused).
    pub fn is_active(self) -> bool {
        matches!(self, ExperimentState::Running | ExperimentState::Paused)
    }
}

/// What a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The experiment started at its first step.
    Started,
    /// The treatment's share moved to the next step.
    Advanced,
    /// The treatment was rolled back.
    RolledBack,
    /// The treatment was promoted to the ensemble's default version.
    Promoted,
    /// Concluded without a difference.
    NoDifference,
    /// Paused by hand.
    Paused,
    /// Resumed by hand.
    Resumed,
    /// Stopped by hand.
    Stopped,
}

impl Action {
    /// The action's name in JSON (`started`, `advanced`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Started => "started",
            Action::Advanced => "advanced",
            Action::RolledBack => "rolled_back",
            Action::Promoted => "promoted",
            Action::NoDifference => "no_difference",
            Action::Paused => "paused",
            Action::Resumed => "resumed",
            Action::Stopped => "stopped",
        }
    }
}

/// One decision, with its reason and the figures it was taken on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// RFC 3339 UTC.
    pub at: String,
    /// What the decision did.
    pub action: Action,
    /// Why, in words (the figures that crossed a bound).
    pub reason: String,
    /// The treatment's share after the decision, in percent.
    pub split_percent: f64,
    /// Control outcomes counted when it was taken.
    pub control_outcomes: u64,
    /// Treatment outcomes counted when it was taken.
    pub treatment_outcomes: u64,
    /// Treatment − control on the metric, when both arms had outcomes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub estimate: Option<f64>,
    /// The always-valid p-value at that moment.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub p_value: Option<f64>,
}

/// The treatment's live requests over one guardrail interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ArmWindow {
    /// Requests the treatment served.
    pub requests: u64,
    /// Of those, how many failed.
    pub errors: u64,
    /// Of those, how many were degraded (a member missing or replaced).
    pub degraded: u64,
    /// The interval's 95th percentile latency, when it had requests.
    pub p95_ms: Option<f64>,
}

/// An experiment's whole state: what is persisted, and what every decision reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// The configuration it was started with.
    pub config: ExperimentConfig,
    /// The primary metric (the configured one or the task's default).
    pub metric: Metric,
    /// The ensemble's task.
    pub task: Task,
    /// The seed of request routing (the key → bucket hash).
    pub seed: u64,
    /// Where it is.
    pub state: ExperimentState,
    /// Index into `config.steps`.
    pub step: usize,
    /// Treatment outcomes since the current step began.
    pub step_outcomes: u64,
    /// Control, treatment.
    pub arms: [Moments; 2],
    /// The always-valid p-value: the running minimum of 1/Λ.
    pub p_value: f64,
    /// The confidence sequence has lain wholly on the treatment's worse / better side.
    pub found_worse: bool,
    /// See `found_worse`.
    pub found_better: bool,
    /// Consecutive guardrail intervals breached.
    pub breaches: u32,
    /// Every decision taken, oldest first.
    pub decisions: Vec<Decision>,
}

impl Experiment {
    /// A new experiment on an ensemble of `task`, at its first step.
    ///
    /// # Errors
    ///
    /// `config` for an invalid configuration or a metric that does not suit the task.
    pub fn new(config: ExperimentConfig, task: Task) -> Result<Experiment> {
        config.validate()?;
        let metric = config.metric.unwrap_or(Metric::default_for(task));
        metric.check_task(task)?;
        let seed = config.assignment_seed();
        let mut e = Experiment {
            config,
            metric,
            task,
            seed,
            state: ExperimentState::Running,
            step: 0,
            step_outcomes: 0,
            arms: [Moments::default(); 2],
            p_value: 1.0,
            found_worse: false,
            found_better: false,
            breaches: 0,
            decisions: Vec::new(),
        };
        let reason = format!(
            "version {} against version {} on {}, steps {:?} %, alpha {}",
            e.config.treatment,
            e.config.control,
            metric.as_str(),
            e.config.steps,
            e.config.alpha
        );
        e.decide(Action::Started, reason);
        Ok(e)
    }

    /// The treatment's traffic share now, in percent (0 unless running).
    pub fn split_percent(&self) -> f64 {
        if self.state == ExperimentState::Running {
            self.config.steps[self.step]
        } else {
            0.0
        }
    }

    /// The share in assignment buckets.
    pub fn split_buckets(&self) -> u32 {
        (self.split_percent() / 100.0 * f64::from(BUCKETS)).round() as u32
    }

    fn test(&self) -> Msprt {
        Msprt { alpha: self.config.alpha, mixing_sd: self.config.mixing_sd }
    }

    /// The test at the outcomes so far.
    pub fn look(&self) -> Option<Look> {
        self.test().look(&self.arms[0], &self.arms[1])
    }

    fn is_last_step(&self) -> bool {
        self.step + 1 == self.config.steps.len()
    }

    /// Counts one outcome's metric for `arm` and takes the decision it leads to, if any.
    pub fn record(&mut self, arm: Arm, value: f64) -> Option<Action> {
        if self.state != ExperimentState::Running || !value.is_finite() {
            return None;
        }
        self.arms[arm.index()].add(value);
        if arm == Arm::Treatment {
            self.step_outcomes += 1;
        }
        let look = self.look();
        if let Some(look) = &look {
            self.p_value = self.p_value.min(look.p_value());
            let worse_side = if self.metric.higher_is_better() { look.upper < 0.0 } else { look.lower > 0.0 };
            let better_side = if self.metric.higher_is_better() { look.lower > 0.0 } else { look.upper < 0.0 };
            self.found_worse |= worse_side;
            self.found_better |= better_side;
        }
        let figures = |look: &Option<Look>| {
            look.map_or_else(String::new, |l| {
                format!(
                    ": treatment − control {:+.5} ({:.0}% confidence sequence {:+.5} .. {:+.5}), p = {:.4}",
                    l.estimate,
                    100.0 * (1.0 - self.config.alpha),
                    l.lower,
                    l.upper,
                    self.p_value
                )
            })
        };
        let metric = self.metric.as_str();
        if self.found_worse {
            let reason = format!("the treatment is significantly worse on {metric}{}", figures(&look));
            return Some(self.end(ExperimentState::RolledBack, Action::RolledBack, reason));
        }
        let step_done = self.step_outcomes >= self.config.min_outcomes_per_step;
        if self.is_last_step() && step_done {
            if self.found_better {
                let reason = format!("the treatment is significantly better on {metric}{}", figures(&look));
                return Some(self.end(ExperimentState::Promoted, Action::Promoted, reason));
            }
            if let (Some(margin), Some(l)) = (self.config.non_inferiority_margin, &look) {
                let worst = if self.metric.higher_is_better() { -l.lower } else { l.upper };
                if worst <= margin {
                    let reason = format!(
                        "the treatment is not worse on {metric} by more than the margin {margin}{}",
                        figures(&look)
                    );
                    return Some(self.end(ExperimentState::Promoted, Action::Promoted, reason));
                }
            }
        }
        let total = self.arms[0].count + self.arms[1].count;
        if total >= self.config.max_outcomes {
            let reason = format!("{total} outcomes without a significant difference on {metric}{}", figures(&look));
            return Some(self.end(ExperimentState::NoDifference, Action::NoDifference, reason));
        }
        if !self.is_last_step() && step_done && self.breaches == 0 {
            self.step += 1;
            self.step_outcomes = 0;
            let reason = format!(
                "step {} had {} treatment outcomes and clear guardrails{}",
                self.step,
                self.config.min_outcomes_per_step,
                figures(&look)
            );
            self.decide(Action::Advanced, reason);
            return Some(Action::Advanced);
        }
        None
    }

    /// Judges one guardrail interval of the treatment's requests; rolls back at `failure_limit`
    /// consecutive breaches.
    pub fn check_guardrails(&mut self, window: &ArmWindow) -> Option<Action> {
        let g = self.config.guardrails;
        if self.state != ExperimentState::Running || window.requests < g.min_requests.max(1) {
            return None;
        }
        let n = window.requests as f64;
        let (errors, degraded) = (window.errors as f64 / n, window.degraded as f64 / n);
        let mut breached = Vec::new();
        if errors > g.max_error_rate {
            breached.push(format!("error rate {:.1}% > {:.1}%", 100.0 * errors, 100.0 * g.max_error_rate));
        }
        if degraded > g.max_degraded_rate {
            breached.push(format!("degraded rate {:.1}% > {:.1}%", 100.0 * degraded, 100.0 * g.max_degraded_rate));
        }
        if let Some(p95) = window.p95_ms.filter(|p| *p > g.max_p95_latency_ms) {
            breached.push(format!("p95 latency {p95:.1} ms > {} ms", g.max_p95_latency_ms));
        }
        if breached.is_empty() {
            self.breaches = 0;
            return None;
        }
        self.breaches += 1;
        if self.breaches < g.failure_limit {
            return None;
        }
        let reason = format!(
            "guardrail breached {} intervals in a row on {} treatment requests: {}",
            self.breaches,
            window.requests,
            breached.join(", ")
        );
        Some(self.end(ExperimentState::RolledBack, Action::RolledBack, reason))
    }

    /// Pauses (all traffic to the control), resumes or stops by hand.
    ///
    /// # Errors
    ///
    /// `config` when the action does not apply to the experiment's state (pausing one that is not running, ...).
    pub fn act(&mut self, action: Action, reason: &str) -> Result<()> {
        let refuse = |state: ExperimentState| {
            Err(Error::Config(format!(
                "experiment {:?} is {}: it cannot be {}",
                self.config.name,
                state.as_str(),
                match action {
                    Action::Paused => "paused",
                    Action::Resumed => "resumed",
                    _ => "stopped",
                }
            )))
        };
        let reason = if reason.is_empty() { "by hand".to_string() } else { reason.to_string() };
        match (action, self.state) {
            (Action::Paused, ExperimentState::Running) => {
                self.state = ExperimentState::Paused;
                self.decide(Action::Paused, reason);
            }
            (Action::Resumed, ExperimentState::Paused) => {
                self.state = ExperimentState::Running;
                self.decide(Action::Resumed, reason);
            }
            (Action::Stopped, state) if state.is_active() => {
                self.end(ExperimentState::Stopped, Action::Stopped, reason);
            }
            (_, state) => return refuse(state),
        }
        Ok(())
    }

    fn end(&mut self, state: ExperimentState, action: Action, reason: String) -> Action {
        self.state = state;
        self.decide(action, reason);
        action
    }

    fn decide(&mut self, action: Action, reason: String) {
        let look = self.look();
        self.decisions.push(Decision {
            at: crate::store::now_rfc3339(),
            action,
            reason,
            split_percent: self.split_percent(),
            control_outcomes: self.arms[0].count,
            treatment_outcomes: self.arms[1].count,
            estimate: look.map(|l| l.estimate),
            p_value: look.map(|_| self.p_value),
        });
    }

    /// What `experiment status` shows: the arms, the test, the step and the decisions.
    pub fn status(&self) -> ExperimentStatus {
        let look = self.look();
        let arm = |arm: Arm| {
            let m = &self.arms[arm.index()];
            ArmStatus {
                version: if arm == Arm::Control { self.config.control } else { self.config.treatment },
                share_percent: if arm == Arm::Control { 100.0 - self.split_percent() } else { self.split_percent() },
                outcomes: m.count,
                mean: (m.count > 0).then_some(m.mean),
                sd: (m.count > 1).then(|| m.variance().sqrt()),
                requests: None,
                errors: None,
                degraded: None,
            }
        };
        ExperimentStatus {
            name: self.config.name.clone(),
            ensemble: self.config.ensemble.clone(),
            state: self.state,
            step: self.step + 1,
            steps: self.config.steps.clone(),
            split_percent: self.split_percent(),
            metric: self.metric,
            higher_is_better: self.metric.higher_is_better(),
            alpha: self.config.alpha,
            arms: ArmsStatus { control: arm(Arm::Control), treatment: arm(Arm::Treatment) },
            estimate: look.map(|l| l.estimate),
            confidence_sequence: look.map(|l| [l.lower, l.upper]),
            p_value: self.p_value,
            guardrail_breaches: self.breaches,
            decisions: self.decisions.clone(),
            config: self.config.clone(),
        }
    }
}

/// One arm in an [`ExperimentStatus`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmStatus {
    /// The ensemble version this arm serves.
    pub version: u32,
    /// Its share of traffic now, in percent.
    pub share_percent: f64,
    /// Outcomes counted for the primary metric.
    pub outcomes: u64,
    /// The metric's mean and standard deviation over those outcomes.
    pub mean: Option<f64>,
    /// See `mean`.
    pub sd: Option<f64>,
    /// Live request counts since this process took the experiment up (absent when read from the store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Of those requests, how many failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    /// Of those requests, how many were degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<u64>,
}

/// Both arms of an [`ExperimentStatus`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmsStatus {
    /// The control's figures.
    pub control: ArmStatus,
    /// The treatment's figures.
    pub treatment: ArmStatus,
}

/// An experiment as `experiment status --json`, the server and the bindings show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExperimentStatus {
    /// The experiment's name.
    pub name: String,
    /// The ensemble it runs on.
    pub ensemble: String,
    /// Where it is.
    pub state: ExperimentState,
    /// 1-based index of the current step.
    pub step: usize,
    /// The treatment's share at each step, in percent.
    pub steps: Vec<f64>,
    /// The treatment's traffic share now, in percent.
    pub split_percent: f64,
    /// The primary metric.
    pub metric: Metric,
    /// Whether a larger metric is better.
    pub higher_is_better: bool,
    /// The test's error rate.
    pub alpha: f64,
    /// Each arm's figures.
    pub arms: ArmsStatus,
    /// Treatment − control on the metric, and its always-valid confidence sequence.
    pub estimate: Option<f64>,
    /// The always-valid (1 − alpha) confidence sequence of the estimate, `[lower, upper]`.
    pub confidence_sequence: Option<[f64; 2]>,
    /// The always-valid p-value.
    pub p_value: f64,
    /// Consecutive guardrail intervals breached.
    pub guardrail_breaches: u32,
    /// Every decision taken, oldest first.
    pub decisions: Vec<Decision>,
    /// The configuration it was started with.
    pub config: ExperimentConfig,
}

#[cfg(test)]
#[path = "../../tests/unit/experiment.rs"]
mod tests;
