//! Per-ensemble dynamic batching: concurrent single-row requests for one ensemble load coalesce in
//! its queue, and a dispatcher thread runs them as one batch through the whole pipeline — the fused
//! model in one ONNX Runtime call when the ensemble is fused, otherwise each member once per batch —
//! combined and tracked as a batch ([`EngineInner::answer_batch`]). Each caller takes its row of
//! the shared batch and settles it (cache, last good answer, stale below quorum) on its own thread,
//! so that the dispatcher's thread does little besides the batch's run.
//!
//! A synchronous caller of an ensemble that batches runs inline while nothing is queued and fewer
//! than `dispatchers` callers run inline; otherwise it queues and parks. An asynchronous caller runs
//! inline, on the executor's thread, only when it is alone (no other asynchronous request
//! outstanding, nothing queued or running, nobody inline) and the ensemble's runs are quick (by
//! default under [`QUICK`], 200 µs): then a hand-off would cost more than the run. Otherwise it queues, so that
//! concurrent asynchronous callers batch.
//!
//! While the ensemble's runs are quick, queued asynchronous requests are served by their callers
//! rather than the dispatcher (flat combining): the first to find nobody serving the queue takes a
//! [`Claim`], yields once so that the other requests ready on its executor queue their rows, then
//! runs everything queued as one batch on its own thread, and goes on while rows keep coming, for
//! up to [`COMBINE_FOR`]; the rest goes to the dispatcher. Under load the batches then form on the
//! executors' threads with no hand-off and no wake-up of another thread per batch (measured,
//! `examples/load.rs`, 64 callers on 2 cores: 1.2× the dispatcher's throughput, a fifth of its p99).
//! While few requests are outstanding (up to [`FEW`]), an ensemble that coalesces has a queue per
//! core ([`Queues`]): each executor thread's requests queue, batch and are answered on that thread,
//! by a claim that yields between batches (see [`Claim::serve`]), and the dispatchers leave the
//! queues to them. With more outstanding, every request goes to the first queue, where one claim
//! serves batches back to back and the dispatcher helps.
//! An ensemble without a batching member still has a queue for its asynchronous callers: while its
//! runs are quick each request runs inline on its caller's thread, whoever else is calling (there is
//! nothing to batch with, and the hand-off would cost more than the run: 64 callers then reach what
//! two threads calling inline do); a slower one's requests run one by one on as many dispatchers as
//! there are cores.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::member::Member;
use super::EngineInner;
use crate::batching::{Batcher, BatchingOptions, Reply, Ticket};
use crate::error::Result;
use crate::prediction::BatchPrediction;
use crate::telemetry::HistogramSnapshot;

/// The default longest an asynchronous caller's run may take to run on its executor's thread (the
/// ensemble's expected run time, [`Batcher::expected_batch`]; see
/// [`EngineBuilder::with_async_inline_limit`](super::EngineBuilder::with_async_inline_limit))
/// while few requests are outstanding ([`FEW`]); beyond, a [`CROWDED`] share of it. Tokio's own
/// guidance for work between two awaits is 10 to 100 µs; a claim yields between its batches, and
/// the hand-off it saves costs more than the longer hold. Measured (examples/load.rs, 64 callers,
/// 2 cores, the fused ONNX Runtime model, whose batches take 50–100 µs): with 50 µs its batches
/// went to the dispatchers, 0.16M predictions/s, p99 3.6 ms; with 200 µs the callers serve them,
/// 0.56–0.74M/s, p99 0.27–0.57 ms.
pub(super) const QUICK: Duration = Duration::from_micros(200);

/// Beyond [`FEW`] outstanding requests, the async inline limit is divided by this: there one claim
/// serves batches of up to `max_batch` back to back, and the dispatcher helps. Measured
/// (examples/load.rs, 512 callers, 2 cores, the fused ONNX Runtime model, six alternating pairs):
/// 200 µs rather than 50 there lost in five pairs, with a median p99 of 2.2 ms against 1.3.
const CROWDED: u32 = 4;

