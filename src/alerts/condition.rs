//! The alert condition language: `SIGNAL OP THRESHOLD[UNIT] [over WINDOW]`, e.g. `p95_latency > 100ms`,
//! `model_error_rate > 5% over 2m`, `model_accuracy < 0.75`. Thresholds are kept in base units
//! (seconds, ratios, bytes) so they compare with the engine's metrics directly.

use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};

/// What a condition measures, and over which subjects it is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Request latency percentiles per ensemble over the window (seconds).
    P50Latency,
    /// 95th percentile request latency per ensemble over the window (seconds).
    P95Latency,
    /// 99th percentile request latency per ensemble over the window (seconds).
    P99Latency,
    /// Share of an ensemble's requests that failed over the window.
    ErrorRate,
    /// Share of a model's calls that failed over the window (all loaded versions).
    ModelErrorRate,
    /// Tracked accuracy of each member within its ensemble (the tracker's count window).
    ModelAccuracy,
    /// Tracked accuracy of each ensemble (count window).
    EnsembleAccuracy,
    /// GPU utilisation (0–1) per device, when a GPU provider is configured and NVML answers.
    GpuUsage,
    /// The process's CPU use over the window, as a share of the machine's cores.
    CpuUsage,
    /// The process's resident memory (bytes).
    MemoryUsage,
}

/// The kind of quantity a signal is, for parsing its threshold's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantity {
    Seconds,
    Ratio,
    Bytes,
}

impl Signal {
    const ALL: [(&'static str, Signal); 10] = [
        ("p50_latency", Signal::P50Latency),
        ("p95_latency", Signal::P95Latency),
        ("p99_latency", Signal::P99Latency),
        ("error_rate", Signal::ErrorRate),
        ("model_error_rate", Signal::ModelErrorRate),
        ("model_accuracy", Signal::ModelAccuracy),
        ("ensemble_accuracy", Signal::EnsembleAccuracy),
        ("gpu_usage", Signal::GpuUsage),
        ("cpu_usage", Signal::CpuUsage),
        ("memory_usage", Signal::MemoryUsage),
    ];

    /// The signal's name in conditions (`p95_latency`, `error_rate`, ...).
    pub fn as_str(self) -> &'static str {
        Signal::ALL.iter().find(|(_, s)| *s == self).map_or("", |(n, _)| n)
    }

    fn quantity(self) -> Quantity {
        match self {
            Signal::P50Latency | Signal::P95Latency | Signal::P99Latency => Quantity::Seconds,
            Signal::MemoryUsage => Quantity::Bytes,
            _ => Quantity::Ratio,
        }
    }

    /// Whether the signal is a rate or percentile over a window of recent traffic (`over` applies).
    pub fn windowed(self) -> bool {
        !matches!(self, Signal::ModelAccuracy | Signal::EnsembleAccuracy | Signal::GpuUsage | Signal::MemoryUsage)
    }
}

/// How a condition compares its signal with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Comparison {
    /// `>`
    #[serde(rename = ">")]
    Above,
    /// `>=`
    #[serde(rename = ">=")]
    AtLeast,
    /// `<`
    #[serde(rename = "<")]
    Below,
    /// `<=`
    #[serde(rename = "<=")]
    AtMost,
}

impl Comparison {
    /// Whether `value` compared with `threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
        }
    }
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Condition {
    /// What is measured.
    pub signal: Signal,
    /// How it is compared with the threshold.
    pub comparison: Comparison,
    /// In base units: seconds, a ratio (5% is 0.05), bytes.
    pub threshold: f64,
    /// The window rates and percentiles are computed over (windowed signals).
    #[serde(serialize_with = "crate::alerts::serialize_secs")]
    pub window: Duration,
    /// As written.
    pub text: String,
}

/// The window of a windowed signal when the condition names none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

impl std::str::FromStr for Condition {
    type Err = Error;

