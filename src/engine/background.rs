//! Work kept off the request path: stacking/blending refits and state flushes on one thread;
//! autoscaling, the memory budget and unloading on another (only when some pool can scale or a budget
//! is set). Both hold the engine weakly and stop when it is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::load::weights_row;
use super::member::LoadedModel;
use super::{AutoscaleSettings, EngineInner};
use crate::adaptive::Learning;
use crate::error::Result;
use crate::replicas::{self, ScaleDecision};

/// Work kept off the prediction and outcome paths: meta-learner refits and state flushes.
#[derive(Default)]
pub(super) struct Background {
    state: Mutex<BackgroundState>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct BackgroundState {
    refits: Vec<Arc<Learning>>,
    closed: bool,
}

impl Background {
    fn lock(&self) -> MutexGuard<'_, BackgroundState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn submit(&self, learning: Arc<Learning>) {
        let mut state = self.lock();
        if !state.refits.iter().any(|l| Arc::ptr_eq(l, &learning)) {
            state.refits.push(learning);
        }
        drop(state);
        self.wake.notify_one();
    }

    fn close(&self) -> Vec<Arc<Learning>> {
        let mut state = self.lock();
        state.closed = true;
        let pending = std::mem::take(&mut state.refits);
        drop(state);
        self.wake.notify_one();
        pending
    }
}

/// Autoscaling, the memory budget and dropping models no ensemble uses any more, every `interval`,
/// until the engine is dropped.
pub(super) fn spawn_housekeeping(engine: Weak<EngineInner>, settings: AutoscaleSettings) {
    let spawned = std::thread::Builder::new().name("quorum-replicas".into()).spawn(move || {
        let mut quiet_since: HashMap<(String, u32), Instant> = HashMap::new();
        loop {
            std::thread::sleep(settings.interval);
            let Some(inner) = engine.upgrade() else { break };
            inner.housekeep(&mut quiet_since, settings.quiet_for);
        }
    });
    // Without the thread pools keep their size and nothing is unloaded; predictions still work.
    drop(spawned);
}

/// Runs refits as they are submitted and flushes state every `flush_interval`, until the engine is
/// dropped (the thread holds only a weak reference to it).
pub(super) fn spawn_background(
    engine: Weak<EngineInner>,
    background: Arc<Background>,
    flush_interval: Option<Duration>,
) {
    let spawned = std::thread::Builder::new().name("quorum-background".into()).spawn(move || {
        let mut last_flush = Instant::now();
        loop {
            let refits = {
                let mut state = background.lock();
                if state.refits.is_empty() && !state.closed {
                    // Without flushes there is nothing to time: sleep until a refit or close wakes it
                    // (a zero timeout here once made the thread spin on a core).
                    state = match flush_interval {
                        Some(tick) => {
                            let wait = tick.saturating_sub(last_flush.elapsed());
                            background.wake.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0
                        }
                        None => background.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
                    };
                }
                if state.closed {
                    break;
                }
                std::mem::take(&mut state.refits)
            };
            for learning in refits {
                learning.refit();
            }
            if flush_interval.is_some_and(|tick| last_flush.elapsed() >= tick) {
                last_flush = Instant::now();
                let Some(inner) = engine.upgrade() else { break };
                // A failed flush is retried at the next tick; the changes stay marked.
                if inner.flush().is_err() {
                    inner.flush_errors.inc();
                }
            }
        }
    });
    // Without the thread, refits still run at drop time and state is written on drop and by `flush`.
    drop(spawned);
}

impl EngineInner {
    pub(super) fn flush(&self) -> Result<()> {
        let (Some((store, options)), Some(tracker)) = (&self.state, &self.tracker) else { return Ok(()) };
        let history = {
            let mut last = self.last_history.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.elapsed() >= options.history_interval;
            if due {
                *last = Instant::now();
            }
            due
        };
        let (keys, mut flush) = tracker.take_changes(history);
        let mut flushed = Vec::new();
        for key in &keys {
            if let Some((epoch, row)) = weights_row(key, false) {
                flushed.push((Arc::clone(&key.learning), epoch));
                flush.weights.push(row);
            }
        }
        if let Err(e) = store.write(&flush) {
            // Keep the changes pending: the next flush writes them.
            tracker.mark_dirty(&keys);
            return Err(e);
        }
        for (learning, epoch) in flushed {
            learning.mark_flushed(epoch);
        }
        self.persist_experiments()
    }
}

impl EngineInner {
    fn housekeep(&self, quiet_since: &mut HashMap<(String, u32), Instant>, quiet_for: Duration) {
        let models = self.lock_models().live();
        quiet_since.retain(|key, _| models.iter().any(|m| m.meta.name == key.0 && m.meta.version == key.1));
        for model in models.iter().filter(|m| m.pool.scales()) {
            let (peak_waiting, p95) = model.pool.take_load();
            let now = Instant::now();
            let since = quiet_since.entry((model.meta.name.clone(), model.meta.version)).or_insert(now);
            match replicas::decide(peak_waiting, p95, model.pool.latency_target, *since, quiet_for) {
                ScaleDecision::Grow => {
                    *since = now;
                    let within_budget = self.memory_budget.is_none_or(|budget| {
                        models.iter().map(|m| m.pool.estimated_bytes()).sum::<u64>() + model.meta.size_bytes <= budget
                    });
                    if within_budget {
                        // A failed build leaves the pool as it was; the next tick tries again.
                        let _ = model.pool.grow();
                    }
                }
                ScaleDecision::Shrink => {
                    if model.pool.shrink() {
                        *since = now;
                    }
                }
                ScaleDecision::Hold => {}
            }
        }
        if let Some(budget) = self.memory_budget {
            enforce_budget(&models, budget);
        }
    }
}

/// Unloads idle models, least recently used first, until the estimate fits `budget`.
fn enforce_budget(models: &[Arc<LoadedModel>], budget: u64) {
    let mut total: u64 = models.iter().map(|m| m.pool.estimated_bytes()).sum();
    if total <= budget {
        return;
    }
    let mut by_age: Vec<(Instant, &Arc<LoadedModel>)> =
        models.iter().filter(|m| m.pool.estimated_bytes() > 0).map(|m| (m.pool.last_used(), m)).collect();
    by_age.sort_by_key(|(used, _)| *used);
    for (_, model) in by_age {
        if total <= budget {
            break;
        }
        let held = model.pool.estimated_bytes();
        if model.pool.unload() > 0 {
            total -= held;
        }
    }
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        for learning in self.background.close() {
            learning.refit();
        }
        let _ = self.flush();
    }
}
