//! Alert rules acting in-process: the story's YAML form (`condition`, `action`, `severity`, plus `for`
//! and `cooldown`), parsed with clear errors, and the state machine that evaluates them on the
//! engine's [`Snapshot`]s — per subject (an ensemble, a model, a member), inactive → pending (held
//! for `for`) → firing → resolved, with `cooldown` between two firings of the same alert and subject.
//! What an action does is up to the driver (`quorum serve` scales pools, forces fallbacks and sends
//! webhooks); this module only decides and remembers.

mod condition;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};

pub use condition::{parse_duration, Comparison, Condition, Signal, DEFAULT_WINDOW};

use crate::error::{Error, Result};
use crate::telemetry::{Snapshot, LATENCY_BOUNDS_NS};

/// The story's four rules, the default rule file of `quorum serve`.
pub const DEFAULT_RULES: &str = include_str!("default_rules.yml");

/// Events kept for the API, CLI and status page; older ones are dropped.
const EVENTS_KEPT: usize = 256;

pub(crate) fn serialize_secs<S: Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// One rule as written in a rule file (YAML or JSON): `name: {condition, action, severity, for,
/// cooldown, min_samples}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The condition, e.g. `p95_latency > 50ms over 1m` or `model_accuracy < 0.55`.
    pub condition: String,
    /// What to do when it fires: `scale_up_inference_workers`, `notify_ml_team`, `scale_horizontal`,
    /// `activate_fallback_model` or `log`.
    pub action: String,
    /// `info`, `warning` (default) or `critical`.
    #[serde(default)]
    pub severity: Option<String>,
    /// How long the condition must hold before the alert fires (default 0: at once).
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    /// The least time between two firings of the alert for one subject (default 5m).
    #[serde(default)]
    pub cooldown: Option<String>,
    /// Requests, calls or outcomes the window must hold before the condition is judged (defaults:
    /// 20 for latencies and error rates, 50 outcomes for accuracies, 1 otherwise).
    #[serde(default)]
    pub min_samples: Option<u64>,
}

/// What an alert does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertAction {
    /// Adds a replica to each member model's pool (within its max).
    ScaleUpInferenceWorkers,
    /// Sends the alert to the configured webhooks (Alertmanager's format) and logs it.
    NotifyMlTeam,
    /// Reports that more servers are needed, as a metric and an event, for a cluster autoscaler.
    ScaleHorizontal,
    /// Sends a failing model's calls to its configured fallback until the alert resolves.
    ActivateFallbackModel,
    /// Only the event and the log line.
    Log,
}

impl AlertAction {
    const ALL: [(&'static str, AlertAction); 5] = [
        ("scale_up_inference_workers", AlertAction::ScaleUpInferenceWorkers),
        ("notify_ml_team", AlertAction::NotifyMlTeam),
        ("scale_horizontal", AlertAction::ScaleHorizontal),
        ("activate_fallback_model", AlertAction::ActivateFallbackModel),
        ("log", AlertAction::Log),
    ];

    /// The action's name in rule files (`notify_ml_team`, ...).
    pub fn as_str(self) -> &'static str {
        AlertAction::ALL.iter().find(|(_, a)| *a == self).map_or("", |(n, _)| n)
    }
}

/// How urgent an alert is (its label in Prometheus and the events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Needs attention soon (the default).
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRule {
    /// The rule's name (the alert's name in events and metrics).
    pub name: String,
    /// The parsed condition.
    pub condition: Condition,
    /// What firing does.
    pub action: AlertAction,
    /// How urgent it is.
    pub severity: Severity,
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for_seconds", serialize_with = "serialize_secs")]
    pub for_: Duration,
    /// The least time between two firings of the rule for one subject.
    #[serde(rename = "cooldown_seconds", serialize_with = "serialize_secs")]
    pub cooldown: Duration,
    /// Requests (or tracked outcomes) the window needs before the condition is evaluated at all.
    pub min_samples: u64,
}

