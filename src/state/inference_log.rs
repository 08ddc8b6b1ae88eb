//! The inference log: every prediction (or a sample, chosen by request id) with its features, result
//! and latency, written to the state's `inference_logs` table by a writer thread in batches — never
//! on the prediction's path. A prediction only tries to put its record on a bounded queue; when the
//! database is slow or down, records wait up to that bound, later ones are dropped and counted, and
//! the writer retries (reconnecting) with backoff.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::StateStore;
use crate::error::{Error, Result};
use crate::regime::Regime;
use crate::telemetry::Counter;

/// What is logged and how much may wait.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceLogOptions {
    /// The fraction of predictions logged, 0–1 (default 1: every one). Chosen by request id, so a
    /// sample is the same on every replica's records.
    pub sample: f64,
    /// Records that may wait for the database (default 100,000); past it they are dropped and counted.
    #[serde(alias = "queueCapacity")]
    pub queue_capacity: usize,
    /// Most rows per write (default 5,000).
    #[serde(alias = "batchRows")]
    pub batch_rows: usize,
    /// How often the writer takes what is queued, in milliseconds (default 50).
    #[serde(alias = "flushMs")]
    pub flush_ms: u64,
}

impl Default for InferenceLogOptions {
    fn default() -> Self {
        InferenceLogOptions { sample: 1.0, queue_capacity: 100_000, batch_rows: 5_000, flush_ms: 50 }
    }
}

impl InferenceLogOptions {
    /// # Errors
    /// `config` for a sample outside 0–1 or a zero capacity, batch or flush interval.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.sample) {
            return Err(Error::Config(format!("the inference log sample {} is not between 0 and 1", self.sample)));
        }
        if self.queue_capacity == 0 || self.batch_rows == 0 || self.flush_ms == 0 {
            return Err(Error::Config(
                "the inference log's queue_capacity, batch_rows and flush_ms must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The inference log's counters since the engine started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InferenceLogStats {
    /// Rows written to the database.
    pub written: u64,
    /// Rows dropped because the queue was full (the database slow or down).
    pub dropped: u64,
    /// Failed writes (each retried).
    pub write_errors: u64,
    /// Records waiting now, queued or in the batch being written.
    pub waiting: u64,
    /// The last write error, if the last write failed.
    pub last_error: Option<String>,
}

/// What every record of one ensemble load shares (one `Arc` per record).
#[derive(Debug)]
pub(crate) struct LogContext {
    pub ensemble: Arc<str>,
    pub version: u32,
    /// Feature names, each already a JSON string followed by `:` (escaped once, not per row).
    feature_keys: Vec<String>,
    member_keys: Vec<String>,
}

impl LogContext {
    pub fn new(ensemble: &str, version: u32, features: &[String], members: &[Arc<str>]) -> LogContext {
        let key = |name: &str| format!("{}:", serde_json::Value::from(name));
        LogContext {
            ensemble: Arc::from(ensemble),
            version,
            feature_keys: features.iter().map(|f| key(f)).collect(),
            member_keys: members.iter().map(|m| key(m)).collect(),
        }
    }
}

/// One logged prediction.
#[derive(Debug)]
pub(crate) struct InferenceRecord {
    pub request_id: u64,
    pub context: Arc<LogContext>,
    /// When the request started (wall clock).
    pub at: SystemTime,
    /// From the request's start to its answer being combined.
    pub latency_us: u32,
    pub prediction: f32,
    pub confidence: f32,
    pub regime: Option<Regime>,
    /// The dense features in schema order, then each member's prediction (NaN: no answer).
    pub values: Vec<f32>,
}

fn push_number(out: &mut String, value: f32) {
    if value.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(value));
    } else {
        out.push_str("null");
    }
}

/// `{key value, ...}` from keys already written as `"name":`.
fn push_object(out: &mut String, keys: &[String], values: &[f32]) {
    out.push('{');
    for (i, (key, &value)) in keys.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        push_number(out, value);
    }
    out.push('}');
}

impl InferenceRecord {
    pub fn features(&self) -> &[f32] {
        &self.values[..self.context.feature_keys.len()]
    }

