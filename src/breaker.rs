//! A circuit breaker per model, with resilience4j's semantics.
//!
//! * **Closed**: calls pass; each outcome (failure or success, slow or not) enters a sliding window —
//!   the last `n` calls (count-based) or the calls of the last `d` (time-based). Once the window holds
//!   at least `minimum_calls`, the breaker opens when the failure rate or the slow-call rate (calls
//!   longer than `slow_call_duration`) reaches its threshold.
//! * **Open**: calls are refused without running the model, for `wait_in_open`.
//! * **Half-open**: `half_open_calls` trial calls pass; when they have all completed, the breaker
//!   closes if their failure and slow-call rates are below the thresholds, otherwise opens again.
//!
//! Defaults: resilience4j's (count window of 100, 50% failure rate, 100% slow-call rate, minimum 100
//! calls, 10 half-open calls) except the durations, scaled to in-process models: a call is slow over
//! 50 ms (resilience4j: 60 s) and an open breaker waits 5 s (resilience4j: 60 s).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::telemetry::Counter;

/// How the sliding window is measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlidingWindow {
    /// The last `n` calls.
    Count(usize),
    /// The calls of the last duration.
    Time(Duration),
}

/// Circuit-breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerOptions {
    /// The window rates are judged over: the last N calls, or the last duration.
    pub window: SlidingWindow,
    /// Percentage (0–100] of failed calls that opens the breaker.
    pub failure_rate_threshold: f64,
    /// Percentage (0–100] of slow calls that opens the breaker.
    pub slow_call_rate_threshold: f64,
    /// A call longer than this counts as slow.
    pub slow_call_duration: Duration,
    /// Calls the window must hold before rates are judged.
    pub minimum_calls: usize,
    /// How long the breaker stays open before it lets trial calls through.
    pub wait_in_open: Duration,
    /// Trial calls in the half-open state, which all must pass to close it.
    pub half_open_calls: usize,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        BreakerOptions {
            window: SlidingWindow::Count(100),
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_millis(50),
            minimum_calls: 100,
            wait_in_open: Duration::from_secs(5),
            half_open_calls: 10,
        }
    }
}

impl BreakerOptions {
    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) (code `config`) naming the invalid setting.
    pub fn validate(&self) -> crate::Result<()> {
        let rate = |r: f64| r > 0.0 && r <= 100.0;
        let window_ok = match self.window {
            SlidingWindow::Count(n) => n > 0,
            SlidingWindow::Time(d) => !d.is_zero(),
        };
        if !(window_ok
            && rate(self.failure_rate_threshold)
            && rate(self.slow_call_rate_threshold)
            && self.half_open_calls > 0)
        {
            return Err(crate::Error::Config(format!(
                "circuit breaker: need a non-empty window, rate thresholds in (0, 100] and at least one half-open call: {self:?}"
            )));
        }
        Ok(())
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through (the normal state).
    Closed,
    /// Calls are refused at once until `wait_in_open` has passed.
    Open,
    /// A few trial calls go through; they decide between closed and open.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    opened_at: Instant,
    /// Closed: the sliding window. Half-open: the trial calls.
    calls: VecDeque<(Instant, bool, bool)>,
    failed: usize,
    slow: usize,
    /// Half-open: trial calls let through and not yet completed or counted.
    trials_started: usize,
}

/// A circuit breaker (see the module documentation).
#[derive(Debug)]
pub struct CircuitBreaker {
    options: BreakerOptions,
    inner: Mutex<Inner>,
    /// Transitions into open, half-open and closed, counted for the metrics.
    transitions: [Counter; 3],
}

/// Permission to make one call; report its outcome with [`CircuitBreaker::record`].
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Permit {
    half_open: bool,
}

