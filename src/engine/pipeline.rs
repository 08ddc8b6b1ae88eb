//! One request's way through the engine, once its features are dense rows in schema order:
//! cache lookup → (queued to the ensemble's dispatcher under contention, to run in a batch with
//! others) → members (fused in one call, or one by one) → fallbacks for members that failed →
//! quorum check and combination → tracking → settle (cache and last good answer stored, or the last
//! good answer served stale below quorum). Every stage takes the request's [`Call`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::coalesce::{Answer, EnsembleQueue, InlineSlot, Request, YieldOnce};
use super::counters::Path;
use super::fused::{run_fused, FusedOutcome};
use super::lease::{Lease, Outstanding};
use super::loaded::LoadedEnsemble;
use super::member::{LoadedModel, Rows};
use super::EngineInner;
use crate::adaptive::{Published, RegimeWeights};
use crate::batching::Ticket;
use crate::cache::CacheKey;
use crate::error::{Error, Result};
use crate::prediction::{BatchPrediction, MemberRun, Prediction};
use crate::regime::Regime;
use crate::state::inference_log::InferenceRecord;
use crate::strategy::{MajorityVote, SoftVote, Stacking, Strategy, StrategyKind};
use crate::tracking::Logged;

/// One request as every stage of the pipeline sees it.
pub(super) struct Call<'a> {
    pub ens: &'a LoadedEnsemble,
    /// `rows × width` values in the ensemble's schema order.
    pub dense: &'a [f32],
    pub rows: usize,
    pub started: Instant,
    pub deadline: Option<Instant>,
}

impl Call<'_> {
    fn width(&self) -> usize {
        self.ens.schema.names().len()
    }

    /// When the members' latency budget ends for this call: the ensemble's budget per row, so a
    /// large batch is not cut off for being large, only a member that is slow for its size.
    fn budget_end(&self) -> Instant {
        let rows = u32::try_from(self.rows.max(1)).unwrap_or(u32::MAX);
        let budget = self.ens.config.latency_budget().saturating_mul(rows);
        // Past what an Instant can hold is never.
        self.started.checked_add(budget).unwrap_or(self.started + Duration::from_secs(86_400 * 365))
    }

    /// Why a member did not run: the budget was spent before its turn.
    fn budget_spent(&self) -> String {
        format!(
            "skipped: the ensemble's latency budget ({} ms) was spent before its turn",
            self.ens.config.latency_budget().as_secs_f64() * 1e3
        )
    }

    /// Refuses the request once its deadline has passed.
    fn check_deadline(&self) -> Result<()> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(Error::DeadlineExceeded {
                what: format!("ensemble {:?}", self.ens.config.name),
                detail: "the deadline passed before the members ran".into(),
            }),
            _ => Ok(()),
        }
    }
}

/// The members' answers so far: `rows × members` values (NaN where none) and each member's run.
struct Answers {
    values: Vec<f32>,
    runs: Vec<MemberRun>,
}

impl Answers {
    /// Records that `stand_in` ran for member `i` (its time added to the member's) and whether it
    /// answered.
    fn stood_in(&mut self, i: usize, stand_in: &LoadedModel, answered: bool, latency_ms: f64) {
        self.runs[i].latency_ms += latency_ms;
        if answered {
            self.runs[i].fallback = Some(stand_in.name.clone());
        }
    }
}

fn member_run(model: &LoadedModel, latency_ms: f64, error: Option<String>) -> MemberRun {
    MemberRun {
        model: model.name.clone(),
        version: model.meta.version,
        class: model.class.clone(),
        latency_ms,
        error,
        fallback: None,
    }
}

/// A single-row request after the cache was consulted.
enum Lookup {
    Hit(Prediction),
    Miss(Option<CacheKey>),
}

impl EngineInner {
    /// One row, synchronously: the cache, then the members (inline, or through the queues under
    /// contention when some member batches), then the last good answer if quorum was lost.
    pub(super) fn single(&self, call: &Call<'_>) -> Result<Prediction> {
        let result = self.single_row(call);
        call.ens.telemetry.single(&result, call.started);
        result
    }

    fn single_row(&self, call: &Call<'_>) -> Result<Prediction> {
        let published = call.ens.key.learning.published();
        let key = match self.lookup(call, &published) {
            Lookup::Hit(p) => return Ok(p),
            Lookup::Miss(key) => key,
        };
        let queue = call.ens.queues.main();
        let inline = if call.ens.batched { queue.try_inline() } else { None };
        if call.ens.batched && inline.is_none() {
            return self.queue_and_wait(call, key);
        }
        self.run_inline(call, published, key, (queue, inline))
    }

