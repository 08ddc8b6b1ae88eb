//! A thread's hold on one ensemble load and its engine, shared by the asynchronous requests that
//! thread makes ([`Lease`]), and a request's place among the outstanding ones ([`Outstanding`]).
//!
//! Every asynchronous request must keep its load and its engine alive until it is answered, and
//! must be counted as outstanding (the count tells a lone caller to run inline and many callers to
//! share one queue). Done per request on the load's and the engine's own reference counts and on
//! one shared count, that is six read-modify-writes of three cache lines that every core writes:
//! measured (`examples/load.rs`, 64 callers, 2 cores), with a slow round trip between the cores
//! those counts took up to two fifths of what a request costs beyond the same request with a fast
//! one. A lease is counted on those lines once, when the thread's first request for the load
//! makes it; its requests then count on the lease, a line only that thread writes, and on the
//! shared count only by steps (see [`charge`]).

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use super::loaded::LoadedEnsemble;
use super::InferenceEngine;

/// A thread's hold on `ens` (and the engine it belongs to) for its asynchronous requests. Kept
/// weakly by the thread ([`Lease::of`]): it lives while one of its requests does, so a hot swap or
/// a dropped engine is not held up by a thread that stopped calling.
pub(super) struct Lease {
    pub engine: InferenceEngine,
    pub ens: Arc<LoadedEnsemble>,
    /// This lease's requests outstanding now.
    outstanding: AtomicUsize,
}

/// Leases a thread keeps, for as many loads (a new one replaces the longest kept).
const KEPT: usize = 4;

/// A thread's leases: each with the address of its load, to find it without upgrading every one.
#[derive(Default)]
struct Leases {
    kept: [(usize, Weak<Lease>); KEPT],
    next: usize,
}

thread_local! {
    static LEASES: RefCell<Leases> = RefCell::default();
}

impl Lease {
    /// The calling thread's lease on `ens` (of `engine`), made if it has none alive.
    pub fn of(engine: &InferenceEngine, ens: &Arc<LoadedEnsemble>) -> Arc<Lease> {
        let key = Arc::as_ptr(ens) as usize;
        let make =
            || Arc::new(Lease { engine: engine.clone(), ens: Arc::clone(ens), outstanding: AtomicUsize::new(0) });
        // A live lease under the same address holds that load, so the address cannot have been
        // reused: it is `ens`.
        LEASES
            .try_with(|leases| {
                let Ok(mut leases) = leases.try_borrow_mut() else { return make() };
                if let Some(i) = leases.kept.iter().position(|(k, _)| *k == key) {
                    if let Some(lease) = leases.kept[i].1.upgrade() {
                        return lease;
                    }
                    let lease = make();
                    leases.kept[i].1 = Arc::downgrade(&lease);
                    return lease;
                }
                let lease = make();
                let i = leases.next;
                leases.kept[i] = (key, Arc::downgrade(&lease));
                leases.next = (i + 1) % KEPT;
                lease
            })
            // The thread is exiting: no cache, a lease of its own.
            .unwrap_or_else(|_| make())
    }
}

/// What a lease with `n` outstanding requests has added to the load's shared count: `n` up to 2,
/// so that "at most one request outstanding" reads exactly there, then steps of [`STEP`], so that
/// the shared count (read against [`FEW`](super::coalesce::FEW) and the like) stays within a step per
/// thread of the true total while a thread's requests come and go without touching it.
fn charge(n: usize) -> usize {
    n.min(2) + STEP * (n / STEP)
}

/// See [`charge`].
const STEP: usize = 16;

/// An asynchronous request's hold on its lease: counts the request as outstanding on the load's
/// queues from when it is made until it is answered or its future dropped (see
/// [`EnsembleQueue::try_lone`](super::coalesce::EnsembleQueue::try_lone)).
pub(super) struct Outstanding(Arc<Lease>);

impl Outstanding {
    pub fn new(lease: Arc<Lease>) -> Outstanding {
        let before = lease.outstanding.fetch_add(1, Ordering::Relaxed);
        let add = charge(before + 1) - charge(before);
        if add > 0 {
            lease.ens.queues.count_async(add as isize);
        }
        Outstanding(lease)
    }

    pub fn engine(&self) -> &InferenceEngine {
        &self.0.engine
    }
}

impl std::ops::Deref for Outstanding {
    type Target = LoadedEnsemble;

    fn deref(&self) -> &LoadedEnsemble {
        &self.0.ens
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        let after = self.0.outstanding.fetch_sub(1, Ordering::Relaxed) - 1;
        let take = charge(after + 1) - charge(after);
        if take > 0 {
            self.0.ens.queues.count_async(-(take as isize));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_is_exact_up_to_two_requests_and_within_a_step_above() {
        assert_eq!((0..=2).map(charge).collect::<Vec<_>>(), [0, 1, 2]);
        for n in 2..200 {
            assert!(charge(n) >= 2, "{n}");
            assert!(charge(n) <= n + 2 && charge(n) + STEP > n, "{n}: {}", charge(n));
            assert!(charge(n + 1) >= charge(n), "{n}");
        }
    }
}
