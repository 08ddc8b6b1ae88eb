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
    /// Through the members' queues (asynchronous callers, batching under contention).
    Queued,
}

/// One ensemble's counters, shared by all its loads.
pub(super) struct EnsembleTelemetry {
    pub(super) requests: Counter,
    /// Rows answered (a batch counts its rows).
    pub(super) rows: Counter,
    /// Failed requests by [`Error::CODES`] position.
    pub(super) errors: Box<[Counter]>,
    pub(super) degraded: Counter,
    pub(super) stale: Counter,
    pub(super) cached: Counter,
    pub(super) fallbacks: Counter,
    pub(super) paths: [Counter; 3],
    pub(super) duration: Histogram,
    pub(super) request_rows: Histogram,
}

impl EnsembleTelemetry {
    pub fn new() -> EnsembleTelemetry {
        EnsembleTelemetry {
            requests: Counter::default(),
            rows: Counter::default(),
            errors: Error::CODES.iter().map(|_| Counter::default()).collect(),
            degraded: Counter::default(),
            stale: Counter::default(),
            cached: Counter::default(),
            fallbacks: Counter::default(),
            paths: Default::default(),
            duration: Histogram::latency(),
            request_rows: Histogram::new(ROW_BOUNDS),
        }
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

    /// A single-row request's end.
    #[inline]
    pub fn single(&self, result: &Result<Prediction>, started: Instant) {
        match result {
            Ok(p) => {
                self.rows.inc();
                if p.degraded {
                    self.degraded.inc();
                }
                if p.stale {
                    self.stale.inc();
                }
            }
            Err(e) => self.error(e),
        }
        self.end(1, started);
    }

    /// A batch request's end.
    pub fn batch(&self, result: &Result<BatchPrediction>, rows: usize, started: Instant) {
        match result {
            Ok(b) => {
                self.rows.add(rows as u64);
                if b.members.iter().any(|m| m.error.is_some()) {
                    self.degraded.add(rows as u64);
                }
            }
            Err(e) => self.error(e),
        }
        self.end(rows, started);
    }

    fn error(&self, e: &Error) {
        if let Some(i) = Error::CODES.iter().position(|c| *c == e.code()) {
            self.errors[i].inc();
        }
    }

    #[inline]
    fn end(&self, rows: usize, started: Instant) {
        self.requests.inc();
        self.request_rows.observe(rows as u64);
        self.duration.observe_duration(started.elapsed());
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

    /// A call its open breaker refused: a failure that took no time.
    #[inline]
    pub fn refused(&self) {
        self.calls.inc();
        self.errors.inc();
    }
}
