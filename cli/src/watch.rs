//! The command line's views of a running server: `quorum top` (a live terminal view computed from two
//! scrapes of `/metrics`: throughput, latency percentiles, errors, accuracy, weights, breakers,
//! replicas, alerts) and `quorum alerts list` (rules, active alerts, recent events).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, Instant};

use quorum::telemetry::HistogramSnapshot;
use quorum::{Error, Result};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the server is and the token to read it with (from an environment variable, never a flag).
pub struct Target {
    pub server: String,
    pub token: Option<String>,
}

impl Target {
    pub fn new(server: String, token_env: &str) -> Target {
        Target { server, token: std::env::var(token_env).ok().filter(|t| !t.is_empty()) }
    }

    fn get(&self, path: &str) -> Result<String> {
        quorum_server::client::get(&self.server, path, self.token.as_deref(), TIMEOUT)
    }
}

type Labels = BTreeMap<String, String>;

/// One scrape: samples by metric name.
struct Scrape {
    at: Instant,
    samples: BTreeMap<String, Vec<(Labels, f64)>>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples: BTreeMap<String, Vec<(Labels, f64)>> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (series, value) = match line.rsplit_once(' ') {
                Some(pair) => pair,
                None => continue,
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or(f64::NAN),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, Labels::new()),
            };
            samples.entry(name.to_string()).or_default().push((labels, value));
        }
        Scrape { at: Instant::now(), samples }
    }

    fn all(&self, name: &str) -> &[(Labels, f64)] {
        self.samples.get(name).map_or(&[], Vec::as_slice)
    }

    /// The value of the sample whose labels include every pair of `want`.
    fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.all(name).iter().find(|(l, _)| matches(l, want)).map(|(_, v)| *v)
    }

    /// A histogram's buckets for `want`, as (bounds in ns, per-bucket counts).
    fn histogram(&self, name: &str, want: &[(&str, &str)]) -> (Vec<u64>, HistogramSnapshot) {
        let mut cumulative: Vec<(f64, f64)> = self
            .all(&format!("{name}_bucket"))
            .iter()
            .filter(|(l, _)| matches(l, want))
            .filter_map(|(l, v)| {
                let le = l.get("le")?;
                Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, *v))
            })
            .collect();
        cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
        let bounds =
            cumulative.iter().filter(|(le, _)| le.is_finite()).map(|(le, _)| (le * 1e9).round() as u64).collect();
        let mut previous = 0.0;
        let buckets = cumulative
            .iter()
            .map(|(_, c)| {
                let n = (c - previous).max(0.0) as u64;
                previous = *c;
                n
            })
            .collect();
        (bounds, HistogramSnapshot { buckets, sum: 0 })
    }
}

fn matches(labels: &Labels, want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| labels.get(*k).is_some_and(|x| x == v))
}

fn parse_labels(text: &str) -> Labels {
    let mut labels = Labels::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String =
            chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim_matches(',').trim().to_string();
        if key.is_empty() || chars.next() != Some('"') {
            return labels;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
    }
}

/// Per-second rate of a counter between two scrapes (0 after a reset).
fn rate(now: &Scrape, before: &Scrape, name: &str, want: &[(&str, &str)]) -> f64 {
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    match (now.value(name, want), before.value(name, want)) {
        (Some(a), Some(b)) if a >= b => (a - b) / seconds,
        _ => 0.0,
    }
}

/// The per-second rates of every series of `name` whose labels include `want`, summed (each series
/// against the same series in the earlier scrape).
fn rate_sum(now: &Scrape, before: &Scrape, name: &str, want: &[(&str, &str)]) -> f64 {
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let total: f64 = now
        .all(name)
        .iter()
        .filter(|(labels, _)| matches(labels, want))
        .map(|(labels, a)| match before.all(name).iter().find(|(l, _)| l == labels) {
            Some((_, b)) if a >= b => (a - b) / seconds,
            _ => 0.0,
        })
        .sum();
    total + 0.0 // an empty f64 sum is -0.0
}

fn quantile_ms(now: &Scrape, before: &Scrape, name: &str, want: &[(&str, &str)], q: f64) -> Option<f64> {
    let (bounds, a) = now.histogram(name, want);
    let (_, b) = before.histogram(name, want);
    a.since(&b).quantile(&bounds, q).map(|ns| ns / 1e6)
}

