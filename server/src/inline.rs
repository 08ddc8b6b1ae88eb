//! Where the engine's work runs. A prediction takes microseconds, so handing it to another thread
//! would cost more than it does: it runs on the server's worker thread. But a slow ensemble (a large
//! model, a batch, a member timing out) would hold that worker and every connection queued behind it,
//! so work that has been slow on this thread runs in `block_in_place`, which moves the worker's other
//! tasks to another thread first. Each worker keeps its own recent timings (a thread-local map: no
//! lock, nothing shared per request).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

/// Work slower than this (recent average on this thread) leaves the worker free for others.
const INLINE_LIMIT_US: f64 = 300.0;

thread_local! {
    static RECENT_US: RefCell<HashMap<String, f64>> = RefCell::new(HashMap::new());
}

/// Runs `work` (engine work for `key`, e.g. an ensemble and a route) inline when it has been quick on
/// this thread, else in `block_in_place`. Unknown work counts as slow until measured.
pub fn run<T>(key: &str, work: impl FnOnce() -> T) -> T {
    let recent = RECENT_US.with(|r| r.borrow().get(key).copied());
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let started = Instant::now();
    let result = match recent {
        Some(us) if us < INLINE_LIMIT_US || !multi_thread => work(),
        _ if multi_thread => tokio::task::block_in_place(work),
        _ => work(),
    };
    let sample = started.elapsed().as_secs_f64() * 1e6;
    RECENT_US.with(|r| {
        let mut r = r.borrow_mut();
        match r.get_mut(key) {
            // A slow call counts at once; fast ones bring the average down gradually.
            Some(us) if sample > INLINE_LIMIT_US => *us = sample,
            Some(us) => *us = 0.8 * *us + 0.2 * sample,
            None => {
                r.insert(key.to_string(), sample);
            }
        }
    });
    result
}