/// How long an asynchronous caller may go on serving the queue before it hands what is still
/// queued to a dispatcher: bounds the time its executor's thread is held (and its own wait).
/// Measured (examples/load.rs, 64 callers, 2 cores): a hand-off after 4 batches sent more than
/// half of them to the dispatcher's thread, which then competes with the executor's for the cores.
pub(super) const COMBINE_FOR: Duration = Duration::from_micros(500);

/// Up to this many outstanding asynchronous requests, a queue is served by as many claims as there
/// are cores, each yielding between batches, and not by its dispatcher. Beyond it a yield waits
/// behind that many tasks on its executor: measured (examples/load.rs, 2 cores), 10,000 callers
/// lost a quarter of their throughput to it, and 512 had a p99 a quarter to a third higher.
pub(super) const FEW: usize = 256;

/// A queued request's answer: the batch it ran in, its row there, and when the batch was answered
/// (read once per batch: each caller's latency and deadline are measured to it, not to its wake-up).
pub(super) type Answer = Result<(Arc<BatchPrediction>, usize, Instant)>;

/// One queued request: where its answer goes.
pub(super) type Request = Arc<Reply<Answer>>;

/// What a queue's dispatchers run a batch through: an ensemble's load (`LoadedEnsemble`, which
/// owns the queue: a trait here, so that this file does not import the load that imports it).
pub(super) trait BatchTarget: Send + Sync {
    /// Runs one batch of admitted tickets (their rows `dense`), credits the members with it and
    /// answers every ticket.
    /// `queue` is the one it came from (its expected run time is noted there).
    fn run_batch(&self, inner: &EngineInner, queue: &EnsembleQueue, dense: &[f32], tickets: &mut Vec<Ticket<Request>>);
}

/// An ensemble load's queue and what its dispatchers need.
pub(super) struct EnsembleQueue {
    pub batcher: Batcher<Request>,
    /// Some member batches: queued requests run together. Otherwise each runs on its own.
    pub coalesce: bool,
    /// The longest expected run an asynchronous caller runs on its own thread while few requests
    /// are outstanding (default [`QUICK`]; beyond, a [`CROWDED`] share).
    quick: Duration,
    /// Synchronous callers running inline now.
    inline: AtomicUsize,
    /// Batches running now (on the dispatchers or a combining caller).
    running: AtomicUsize,
    /// Asynchronous callers holding a [`Claim`] to serve the queue.
    combining: AtomicUsize,
    /// How many claims may be held at once while few requests are outstanding (its share of the
    /// cores).
    claims: usize,
    /// Claim holders' buffers, kept between claims.
    #[expect(clippy::vec_box, reason = "a claim holds them by pointer: each request's future holds a claim")]
    spare_buffers: Mutex<Vec<Box<Buffers>>>,
    /// Asynchronous requests made and not yet answered, on all of the load's queues (see
    /// [`EnsembleQueue::try_lone`]).
    outstanding: Arc<AtomicUsize>,
    engine: Weak<EngineInner>,
    ens: Weak<dyn BatchTarget>,
    spawned: OnceLock<()>,
}

/// A synchronous caller's claim to run inline; released when dropped.
pub(super) struct InlineSlot<'a>(&'a AtomicUsize);

impl Drop for InlineSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an ensemble load's queues are made from (besides its members' batching options).
pub(super) struct QueueSpec<'a> {
    pub name: &'a str,
    /// Values per row.
    pub width: usize,
    /// As in [`EnsembleQueue::is_quick`].
    pub quick: Duration,
    pub engine: Weak<EngineInner>,
    pub ens: Weak<dyn BatchTarget>,
}

/// An ensemble load's queues: the first takes the synchronous callers; the asynchronous ones
/// queue on their thread's (one per core, up to [`SHARDS`], when the ensemble coalesces). Each
/// has its own lock, rows, claims and dispatcher, so that an executor thread's requests are
/// queued, batched and answered on that thread: measured (examples/load.rs, 64 callers, 2 cores),
/// when the cores' round trip of a cache line went from 55 to 330 ns (the host moved them apart),
/// one shared queue lost 45% of its throughput. Outstanding requests are counted across them.
pub(super) struct Queues {
    shards: Box<[Arc<EnsembleQueue>]>,
}