fn fmt(value: Option<f64>, digits: usize) -> String {
    value.filter(|v| v.is_finite()).map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

/// One frame of `quorum top` from two scrapes and the alerts document.
fn frame(target: &Target, now: &Scrape, before: &Scrape, alerts: &serde_json::Value) -> String {
    let mut out = String::new();
    let ready = if now.value("quorum_server_ready", &[]) == Some(1.0) { "ready" } else { "NOT READY" };
    out += &format!("quorum top — {} — {ready}\n\n", target.server);
    out += &format!(
        "{:<16} {:>4} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>7} {:>8} {:>8}\n",
        "ENSEMBLE", "VER", "REQ/S", "ROWS/S", "ERR/S", "P50 ms", "P95 ms", "P99 ms", "FUSED", "ACCURACY", "OUTCOMES"
    );
    for (labels, _) in now.all("quorum_ensemble_info") {
        let name = labels.get("ensemble").cloned().unwrap_or_default();
        let e = [("ensemble", name.as_str())];
        let errors = rate_sum(now, before, "quorum_prediction_errors_total", &e);
        let fused = rate(now, before, "quorum_ensemble_calls_total", &[("ensemble", &name), ("path", "fused")]);
        let calls = rate_sum(now, before, "quorum_ensemble_calls_total", &e);
        out += &format!(
            "{:<16} {:>4} {:>9.1} {:>9.1} {:>8.2} {:>9} {:>9} {:>9} {:>6}% {:>8} {:>8}\n",
            name,
            labels.get("version").cloned().unwrap_or_default(),
            rate(now, before, "quorum_requests_total", &e),
            rate(now, before, "quorum_predictions_total", &e),
            errors,
            fmt(quantile_ms(now, before, "quorum_request_duration_seconds", &e, 0.5), 3),
            fmt(quantile_ms(now, before, "quorum_request_duration_seconds", &e, 0.95), 3),
            fmt(quantile_ms(now, before, "quorum_request_duration_seconds", &e, 0.99), 3),
            fmt((calls > 0.0).then(|| 100.0 * fused / calls), 0),
            fmt(now.value("quorum_ensemble_accuracy", &e), 3),
            fmt(now.value("quorum_tracked_window_outcomes", &e), 0),
        );
        let members: BTreeSet<String> = now
            .all("quorum_member_weight")
            .iter()
            .filter(|(l, _)| matches(l, &e))
            .filter_map(|(l, _)| l.get("model").cloned())
            .collect();
        for model in members {
            let m = [("model", model.as_str())];
            let open = now
                .all("quorum_breaker_state")
                .iter()
                .any(|(l, v)| matches(l, &m) && *v == 1.0 && l.get("state").is_some_and(|s| s != "closed"));
            let calls = rate_sum(now, before, "quorum_model_calls_total", &m);
            let errors = rate_sum(now, before, "quorum_model_errors_total", &m);
            let replicas: f64 =
                now.all("quorum_model_replicas").iter().filter(|(l, _)| matches(l, &m)).map(|(_, v)| v).sum();
            let forced = now.all("quorum_model_forced_fallback").iter().any(|(l, v)| matches(l, &m) && *v == 1.0);
            out += &format!(
                "  {:<20} weight {:>6}  accuracy {:>6}  log-loss {:>6}  calls/s {:>8.1}  errors {:>5}%  p95 {:>8} ms  replicas {:>2}  breaker {}{}\n",
                model,
                fmt(now.value("quorum_member_weight", &[("ensemble", &name), ("model", &model)]), 3),
                fmt(now.value("quorum_model_accuracy", &[("ensemble", &name), ("model", &model)]), 3),
                fmt(now.value("quorum_model_log_loss", &[("ensemble", &name), ("model", &model)]), 3),
                calls,
                fmt((calls > 0.0).then(|| 100.0 * errors / calls), 1),
                fmt(quantile_ms(now, before, "quorum_model_call_duration_seconds", &m, 0.95), 3),
                replicas,
                if open { "OPEN" } else { "closed" },
                if forced { "  FALLBACK (alert)" } else { "" },
            );
        }
    }
    let active = alerts["active"].as_array().cloned().unwrap_or_default();
    out += &format!(
        "\nalerts: {}\n",
        if active.is_empty() { "none".to_string() } else { format!("{} active", active.len()) }
    );
    for a in &active {
        out += &format!(
            "  {:<8} {:<24} {:<8} {} value {}\n",
            a["state"].as_str().unwrap_or(""),
            a["alert"].as_str().unwrap_or(""),
            a["severity"].as_str().unwrap_or(""),
            subject(&a["subject"]),
            fmt(a["value"].as_f64(), 4)
        );
    }
    for (labels, _) in now.all("quorum_experiment_info") {
        let name = labels.get("experiment").cloned().unwrap_or_default();
        out += &format!(
            "experiment {name} ({}): {} — treatment share {}\n",
            labels.get("ensemble").cloned().unwrap_or_default(),
            labels.get("state").cloned().unwrap_or_default(),
            fmt(now.value("quorum_experiment_treatment_share", &[("experiment", &name)]), 2)
        );
    }
    let http = |status: &str| rate_sum(now, before, "quorum_http_requests_total", &[("status", status)]);
    out += &format!(
        "\nhttp: {:.1} requests/s ({:.1} 2xx, {:.1} 4xx, {:.1} 5xx), {} waiting for a slot\n",
        rate_sum(now, before, "quorum_http_requests_total", &[]),
        http("2xx"),
        http("4xx"),
        http("5xx"),
        fmt(now.value("quorum_admission_waiting", &[]), 0)
    );
    let cpu = rate(now, before, "process_cpu_seconds_total", &[]);
    let rss = now.value("process_resident_memory_bytes", &[]).map(|b| b / (1 << 20) as f64);
    out += &format!("process: CPU {:.0}% of one core, RSS {} MiB\n", cpu * 100.0, fmt(rss, 0));
    out
}

fn subject(value: &serde_json::Value) -> String {
    value.as_object().map_or(String::new(), |o| {
        o.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")
    })
}

/// `quorum top`: frames until interrupted (or `frames` of them).
pub fn top(target: &Target, interval: Duration, frames: Option<u32>) -> Result<()> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut before = Scrape::parse(&target.get("/metrics")?);
    let mut shown = 0;
    loop {
        std::thread::sleep(interval);
        let now = Scrape::parse(&target.get("/metrics")?);
        let alerts: serde_json::Value = serde_json::from_str(&target.get("/api/v1/ml/alerts")?)
            .map_err(|e| Error::json("the server's alerts", e))?;
        let text = frame(target, &now, &before, &alerts);
        let clear = if tty { "\x1b[H\x1b[2J" } else { "" };
        if !crate::print_or_stop(&format!("{clear}{text}"))? {
            return Ok(());
        }
        before = now;
        shown += 1;
        if frames.is_some_and(|f| shown >= f) {
            return Ok(());
        }
    }
}