impl AlertRule {
    /// Checks and parses one rule as written.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (code `config`) naming the rule and what is wrong (unknown signal, action or severity, a bad
    /// threshold or duration).
    pub fn from_spec(name: &str, spec: &RuleSpec) -> Result<AlertRule> {
        crate::validate_name("alert", name)?;
        let bad = |what: String| Error::Config(format!("alert {name:?}: {what}"));
        let condition: Condition = spec.condition.parse().map_err(|e: Error| bad(e.to_string()))?;
        let action = AlertAction::ALL.iter().find(|(n, _)| *n == spec.action).map(|(_, a)| *a).ok_or_else(|| {
            let known: Vec<&str> = AlertAction::ALL.iter().map(|(n, _)| *n).collect();
            bad(format!("unknown action {:?} (known: {})", spec.action, known.join(", ")))
        })?;
        if action == AlertAction::ActivateFallbackModel && condition.signal != Signal::ModelErrorRate {
            return Err(bad(
                "activate_fallback_model acts on a model: its condition must be on model_error_rate".into()
            ));
        }
        let severity = match spec.severity.as_deref().unwrap_or("warning") {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            other => return Err(bad(format!("unknown severity {other:?} (info, warning or critical)"))),
        };
        let duration = |text: &Option<String>, default: Duration| match text {
            Some(t) => parse_duration(t).map_err(bad),
            None => Ok(default),
        };
        let min_samples = spec.min_samples.unwrap_or(match condition.signal {
            Signal::ModelAccuracy | Signal::EnsembleAccuracy => 50,
            s if s.windowed() && s != Signal::CpuUsage => 20,
            _ => 1,
        });
        Ok(AlertRule {
            name: name.to_string(),
            condition,
            action,
            severity,
            for_: duration(&spec.for_, Duration::ZERO)?,
            cooldown: duration(&spec.cooldown, Duration::from_secs(300))?,
            min_samples,
        })
    }
}

/// Rules from a rule file already read into specs (any serde format), in name order.
///
/// # Errors
///
/// `config` naming the first invalid rule (unknown signal, action or severity; bad threshold or duration).
pub fn rules_from_specs(specs: &BTreeMap<String, RuleSpec>) -> Result<Vec<AlertRule>> {
    specs.iter().map(|(name, spec)| AlertRule::from_spec(name, spec)).collect()
}

/// What an alert is about: `ensemble`, `model`, or both for a member, or `gpu`; empty for the process.
pub type Subject = BTreeMap<&'static str, String>;

/// An alert that fired or resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// Increasing within a process.
    pub id: u64,
    /// The rule's name.
    pub alert: String,
    /// Fired or resolved.
    pub state: EventState,
    /// The rule's severity.
    pub severity: Severity,
    /// The rule's action.
    pub action: AlertAction,
    /// The labels it concerns (`ensemble`, `model`, ...).
    pub subject: Subject,
    /// The condition as written.
    pub condition: String,
    /// The measured value (base units) when the event happened; `None` when the subject went silent.
    pub value: Option<f64>,
    /// The threshold, in base units.
    pub threshold: f64,
    /// RFC 3339 UTC, and seconds since the Unix epoch.
    pub at: String,
    /// See `at`.
    pub at_unix: f64,
    /// When the alert started firing (RFC 3339 and Unix seconds; for a resolution: when it fired).
    pub fired_at: String,
    /// See `fired_at`.
    pub fired_at_unix: f64,
    /// What the action did, filled in by the driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_result: Option<String>,
}

/// Whether an [`AlertEvent`] is a firing or a resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// The condition held for the rule's `for` duration.
    Firing,
    /// The condition no longer holds.
    Resolved,
}

/// A pending or firing alert now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveAlert {
    /// The rule's name.
    pub alert: String,
    /// `pending` (the condition holds, not yet for long enough) or `firing`.
    pub state: &'static str,
    /// The rule's severity.
    pub severity: Severity,
    /// The rule's action.
    pub action: AlertAction,
    /// The labels it concerns.
    pub subject: Subject,
    /// The value measured last, in base units.
    pub value: Option<f64>,
    /// The threshold, in base units.
    pub threshold: f64,
    /// Since when it has been in this state, in seconds since the Unix epoch.
    pub since_unix: f64,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Pending { since: Instant, since_unix: f64 },
    Firing { since_unix: f64 },
}

#[derive(Debug, Default)]
struct Track {
    phase: Option<Phase>,
    value: Option<f64>,
    last_fired: Option<Instant>,
}