    fn from_str(text: &str) -> Result<Condition> {
        let bad = |why: String| Error::Config(format!("alert condition {text:?}: {why}"));
        let words: Vec<&str> = text.split_whitespace().collect();
        let (signal, comparison, threshold, rest) = match words.as_slice() {
            [signal, op, threshold, rest @ ..] => (*signal, *op, *threshold, rest),
            _ => return Err(bad("expected `SIGNAL OP THRESHOLD [over WINDOW]`, e.g. `p95_latency > 100ms`".into())),
        };
        let signal = Signal::ALL.iter().find(|(n, _)| *n == signal).map(|(_, s)| *s).ok_or_else(|| {
            let known: Vec<&str> = Signal::ALL.iter().map(|(n, _)| *n).collect();
            bad(format!("unknown signal {signal:?} (known: {})", known.join(", ")))
        })?;
        let comparison = match comparison {
            ">" => Comparison::Above,
            ">=" => Comparison::AtLeast,
            "<" => Comparison::Below,
            "<=" => Comparison::AtMost,
            other => return Err(bad(format!("unknown comparison {other:?} (use >, >=, < or <=)"))),
        };
        let threshold = parse_threshold(threshold, signal.quantity()).map_err(bad)?;
        let window = match rest {
            [] => DEFAULT_WINDOW,
            ["over", window] if signal.windowed() => parse_duration(window).map_err(bad)?,
            ["over", _] => {
                return Err(bad(format!("{} is not computed over a window; remove `over ...`", signal.as_str())))
            }
            _ => return Err(bad(format!("unexpected {:?} after the threshold (only `over WINDOW`)", rest.join(" ")))),
        };
        Ok(Condition { signal, comparison, threshold, window, text: text.to_string() })
    }
}

fn parse_threshold(text: &str, quantity: Quantity) -> std::result::Result<f64, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a number with an optional unit"))?;
    if !value.is_finite() {
        return Err(format!("threshold {text:?} is not finite"));
    }
    let scale = match (quantity, unit) {
        (Quantity::Seconds, "us" | "µs") => 1e-6,
        (Quantity::Seconds, "ms") => 1e-3,
        (Quantity::Seconds, "s") => 1.0,
        (Quantity::Seconds, "") => return Err(format!("latency threshold {text:?} needs a unit: us, ms or s")),
        (Quantity::Ratio, "%") => 0.01,
        (Quantity::Ratio, "") => 1.0,
        (Quantity::Bytes, "") => 1.0,
        (Quantity::Bytes, "KB") => 1e3,
        (Quantity::Bytes, "MB") => 1e6,
        (Quantity::Bytes, "GB") => 1e9,
        (Quantity::Bytes, "KiB") => 1024.0,
        (Quantity::Bytes, "MiB") => 1024.0 * 1024.0,
        (Quantity::Bytes, "GiB") => 1024.0 * 1024.0 * 1024.0,
        (q, unit) => return Err(format!("unit {unit:?} does not fit a {q:?} threshold")),
    };
    Ok(value * scale)
}

/// `500ms`, `30s`, `5m`, `1h` (a bare number is seconds).
///
/// # Errors
///
/// The text that was not a duration, with the reason (the caller turns it into `config`).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30s, 5m or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1e3,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is not a usable duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_story_conditions_parse_into_base_units() {
        let c: Condition = "p95_latency > 100ms".parse().unwrap();
        assert_eq!(
            (c.signal, c.comparison, c.threshold, c.window),
            (Signal::P95Latency, Comparison::Above, 0.1, DEFAULT_WINDOW)
        );
        let c: Condition = "model_accuracy < 0.75".parse().unwrap();
        assert_eq!((c.signal, c.comparison, c.threshold), (Signal::ModelAccuracy, Comparison::Below, 0.75));
        let c: Condition = "gpu_usage > 90%".parse().unwrap();
        assert!((c.threshold - 0.9).abs() < 1e-12);
        let c: Condition = "model_error_rate > 5% over 2m".parse().unwrap();
        assert_eq!((c.signal, c.window), (Signal::ModelErrorRate, Duration::from_secs(120)));
        let c: Condition = "memory_usage > 2GiB".parse().unwrap();
        assert_eq!(c.threshold, 2.0 * 1024.0 * 1024.0 * 1024.0);
    }

    #[test]
    fn bad_conditions_say_what_is_wrong() {
        for (text, says) in [
            ("p95_latency > 100", "needs a unit"),
            ("p95 > 100ms", "unknown signal"),
            ("p95_latency => 100ms", "unknown comparison"),
            ("model_accuracy < 0.75 over 5m", "not computed over a window"),
            ("error_rate > 5% over soon", "not a duration"),
            ("error_rate > 5% during 5m", "unexpected"),
            ("error_rate >", "expected"),
            ("memory_usage > 2kg", "does not fit"),
        ] {
            let e = text.parse::<Condition>().unwrap_err();
            assert_eq!(e.code(), "config", "{text}");
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
    }
}
