//! Engine work repeated at an interval beside the requests (alert rules, the status page's samples):
//! on a blocking thread, never on a worker, for as long as its owner lives.

use std::sync::{Arc, Weak};
use std::time::Duration;

use quorum::InferenceEngine;

/// Runs `work(engine, owner)` every `interval` until `owner` is dropped; a late tick is delayed, not
/// bunched.
pub fn every<T: Send + Sync + 'static>(
    engine: InferenceEngine,
    owner: &Arc<T>,
    interval: Duration,
    work: fn(&InferenceEngine, &T),
) {
    let owner: Weak<T> = Arc::downgrade(owner);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(owner) = owner.upgrade() else { return };
            let engine = engine.clone();
            let _ = tokio::task::spawn_blocking(move || work(&engine, &owner)).await;
        }
    });
}