impl CircuitBreaker {
    /// A closed breaker with these settings.
    pub fn new(options: BreakerOptions) -> CircuitBreaker {
        CircuitBreaker {
            options,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                opened_at: Instant::now(),
                calls: VecDeque::new(),
                failed: 0,
                slow: 0,
                trials_started: 0,
            }),
            transitions: Default::default(),
        }
    }

    /// Transitions so far into each state: `[open, half_open, closed]`.
    pub fn transitions(&self) -> [u64; 3] {
        [self.transitions[0].get(), self.transitions[1].get(), self.transitions[2].get()]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        self.advance(&mut inner, Instant::now());
        inner.state
    }

    /// Moves an open breaker whose wait is over to half-open.
    fn advance(&self, inner: &mut Inner, now: Instant) {
        if inner.state == BreakerState::Open && now.duration_since(inner.opened_at) >= self.options.wait_in_open {
            inner.state = BreakerState::HalfOpen;
            self.transitions[1].inc();
            inner.calls.clear();
            inner.failed = 0;
            inner.slow = 0;
            inner.trials_started = 0;
        }
    }

    /// Whether calls pass freely now, without a permit count (closed).
    pub fn is_closed(&self) -> bool {
        self.state() == BreakerState::Closed
    }

    /// Records a successful call made while the breaker was closed without taking a permit (a fused
    /// ensemble call, made only when every member's breaker is closed); changes nothing otherwise.
    pub(crate) fn record_success(&self, elapsed: Duration) {
        self.record(Permit { half_open: false }, elapsed, false);
    }

    /// `Some(permit)` if a call may be made now.
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut inner = self.lock();
        self.advance(&mut inner, Instant::now());
        match inner.state {
            BreakerState::Closed => Some(Permit { half_open: false }),
            BreakerState::Open => None,
            BreakerState::HalfOpen if inner.trials_started < self.options.half_open_calls => {
                inner.trials_started += 1;
                Some(Permit { half_open: true })
            }
            BreakerState::HalfOpen => None,
        }
    }

    /// Reports how a permitted call went.
    pub fn record(&self, permit: Permit, elapsed: Duration, failed: bool) {
        let now = Instant::now();
        let slow = elapsed > self.options.slow_call_duration;
        let mut inner = self.lock();
        let o = &self.options;
        match (inner.state, permit.half_open) {
            (BreakerState::Closed, false) => {
                inner.calls.push_back((now, failed, slow));
                inner.failed += usize::from(failed);
                inner.slow += usize::from(slow);
                self.evict(&mut inner, now);
                if inner.calls.len() >= o.minimum_calls && self.over_threshold(&inner) {
                    self.open(&mut inner, now);
                }
            }
            (BreakerState::HalfOpen, true) => {
                inner.calls.push_back((now, failed, slow));
                inner.failed += usize::from(failed);
                inner.slow += usize::from(slow);
                if inner.calls.len() >= o.half_open_calls {
                    if self.over_threshold(&inner) {
                        self.open(&mut inner, now);
                    } else {
                        inner.state = BreakerState::Closed;
                        self.transitions[2].inc();
                        inner.calls.clear();
                        inner.failed = 0;
                        inner.slow = 0;
                    }
                }
            }
            // A call that started in another state (e.g. before the breaker opened) changes nothing.
            _ => {}
        }
    }

    fn over_threshold(&self, inner: &Inner) -> bool {
        let n = inner.calls.len().max(1) as f64;
        100.0 * inner.failed as f64 / n >= self.options.failure_rate_threshold
            || 100.0 * inner.slow as f64 / n >= self.options.slow_call_rate_threshold
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        inner.state = BreakerState::Open;
        self.transitions[0].inc();
        inner.opened_at = now;
        inner.calls.clear();
        inner.failed = 0;
        inner.slow = 0;
    }

    fn evict(&self, inner: &mut Inner, now: Instant) {
        loop {
            let expired = match (self.options.window, inner.calls.front()) {
                (SlidingWindow::Count(n), Some(_)) => inner.calls.len() > n,
                (SlidingWindow::Time(d), Some(&(at, _, _))) => now.duration_since(at) > d,
                (_, None) => false,
            };
            if !expired {
                break;
            }
            if let Some((_, failed, slow)) = inner.calls.pop_front() {
                inner.failed -= usize::from(failed);
                inner.slow -= usize::from(slow);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> BreakerOptions {
        BreakerOptions {
            window: SlidingWindow::Count(10),
            minimum_calls: 4,
            half_open_calls: 2,
            wait_in_open: Duration::from_millis(30),
            ..BreakerOptions::default()
        }
    }

    fn call(b: &CircuitBreaker, failed: bool) -> bool {
        match b.try_acquire() {
            Some(p) => {
                b.record(p, Duration::from_micros(10), failed);
                true
            }
            None => false,
        }
    }

    #[test]
    fn opens_at_the_failure_rate_after_the_minimum_calls_then_recovers_through_half_open() {
        let b = CircuitBreaker::new(options());
        assert!(call(&b, true) && call(&b, true) && call(&b, false));
        assert_eq!(b.state(), BreakerState::Closed, "3 calls < minimum 4");
        assert!(call(&b, false));
        assert_eq!(b.state(), BreakerState::Open, "2 of 4 failed = 50%");
        assert!(!call(&b, false), "open: refused");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let (p1, p2) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
        assert!(b.try_acquire().is_none(), "only 2 trial calls");
        b.record(p1, Duration::from_micros(10), false);
        b.record(p2, Duration::from_micros(10), false);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn failing_trials_reopen_and_slow_calls_count() {
        let b = CircuitBreaker::new(BreakerOptions { slow_call_rate_threshold: 75.0, ..options() });
        for _ in 0..4 {
            let p = b.try_acquire().unwrap();
            b.record(p, Duration::from_secs(1), false);
        }
        assert_eq!(b.state(), BreakerState::Open, "all slow");
        std::thread::sleep(Duration::from_millis(40));
        assert!(call(&b, true) && call(&b, false));
        assert_eq!(b.state(), BreakerState::Open, "half the trials failed");
    }

    #[test]
    fn the_count_window_forgets_old_failures() {
        let b = CircuitBreaker::new(BreakerOptions { minimum_calls: 10, ..options() });
        for i in 0..200 {
            assert!(call(&b, i % 3 == 0), "33% failures never open a 50% breaker");
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