    /// Runs one row on the calling thread (holding the queue's `slot`, if any, while it runs) and
    /// settles it.
    fn run_inline(
        &self,
        call: &Call<'_>,
        published: Arc<Published>,
        key: Option<CacheKey>,
        (queue, slot): (&EnsembleQueue, Option<InlineSlot<'_>>),
    ) -> Result<Prediction> {
        let ran = Instant::now();
        let outcome = self.run(call, published);
        drop(slot);
        // A one-row batch: keeps the queue's expected run time true while nothing queues.
        queue.batcher.note_run(ran.elapsed());
        let outcome = outcome.map(|batch| batch.row(0));
        settle(call.ens, call.dense, key, outcome, call.started, self)
    }

    /// Queues the call's row to the ensemble's dispatcher and parks until it is answered (settled
    /// there) or the deadline passes.
    fn queue_and_wait(&self, call: &Call<'_>, key: Option<CacheKey>) -> Result<Prediction> {
        call.check_deadline()?;
        call.ens.telemetry.path(Path::Queued);
        let reply = call.ens.queues.main().submit(call.dense, call.deadline, call.started);
        let answer = reply.wait_until(call.deadline).unwrap_or_else(|| {
            Err(Error::DeadlineExceeded {
                what: format!("ensemble {:?}", call.ens.config.name),
                detail: "still queued when the deadline passed".into(),
            })
        });
        self.settle_queued(call, key, answer)
    }

    /// A queued request's row of its batch, settled on the caller's thread. Its latency runs from
    /// the call to its batch's answer: the wake-up after it is the caller's scheduler's.
    fn settle_queued(&self, call: &Call<'_>, key: Option<CacheKey>, answer: Answer) -> Result<Prediction> {
        let outcome = answer.map(|(batch, row, answered)| {
            let mut p = batch.row(row);
            p.latency_ms = answered.saturating_duration_since(call.started).as_secs_f64() * 1e3;
            p
        });
        settle(call.ens, call.dense, key, outcome, call.started, self)
    }

    /// Runs queued requests (their rows `dense`, in ticket order) as one call through the members
    /// and answers each with the shared batch (or the batch's error).
    pub(super) fn answer_batch(
        &self,
        ens: &LoadedEnsemble,
        queue: &EnsembleQueue,
        dense: &[f32],
        tickets: &mut Vec<Ticket<Request>>,
    ) {
        let rows = tickets.len();
        let started = tickets.iter().map(|t| t.enqueued).min().unwrap_or_else(Instant::now);
        let call = Call { ens, dense, rows, started, deadline: None };
        let ran = Instant::now();
        let outcome = self.run(&call, ens.key.learning.published());
        let answered = Instant::now();
        // The run alone: waking the callers (an asyncio waker waits for the GIL) is not its cost.
        queue.batcher.note_batch(answered - ran, rows);
        match outcome {
            Ok(batch) => {
                let batch = Arc::new(batch);
                for (i, ticket) in tickets.drain(..).enumerate() {
                    ticket.request.send(Ok((Arc::clone(&batch), i, answered)));
                }
            }
            Err(e) => {
                for ticket in tickets.drain(..) {
                    ticket.request.send(Err(replicate(&e)));
                }
            }
        }
    }

    /// Every member on every row of the call, inline (those on ONNX Runtime fused in one call when
    /// the ensemble can, those on native plans beside it), then fallbacks and
    /// [`EngineInner::combine`].
    pub(super) fn run(&self, call: &Call<'_>, published: Arc<Published>) -> Result<BatchPrediction> {
        let ens = call.ens;
        let m = ens.members.len();
        let mut values = vec![f32::NAN; call.rows * m];
        let mut fused_in: Option<(&[bool], f64)> = None;
        if let Ok(fused) = &ens.fused {
            call.check_deadline()?;
            if let FusedOutcome::Ran(elapsed) =
                run_fused(fused, ens, call.dense, call.rows, &mut values, call.budget_end())
            {
                fused_in = Some((&fused.included, elapsed.as_secs_f64() * 1e3));
            }
        }
        ens.telemetry.path(if fused_in.is_some() { Path::Fused } else { Path::Members });
        let width = call.width();
        let mut runs = Vec::with_capacity(m);
        let budget_end = call.budget_end();
        for (i, member) in ens.members.iter().enumerate() {
            if let Some((_, latency_ms)) = fused_in.filter(|(included, _)| included[i]) {
                member.model.telemetry.fused();
                runs.push(member_run(&member.model, latency_ms, None));
                continue;
            }
            call.check_deadline()?;
            let t = Instant::now();
            if t >= budget_end {
                runs.push(member_run(&member.model, 0.0, Some(call.budget_spent())));
                continue;
            }
            let rows_in = Rows { dense: call.dense, width, indices: &member.indices };
            let result = member.model.call(rows_in, call.rows, &mut values, i, Some(budget_end));
            runs.push(member_run(&member.model, t.elapsed().as_secs_f64() * 1e3, result.err().map(|e| e.to_string())));
        }
        let mut answers = Answers { values, runs };
        self.fallbacks(call, &mut answers);
        let mut batch = self.combine(call, published, answers)?;
        batch.fused = fused_in.is_some();
        Ok(batch)
    }

    /// The one fallback routine: each member that failed and has a fallback gets its stand-in,
    /// run on every row of the call.
    fn fallbacks(&self, call: &Call<'_>, answers: &mut Answers) {
        let width = call.width();
        for (i, member) in call.ens.members.iter().enumerate() {
            let Some((stand_in, indices)) = member.fallback.as_ref().filter(|_| answers.runs[i].error.is_some()) else {
                continue;
            };
            let t = Instant::now();
            let rows_in = Rows { dense: call.dense, width, indices };
            let answered = stand_in.call(rows_in, call.rows, &mut answers.values, i, Some(call.budget_end())).is_ok();
            if answered {
                call.ens.telemetry.fallback_used();
            }
            answers.stood_in(i, stand_in, answered, t.elapsed().as_secs_f64() * 1e3);
        }
    }

    /// A cache hit (tracked like any prediction, under a new request id), or the key to store under.
    /// Whether `ens`'s predictions go through the prediction cache (not with regimes: a row's
    /// regime depends on the rows before it).
    fn caches(&self, ens: &LoadedEnsemble) -> bool {
        self.cache.is_some() && !ens.key.learning.has_regimes()
    }

    fn lookup(&self, call: &Call<'_>, published: &Published) -> Lookup {
        let ens = call.ens;
        let Some(cache) = self.cache.as_ref().filter(|_| self.caches(ens)) else {
            return Lookup::Miss(None);
        };
        // The key's epoch is the snapshot's the prediction is computed with.
        let key = cache.key(ens.id, published.epoch, call.dense);
        let Some(hit) = cache.get(&key) else { return Lookup::Miss(Some(key)) };
        ens.telemetry.cache_hit();
        let mut p = Prediction::clone(&hit);
        p.request_id = self.next_request_ids(1);
        p.cached = true;
        if self.tracker.is_some() || self.inference_log.is_some() {
            let members: Vec<f32> = p.model_contributions.iter().map(|c| c.prediction.unwrap_or(f32::NAN)).collect();
            if let Some(tracker) = &self.tracker {
                let record = Logged { task: ens.task, regime: None, prediction: p.prediction, members: &members };
                tracker.record_prediction(p.request_id, call.started, &ens.key, &record);
            }
            // A cache hit is a prediction like any other: logged, so its outcome can be joined anywhere.
            self.log_row(call, p.request_id, 0, Instant::now(), (p.prediction, p.confidence, None), &members);
        }
        p.latency_ms = call.started.elapsed().as_secs_f64() * 1e3;
        Lookup::Hit(p)
    }

    /// Queues row `row` of the call (answered at `at`) for the inference log, when it is on and the
    /// request id is in its sample: one `Arc` and one `Vec`, never blocking.
    fn log_row(
        &self,
        call: &Call<'_>,
        id: u64,
        row: usize,
        at: Instant,
        (prediction, confidence, regime): (f32, f32, Option<Regime>),
        members: &[f32],
    ) {
        let Some(log) = self.inference_log.as_ref().filter(|l| l.sampled(id)) else { return };
        let width = call.width();
        let features = &call.dense[row * width..(row + 1) * width];
        let mut values = Vec::with_capacity(features.len() + members.len());
        values.extend_from_slice(features);
        values.extend_from_slice(members);
        log.push(InferenceRecord {
            request_id: id,
            context: Arc::clone(&call.ens.log_context),
            at: log.wall_time(call.started),
            latency_us: u32::try_from(at.duration_since(call.started).as_micros()).unwrap_or(u32::MAX),
            prediction,
            confidence,
            regime,
            values,
        });
    }

    /// Checks the quorum, then combines each row's member predictions with the strategy and logs it
    /// for outcome tracking.
    fn combine(&self, call: &Call<'_>, published: Arc<Published>, answers: Answers) -> Result<BatchPrediction> {
        let Answers { values: member_predictions, runs: members } = answers;
        let ens = call.ens;
        let (rows, width, m) = (call.rows, call.width(), ens.members.len());
        let answered: Vec<bool> = members.iter().map(MemberRun::answered).collect();
        let live = answered.iter().filter(|a| **a).count();
        if live < ens.config.required_members() {
            return Err(Error::QuorumNotReached {
                ensemble: ens.config.name.clone(),
                succeeded: live,
                required: ens.config.required_members(),
                first_failure: members.iter().find(|r| !r.answered()).and_then(|r| r.error.clone()).unwrap_or_default(),
            });
        }
        let learning = &ens.key.learning;
        let first_request_id = self.next_request_ids(rows);
        let (mut predictions, mut confidences) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
        let mut regimes = Vec::with_capacity(rows);
        // Without regimes every row uses the same weights: keep one row of them, not `rows`.
        let per_row = learning.has_regimes();
        let mut weights = vec![0f32; if per_row { rows * m } else { m }];
        if !per_row {
            effective_weights(published.for_regime(None), &answered, &mut weights);
        }
        // Only filled when a member failed: no allocation on the common path.
        let (mut live_values, mut live_weights) = (Vec::new(), Vec::new());
        let now = Instant::now();
        for (row, member_values) in member_predictions.chunks_exact(m).enumerate() {
            let regime = learning.observe(&call.dense[row * width..(row + 1) * width]);
            let choice = published.for_regime(regime);
            let row_weights = if per_row {
                let slice = &mut weights[row * m..(row + 1) * m];
                effective_weights(choice, &answered, slice);
                &*slice
            } else {
                &weights[..]
            };
            let strategy: &dyn Strategy = match (choice.strategy, choice.intercept) {
                (_, Some(intercept)) if live == m => &Stacking { intercept },
                (StrategyKind::Majority, _) => &MajorityVote,
                _ => &SoftVote,
            };
            let combined = if live == m {
                strategy.combine(ens.task, member_values, row_weights)
            } else {
                live_values.clear();
                live_weights.clear();
                for ((&v, &w), &a) in member_values.iter().zip(row_weights).zip(&answered) {
                    if a {
                        live_values.push(v);
                        live_weights.push(w);
                    }
                }
                strategy.combine(ens.task, &live_values, &live_weights)
            };
            let id = first_request_id + row as u64;
            if let Some(tracker) = &self.tracker {
                let record = Logged { task: ens.task, regime, prediction: combined.prediction, members: member_values };
                tracker.record_prediction(id, now, &ens.key, &record);
            }
            self.log_row(call, id, row, now, (combined.prediction, combined.confidence, regime), member_values);
            predictions.push(combined.prediction);
            confidences.push(combined.confidence);
            regimes.push(regime);
        }
        Ok(BatchPrediction {
            ensemble: ens.name.clone(),
            ensemble_version: ens.key.version,
            task: ens.task,
            first_request_id,
            predictions,
            confidences,
            member_predictions,
            weights,
            regimes,
            members,
            published,
            fused: false,
            experiment: None,
            latency_ms: call.started.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// One row without blocking the calling executor: queued to the ensemble (or run at once when it
/// is alone and quick), and the future resolves when it is answered. The request counts as
/// outstanding from now, before its first poll.
/// `finish` sees every result last (an experiment tags it with its arm): one future, not a future
/// awaited inside another, which would hold this one twice (an awaited future is moved out of the
/// outer one's captures into its own slot).
pub(super) fn predict_queued(
    lease: Arc<Lease>,
    dense: Result<Vec<f32>>,
    started: Instant,
    deadline: Option<Instant>,
    finish: impl FnOnce(Result<Prediction>) -> Result<Prediction> + Send + 'static,
) -> impl Future<Output = Result<Prediction>> + Send + 'static {
    let ens = Outstanding::new(lease);
    async move {
        let dense = match dense {
            Ok(dense) => dense,
            Err(e) => return finish(Err(e)),
        };
        let call = Call { ens: &ens, dense: &dense, rows: 1, started, deadline };
        let result = queued_row(&ens.engine().inner, &call).await;
        ens.telemetry.single(&result, started);
        finish(result)
    }
}

async fn queued_row(inner: &EngineInner, call: &Call<'_>) -> Result<Prediction> {
    // The learning snapshot only where it is used here (the cache's key, a lone run): a queued row's
    // batch reads its own, and each read takes a lock and a count that every caller shares.
    let (mut published, mut key) = (None, None);
    if inner.caches(call.ens) {
        let snapshot = call.ens.key.learning.published();
        key = match inner.lookup(call, &snapshot) {
            Lookup::Hit(p) => return Ok(p),
            Lookup::Miss(key) => key,
        };
        published = Some(snapshot);
    }
    let queue = call.ens.queues.here();
    if let Some(slot) = queue.try_lone() {
        let published = published.unwrap_or_else(|| call.ens.key.learning.published());
        return inner.run_inline(call, published, key, (queue, Some(slot)));
    }
    drop(published);
    call.check_deadline()?;
    call.ens.telemetry.path(Path::Queued);
    let (reply, claim) = queue.submit_async(call.dense, call.deadline, call.started);
    if let Some(mut claim) = claim {
        YieldOnce(false).await;
        while claim.serve(inner, call.ens) {
            YieldOnce(false).await;
        }
    }
    let answer = reply.wait_async().await;
    // Without a timer of its own the future cannot wake at the deadline; a batch answered after it
    // is refused as the synchronous caller's wait would have refused it.
    let answer = match (call.deadline, &answer) {
        (Some(deadline), Ok((_, _, answered))) if *answered > deadline => Err(Error::DeadlineExceeded {
            what: format!("ensemble {:?}", call.ens.config.name),
            detail: "its batch finished after the deadline".into(),
        }),
        _ => answer,
    };
    inner.settle_queued(call, key, answer)
}

/// Stores a good answer to `row` (cache, last good) or, below quorum, serves the last good one as
/// stale.
fn settle(
    ens: &LoadedEnsemble,
    row: &[f32],
    key: Option<CacheKey>,
    outcome: Result<Prediction>,
    started: Instant,
    inner: &EngineInner,
) -> Result<Prediction> {
    match outcome {
        Ok(p) => {
            if !p.degraded {
                if let (Some(cache), Some(key)) = (&inner.cache, key) {
                    cache.insert(key, Arc::new(p.clone()));
                }
                if let Some(last_good) = &ens.last_good {
                    last_good.insert(row_bits(row), Arc::new(p.clone()));
                }
            }
            Ok(p)
        }
        Err(error @ Error::QuorumNotReached { .. }) => {
            let Some(good) = ens.last_good.as_ref().and_then(|l| l.get(&row_bits(row))) else {
                return Err(error);
            };
            let mut p = Prediction::clone(&good);
            p.request_id = inner.next_request_ids(1);
            p.stale = true;
            p.degraded = true;
            p.cached = false;
            p.latency_ms = started.elapsed().as_secs_f64() * 1e3;
            Ok(p)
        }
        Err(other) => Err(other),
    }
}

/// The error a failed batch answers each of its requests with (errors are not `Clone`: ort's is not).
fn replicate(error: &Error) -> Error {
    match error {
        Error::QuorumNotReached { ensemble, succeeded, required, first_failure } => Error::QuorumNotReached {
            ensemble: ensemble.clone(),
            succeeded: *succeeded,
            required: *required,
            first_failure: first_failure.clone(),
        },
        Error::DeadlineExceeded { what, detail } => {
            Error::DeadlineExceeded { what: what.clone(), detail: detail.clone() }
        }
        other => Error::Internal(format!("a queued batch failed: {other}")),
    }
}

/// The weights a row is combined with: stacking's coefficients once fitted and every member answered,
/// otherwise the published weights renormalised over the members that answered (0 for the others).
fn effective_weights(choice: &RegimeWeights, answered: &[bool], out: &mut [f32]) {
    if choice.intercept.is_some() && answered.iter().all(|a| *a) {
        out.copy_from_slice(&choice.weights);
        return;
    }
    let total: f32 = choice.weights.iter().zip(answered).filter(|(_, a)| **a).map(|(w, _)| w).sum();
    for ((w, &c), &a) in out.iter_mut().zip(&choice.weights).zip(answered) {
        *w = if a && total > 0.0 { c / total } else { 0.0 };
    }
}

/// The row's dense values as exact bits: the key of the last good prediction.
fn row_bits(dense: &[f32]) -> Box<[u32]> {
    dense.iter().map(|v| v.to_bits()).collect()
}
