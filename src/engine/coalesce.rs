//! Per-ensemble dynamic batching: concurrent single-row requests for one ensemble load coalesce in
//! its queue, and a dispatcher thread runs them as one batch through the whole pipeline — the fused
//! model in one ONNX Runtime call when the ensemble is fused, otherwise each member once per batch —
//! combined and tracked as a batch ([`EngineInner::answer_batch`]). Each caller takes its row of
//! the shared batch and settles it (cache, last good answer, stale below quorum) on its own thread,
//! so that the dispatcher's thread does little besides the batch's run.
//!
//! A synchronous caller of an ensemble that batches runs inline while nothing is queued and fewer
//! than `dispatchers` callers run inline; otherwise it queues and parks. An asynchronous caller runs
//! inline, on the executor's thread, only when it is alone (nothing queued, nobody inline) and the
//! ensemble's runs are quick (under [`QUICK`]): then a hand-off would cost more than the run.
//! Otherwise it queues, so that concurrent asynchronous callers batch. An ensemble without a batching member
//! still has a queue for its asynchronous callers, whose requests then run one by one on as many
//! dispatchers as there are cores.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::member::Member;
use super::EngineInner;
use crate::batching::{Batcher, BatchingOptions, Reply, Ticket};
use crate::error::Result;
use crate::prediction::BatchPrediction;

/// The longest an asynchronous caller's run may take to run inline on its executor's thread (the
/// ensemble's expected run time, [`Batcher::expected_batch`]): tokio's own guidance for work
/// between two awaits is 10 to 100 µs.
pub(super) const QUICK: Duration = Duration::from_micros(50);

/// A queued request's answer: the batch it ran in and its row there.
pub(super) type Answer = Result<(Arc<BatchPrediction>, usize)>;

/// One queued request: where its answer goes.
pub(super) type Request = Arc<Reply<Answer>>;

/// What a queue's dispatchers run a batch through: an ensemble's load (`LoadedEnsemble`, which
/// owns the queue: a trait here, so that this file does not import the load that imports it).
pub(super) trait BatchTarget: Send + Sync {
    /// Runs one batch of admitted tickets (their rows `dense`), credits the members with it and
    /// answers every ticket.
    fn run_batch(&self, inner: &EngineInner, dense: &[f32], tickets: &mut Vec<Ticket<Request>>);
}

/// An ensemble load's queue and what its dispatchers need.
pub(super) struct EnsembleQueue {
    pub batcher: Batcher<Request>,
    /// Some member batches: queued requests run together. Otherwise each runs on its own.
    pub coalesce: bool,
    /// Synchronous callers running inline now.
    inline: AtomicUsize,
    /// Batches running on the dispatchers now.
    running: AtomicUsize,
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

impl EnsembleQueue {
    pub fn new(
        name: &str,
        width: usize,
        members: &[Member],
        engine: Weak<EngineInner>,
        ens: Weak<dyn BatchTarget>,
    ) -> EnsembleQueue {
        let (options, coalesce) = options(members);
        EnsembleQueue {
            batcher: Batcher::new(format!("ensemble {name:?}"), width, options),
            coalesce,
            inline: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            engine,
            ens,
            spawned: OnceLock::new(),
        }
    }

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

    /// An asynchronous caller may run inline when it is alone (nothing queued or running, nobody inline) and
    /// the ensemble's runs are known to be quick.
    pub fn try_lone(&self) -> Option<InlineSlot<'_>> {
        let expected = self.batcher.expected_batch();
        // A running batch means others are calling: queue, so that the next batch takes this too.
        let busy = !self.batcher.is_empty() || self.running.load(Ordering::Relaxed) > 0;
        if expected.is_zero() || expected > QUICK || busy {
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
        self.spawned.get_or_init(|| {
            if spawn_dispatchers(self) == 0 {
                // Nobody would serve the queue: refuse rather than park callers forever.
                self.close();
            }
        });
        let reply = Reply::new();
        if let Err((request, error)) = self.batcher.enqueue(row, Arc::clone(&reply), deadline, started) {
            request.send(Err(error));
        }
        reply
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

/// A dispatcher's loop: take a batch, refuse the requests whose deadline it cannot meet, run the
/// rest. It parks holding only the queue: the engine and the load are upgraded per batch, so a load
/// that is replaced is dropped (and closes its queue) while its dispatchers wait.
fn dispatch(queue: &EnsembleQueue) {
    let (mut taken, mut kept, mut one) = (Vec::new(), Vec::new(), Vec::new());
    let (mut rows, mut refused) = (Vec::new(), Vec::new());
    let width = queue.batcher.width();
    loop {
        taken.clear();
        rows.clear();
        if queue.batcher.next_batch(&mut taken, &mut rows, !queue.coalesce).is_none() {
            return;
        }
        if taken.is_empty() {
            continue;
        }
        let (Some(inner), Some(ens)) = (queue.engine.upgrade(), queue.ens.upgrade()) else {
            for ticket in taken.drain(..) {
                ticket.request.send(Err(queue.batcher.closed_error()));
            }
            return;
        };
        queue.batcher.admit(&mut taken, &mut kept, &mut rows, &mut refused);
        for (request, error) in refused.drain(..) {
            request.send(Err(error));
        }
        if kept.is_empty() {
            continue;
        }
        if queue.coalesce {
            run(queue, &inner, &*ens, &rows, &mut kept);
        } else {
            for (i, ticket) in kept.drain(..).enumerate() {
                one.push(ticket);
                run(queue, &inner, &*ens, &rows[i * width..(i + 1) * width], &mut one);
            }
        }
    }
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
    ens.run_batch(inner, dense, tickets);
    queue.running.fetch_sub(1, Ordering::Relaxed);
}
