//! [`LoadedEnsemble`]: one version of an ensemble resolved against the registry with its models
//! loaded — what every prediction runs on — and its last good answers.

use std::sync::Arc;

use super::coalesce::{BatchTarget, EnsembleQueue, Queues, Request};
use super::counters::EnsembleTelemetry;
use super::member::Member;
use super::EngineInner;
use crate::batching::Ticket;
use crate::ensemble::EnsembleConfig;
use crate::features::Schema;
use crate::fusion::FusedSessions;
use crate::prediction::{Name, Prediction};
use crate::registry::Task;
use crate::state::inference_log::LogContext;
use crate::tracking::EnsembleKey;

/// An ensemble resolved against the registry, with its models loaded.
pub(super) struct LoadedEnsemble {
    /// Unique per load: pins the ensemble version and its members' versions in cache keys.
    pub id: u64,
    /// The ensemble's name, as its predictions report it.
    pub name: Name,
    pub config: EnsembleConfig,
    pub key: EnsembleKey,
    pub task: Task,
    pub schema: Schema,
    pub members: Vec<Member>,
    /// Some member batches: synchronous single rows go through the queue under contention.
    pub batched: bool,
    /// Queued requests (asynchronous ones, and synchronous ones under contention when batched).
    pub queues: Queues,
    /// The last good prediction per feature row, when the ensemble serves stale answers below quorum.
    pub last_good: Option<Arc<LastGood>>,
    /// The members that run on ONNX Runtime as one fused model, or why they are not.
    pub fused: std::result::Result<Fused, String>,
    /// A hash of the schema's feature names (see [`EnsembleHandle::schema_id`]).
    pub schema_id: u64,
    /// The ensemble's counters: every load of the same name shares them.
    pub telemetry: Arc<EnsembleTelemetry>,
    /// What this load's inference log records share.
    pub log_context: Arc<LogContext>,
}

impl BatchTarget for LoadedEnsemble {
    fn run_batch(&self, inner: &EngineInner, queue: &EnsembleQueue, dense: &[f32], tickets: &mut Vec<Ticket<Request>>) {
        let rows = tickets.len();
        // Credited before the answers go out, so that a caller who has its answer sees its batch.
        for member in &self.members {
            member.model.batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            member.model.batched_rows.fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
        }
        inner.answer_batch(self, queue, dense, tickets);
    }
}

impl Drop for LoadedEnsemble {
    fn drop(&mut self) {
        // Nobody can be waiting (a queued caller holds the load): this stops the dispatchers.
        self.queues.close();
    }
}

/// The fused model and which members it holds (members on native plans stay out of it).
pub(super) struct Fused {
    pub sessions: FusedSessions,
    /// `included[i]`: member `i` answers in the fused call.
    pub included: Vec<bool>,
    /// The members it holds, in its output order.
    pub which: Vec<usize>,
    /// Members on ONNX Runtime that run on their own sessions instead, with the reason.
    pub left_out: Vec<(String, String)>,
    /// The opsets the fused members were lifted to.
    pub opsets: crate::onnx::lift::Opsets,
}

/// Last good predictions keyed by the exact bits of the dense feature row.
pub(super) type LastGood = quick_cache::sync::Cache<Box<[u32]>, Arc<Prediction>>;