/// The rules and their state; call [`Alerting::evaluate`] with a fresh [`Snapshot`] at a steady
/// interval (a second or so).
#[derive(Debug)]
pub struct Alerting {
    rules: Vec<AlertRule>,
    history: VecDeque<Snapshot>,
    tracks: HashMap<(usize, Subject), Track>,
    events: VecDeque<AlertEvent>,
    next_id: u64,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Alerting {
    /// Alerting over checked rules, with no history yet.
    pub fn new(rules: Vec<AlertRule>) -> Alerting {
        Alerting { rules, history: VecDeque::new(), tracks: HashMap::new(), events: VecDeque::new(), next_id: 1 }
    }

    /// The rules, as given.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Judges every rule on `now` (and the earlier snapshots its window needs); returns the alerts
    /// that fired or resolved, for the driver to act on and then [`Alerting::log`].
    pub fn evaluate(&mut self, now: Snapshot) -> Vec<AlertEvent> {
        let at = now.at;
        let longest = self.rules.iter().map(|r| r.condition.window).max().unwrap_or(DEFAULT_WINDOW);
        while self.history.front().is_some_and(|s| at.duration_since(s.at) > longest + Duration::from_secs(5)) {
            self.history.pop_front();
        }
        let mut events = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let before = self
                .history
                .iter()
                .rev()
                .find(|s| at.duration_since(s.at) >= rule.condition.window)
                .or(self.history.front());
            let readings = readings(rule, &now, before);
            // Subjects seen before but absent now go silent (and resolve).
            let mut subjects: Vec<Subject> =
                self.tracks.keys().filter(|(i, _)| *i == index).map(|(_, s)| s.clone()).collect();
            for (subject, _) in &readings {
                if !subjects.contains(subject) {
                    subjects.push(subject.clone());
                }
            }
            for subject in subjects {
                let value = readings.iter().find(|(s, _)| *s == subject).and_then(|(_, v)| *v);
                let holds = value.is_some_and(|v| rule.condition.comparison.holds(v, rule.condition.threshold));
                let track = self.tracks.entry((index, subject.clone())).or_default();
                track.value = value;
                let event = |state, fired_at_unix, id| AlertEvent {
                    id,
                    alert: rule.name.clone(),
                    state,
                    severity: rule.severity,
                    action: rule.action,
                    subject: subject.clone(),
                    condition: rule.condition.text.clone(),
                    value,
                    threshold: rule.condition.threshold,
                    at: crate::store::rfc3339(unix_now() as u64),
                    at_unix: unix_now(),
                    fired_at: crate::store::rfc3339(fired_at_unix as u64),
                    fired_at_unix,
                    action_result: None,
                };
                if holds && track.phase.is_none() {
                    track.phase = Some(Phase::Pending { since: at, since_unix: unix_now() });
                }
                match (track.phase, holds) {
                    (Some(Phase::Pending { since, .. }), true) => {
                        let cooled = track.last_fired.is_none_or(|t| at.duration_since(t) >= rule.cooldown);
                        if at.duration_since(since) >= rule.for_ && cooled {
                            let since_unix = unix_now();
                            track.phase = Some(Phase::Firing { since_unix });
                            track.last_fired = Some(at);
                            events.push(event(EventState::Firing, since_unix, self.next_id));
                            self.next_id += 1;
                        }
                    }
                    (Some(Phase::Firing { since_unix }), false) => {
                        track.phase = None;
                        events.push(event(EventState::Resolved, since_unix, self.next_id));
                        self.next_id += 1;
                    }
                    (Some(Phase::Pending { .. }), false) => track.phase = None,
                    _ => {}
                }
            }
        }
        self.tracks.retain(|_, t| {
            t.phase.is_some() || t.last_fired.is_some_and(|f| at.duration_since(f) < Duration::from_secs(86_400))
        });
        self.history.push_back(now);
        events
    }

    /// Keeps an event (with its action's result) for [`Alerting::events`].
    pub fn log(&mut self, event: AlertEvent) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// The most recent events, oldest first.
    pub fn events(&self) -> Vec<AlertEvent> {
        self.events.iter().cloned().collect()
    }