    pub fn members(&self) -> &[f32] {
        &self.values[self.context.feature_keys.len()..]
    }

    /// `{"feature": value, ...}` (the story's `input_features`).
    pub fn features_json(&self, out: &mut String) {
        push_object(out, &self.context.feature_keys, self.features());
    }

    /// `{"prediction", "confidence", "ensemble_version", "regime", "members": {name: value}}`
    /// (the story's `prediction_result`).
    pub fn result_json(&self, out: &mut String) {
        out.push_str("{\"prediction\":");
        push_number(out, self.prediction);
        out.push_str(",\"confidence\":");
        push_number(out, self.confidence);
        let _ = write!(out, ",\"ensemble_version\":{}", self.context.version);
        match self.regime {
            Some(r) => {
                let _ = write!(out, ",\"regime\":\"{}\"", r.as_str());
            }
            None => out.push_str(",\"regime\":null"),
        }
        out.push_str(",\"members\":");
        push_object(out, &self.context.member_keys, self.members());
        out.push('}');
    }

    /// The story's `latency_ms` is an integer: rounded up, so a logged 0 means under a microsecond.
    pub fn latency_ms(&self) -> i32 {
        i32::try_from(self.latency_us.div_ceil(1000)).unwrap_or(i32::MAX)
    }

    /// `YYYY-MM-DD HH:MM:SS.ffffff` in UTC (a `TIMESTAMP` without time zone, as the story's column).
    pub fn timestamp_text(&self) -> String {
        let since = self.at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let date = crate::store::rfc3339(since.as_secs());
        format!("{} {}.{:06}", &date[..10], &date[11..19], since.subsec_micros())
    }
}

/// The producer side, held by the engine.
pub(crate) struct InferenceLog {
    sender: SyncSender<InferenceRecord>,
    /// The wall clock at one instant: a record's time is derived from its call's start `Instant`
    /// (no second clock read per prediction).
    epoch: (Instant, SystemTime),
    /// `sample` as a threshold on a request id's hash.
    threshold: u64,
    counters: Arc<LogCounters>,
}

