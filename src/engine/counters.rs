//! The engine's live counters: per ensemble (shared by every load of a name, so hot swaps keep
//! counting) and per loaded model version, bumped on the request path with relaxed atomic adds only.
//! Read by `telemetry.rs`.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::prediction::{BatchPrediction, Prediction};
use crate::telemetry::{Counter, Histogram, ROW_BOUNDS};

/// How an ensemble's requests reached its members.
#[derive(Debug, Clone, Copy)]
pub(super) enum Path {
    /// One ONNX Runtime call for every member.
    Fused,
    /// Member by member, inline on the caller's thread.
    Members,
    /// Through the ensemble's queue (asynchronous callers, batching under contention).
    Queued,
}

/// One ensemble's counters, shared by all its loads. A successful single row costs three atomic adds
/// (request, path, latency bucket and sum); what single rows imply is derived at read time.
pub(super) struct EnsembleTelemetry {
    /// Every request, single rows and batches.
    pub(super) requests: Counter,
    /// Batch requests, the rows they answered, and those that failed.
    pub(super) batch_requests: Counter,
    pub(super) batch_rows: Counter,
    pub(super) batch_errors: Counter,
    /// Failed requests (single rows and batches) by [`Error::CODES`] position.
    pub(super) errors: Box<[Counter]>,
    pub(super) degraded: Counter,
    pub(super) stale: Counter,
    pub(super) cached: Counter,
    pub(super) fallbacks: Counter,
    pub(super) paths: [Counter; 3],
    pub(super) duration: Histogram,
    /// Rows per batch request (single rows are added at read time, in the first bucket).
    pub(super) batch_sizes: Histogram,
}

impl EnsembleTelemetry {
    pub fn new() -> EnsembleTelemetry {
        EnsembleTelemetry {
            requests: Counter::default(),
            batch_requests: Counter::default(),
            batch_rows: Counter::default(),
            batch_errors: Counter::default(),
            errors: Error::CODES.iter().map(|_| Counter::default()).collect(),
            degraded: Counter::default(),
            stale: Counter::default(),
            cached: Counter::default(),
            fallbacks: Counter::default(),
            paths: Default::default(),
            duration: Histogram::latency(),
            batch_sizes: Histogram::new(ROW_BOUNDS),
        }
    }

    /// Errors of every kind so far.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().map(Counter::get).sum()
    }

    /// Rows answered: single rows that did not fail, and the rows of batches that did not.
    pub fn rows(&self) -> u64 {
        let singles = self.requests.get().saturating_sub(self.batch_requests.get());
        let single_errors = self.errors_total().saturating_sub(self.batch_errors.get());
        singles.saturating_sub(single_errors) + self.batch_rows.get()
    }

    /// Rows per request: the batches' histogram with every single-row request in the first bucket.
    pub fn request_rows(&self) -> crate::telemetry::HistogramSnapshot {
        let mut snapshot = self.batch_sizes.snapshot();
        let singles = self.requests.get().saturating_sub(self.batch_requests.get());
        snapshot.buckets[0] += singles;
        snapshot.sum += singles;
        snapshot
    }

    #[inline]
    pub fn path(&self, path: Path) {
        self.paths[path as usize].inc();
    }

    #[inline]
    pub fn fallback_used(&self) {
        self.fallbacks.inc();
    }

    #[inline]
    pub fn cache_hit(&self) {
        self.cached.inc();
    }

    /// A single-row request's end (its latency is the prediction's own, read once already).
    #[inline]
    pub fn single(&self, result: &Result<Prediction>, started: Instant) {
        self.requests.inc();
        match result {
            Ok(p) => {
                if p.degraded {
                    self.degraded.inc();
                }
                if p.stale {
                    self.stale.inc();
                }
                self.duration.observe((p.latency_ms * 1e6) as u64);
            }
            Err(e) => {
                self.error(e);
                self.duration.observe_duration(started.elapsed());
            }
        }
    }

    /// A batch request's end.
    pub fn batch(&self, result: &Result<BatchPrediction>, rows: usize, started: Instant) {
        self.requests.inc();
        self.batch_requests.inc();
        match result {
            Ok(b) => {
                self.batch_rows.add(rows as u64);
                if b.members.iter().any(|m| m.error.is_some()) {
                    self.degraded.add(rows as u64);
                }
            }
            Err(e) => {
                self.batch_errors.inc();
                self.error(e);
            }
        }
        self.batch_sizes.observe(rows as u64);
        self.duration.observe_duration(started.elapsed());
    }

    fn error(&self, e: &Error) {
        if let Some(i) = Error::CODES.iter().position(|c| *c == e.code()) {
            self.errors[i].inc();
        }
    }
}

/// One loaded model version's calls as it made them (inline, queued, fallback, fused).
#[derive(Debug)]
pub(super) struct ModelTelemetry {
    pub(super) calls: Counter,
    pub(super) errors: Counter,
    pub(super) duration: Histogram,
}

impl ModelTelemetry {
    pub fn new() -> ModelTelemetry {
        ModelTelemetry { calls: Counter::default(), errors: Counter::default(), duration: Histogram::latency() }
    }

    #[inline]
    pub fn call(&self, failed: bool, elapsed: Duration) {
        self.calls.inc();
        if failed {
            self.errors.inc();
        }
        self.duration.observe_duration(elapsed);
    }

    /// A fused call this model answered in: counted, without a latency of its own (the fused call's
    /// is the ensemble request's).
    #[inline]
    pub fn fused(&self) {
        self.calls.inc();
    }

    /// A call its open breaker refused: a failure that took no time.
    #[inline]
    pub fn refused(&self) {
        self.calls.inc();
        self.errors.inc();
    }
}
