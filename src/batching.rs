//! Dynamic batching: concurrent single-row requests for one model coalesce into one ONNX Runtime call.
//!
//! Each loaded model has a queue. A synchronous caller that finds the queue empty and a replica idle
//! runs inline, so batching adds nothing for a lone caller; otherwise it queues its row and parks.
//! Dispatcher threads (one per possible replica) take up to `max_batch` queued rows — waiting up to
//! `max_delay` for the batch to fill when fewer are queued — run them in one call and hand every
//! caller its value. Asynchronous callers always queue: they never run a model on the executor's
//! threads. A request's deadline is checked when its batch is formed: a request that cannot finish
//! in time (by the model's recent batch latency) is refused with [`Error::DeadlineExceeded`] rather
//! than served late.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::telemetry::{Histogram, HistogramSnapshot, ROW_BOUNDS};

/// Per-model batching settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchingOptions {
    /// Most rows one ONNX Runtime call takes (default 256).
    pub max_batch: usize,
    /// How long the oldest queued request may wait for the batch to fill (default 0: a batch is
    /// whatever queued while the replicas were busy, so batching never waits on an idle machine).
    pub max_delay: Duration,
    /// Threads serving the queue, each running one batch at a time on a replica (default 1: one
    /// thread that always takes everything queued makes the biggest batches; measured best for the
    /// example models on 2 cores — raise it for a heavy model on a big machine).
    pub dispatchers: usize,
    /// Most requests waiting in the model's queue (default 65,536): one more is refused at once
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

/// One member's answer to a queued request, with the wall time of the call that produced it.
pub(crate) type MemberResult = (Result<f32>, f64);

/// Where the answers to one request's members arrive; the caller parks (sync) or is woken (async).
pub(crate) struct Completion {
    state: Mutex<CompletionState>,
}

struct CompletionState {
    results: Vec<Option<MemberResult>>,
    remaining: usize,
    waiter: Waiter,
}

enum Waiter {
    None,
    Thread(Thread),
    Task(Waker),
}