#[derive(Default)]
struct LogCounters {
    written: Counter,
    dropped: Counter,
    write_errors: Counter,
    queued: AtomicU64,
    in_batch: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Spreads request ids over u64 so a sample is not every n-th id (splitmix64's finaliser).
fn spread(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl InferenceLog {
    /// Starts the writer thread; it holds the store weakly and stops when the engine drops it.
    pub fn start(store: Weak<StateStore>, options: InferenceLogOptions) -> Result<InferenceLog> {
        options.validate()?;
        let (sender, receiver) = sync_channel(options.queue_capacity);
        let counters = Arc::new(LogCounters::default());
        let writer_counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("quorum-inference-log".into())
            .spawn(move || write_loop(&receiver, &store, options, &writer_counters))
            .map_err(|e| Error::io("starting the inference log writer", e))?;
        let threshold = if options.sample >= 1.0 { u64::MAX } else { (options.sample * u64::MAX as f64) as u64 };
        Ok(InferenceLog { sender, epoch: (Instant::now(), SystemTime::now()), threshold, counters })
    }

    /// Whether the prediction `request_id` is in the sample.
    #[inline]
    pub fn sampled(&self, request_id: u64) -> bool {
        self.threshold == u64::MAX || spread(request_id) < self.threshold
    }

    /// The wall-clock time of `at`.
    #[inline]
    pub fn wall_time(&self, at: Instant) -> SystemTime {
        let (instant, wall) = self.epoch;
        match at.checked_duration_since(instant) {
            Some(after) => wall + after,
            None => wall - instant.duration_since(at),
        }
    }

    /// Queues a record; never blocks (a full queue drops it and counts the drop).
    #[inline]
    pub fn push(&self, record: InferenceRecord) {
        match self.sender.try_send(record) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.counters.dropped.inc(),
        }
    }

    pub fn stats(&self) -> InferenceLogStats {
        let c = &self.counters;
        InferenceLogStats {
            written: c.written.get(),
            dropped: c.dropped.get(),
            write_errors: c.write_errors.get(),
            waiting: c.queued.load(Ordering::Relaxed) + c.in_batch.load(Ordering::Relaxed),
            last_error: c.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// Takes records into batches and writes them; a failed batch is kept and retried with backoff
/// (100 ms doubling to 5 s) while the queue absorbs new records up to its bound.
fn write_loop(
    receiver: &Receiver<InferenceRecord>,
    store: &Weak<StateStore>,
    options: InferenceLogOptions,
    counters: &LogCounters,
) {
    let flush_every = Duration::from_millis(options.flush_ms);
    let mut batch: Vec<InferenceRecord> = Vec::with_capacity(options.batch_rows);
    let mut backoff = Duration::from_millis(100);
    loop {
        // The writer sleeps rather than blocking on the queue: a blocked receiver would make every
        // prediction's send a wake-up (a futex call) on the hot path.
        if batch.len() < options.batch_rows {
            std::thread::sleep(flush_every);
        }
        let mut closed = false;
        while batch.len() < options.batch_rows {
            match receiver.try_recv() {
                Ok(record) => {
                    counters.queued.fetch_sub(1, Ordering::Relaxed);
                    counters.in_batch.fetch_add(1, Ordering::Relaxed);
                    batch.push(record);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let Some(store) = store.upgrade() else { return };
            match store.write_inference_logs(&batch) {
                Ok(()) => {
                    counters.written.add(batch.len() as u64);
                    counters.in_batch.fetch_sub(batch.len() as u64, Ordering::Relaxed);
                    *counters.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    batch.clear();
                    backoff = Duration::from_millis(100);
                }
                Err(error) => {
                    counters.write_errors.inc();
                    *counters.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
                    drop(store);
                    if closed {
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(values: Vec<f32>) -> InferenceRecord {
        InferenceRecord {
            request_id: 7,
            context: Arc::new(LogContext::new(
                "market",
                2,
                &["rsi \"14\"".to_string(), "vol".to_string()],
                &[Arc::from("technical"), Arc::from("sentiment")],
            )),
            at: UNIX_EPOCH + Duration::from_micros(1_795_775_532_000_123),
            latency_us: 1_234,
            prediction: 0.625,
            confidence: 0.25,
            regime: Some(Regime::High),
            values,
        }
    }

    #[test]
    fn records_render_as_the_story_columns() {
        let r = record(vec![0.5, f32::NEG_INFINITY, 0.75, f32::NAN]);
        let (mut features, mut result) = (String::new(), String::new());
        r.features_json(&mut features);
        r.result_json(&mut result);
        let features: serde_json::Value = serde_json::from_str(&features).unwrap();
        assert_eq!(features, serde_json::json!({"rsi \"14\"": 0.5, "vol": null}));
        let result: serde_json::Value = serde_json::from_str(&result).unwrap();
        assert_eq!(
            result,
            serde_json::json!({"prediction": 0.625, "confidence": 0.25, "ensemble_version": 2, "regime": "high",
                "members": {"technical": 0.75, "sentiment": null}})
        );
        assert_eq!(r.latency_ms(), 2);
        assert_eq!(r.timestamp_text(), "2026-11-27 10:32:12.000123");
    }

    #[test]
    fn a_sample_keeps_about_its_fraction_of_request_ids() {
        let (sender, _receiver) = sync_channel(1);
        let log = InferenceLog {
            sender,
            epoch: (Instant::now(), SystemTime::now()),
            threshold: (0.25 * u64::MAX as f64) as u64,
            counters: Default::default(),
        };
        let kept = (0..100_000u64).filter(|id| log.sampled(*id)).count();
        assert!((23_500..26_500).contains(&kept), "{kept}");
    }

    #[test]
    fn bad_options_are_config_errors() {
        for options in [
            InferenceLogOptions { sample: 1.5, ..Default::default() },
            InferenceLogOptions { queue_capacity: 0, ..Default::default() },
            InferenceLogOptions { flush_ms: 0, ..Default::default() },
        ] {
            assert_eq!(options.validate().unwrap_err().code(), "config");
        }
    }
}