    /// Alerts pending or firing now.
    pub fn active(&self) -> Vec<ActiveAlert> {
        let mut list: Vec<ActiveAlert> = self
            .tracks
            .iter()
            .filter_map(|((index, subject), track)| {
                let rule = &self.rules[*index];
                let (state, since_unix) = match track.phase? {
                    Phase::Pending { since_unix, .. } => ("pending", since_unix),
                    Phase::Firing { since_unix } => ("firing", since_unix),
                };
                Some(ActiveAlert {
                    alert: rule.name.clone(),
                    state,
                    severity: rule.severity,
                    action: rule.action,
                    subject: subject.clone(),
                    value: track.value,
                    threshold: rule.condition.threshold,
                    since_unix,
                })
            })
            .collect();
        list.sort_by(|a, b| (&a.alert, &a.subject).cmp(&(&b.alert, &b.subject)));
        list
    }
}

fn subject(pairs: &[(&'static str, &str)]) -> Subject {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Each subject's value for the rule's signal (`None`: too few samples or no data).
fn readings(rule: &AlertRule, now: &Snapshot, before: Option<&Snapshot>) -> Vec<(Subject, Option<f64>)> {
    let enough = |samples: u64| samples >= rule.min_samples;
    let mut out = Vec::new();
    match rule.condition.signal {
        Signal::P50Latency | Signal::P95Latency | Signal::P99Latency | Signal::ErrorRate => {
            for e in &now.ensembles {
                let earlier = before.and_then(|b| b.ensembles.iter().find(|x| x.name == e.name));
                let window = earlier.map_or(e.duration.clone(), |b| e.duration.since(&b.duration));
                let requests = e.requests - earlier.map_or(0, |b| b.requests.min(e.requests));
                let errors = e.errors - earlier.map_or(0, |b| b.errors.min(e.errors));
                let q = match rule.condition.signal {
                    Signal::P50Latency => Some(0.5),
                    Signal::P95Latency => Some(0.95),
                    Signal::P99Latency => Some(0.99),
                    _ => None,
                };
                let value = match q {
                    Some(q) => {
                        window.quantile(LATENCY_BOUNDS_NS, q).map(|ns| ns / 1e9).filter(|_| enough(window.count()))
                    }
                    None => (requests > 0 && enough(requests)).then(|| errors as f64 / requests as f64),
                };
                out.push((subject(&[("ensemble", &e.name)]), value));
            }
        }
        Signal::ModelErrorRate => {
            for m in &now.models {
                let earlier = before.and_then(|b| b.models.iter().find(|x| x.name == m.name));
                let calls = m.calls - earlier.map_or(0, |b| b.calls.min(m.calls));
                let errors = m.errors - earlier.map_or(0, |b| b.errors.min(m.errors));
                let value = (calls > 0 && enough(calls)).then(|| errors.min(calls) as f64 / calls as f64);
                out.push((subject(&[("model", &m.name)]), value));
            }
        }
        Signal::ModelAccuracy => {
            for e in &now.ensembles {
                for (model, accuracy) in &e.members {
                    let value = accuracy.filter(|_| enough(e.window_outcomes));
                    out.push((subject(&[("ensemble", &e.name), ("model", model)]), value));
                }
            }
        }
        Signal::EnsembleAccuracy => {
            for e in &now.ensembles {
                out.push((subject(&[("ensemble", &e.name)]), e.accuracy.filter(|_| enough(e.window_outcomes))));
            }
        }
        Signal::GpuUsage => {
            for gpu in &now.gpus {
                out.push((subject(&[("gpu", &gpu.device)]), Some(gpu.utilization)));
            }
        }
        Signal::CpuUsage => {
            let value = match (before, now.process.cpu_seconds) {
                (Some(b), Some(cpu)) if now.at > b.at => b.process.cpu_seconds.map(|earlier| {
                    (cpu - earlier) / now.at.duration_since(b.at).as_secs_f64() / now.cpus.max(1) as f64
                }),
                _ => None,
            };
            out.push((Subject::new(), value));
        }
        Signal::MemoryUsage => out.push((Subject::new(), now.process.resident_bytes.map(|b| b as f64))),
    }
    out
}

#[cfg(test)]
mod tests;
