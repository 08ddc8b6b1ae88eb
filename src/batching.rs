//! Dynamic batching's queue and its one-shot replies: concurrent single-row requests for one
//! ensemble load wait in a `Batcher` until a dispatcher takes them as one batch
//! (`engine::coalesce` runs it: through the fused model in one ONNX Runtime call when the ensemble
//! is fused). Each request's answer comes back through its `Reply`: a synchronous caller parks on
//! it, an asynchronous one is woken.
//!
//! The queue refuses a request past its bound at once ([`Error::Overloaded`]), and a dispatcher
//! refuses, when it forms a batch, each request whose deadline the batch would miss (by the recent
//! batch latency) with [`Error::DeadlineExceeded`] rather than serve it late.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::telemetry::{Histogram, HistogramSnapshot, ROW_BOUNDS};

/// Batching settings, given per model ([`crate::ModelOptions::with_batching`]). An ensemble with a
/// member that batches coalesces its queued requests under the tightest of its members' settings:
/// the smallest `max_batch` and `max_queued`, the longest `max_delay`, the most `dispatchers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchingOptions {
    /// Most requests one batch carries (default 256): through a fused ensemble, the rows of one ONNX
    /// Runtime call.
    pub max_batch: usize,
    /// How long the oldest queued request may wait for the batch to fill (default 0: a batch is
    /// whatever queued while the replicas were busy, so batching never waits on an idle machine).
    pub max_delay: Duration,
    /// Threads serving the ensemble's queue, each running one batch at a time (default 1: one
    /// thread that always takes everything queued makes the biggest batches; measured best for the
    /// example models on 2 cores — raise it for heavy models on a big machine).
    pub dispatchers: usize,
    /// Most requests waiting in the ensemble's queue (default 65,536): one more is refused at once
    /// with [`Error::Overloaded`], so a flood of asynchronous requests cannot grow memory without
    /// bound.
    pub max_queued: usize,
}

/// The default [`BatchingOptions::max_queued`].
pub const DEFAULT_MAX_QUEUED: usize = 65_536;

impl Default for BatchingOptions {
    fn default() -> Self {
        BatchingOptions { max_batch: 256, max_delay: Duration::ZERO, dispatchers: 1, max_queued: DEFAULT_MAX_QUEUED }
    }
}

impl BatchingOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_batch == 0
            || self.dispatchers == 0
            || self.max_delay > Duration::from_secs(1)
            || self.max_queued == 0
        {
            return Err(Error::Config(format!(
                "batching: need max_batch ≥ 1, dispatchers ≥ 1, max_delay ≤ 1 s and max_queued ≥ 1, got {self:?}"
            )));
        }
        Ok(())
    }
}

/// How a parked request is woken.
enum Waiter {
    None,
    Thread(Thread),
    Task(Waker),
}

/// Where one queued request's answer arrives, once.
pub(crate) struct Reply<T> {
    state: Mutex<(Option<T>, Waiter)>,
}

impl<T> Reply<T> {
    pub fn new() -> Arc<Reply<T>> {
        Arc::new(Reply { state: Mutex::new((None, Waiter::None)) })
    }

    fn lock(&self) -> MutexGuard<'_, (Option<T>, Waiter)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers the answer and wakes whoever waits for it.
    pub fn send(&self, value: T) {
        let mut state = self.lock();
        state.0 = Some(value);
        let waiter = std::mem::replace(&mut state.1, Waiter::None);
        drop(state);
        match waiter {
            Waiter::None => {}
            Waiter::Thread(thread) => thread.unpark(),
            Waiter::Task(waker) => waker.wake(),
        }
    }

    /// Blocks the calling thread until the answer arrives, or until `end` (`None` then).
    pub fn wait_until(&self, end: Option<Instant>) -> Option<T> {
        loop {
            let mut state = self.lock();
            if let Some(value) = state.0.take() {
                return Some(value);
            }
            let now = Instant::now();
            if end.is_some_and(|end| now >= end) {
                return None;
            }
            state.1 = Waiter::Thread(std::thread::current());
            drop(state);
            match end {
                Some(end) => std::thread::park_timeout(end - now),
                None => std::thread::park(),
            }
        }
    }

    /// Resolves when the answer arrives.
    pub fn wait_async(self: &Arc<Self>) -> ReplyFuture<T> {
        ReplyFuture { reply: Arc::clone(self) }
    }
}

