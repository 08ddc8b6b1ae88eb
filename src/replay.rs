//! Walk-forward replay of a CSV file: predict each row in file order, then record its outcome, and
//! report per-member and ensemble metrics, latency percentiles and throughput.
//!
//! The CSV is RFC 4180 with a header row (quoted fields allowed; duplicate column names refused).
//! The columns the ensemble consumes and the outcome column must be numeric (`inf`, `-inf` and
//! `NaN` are read as such; an empty cell is NaN). Other columns (dates, ids, free text in any
//! encoding) are ignored. Rows the engine refuses are counted, the first refusal kept, and the
//! replay goes on.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::engine::InferenceEngine;
use crate::error::{Error, Result};
use crate::stats::{percentiles, LatencyPercentiles};
use crate::tracking::{Metrics, MetricsAccumulator};

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The column holding each row's realised outcome.
    pub outcome: String,
}

/// The result of a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// Data rows in the file.
    pub rows: usize,
    /// Rows the engine refused (they are not scored).
    pub refused: usize,
    /// The first refusal's error, as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_refusal: Option<String>,
    /// The ensemble's metrics over the scored rows.
    pub ensemble: Metrics,
    /// Each member's metrics over the scored rows.
    pub members: BTreeMap<String, Metrics>,
    /// Latency of one prediction, in milliseconds.
    pub latency_ms: LatencyPercentiles,
    /// Predictions per second over the whole replay loop (one thread, predict + record outcome).
    pub throughput: f64,
}

/// Numeric columns of a CSV file, read once.
#[derive(Debug, Clone)]
pub struct Table {
    /// Column names, from the header.
    pub columns: Vec<String>,
    /// Row-major cells, parsed as f64 (outcomes keep every digit); a cell that is not a number is
    /// kept as an error message.
    cells: Vec<std::result::Result<f64, String>>,
}

impl Table {
    /// Reads a CSV file with a header row.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when it cannot be read; [`Error::InvalidInput`] (code `invalid_input`) for a malformed file, with
    /// its line.
    pub fn read(path: &Path) -> Result<Table> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Table::parse_bytes(&bytes)
    }

    /// Parses CSV text; see [`Table::parse_bytes`].
    ///
    /// # Errors
    ///
    /// `invalid_input` for malformed CSV (with its line): no header, a row of another width.
    pub fn parse(text: &str) -> Result<Table> {
        Table::parse_bytes(text.as_bytes())
    }

    /// Parses RFC 4180 CSV (quoted fields, `""` escapes, CRLF) with a header row, by the `csv` crate.
    /// Cells are read as bytes: text that is not UTF-8 fails only where a used column holds it (with
    /// its line and column), so an unused free-text column cannot sink the file.
    ///
    /// # Errors
    /// `invalid_input` for an empty file, a duplicate or empty header name, a row whose field count
    /// differs from the header's (with its line), or malformed quoting.
    pub fn parse_bytes(data: &[u8]) -> Result<Table> {
        let mut reader = csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).from_reader(data);
        let csv_error = |e: csv::Error| {
            let line = e.position().map(|p| format!("CSV line {}: ", p.line())).unwrap_or_default();
            match e.kind() {
                csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                    Error::InvalidInput(format!("{line}{len} fields, the header has {expected_len}"))
                }
                _ => Error::InvalidInput(format!("{line}{e}")),
            }
        };
        let header = reader.byte_headers().map_err(csv_error)?.clone();
        if header.is_empty() {
            return Err(Error::InvalidInput("the CSV file is empty".into()));
        }
        let mut columns = Vec::with_capacity(header.len());
        for (i, name) in header.iter().enumerate() {
            let name = std::str::from_utf8(name)
                .map_err(|_| Error::InvalidInput(format!("CSV header: column {} is not UTF-8 text", i + 1)))?;
            if columns.iter().any(|c| c == name) {
                return Err(Error::InvalidInput(format!(
                    "CSV header: column {name:?} appears twice (which one would be read is ambiguous)"
                )));
            }
            columns.push(name.to_string());
        }
        let mut cells = Vec::new();
        let mut record = csv::ByteRecord::new();
        while reader.read_byte_record(&mut record).map_err(csv_error)? {
            let line = record.position().map_or(0, |p| p.line());
            cells.extend(record.iter().zip(&columns).map(|(field, column)| match std::str::from_utf8(field) {
                Ok(text) => parse_cell(text, column, line),
                Err(_) => Err(format!("CSV line {line}, column {column:?}: not UTF-8 text")),
            }));
        }
        if cells.is_empty() {
            return Err(Error::InvalidInput("the CSV file has a header but no rows".into()));
        }
        Ok(Table { columns, cells })
    }

    /// How many data rows the table holds.
    pub fn rows(&self) -> usize {
        self.cells.len() / self.columns.len()
    }

    /// The index of column `name`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] (code `invalid_input`) when there is no such column.
    pub fn column_index(&self, name: &str) -> Result<usize> {
        self.columns.iter().position(|c| c == name).ok_or_else(|| {
            Error::InvalidInput(format!("the CSV file has no column {name:?} (columns: {})", self.columns.join(",")))
        })
    }

    /// A cell as parsed (f64): outcomes.
    ///
    /// # Errors
    ///
    /// The cell's text when it is not a number.
    pub fn cell(&self, row: usize, column: usize) -> std::result::Result<f64, &str> {
        self.cells[row * self.columns.len() + column].as_ref().copied().map_err(String::as_str)
    }

    /// A cell as a model input (f32).
    ///
    /// # Errors
    ///
    /// The cell's text when it is not a number.
    pub fn feature(&self, row: usize, column: usize) -> std::result::Result<f32, &str> {
        self.cell(row, column).map(|v| v as f32)
    }
}

