//! The Prometheus text exposition format (version 0.0.4): `# HELP` and `# TYPE` once per family, its
//! samples right after, label values escaped, histograms as cumulative `_bucket{le=...}`, `_sum` and
//! `_count`.

use std::fmt::Write;

use super::HistogramSnapshot;

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Counts in buckets.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Text being written family by family: declare a family with [`Exposition::family`], then write
/// its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition { out: String::with_capacity(16 * 1024) }
    }

    /// Starts a family: its help text and type.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A histogram's samples; bucket bounds and the sum are divided by `divisor` (1e9: nanoseconds
    /// to seconds).
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        snapshot: &HistogramSnapshot,
        bounds: &[u64],
        divisor: f64,
    ) {
        let mut cumulative = 0u64;
        let mut le = String::new();
        for (i, count) in snapshot.buckets.iter().enumerate() {
            cumulative += count;
            le.clear();
            match bounds.get(i) {
                Some(&b) => write_value(&mut le, b as f64 / divisor),
                None => le.push_str("+Inf"),
            }
            let _ = write!(self.out, "{name}_bucket");
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        self.out.push(' ');
        write_value(&mut self.out, snapshot.sum as f64 / divisor);
        let _ = write!(self.out, "\n{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {cumulative}");
    }

    /// Appends text already in the format (another exposition's families).
    pub fn append(&mut self, text: &str) {
        self.out.push_str(text);
    }

    /// The text, in the Prometheus exposition format.
    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (key, value) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(key);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// Go's float spelling, which Prometheus parses: `NaN`, `+Inf`, `-Inf`, else the shortest decimal.
fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Histogram;

    #[test]
    fn labels_are_escaped_and_histograms_are_cumulative_in_seconds() {
        let mut e = Exposition::new();
        e.family("quorum_x_total", Kind::Counter, "A count.");
        e.sample("quorum_x_total", &[("model", "a\"b\\c\nd")], 3.0);
        e.family("quorum_g", Kind::Gauge, "A gauge.");
        e.sample("quorum_g", &[], f64::INFINITY);
        let h = Histogram::new(&[1_000, 2_500]);
        h.observe(900);
        h.observe(2_000);
        h.observe(9_000);
        e.family("quorum_d_seconds", Kind::Histogram, "A duration.");
        e.histogram("quorum_d_seconds", &[("ensemble", "m")], &h.snapshot(), h.bounds(), 1e9);
        let text = e.finish();
        assert!(text.contains("quorum_x_total{model=\"a\\\"b\\\\c\\nd\"} 3\n"), "{text}");
        assert!(text.contains("quorum_g +Inf\n"));
        assert!(text.contains("quorum_d_seconds_bucket{ensemble=\"m\",le=\"0.000001\"} 1\n"), "{text}");
        assert!(text.contains("quorum_d_seconds_bucket{ensemble=\"m\",le=\"0.0000025\"} 2\n"), "{text}");
        assert!(text.contains("quorum_d_seconds_bucket{ensemble=\"m\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("quorum_d_seconds_sum{ensemble=\"m\"} 0.0000119\n"), "{text}");
        assert!(text.contains("quorum_d_seconds_count{ensemble=\"m\"} 3\n"));
    }
}