/// The most queues an ensemble load has for its asynchronous callers (each with its own
/// dispatcher threads, started when first used).
pub(super) const SHARDS: usize = 8;

impl Queues {
    /// The queues of a load of `members`, on this machine's cores.
    pub fn new(spec: QueueSpec<'_>, members: &[Member]) -> Queues {
        let (options, coalesce) = options(members);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Queues::with(spec, (options, coalesce), cores)
    }

    /// The queues of a load that batches with `options` (and coalesces its requests, or not) on
    /// `cores` cores.
    fn with(spec: QueueSpec<'_>, (options, coalesce): (BatchingOptions, bool), cores: usize) -> Queues {
        // A queue that does not coalesce runs requests one by one on as many dispatchers as
        // there are cores: one is enough.
        let shards = if coalesce { cores.clamp(1, SHARDS) } else { 1 };
        let outstanding = Arc::new(AtomicUsize::new(0));
        let shards = (0..shards)
            .map(|_| {
                Arc::new(EnsembleQueue {
                    batcher: Batcher::new(format!("ensemble {:?}", spec.name), spec.width, options),
                    coalesce,
                    quick: spec.quick,
                    inline: AtomicUsize::new(0),
                    running: AtomicUsize::new(0),
                    combining: AtomicUsize::new(0),
                    claims: cores.div_ceil(shards),
                    spare_buffers: Mutex::new(Vec::new()),
                    outstanding: Arc::clone(&outstanding),
                    engine: spec.engine.clone(),
                    ens: spec.ens.clone(),
                    spawned: OnceLock::new(),
                })
            })
            .collect();
        Queues { shards }
    }

    /// The synchronous callers' queue.
    pub fn main(&self) -> &Arc<EnsembleQueue> {
        &self.shards[0]
    }

    /// The calling thread's queue, for an asynchronous request; the first while more than
    /// [`FEW`] are outstanding. Then each queue would have a dispatcher helping its claim, more
    /// threads than cores: measured (examples/load.rs, 2 cores), 10,000 callers had a p99 of
    /// 124 to 195 ms against 19 to 22 with one queue.
    #[inline]
    pub fn here(&self) -> &Arc<EnsembleQueue> {
        if self.shards.len() == 1 || !self.main().few() {
            return self.main();
        }
        // Threads are numbered as they first queue: an executor's threads take consecutive numbers.
        static THREADS: AtomicUsize = AtomicUsize::new(0);
        thread_local!(static THREAD: usize = THREADS.fetch_add(1, Ordering::Relaxed));
        &self.shards[THREAD.with(|t| *t) % self.shards.len()]
    }