/// `quorum alerts list`.
pub fn list_alerts(target: &Target, json: bool) -> Result<()> {
    let text = target.get("/api/v1/ml/alerts")?;
    if json {
        crate::print_or_stop(&format!("{text}\n"))?;
        return Ok(());
    }
    let document: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::json("the server's alerts", e))?;
    let mut out = String::from("rules:\n");
    for r in document["rules"].as_array().cloned().unwrap_or_default() {
        out += &format!(
            "  {:<24} {:<40} → {} ({})\n",
            r["name"].as_str().unwrap_or(""),
            r["condition"]["text"].as_str().unwrap_or(""),
            r["action"].as_str().unwrap_or(""),
            r["severity"].as_str().unwrap_or("")
        );
    }
    out += "active:\n";
    for a in document["active"].as_array().cloned().unwrap_or_default() {
        out += &format!(
            "  {:<8} {:<24} {} value {}\n",
            a["state"].as_str().unwrap_or(""),
            a["alert"].as_str().unwrap_or(""),
            subject(&a["subject"]),
            fmt(a["value"].as_f64(), 4)
        );
    }
    out += "events (oldest first):\n";
    for e in document["events"].as_array().cloned().unwrap_or_default() {
        out += &format!(
            "  {} {:<9} {:<24} {} value {} — {}\n",
            e["at"].as_str().unwrap_or(""),
            e["state"].as_str().unwrap_or(""),
            e["alert"].as_str().unwrap_or(""),
            subject(&e["subject"]),
            fmt(e["value"].as_f64(), 4),
            e["action_result"].as_str().unwrap_or("")
        );
    }
    crate::print_or_stop(&out)?;
    Ok(())
}

/// `quorum alerts check FILE`: parses a rule file and prints what each rule means.
pub fn check_rules(file: &std::path::Path) -> Result<()> {
    let rules = quorum_server::alert_rules::load_rules(Some(file))?;
    let mut out = format!("{}: {} rules\n", file.display(), rules.len());
    for r in &rules {
        out += &format!(
            "  {:<24} {} {} {} (window {:?}, at least {} samples) for {:?}, cooldown {:?} → {} [{}]\n",
            r.name,
            r.condition.signal.as_str(),
            match r.condition.comparison {
                quorum::alerts::Comparison::Above => ">",
                quorum::alerts::Comparison::AtLeast => ">=",
                quorum::alerts::Comparison::Below => "<",
                quorum::alerts::Comparison::AtMost => "<=",
            },
            r.condition.threshold,
            r.condition.window,
            r.min_samples,
            r.for_,
            r.cooldown,
            r.action.as_str(),
            r.severity.as_str()
        );
    }
    crate::print_or_stop(&out)?;
    let _ = std::io::stdout().flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines_parse_with_escaped_labels() {
        let s = Scrape::parse("# HELP x y\nquorum_x_total{model=\"a\\\"b\",le=\"+Inf\"} 3\nprocess_open_fds 7\n");
        assert_eq!(s.value("quorum_x_total", &[("model", "a\"b")]), Some(3.0));
        assert_eq!(s.value("process_open_fds", &[]), Some(7.0));
    }
}