fn parse_cell(text: &str, column: &str, line: u64) -> std::result::Result<f64, String> {
    if text.is_empty() {
        return Ok(f64::NAN);
    }
    text.parse::<f64>().map_err(|_| format!("CSV line {line}, column {column:?}: {text:?} is not a number"))
}

/// Replays `data` through `ensemble` in file order.
///
/// # Errors
///
/// `io` or `invalid_input` when the file cannot be read or lacks the features or the outcome column; `not_found` for an
/// unknown ensemble; `tracking_disabled` when tracking is off.
pub fn replay(engine: &InferenceEngine, ensemble: &str, data: &Path, options: &ReplayOptions) -> Result<ReplayReport> {
    let table = Table::read(data)?;
    replay_table(engine, ensemble, &table, options)
}

/// Replays an already-read table.
///
/// # Errors
///
/// As [`replay`].
pub fn replay_table(
    engine: &InferenceEngine,
    ensemble: &str,
    table: &Table,
    options: &ReplayOptions,
) -> Result<ReplayReport> {
    let handle = engine.ensemble(ensemble)?;
    let task = handle.task();
    let outcome_column = table.column_index(&options.outcome)?;
    let feature_columns = handle.feature_names().iter().map(|f| table.column_index(f)).collect::<Result<Vec<_>>>()?;
    let mut ensemble_acc = MetricsAccumulator::default();
    let mut member_acc: Vec<(String, MetricsAccumulator)> = Vec::new();
    let mut latencies = Vec::with_capacity(table.rows());
    let (mut refused, mut first_refusal) = (0, None);
    let mut row_values = Vec::with_capacity(feature_columns.len());
    let started = Instant::now();
    for row in 0..table.rows() {
        let attempt = (|| -> Result<(crate::Prediction, f64)> {
            row_values.clear();
            for &c in &feature_columns {
                row_values.push(table.feature(row, c).map_err(|e| Error::InvalidInput(e.to_string()))?);
            }
            let outcome = table.cell(row, outcome_column).map_err(|e| Error::InvalidInput(e.to_string()))?;
            if !outcome.is_finite() {
                return Err(Error::InvalidInput(format!("the outcome is {outcome}")));
            }
            let t = Instant::now();
            let prediction = handle.predict_row(&row_values)?;
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
            // Replay works with tracking off too: its own accumulators make the report.
            if engine.tracking_enabled() {
                engine.record_outcome(prediction.request_id, outcome)?;
            }
            Ok((prediction, outcome))
        })();
        match attempt {
            Ok((prediction, outcome)) => {
                // The replay's metrics are kept in f32, like the predictions they score.
                let outcome = outcome as f32;
                ensemble_acc.add(prediction.prediction, outcome);
                if member_acc.is_empty() {
                    member_acc = prediction
                        .model_contributions
                        .iter()
                        .map(|c| (c.model.to_string(), MetricsAccumulator::default()))
                        .collect();
                }
                for (c, (_, acc)) in prediction.model_contributions.iter().zip(member_acc.iter_mut()) {
                    if let Some(p) = c.prediction {
                        acc.add(p, outcome);
                    }
                }
            }
            Err(e) => {
                refused += 1;
                first_refusal.get_or_insert_with(|| format!("data row {}: {e}", row + 1));
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let scored = table.rows() - refused;
    Ok(ReplayReport {
        rows: table.rows(),
        refused,
        first_refusal,
        ensemble: ensemble_acc.metrics(task),
        members: member_acc.into_iter().map(|(n, a)| (n, a.metrics(task))).collect(),
        latency_ms: percentiles(&mut latencies),
        throughput: if elapsed > 0.0 { scored as f64 / elapsed } else { 0.0 },
    })
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.4}", v));
        writeln!(f, "rows {}  scored {}  refused {}", self.rows, self.rows - self.refused, self.refused)?;
        if let Some(first) = &self.first_refusal {
            writeln!(f, "first refusal: {first}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "predictor", "count", "accuracy", "precision", "recall", "f1", "mae", "rmse"
        )?;
        let rows =
            std::iter::once(("ensemble", &self.ensemble)).chain(self.members.iter().map(|(n, m)| (n.as_str(), m)));
        for (name, m) in rows {
            writeln!(
                f,
                "{:<14} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                name,
                m.count,
                pct(m.accuracy),
                pct(m.precision),
                pct(m.recall),
                pct(m.f1_score),
                pct(m.mae),
                pct(m.rmse)
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "latency per prediction: p50 {:.4} ms  p95 {:.4} ms  p99 {:.4} ms",
            self.latency_ms.p50, self.latency_ms.p95, self.latency_ms.p99
        )?;
        write!(f, "throughput: {:.0} predictions/s (one thread, predict + record outcome)", self.throughput)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_follow_rfc_4180() {
        let table = Table::parse("date,\"note\",x\n2020-01-01,\"up, then \"\"down\"\"\",1.5\r\n").unwrap();
        assert_eq!(table.columns, ["date", "note", "x"]);
        assert_eq!(table.cell(0, 2), Ok(1.5));
        assert!(table.cell(0, 1).is_err(), "text is not a number");
    }

    #[test]
    fn a_duplicate_column_is_refused_by_name() {
        let error = Table::parse("a,b,a\n1,2,3\n").unwrap_err();
        assert!(error.to_string().contains("\"a\" appears twice"), "{error}");
    }

    #[test]
    fn non_utf8_text_fails_only_where_it_is_used_with_its_line() {
        let mut data = b"x,comment\n1,ok\n2,caf".to_vec();
        data.extend_from_slice(&[0xE9, b'\n']);
        let table = Table::parse_bytes(&data).unwrap();
        assert_eq!((table.cell(0, 0), table.cell(1, 0)), (Ok(1.0), Ok(2.0)));
        assert!(table.cell(1, 1).unwrap_err().contains("line 3"), "{:?}", table.cell(1, 1));
    }

    #[test]
    fn a_short_row_names_its_line() {
        let error = Table::parse("a,b\n1,2\n3\n").unwrap_err();
        assert!(error.to_string().contains("line 3") && error.to_string().contains("1 fields"), "{error}");
    }
}