    /// Counts asynchronous requests as outstanding (`delta` > 0) or no longer (< 0): each counts
    /// from when it is made (its future created) until it is answered or its future dropped, on its
    /// thread's lease first (see [`Outstanding`](super::lease::Outstanding)).
    pub fn count_async(&self, delta: isize) {
        if delta >= 0 {
            self.main().outstanding.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            self.main().outstanding.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Requests queued now, on all of them.
    pub fn queued(&self) -> usize {
        self.shards.iter().map(|q| q.batcher.queued()).sum()
    }

    /// Rows per batch and queue waits, on all of them.
    pub fn histograms(&self) -> (HistogramSnapshot, HistogramSnapshot) {
        let (mut rows, mut waits) = self.main().batcher.histograms();
        for queue in &self.shards[1..] {
            let (r, w) = queue.batcher.histograms();
            rows.add(&r);
            waits.add(&w);
        }
        (rows, waits)
    }

    /// Stops the dispatchers and refuses what is queued.
    pub fn close(&self) {
        for queue in &*self.shards {
            queue.close();
        }
    }
}

impl EnsembleQueue {
    /// A synchronous caller may run inline when nothing is queued and fewer callers than there
    /// are dispatchers run inline: two relaxed atomics, no lock.
    pub fn try_inline(&self) -> Option<InlineSlot<'_>> {
        if !self.batcher.is_empty() {
            return None;
        }
        let limit = self.batcher.options().dispatchers.max(1);
        if self.inline.fetch_add(1, Ordering::Relaxed) < limit {
            Some(InlineSlot(&self.inline))
        } else {
            self.inline.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }

    /// An asynchronous caller may run inline when it is alone (no other asynchronous request
    /// outstanding, nothing queued or running, nobody inline) and the ensemble's runs are known
    /// to be quick. Outstanding requests, not the queue, tell whether it is alone: callers just
    /// answered by a batch, or whose futures are made and not yet polled, find the queue empty,
    /// but they are outstanding, and they should queue together rather than run one by one.
    pub fn try_lone(&self) -> Option<InlineSlot<'_>> {
        let expected = self.batcher.expected_batch();
        if !self.coalesce && self.is_quick(expected) {
            // Nothing to batch with: a quick run costs less on the caller's thread than a
            // hand-off, however many others are calling (as synchronous callers run inline).
            self.inline.fetch_add(1, Ordering::Relaxed);
            return Some(InlineSlot(&self.inline));
        }
        let busy = self.outstanding.load(Ordering::Relaxed) > 1
            || !self.batcher.is_empty()
            || self.running.load(Ordering::Relaxed) > 0;
        if !self.is_quick(expected) || busy {
            return None;
        }
        if self.inline.fetch_add(1, Ordering::Relaxed) == 0 {
            Some(InlineSlot(&self.inline))
        } else {
            self.inline.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }

    /// Queues one dense row (schema order); the reply resolves with its batch, or at once with the
    /// error of a full or closed queue.
    pub fn submit(self: &Arc<Self>, row: &[f32], deadline: Option<Instant>, started: Instant) -> Request {
        self.push(row, Ticket { request: Reply::new(), deadline, enqueued: started }, true).0
    }

    /// Queues `ticket`'s row (see [`Batcher::enqueue`]); its reply, and whether it was queued
    /// (otherwise it is answered with the refusal already).
    fn push(self: &Arc<Self>, row: &[f32], ticket: Ticket<Request>, wake: bool) -> (Request, bool) {
        self.spawn_once();
        let reply = Arc::clone(&ticket.request);
        match self.batcher.enqueue(row, ticket, wake) {
            Ok(()) => (reply, true),
            Err((request, error)) => {
                request.send(Err(error));
                (reply, false)
            }
        }
    }

    /// An asynchronous caller's [`EnsembleQueue::submit`]: while the ensemble's batches are quick
    /// and it coalesces without a `max_delay`, the row is queued without waking the dispatcher, and the first caller to
    /// find nobody serving the queue gets the [`Claim`] to serve it: it yields once (so that the
    /// other callers ready on its executor queue their rows first) and then runs what is queued,
    /// its own row included, on its own thread.
    pub fn submit_async(
        self: &Arc<Self>,
        row: &[f32],
        deadline: Option<Instant>,
        started: Instant,
    ) -> (Request, Option<Claim<'_>>) {
        let expected = self.batcher.expected_batch();
        // A batch held open for `max_delay` is the dispatcher's to hold: a caller never waits.
        let held_open = !self.batcher.options().max_delay.is_zero();
        if !self.coalesce || held_open || !self.is_quick(expected) {
            return (self.submit(row, deadline, started), None);
        }
        let (reply, queued) = self.push(row, Ticket { request: Reply::new(), deadline, enqueued: started }, false);
        if !queued {
            return (reply, None);
        }
        // Pairs with the fence after a claim is let go: either the holder sees this row, or this
        // caller sees the claim free.
        fence(Ordering::SeqCst);
        let claim = self.try_claim().then(|| Claim { queue: self, live: true, until: None, buffers: None });
        (reply, claim)
    }

    /// Whether runs expected to take `expected` may run on an asynchronous caller's thread (not
    /// before the first run is measured; beyond [`FEW`] outstanding requests, a [`CROWDED`] share of
    /// the limit).
    fn is_quick(&self, expected: Duration) -> bool {
        // The shared count is read only when the run is between the two limits.
        !expected.is_zero() && (expected <= self.quick / CROWDED || (expected <= self.quick && self.few()))
    }

    fn take_buffers(&self) -> Box<Buffers> {
        self.spare_buffers.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default()
    }

    /// Keeps a claim's buffers for the next (as many as claims may be held at once). Tickets
    /// still in them (a batch that unwound) are answered with an error, not served again.
    fn put_buffers(&self, mut buffers: Box<Buffers>) {
        let Buffers { taken, kept, one, rows, refused } = &mut *buffers;
        for ticket in taken.drain(..).chain(kept.drain(..)).chain(one.drain(..)) {
            ticket.request.send(Err(crate::error::Error::Internal("a queued batch did not finish".into())));
        }
        for (request, error) in refused.drain(..) {
            request.send(Err(error));
        }
        rows.clear();
        let mut spare = self.spare_buffers.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < self.claims {
            spare.push(buffers);
        }
    }

    /// Whether few asynchronous requests are outstanding (see [`FEW`]).
    fn few(&self) -> bool {
        self.outstanding.load(Ordering::Relaxed) <= FEW
    }

    fn try_claim(&self) -> bool {
        let limit = if self.few() { self.claims } else { 1 };
        self.combining.fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| (n < limit).then_some(n + 1)).is_ok()
    }

    /// Whether claim holders serve the queue and the dispatcher should leave it to them: while
    /// few requests are outstanding (it would be a third thread competing for the cores).
    fn served_by_claims(&self) -> bool {
        self.few() && self.combining.load(Ordering::SeqCst) > 0
    }

    /// Lets go of one claim; true when the queue is not empty then (somebody must serve it).
    fn release(&self) -> bool {
        self.combining.fetch_sub(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        !self.batcher.is_empty()
    }

    fn spawn_once(self: &Arc<Self>) {
        self.spawned.get_or_init(|| {
            if spawn_dispatchers(self) == 0 {
                // Nobody would serve the queue: refuse rather than park callers forever.
                self.close();
            }
        });
    }

    /// Stops the dispatchers and refuses what is queued.
    pub fn close(&self) {
        for request in self.batcher.close() {
            request.send(Err(self.batcher.closed_error()));
        }
    }
}

/// The queue's settings from the members': the tightest of those that batch (see
/// [`BatchingOptions`]), or, when none does, one request per run on one dispatcher per core.
fn options(members: &[Member]) -> (BatchingOptions, bool) {
    let mut batching = members.iter().filter_map(|m| m.model.batching);
    let Some(first) = batching.next() else {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (BatchingOptions { dispatchers: cores, ..BatchingOptions::default() }, false);
    };
    let tightest = batching.fold(first, |a, b| BatchingOptions {
        max_batch: a.max_batch.min(b.max_batch),
        max_delay: a.max_delay.max(b.max_delay),
        dispatchers: a.dispatchers.max(b.dispatchers),
        max_queued: a.max_queued.min(b.max_queued),
    });
    (tightest, true)
}

/// Starts the queue's dispatchers; returns how many started.
fn spawn_dispatchers(queue: &Arc<EnsembleQueue>) -> usize {
    (0..queue.batcher.options().dispatchers.max(1))
        .filter(|_| {
            let queue = Arc::clone(queue);
            std::thread::Builder::new().name("quorum-batch".into()).spawn(move || dispatch(&queue)).is_ok()
        })
        .count()
}

/// An asynchronous caller's duty to serve its ensemble's queue (see
/// [`EnsembleQueue::submit_async`]). Dropped while it holds the queue (the caller's future was
/// cancelled before it served or while it yields, or a batch unwound), it hands what is queued to
/// a dispatcher.
pub(super) struct Claim<'a> {
    queue: &'a EnsembleQueue,
    live: bool,
    /// When it stops serving (set by its first [`Claim::serve`]).
    until: Option<Instant>,
    /// The queue's buffers while it serves (returned when dropped): no allocation per claim.
    buffers: Option<Box<Buffers>>,
}

impl Claim<'_> {
    /// Serves the queue for up to [`COMBINE_FOR`], batch after batch, while rows keep arriving
    /// and no one else claims it; then leaves what is left to a dispatcher. Whoever queued a row
    /// while the claim was held relies on this: the queue is looked at again after letting go.
    ///
    /// True asks the caller to yield once and call again, still holding the claim: while few
    /// requests are outstanding it yields between batches, so that the callers its batch answered
    /// (woken onto this executor's thread) and the others ready there queue their next rows for the
    /// next batch, while a second claim serves from the other cores. Back to back, one thread
    /// serves while its own callers cannot queue (measured, examples/load.rs, 64 callers on 2
    /// cores, 12 alternating pairs of runs: median 1.30M predictions/s against 1.03M, 9 ahead).
    /// A plain function the caller loops on rather than a future of its own: each request's
    /// future holds the claim, and a nested future would hold its state as well.
    pub fn serve(&mut self, inner: &EngineInner, target: &dyn BatchTarget) -> bool {
        let queue = self.queue;
        let until = *self.until.get_or_insert_with(|| Instant::now() + COMBINE_FOR);
        let buffers = self.buffers.get_or_insert_with(|| queue.take_buffers());
        loop {
            let mut expired = false;
            while !expired && queue.batcher.take_now(&mut buffers.taken, &mut buffers.rows) {
                serve(queue, inner, target, buffers);
                expired = Instant::now() >= until;
                if !expired && queue.few() {
                    return true;
                }
            }
            self.live = false;
            if !queue.release() {
                return false;
            }
            if expired {
                queue.batcher.wake_dispatcher();
                return false;
            }
            if !queue.try_claim() {
                return false;
            }
            self.live = true;
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(buffers) = self.buffers.take() {
            self.queue.put_buffers(buffers);
        }
        if self.live && self.queue.release() {
            self.queue.batcher.wake_dispatcher();
        }
    }
}

/// A future that is pending once, waking itself: the task goes to the back of its executor's run
/// queue, behind the tasks already ready.
pub(super) struct YieldOnce(pub bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// What serving a batch needs besides the queue, kept across batches.
#[derive(Default)]
struct Buffers {
    taken: Vec<Ticket<Request>>,
    kept: Vec<Ticket<Request>>,
    one: Vec<Ticket<Request>>,
    rows: Vec<f32>,
    refused: Vec<(Request, crate::error::Error)>,
}

/// A dispatcher's loop: take a batch, serve it. It parks holding only the queue: the engine and
/// the load are upgraded per batch, so a load that is replaced is dropped (and closes its queue)
/// while its dispatchers wait.
fn dispatch(queue: &EnsembleQueue) {
    let mut buffers = Buffers::default();
    loop {
        buffers.taken.clear();
        buffers.rows.clear();
        let served_elsewhere = || queue.served_by_claims();
        if queue.batcher.next_batch(&mut buffers.taken, &mut buffers.rows, !queue.coalesce, &served_elsewhere).is_none()
        {
            return;
        }
        if buffers.taken.is_empty() {
            continue;
        }
        let (Some(inner), Some(ens)) = (queue.engine.upgrade(), queue.ens.upgrade()) else {
            for ticket in buffers.taken.drain(..) {
                ticket.request.send(Err(queue.batcher.closed_error()));
            }
            return;
        };
        serve(queue, &inner, &*ens, &mut buffers);
    }
}

/// Serves the taken tickets (their rows in `buffers.rows`): refuses those whose deadline the run
/// would miss and runs the rest, as one batch or (a queue that does not coalesce) one by one.
/// Leaves the buffers empty.
fn serve(queue: &EnsembleQueue, inner: &EngineInner, target: &dyn BatchTarget, buffers: &mut Buffers) {
    let Buffers { taken, kept, one, rows, refused } = buffers;
    queue.batcher.admit(taken, kept, rows, refused);
    for (request, error) in refused.drain(..) {
        request.send(Err(error));
    }
    if queue.coalesce {
        if !kept.is_empty() {
            run(queue, inner, target, rows, kept);
        }
    } else {
        let width = queue.batcher.width();
        for (i, ticket) in kept.drain(..).enumerate() {
            one.push(ticket);
            run(queue, inner, target, &rows[i * width..(i + 1) * width], one);
        }
    }
    rows.clear();
}

/// Runs one batch through the load, counted as running while it does.
fn run(
    queue: &EnsembleQueue,
    inner: &EngineInner,
    ens: &dyn BatchTarget,
    dense: &[f32],
    tickets: &mut Vec<Ticket<Request>>,
) {
    queue.running.fetch_add(1, Ordering::Relaxed);
    ens.run_batch(inner, queue, dense, tickets);
    queue.running.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A load nobody runs: these tests queue nothing.
    struct Nothing;

    impl BatchTarget for Nothing {
        fn run_batch(&self, _: &EngineInner, _: &EnsembleQueue, _: &[f32], _: &mut Vec<Ticket<Request>>) {}
    }

    fn queues(coalesce: bool, cores: usize) -> Queues {
        let ens: Weak<dyn BatchTarget> = Weak::<Nothing>::new();
        let spec = QueueSpec { name: "market", width: 3, quick: QUICK, engine: Weak::new(), ens };
        Queues::with(spec, (BatchingOptions::default(), coalesce), cores)
    }

    /// The index of the queue the calling thread's asynchronous requests go to.
    fn index_here(queues: &Queues) -> usize {
        queues.shards.iter().position(|q| Arc::ptr_eq(q, queues.here())).unwrap()
    }

    #[test]
    fn a_coalescing_load_has_a_queue_per_core_up_to_the_cap_and_one_otherwise() {
        assert_eq!(queues(true, 2).shards.len(), 2);
        assert_eq!(queues(true, 64).shards.len(), SHARDS);
        assert_eq!(queues(false, 64).shards.len(), 1);
        // The claims a queue allows cover the cores: one each on two cores, two each on sixteen.
        assert_eq!(queues(true, 2).main().claims, 1);
        assert_eq!(queues(true, 16).main().claims, 2);
        assert_eq!(queues(false, 16).main().claims, 16);
    }

    #[test]
    fn each_thread_keeps_its_queue_and_threads_spread_over_all_of_them() {
        let queues = queues(true, 2);
        let used: Vec<usize> = std::thread::scope(|s| {
            (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let first = index_here(&queues);
                        assert_eq!(index_here(&queues), first, "a thread moved to another queue");
                        first
                    })
                    .join()
                    .unwrap()
                })
                .collect()
        });
        // Threads are numbered as they first ask: eight in a row cover both queues even if other
        // tests' threads take numbers in between (unless they take every other one, 7 times over).
        assert!(used.contains(&0) && used.contains(&1), "{used:?}");
    }

    #[test]
    fn beyond_few_outstanding_requests_every_thread_queues_on_the_first_queue() {
        let queues = queues(true, 2);
        queues.count_async(FEW as isize + 1);
        let used: Vec<usize> =
            std::thread::scope(|s| (0..4).map(|_| s.spawn(|| index_here(&queues)).join().unwrap()).collect());
        assert_eq!(used, [0; 4]);
        queues.count_async(-(FEW as isize + 1));
        assert_eq!(queues.main().outstanding.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn runs_up_to_the_limit_are_quick_while_few_are_outstanding_and_up_to_a_share_of_it_beyond() {
        let queues = queues(true, 2);
        let queue = queues.main();
        let (share, between) = (QUICK / CROWDED, QUICK / CROWDED + Duration::from_micros(1));
        assert!(!queue.is_quick(Duration::ZERO), "nothing measured yet");
        assert!(queue.is_quick(share) && queue.is_quick(between) && queue.is_quick(QUICK));
        assert!(!queue.is_quick(QUICK + Duration::from_micros(1)));
        queues.count_async(FEW as isize + 1);
        assert!(queue.is_quick(share));
        assert!(!queue.is_quick(between) && !queue.is_quick(QUICK));
        queues.count_async(-(FEW as isize + 1));
        assert!(queue.is_quick(between));
    }
}