impl Completion {
    pub fn new(slots: usize) -> Arc<Completion> {
        Arc::new(Completion {
            state: Mutex::new(CompletionState {
                results: (0..slots).map(|_| None).collect(),
                remaining: 0,
                waiter: Waiter::None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, CompletionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces that slot answers will come from elsewhere (before queueing them).
    pub fn expect(&self, count: usize) {
        self.lock().remaining += count;
    }

    /// Fills a slot directly (an inline run); does not count against `expect`.
    pub fn set(&self, slot: usize, result: MemberResult) {
        self.lock().results[slot] = Some(result);
    }

    fn complete(&self, slot: usize, result: MemberResult) {
        let mut state = self.lock();
        state.results[slot] = Some(result);
        state.remaining -= 1;
        if state.remaining > 0 {
            return;
        }
        let waiter = std::mem::replace(&mut state.waiter, Waiter::None);
        drop(state);
        match waiter {
            Waiter::None => {}
            Waiter::Thread(thread) => thread.unpark(),
            Waiter::Task(waker) => waker.wake(),
        }
    }

    /// Blocks the calling thread until every expected slot is filled, or until `end`: slots still
    /// empty then stay `None` (their answers, arriving later, are dropped).
    pub fn wait_until(&self, end: Instant) -> Vec<Option<MemberResult>> {
        loop {
            let mut state = self.lock();
            let now = Instant::now();
            if state.remaining == 0 || now >= end {
                // Late answers still land in a slot vector of the same length, unread.
                let slots = state.results.len();
                return std::mem::replace(&mut state.results, (0..slots).map(|_| None).collect());
            }
            state.waiter = Waiter::Thread(std::thread::current());
            drop(state);
            std::thread::park_timeout(end - now);
        }
    }

    /// Resolves when every expected slot is filled.
    pub fn wait_async(self: &Arc<Self>) -> CompletionFuture {
        CompletionFuture { completion: Arc::clone(self) }
    }
}

/// The future of [`Completion::wait_async`].
pub(crate) struct CompletionFuture {
    completion: Arc<Completion>,
}

impl Future for CompletionFuture {
    type Output = Vec<Option<MemberResult>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.completion.lock();
        if state.remaining == 0 {
            return Poll::Ready(std::mem::take(&mut state.results));
        }
        match &state.waiter {
            Waiter::Task(w) if w.will_wake(cx.waker()) => {}
            _ => state.waiter = Waiter::Task(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// A model that a dispatcher can run a batch of gathered rows on.
pub(crate) trait BatchModel: Send + Sync + 'static {
    /// Takes a replica (waiting if all are busy), then lets `select` write the rows to run into its
    /// input buffer (row-major, the model's width) and return how many; runs them and writes one
    /// value per row to `out` (at least as long as the rows). Returns the rows run.
    fn run_selected(&self, select: &mut dyn FnMut(&mut Vec<f32>) -> usize, out: &mut [f32]) -> Result<usize>;
}

struct Ticket {
    completion: Arc<Completion>,
    slot: usize,
    deadline: Option<Instant>,
    enqueued: Instant,
}

/// One model's request queue.
pub(crate) struct Batcher {
    model: String,
    width: usize,
    options: BatchingOptions,
    dispatchers: usize,
    queue: Mutex<Queue>,
    arrived: Condvar,
    spawned: OnceLock<()>,
    /// Mean µs of recent batch runs (an EWMA), to refuse requests whose deadline cannot be met.
    recent_batch_us: AtomicU64,
    /// Dispatched calls and the rows they carried: rows / batches is the mean batch size.
    batches: AtomicU64,
    batched_rows: AtomicU64,
    /// Rows per dispatched call, and each run request's wait from its start to its batch.
    batch_rows: Histogram,
    queue_wait: Histogram,
}

struct Queue {
    rows: VecDeque<f32>,
    tickets: VecDeque<Ticket>,
    /// Dispatchers parked for work, and wake-ups sent to them not yet taken.
    idle: usize,
    notified: usize,
    closed: bool,
}

impl Batcher {
    pub fn new(model: &str, width: usize, options: BatchingOptions) -> Batcher {
        Batcher {
            model: model.to_string(),
            width,
            options,
            dispatchers: options.dispatchers.max(1),
            queue: Mutex::new(Queue {
                rows: VecDeque::new(),
                tickets: VecDeque::new(),
                idle: 0,
                notified: 0,
                closed: false,
            }),
            arrived: Condvar::new(),
            spawned: OnceLock::new(),
            recent_batch_us: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batched_rows: AtomicU64::new(0),
            batch_rows: Histogram::new(ROW_BOUNDS),
            queue_wait: Histogram::latency(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_empty(&self) -> bool {
        self.lock().tickets.is_empty()
    }

    pub fn queued(&self) -> usize {
        self.lock().tickets.len()
    }

    /// Rows per dispatched call, and queued requests' waits (their start to their batch's run).
    pub fn histograms(&self) -> (HistogramSnapshot, HistogramSnapshot) {
        (self.batch_rows.snapshot(), self.queue_wait.snapshot())
    }

    /// (calls dispatched, rows they carried) so far.
    pub fn dispatched(&self) -> (u64, u64) {
        (self.batches.load(Ordering::Relaxed), self.batched_rows.load(Ordering::Relaxed))
    }

    /// Queues one gathered row; its answer goes to `completion` slot `slot`, which must have been
    /// told to [`Completion::expect`] it. `enqueued` is when the request began (one clock read per
    /// request, not per member).
    pub fn enqueue<M: BatchModel>(
        self: &Arc<Self>,
        model: &Arc<M>,
        row: &[f32],
        completion: &Arc<Completion>,
        slot: usize,
        deadline: Option<Instant>,
        enqueued: Instant,
    ) {
        self.spawned.get_or_init(|| {
            if spawn_dispatchers(self, &Arc::downgrade(model), self.dispatchers) == 0 {
                // Nobody would serve the queue: refuse rather than park callers forever.
                self.lock().closed = true;
            }
        });
        let mut queue = self.lock();
        if queue.closed {
            drop(queue);
            completion.complete(slot, (Err(self.closed_error()), 0.0));
            return;
        }
        let queued = queue.tickets.len();
        if queued >= self.options.max_queued {
            drop(queue);
            let overloaded = Error::Overloaded { model: self.model.clone(), queued, limit: self.options.max_queued };
            completion.complete(slot, (Err(overloaded), 0.0));
            return;
        }
        queue.rows.extend(row.iter().copied());
        queue.tickets.push_back(Ticket { completion: Arc::clone(completion), slot, deadline, enqueued });
        let wake = queue.idle > queue.notified;
        if wake {
            queue.notified += 1;
        }
        drop(queue);
        if wake {
            self.arrived.notify_one();
        }
    }

    fn closed_error(&self) -> Error {
        Error::MemberUnavailable { model: self.model.clone(), reason: "the model was unloaded".into() }
    }

    /// Stops the dispatchers; queued requests are refused.
    pub fn close(&self) {
        let mut queue = self.lock();
        queue.closed = true;
        let tickets = std::mem::take(&mut queue.tickets);
        queue.rows.clear();
        drop(queue);
        self.arrived.notify_all();
        for t in tickets {
            t.completion.complete(t.slot, (Err(self.closed_error()), 0.0));
        }
    }

    /// Waits for work, then takes up to `max_batch` tickets and their rows. `None` once closed.
    fn next_batch(&self, tickets: &mut Vec<Ticket>, rows: &mut Vec<f32>) -> Option<()> {
        let mut queue = self.lock();
        loop {
            if queue.closed {
                return None;
            }
            if !queue.tickets.is_empty() {
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
        if !self.options.max_delay.is_zero() && queue.tickets.len() < max {
            let until = queue.tickets.front().map(|t| t.enqueued + self.options.max_delay);
            while let Some(left) = until.and_then(|u| u.checked_duration_since(Instant::now())) {
                if queue.tickets.len() >= max || queue.closed {
                    break;
                }
                queue = self.arrived.wait_timeout(queue, left).unwrap_or_else(|p| p.into_inner()).0;
            }
            if queue.tickets.is_empty() {
                return Some(());
            }
        }
        let take = queue.tickets.len().min(max);
        tickets.extend(queue.tickets.drain(..take));
        rows.extend(queue.rows.drain(..take * self.width));
        Some(())
    }

    fn note_batch(&self, elapsed: Duration) {
        let us = elapsed.as_micros() as u64;
        let old = self.recent_batch_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.recent_batch_us.store(new, Ordering::Relaxed);
    }
}

/// Starts `count` dispatchers; returns how many started.
fn spawn_dispatchers<M: BatchModel>(batcher: &Arc<Batcher>, model: &Weak<M>, count: usize) -> usize {
    (0..count)
        .filter(|i| {
            let (batcher, model) = (Arc::clone(batcher), Weak::clone(model));
            std::thread::Builder::new()
                .name(format!("quorum-batch-{i}"))
                .spawn(move || dispatch(&batcher, &model))
                .is_ok()
        })
        .count()
}

/// A dispatcher's loop: take a batch, refuse the requests whose deadline it cannot meet, run the rest.
/// It parks on the queue holding only the queue: the model is upgraded per batch, so a model that is
/// unloaded or replaced is dropped (and closes its queue) while its dispatchers wait.
fn dispatch<M: BatchModel>(batcher: &Batcher, model: &Weak<M>) {
    let (mut tickets, mut rows, mut kept, mut out) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    loop {
        tickets.clear();
        rows.clear();
        if batcher.next_batch(&mut tickets, &mut rows).is_none() {
            return;
        }
        if tickets.is_empty() {
            continue;
        }
        let Some(strong) = model.upgrade() else {
            for t in tickets.drain(..) {
                t.completion.complete(t.slot, (Err(batcher.closed_error()), 0.0));
            }
            return;
        };
        // Requests are admitted only once a replica is in hand: one whose deadline passed while the
        // batch waited for it, or that the next run (by recent runs) would finish late, is refused.
        let expected = Duration::from_micros(batcher.recent_batch_us.load(Ordering::Relaxed));
        let width = batcher.width;
        kept.clear();
        out.clear();
        out.resize(tickets.len(), f32::NAN);
        let mut select = |input: &mut Vec<f32>| {
            let now = Instant::now();
            input.clear();
            for (i, ticket) in tickets.drain(..).enumerate() {
                match ticket.deadline {
                    Some(deadline) if now + expected > deadline => {
                        let error = deadline_error(batcher, &ticket, deadline, now, expected);
                        ticket.completion.complete(ticket.slot, (Err(error), 0.0));
                    }
                    _ => {
                        batcher.queue_wait.observe_duration(now.saturating_duration_since(ticket.enqueued));
                        input.extend_from_slice(&rows[i * width..(i + 1) * width]);
                        kept.push(ticket);
                    }
                }
            }
            kept.len()
        };
        let started = Instant::now();
        let result = strong.run_selected(&mut select, &mut out);
        // `select` never ran (open breaker, injected failure, a failed load): every request gets the error.
        for ticket in tickets.drain(..) {
            let error = match &result {
                Err(e) => share_error(batcher, e),
                Ok(_) => batcher.closed_error(),
            };
            ticket.completion.complete(ticket.slot, (Err(error), 0.0));
        }
        if kept.is_empty() {
            continue;
        }
        let elapsed = started.elapsed();
        batcher.note_batch(elapsed);
        batcher.batches.fetch_add(1, Ordering::Relaxed);
        batcher.batched_rows.fetch_add(kept.len() as u64, Ordering::Relaxed);
        batcher.batch_rows.observe(kept.len() as u64);
        let ms = elapsed.as_secs_f64() * 1e3;
        for (ticket, value) in kept.drain(..).zip(&out) {
            let answer = match &result {
                Ok(_) => Ok(*value),
                Err(e) => Err(share_error(batcher, e)),
            };
            ticket.completion.complete(ticket.slot, (answer, ms));
        }
    }
}

fn deadline_error(batcher: &Batcher, ticket: &Ticket, deadline: Instant, now: Instant, expected: Duration) -> Error {
    Error::DeadlineExceeded {
        what: format!("model {:?}", batcher.model),
        detail: format!(
            "queued {:.3} ms; the next run takes about {:.3} ms and the deadline is {}",
            now.duration_since(ticket.enqueued).as_secs_f64() * 1e3,
            expected.as_secs_f64() * 1e3,
            match deadline.checked_duration_since(now) {
                Some(left) => format!("{:.3} ms away", left.as_secs_f64() * 1e3),
                None => "past".into(),
            }
        ),
    }
}

/// The same failure for every request of a failed batch (errors are not `Clone`: ort's is not),
/// as the model's unavailability with the original message.
fn share_error(batcher: &Batcher, error: &Error) -> Error {
    match error {
        Error::MemberUnavailable { model, reason } => {
            Error::MemberUnavailable { model: model.clone(), reason: reason.clone() }
        }
        other => Error::MemberUnavailable { model: batcher.model.clone(), reason: other.to_string() },
    }
}