/// The future of [`Reply::wait_async`].
pub(crate) struct ReplyFuture<T> {
    reply: Arc<Reply<T>>,
}

impl<T> Future for ReplyFuture<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = self.reply.lock();
        if let Some(value) = state.0.take() {
            return Poll::Ready(value);
        }
        match &state.1 {
            Waiter::Task(w) if w.will_wake(cx.waker()) => {}
            _ => state.1 = Waiter::Task(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Moves the first `n` values of `from` to the end of `to`, slice by slice: a drain's iterator
/// copied them one value at a time, under the queue's lock.
fn take_front(from: &mut VecDeque<f32>, n: usize, to: &mut Vec<f32>) {
    let (front, back) = from.as_slices();
    let in_front = n.min(front.len());
    to.extend_from_slice(&front[..in_front]);
    to.extend_from_slice(&back[..n - in_front]);
    from.drain(..n);
}

/// One queued request: what the dispatcher answers to, its deadline and when it began.
pub(crate) struct Ticket<T> {
    pub request: T,
    pub deadline: Option<Instant>,
    pub enqueued: Instant,
}

/// One queue of single-row requests, `width` values each.
pub(crate) struct Batcher<T> {
    /// What is queued for, in errors (`ensemble "market"`).
    what: String,
    width: usize,
    options: BatchingOptions,
    queue: Mutex<Queue<T>>,
    arrived: Condvar,
    /// Requests queued now, read without the lock (a lone caller's "is anyone queued?").
    depth: AtomicUsize,
    /// µs a batch is expected to take (see [`Batcher::note_run`]), to refuse requests whose deadline
    /// cannot be met.
    recent_batch_us: AtomicU64,
    /// Rows per batch, and each run request's wait from its start to its batch.
    batch_rows: Histogram,
    queue_wait: Histogram,
}

struct Queue<T> {
    rows: VecDeque<f32>,
    tickets: VecDeque<Ticket<T>>,
    /// Dispatchers parked for work, and wake-ups sent to them not yet taken.
    idle: usize,
    notified: usize,
    /// A dispatcher holding a batch open waits for this many requests (0: none waits).
    want: usize,
    closed: bool,
}

impl<T> Batcher<T> {
    pub fn new(what: String, width: usize, options: BatchingOptions) -> Batcher<T> {
        Batcher {
            what,
            width,
            options,
            queue: Mutex::new(Queue {
                rows: VecDeque::new(),
                tickets: VecDeque::new(),
                idle: 0,
                notified: 0,
                want: 0,
                closed: false,
            }),
            arrived: Condvar::new(),
            depth: AtomicUsize::new(0),
            recent_batch_us: AtomicU64::new(0),
            batch_rows: Histogram::new(ROW_BOUNDS),
            queue_wait: Histogram::latency(),
        }
    }

    pub fn options(&self) -> &BatchingOptions {
        &self.options
    }

    /// Values per queued row.
    pub fn width(&self) -> usize {
        self.width
    }

    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_empty(&self) -> bool {
        self.queued() == 0
    }

    pub fn queued(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Rows per batch, and queued requests' waits (their start to their batch's run).
    pub fn histograms(&self) -> (HistogramSnapshot, HistogramSnapshot) {
        (self.batch_rows.snapshot(), self.queue_wait.snapshot())
    }

    /// Queues one row (its ticket's `enqueued` is when the request began), waking a parked
    /// dispatcher if `wake` (a caller that serves the queue itself does not). A closed or full
    /// queue hands the request back with the error to answer it with.
    pub fn enqueue(&self, row: &[f32], ticket: Ticket<T>, wake: bool) -> std::result::Result<(), (T, Error)> {
        debug_assert_eq!(row.len(), self.width);
        let mut queue = self.lock();
        if queue.closed {
            return Err((ticket.request, self.closed_error()));
        }
        let queued = queue.tickets.len();
        if queued >= self.options.max_queued {
            drop(queue);
            let overloaded = Error::Overloaded { what: self.what.clone(), queued, limit: self.options.max_queued };
            return Err((ticket.request, overloaded));
        }
        queue.rows.extend(row);
        queue.tickets.push_back(ticket);
        self.depth.store(queue.tickets.len(), Ordering::Relaxed);
        // The batch a dispatcher holds open is full: wake it (once).
        let filled = queue.want > 0 && queue.tickets.len() >= queue.want;
        if filled {
            queue.want = 0;
        }
        let wake = wake && queue.idle > queue.notified;
        if wake {
            queue.notified += 1;
        }
        drop(queue);
        if filled {
            self.arrived.notify_all();
        } else if wake {
            self.arrived.notify_one();
        }
        Ok(())
    }

    /// Why a request on a closed queue was refused.
    pub fn closed_error(&self) -> Error {
        Error::Internal(format!(
            "the queue of {} was closed (unloaded, or no dispatcher thread could start)",
            self.what
        ))
    }

    /// Stops the dispatchers; returns the queued requests, which the caller refuses.
    pub fn close(&self) -> Vec<T> {
        let mut queue = self.lock();
        queue.closed = true;
        let tickets = std::mem::take(&mut queue.tickets);
        queue.rows.clear();
        self.depth.store(0, Ordering::Relaxed);
        drop(queue);
        self.arrived.notify_all();
        tickets.into_iter().map(|t| t.request).collect()
    }

    /// Waits for work, then takes up to `max_batch` tickets and their rows (`fair`: at most an
    /// even share of what is queued among `dispatchers`, so that dispatchers running one row at a
    /// time all get work). While `served_elsewhere` holds, what is queued is somebody else's to
    /// take, and the dispatcher waits to be woken. `None` once closed.
    pub fn next_batch(
        &self,
        tickets: &mut Vec<Ticket<T>>,
        rows: &mut Vec<f32>,
        fair: bool,
        served_elsewhere: &dyn Fn() -> bool,
    ) -> Option<()> {
        let mut queue = self.lock();
        loop {
            if queue.closed {
                return None;
            }
            if !queue.tickets.is_empty() && !served_elsewhere() {
                break;
            }
            // No spinning before parking: measured (examples/load.rs, 2 cores), a 10–50 µs look for
            // more work raised a lone caller's throughput but doubled p99 at 64 callers.
            queue.idle += 1;
            queue = self.arrived.wait(queue).unwrap_or_else(|p| p.into_inner());
            queue.idle -= 1;
            queue.notified = queue.notified.saturating_sub(1);
        }
        let max = self.options.max_batch;
        // With `max_delay` set, the batch stays open until it is full or the oldest request has
        // waited that long. By default it never waits: a batch is what arrived while the last one
        // ran, which follows the arrival rate. (Measured on 2 cores, holding the batch open for as
        // many requests as the last one carried, or half as many, for up to half a run: mean batch
        // 64 instead of 31 but 39% less throughput, or the same batch and throughput — the
        // callers' side then idles while the dispatcher waits.)
        if !self.options.max_delay.is_zero() && queue.tickets.len() < max {
            let until = queue.tickets.front().map(|t| t.enqueued + self.options.max_delay);
            while let Some(left) = until.and_then(|u| u.checked_duration_since(Instant::now())) {
                if queue.tickets.len() >= max || queue.closed {
                    break;
                }
                // Woken by the request that fills the batch, or at the delay's end.
                queue.want = max;
                queue = self.arrived.wait_timeout(queue, left).unwrap_or_else(|p| p.into_inner()).0;
            }
            queue.want = 0;
            if queue.tickets.is_empty() {
                return Some(());
            }
        }
        let queued = queue.tickets.len();
        let share = if fair { queued.div_ceil(self.options.dispatchers.max(1)) } else { queued };
        let take = share.min(max).max(1);
        tickets.extend(queue.tickets.drain(..take));
        take_front(&mut queue.rows, take * self.width, rows);
        self.depth.store(queue.tickets.len(), Ordering::Relaxed);
        // Work left for another parked dispatcher.
        let wake = !queue.tickets.is_empty() && queue.idle > queue.notified;
        if wake {
            queue.notified += 1;
        }
        drop(queue);
        if wake {
            self.arrived.notify_one();
        }
        Some(())
    }

    /// Takes up to `max_batch` tickets and their rows without waiting; false when nothing is
    /// queued (or the queue is closed).
    pub fn take_now(&self, tickets: &mut Vec<Ticket<T>>, rows: &mut Vec<f32>) -> bool {
        let mut queue = self.lock();
        if queue.closed || queue.tickets.is_empty() {
            return false;
        }
        let take = queue.tickets.len().min(self.options.max_batch);
        tickets.extend(queue.tickets.drain(..take));
        take_front(&mut queue.rows, take * self.width, rows);
        self.depth.store(queue.tickets.len(), Ordering::Relaxed);
        true
    }

    /// Wakes a parked dispatcher, unless one was woken already and has not yet looked.
    pub fn wake_dispatcher(&self) {
        let mut queue = self.lock();
        let wake = queue.idle > queue.notified;
        if wake {
            queue.notified += 1;
        }
        drop(queue);
        if wake {
            self.arrived.notify_one();
        }
    }

    /// Admits the taken tickets (drained from `taken`) for a run starting now: one whose deadline
    /// the run (by recent runs) would miss goes to `refused` with its error; the rest go to `kept`,
    /// their rows compacted in `rows`.
    pub fn admit(
        &self,
        taken: &mut Vec<Ticket<T>>,
        kept: &mut Vec<Ticket<T>>,
        rows: &mut Vec<f32>,
        refused: &mut Vec<(T, Error)>,
    ) {
        let expected = self.expected_batch();
        let now = Instant::now();
        let width = self.width;
        for (i, ticket) in taken.drain(..).enumerate() {
            match ticket.deadline {
                Some(deadline) if now + expected > deadline => {
                    let error = self.deadline_error(&ticket, deadline, now, expected);
                    refused.push((ticket.request, error));
                }
                _ => {
                    self.queue_wait.observe_duration(now.saturating_duration_since(ticket.enqueued));
                    let at = kept.len();
                    if at != i {
                        rows.copy_within(i * width..(i + 1) * width, at * width);
                    }
                    kept.push(ticket);
                }
            }
        }
        rows.truncate(kept.len() * width);
    }

    /// Records a batch of `rows` requests that took `elapsed`.
    pub fn note_batch(&self, elapsed: Duration, rows: usize) {
        self.note_run(elapsed);
        self.batch_rows.observe(rows as u64);
    }

    /// Records a run that took `elapsed` in the expected batch time: a slower run moves the
    /// estimate halfway at once (refusing a request early beats answering it after its deadline),
    /// a faster one decays it as an EWMA.
    pub fn note_run(&self, elapsed: Duration) {
        let us = (elapsed.as_micros() as u64).max(1);
        let old = self.recent_batch_us.load(Ordering::Relaxed);
        let new = match old {
            0 => us,
            _ if us > old => (old + us) / 2,
            _ => (old * 7 + us) / 8,
        };
        // Unchanged (steady runs): no store, so inline callers on several cores share the line.
        if new != old {
            self.recent_batch_us.store(new, Ordering::Relaxed);
        }
    }

    /// How long the next batch is expected to take; zero before the first.
    pub fn expected_batch(&self) -> Duration {
        Duration::from_micros(self.recent_batch_us.load(Ordering::Relaxed))
    }

    fn deadline_error(&self, ticket: &Ticket<T>, deadline: Instant, now: Instant, expected: Duration) -> Error {
        Error::DeadlineExceeded {
            what: self.what.clone(),
            detail: format!(
                "queued {:.3} ms; the next batch takes about {:.3} ms and the deadline is {}",
                now.duration_since(ticket.enqueued).as_secs_f64() * 1e3,
                expected.as_secs_f64() * 1e3,
                match deadline.checked_duration_since(now) {
                    Some(left) => format!("{:.3} ms away", left.as_secs_f64() * 1e3),
                    None => "past".into(),
                }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_front_moves_the_first_values_in_order_when_the_deque_wraps() {
        let mut from: VecDeque<f32> = VecDeque::with_capacity(8);
        from.extend([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0]);
        from.drain(..5);
        from.extend([3.0, 4.0, 5.0, 6.0]);
        assert!(!from.as_slices().1.is_empty(), "the test needs a deque in two parts");
        let mut to = vec![9.0];
        take_front(&mut from, 4, &mut to);
        assert_eq!(to, [9.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(from.iter().copied().collect::<Vec<_>>(), [5.0, 6.0]);
        take_front(&mut from, 2, &mut to);
        assert_eq!(to, [9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(from.is_empty());
    }
}
