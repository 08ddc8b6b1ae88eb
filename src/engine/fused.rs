//! Fused ensembles: at load, the members that run on ONNX Runtime merged into one ONNX model (see
//! [`crate::fusion`]) and the proof on probe rows that it answers as those members do; per call, all
//! of them in one ONNX Runtime call (members on native plans run beside it), or not used so that the
//! members run one by one.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use ort::session::SessionInputValue;
use ort::value::TensorRef;

use super::loaded::{Fused, LoadedEnsemble};
use super::member::{Member, OutputTarget, Rows};
use super::InferenceEngine;
use crate::error::Result;
use crate::features::{gather, Schema};
use crate::fusion::{self, FusedSession, FusedSessions, FusionMember, FUSION_MAX_BYTES};
use crate::replicas::LoadPolicy;
use crate::runtime::ExecutionProvider;

impl InferenceEngine {
    /// The members that run on ONNX Runtime as one fused model (see [`crate::fusion`]), checked against the members on probe
    /// rows; `Err` says why the ensemble runs its members one by one.
    pub(super) fn fuse_members(
        &self,
        members: &[Member],
        schema: &Schema,
        ensemble: &str,
    ) -> std::result::Result<Fused, String> {
        if !self.inner.fusion {
            return Err("fusion is off (EngineBuilder::with_fusion)".into());
        }
        if members.len() < 2 {
            return Err("one member: nothing to fuse".into());
        }
        let on_ort: Vec<usize> = (0..members.len()).filter(|&i| members[i].model.native.is_none()).collect();
        match on_ort.len() {
            0 => return Err("every member runs on its native plan: no ONNX Runtime call to fuse".into()),
            1 => {
                let model = &members[on_ort[0]].model.meta.name;
                return Err(format!("only member {model} runs on ONNX Runtime (the others natively): nothing to fuse"));
            }
            _ => {}
        }
        // Members that cannot share a session run on their own, beside the fused call.
        let mut left_out: Vec<(String, String)> = Vec::new();
        let mut candidates: Vec<usize> = Vec::new();
        for &i in &on_ort {
            let meta = &members[i].model.meta;
            let options = self.inner.options_of(&meta.name);
            let reason = if members[i].model.is_remote() {
                "is served remotely".to_string()
            } else if options.timeout.is_some() {
                "has a per-call timeout".to_string()
            } else if !matches!(options.provider, ExecutionProvider::Cpu) {
                "runs on another execution provider than the CPU".to_string()
            } else if options.load == LoadPolicy::Lazy {
                "loads lazily".to_string()
            } else if !meta.input_type.is_float32() {
                // The fused graph takes the schema's float32 rows.
                format!("takes {:?} features, not float32", meta.input_type)
            } else if let Some(n) = meta.max_batch {
                // A fused graph would inherit the fixed size, and batches would fail.
                format!("takes at most {n} row(s) per call (a fixed batch size)")
            } else {
                candidates.push(i);
                continue;
            };
            left_out.push((meta.name.clone(), reason));
        }
        let summary = |left_out: &[(String, String)]| {
            left_out.iter().map(|(model, why)| format!("model {model} {why}")).collect::<Vec<_>>().join("; ")
        };
        if candidates.len() < 2 {
            return Err(summary(&left_out));
        }
        let total: u64 = candidates.iter().map(|&i| members[i].model.meta.size_bytes).sum();
        if total > FUSION_MAX_BYTES {
            return Err(format!("the members' files total {total} bytes, over the fusion limit of {FUSION_MAX_BYTES}"));
        }
        let files = candidates
            .iter()
            .map(|&i| self.inner.registry.read_verified(&members[i].model.meta))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| e.to_string())?;
        let parts: Vec<FusionMember<'_>> = candidates
            .iter()
            .zip(&files)
            .map(|(&i, bytes)| FusionMember { bytes, output: &members[i].model.meta.output })
            .collect();
        let width = schema.names().len();
        let model = fusion::fuse(&parts).map_err(|why| {
            // Name the members rather than their positions among the candidates.
            let mut why = why;
            for (k, &i) in candidates.iter().enumerate().rev() {
                why = why.replace(&format!("member {k}:"), &format!("model {}", members[i].model.meta.name));
            }
            let earlier = summary(&left_out);
            if earlier.is_empty() {
                why
            } else {
                format!("{earlier}; {why}")
            }
        })?;
        for (k, why) in &model.left_out {
            left_out.push((members[candidates[*k]].model.meta.name.clone(), why.clone()));
        }
        let which: Vec<usize> = model.members.iter().map(|&k| candidates[k]).collect();
        let included: Vec<bool> = (0..members.len()).map(|i| which.contains(&i)).collect();
        let members_in = || which.iter().map(|&i| &members[i]);
        let opsets = model.opsets;
        let most_replicas = members_in().map(|m| m.model.pool.max).max().unwrap_or(1);
        let sessions = FusedSessions::new(&self.inner.runtime, format!("{ensemble} (fused)"), model, most_replicas)
            .map_err(|e| e.to_string())?;
        let fused = Fused { sessions, included, which, left_out, opsets };
        // The proof that fusion changes nothing: the fused model and the members, each on its own,
        // give the same answers on probe rows (zeros, halves, ones, a ramp; non-negative, as rates and
        // volatilities are). A row some member cannot answer is skipped; at least one must compare.
        let probes: Vec<Vec<f32>> = [0.0f32, 0.5, 1.0]
            .iter()
            .map(|v| vec![*v; width])
            .chain(std::iter::once((0..width).map(|c| (c + 1) as f32 / width as f32).collect()))
            .collect();
        let m = members.len();
        let mut compared = 0;
        for probe in &probes {
            let mut separate = vec![f32::NAN; m];
            let answered = fused.which.iter().map(|&i| (i, &members[i])).all(|(i, member)| {
                // Past the breaker: probing is not traffic and must not move its statistics.
                let rows_in = Rows { dense: probe, width, indices: &member.indices };
                let run = || member.model.run(rows_in, 1, &mut separate, i, Instant::now(), None);
                matches!(catch_unwind(AssertUnwindSafe(run)), Ok(Ok(_)))
            });
            if !answered {
                continue;
            }
            let mut together = vec![f32::NAN; m];
            let mut session = fused.sessions.checkout().ok_or("no fused session")?;
            let ran = run_fused_session(&mut session, &fused, members, probe, 1, &mut together, None);
            fused.sessions.give_back(session);
            ran.map_err(|e| format!("probe run of the fused model: {e}"))?;
            for &i in &fused.which {
                let (a, b) = (separate[i], together[i]);
                if (a - b).abs() > 1e-5 * a.abs().max(1.0) {
                    let model = &members[i].model.meta.name;
                    return Err(format!("the fused model answered {b} where member {model} answered {a}"));
                }
            }
            compared += 1;
        }
        if compared == 0 {
            return Err("no probe row that every member could answer".into());
        }
        Ok(fused)
    }
}

/// Every fused member in one call of the fused model, writing `out[row * members + member]`.
/// `NotUsed` when the fused model is not used for this call — a fused member's breaker is not
/// closed or a fault is injected (the members' own path reports them), every fused session is busy —
/// or when it failed; the members then run one by one, so a failure is still isolated to the member
/// that caused it.
pub(super) fn run_fused(
    fused: &Fused,
    ens: &LoadedEnsemble,
    dense: &[f32],
    rows: usize,
    out: &mut [f32],
    limit: Instant,
) -> FusedOutcome {
    let healthy =
        fused.which.iter().map(|&i| &ens.members[i]).all(|m| !m.model.diverted() && m.model.breaker.is_closed());
    if !healthy || fused.sessions.suspended() {
        return FusedOutcome::NotUsed;
    }
    let Some(mut session) = fused.sessions.checkout() else { return FusedOutcome::NotUsed };
    let started = Instant::now();
    // Moved out for the run and back after: no reference count touched per call.
    let watch = session.watch.take();
    if let Some(watch) = &watch {
        watch.arm(limit.saturating_duration_since(started));
    }
    let ran = catch_unwind(AssertUnwindSafe(|| {
        let options = watch.as_deref().map(crate::replicas::Watch::options);
        run_fused_session(&mut session, fused, &ens.members, dense, rows, out, options)
    }));
    let cut_off = watch.as_ref().is_some_and(|w| w.disarm());
    session.watch = watch;
    fused.sessions.give_back(session);
    let elapsed = started.elapsed();
    if cut_off {
        // Some member is slow: for a while its own path cuts it off alone, the others answer.
        fused.sessions.suspend(FUSION_SUSPENSION);
        return FusedOutcome::CutOff;
    }
    if !matches!(ran, Ok(Ok(()))) {
        return FusedOutcome::NotUsed;
    }
    for &i in &fused.which {
        ens.members[i].model.breaker.record_success(elapsed);
    }
    FusedOutcome::Ran(elapsed)
}

/// How long calls take the members' own path after a fused run outlasted the latency budget.
const FUSION_SUSPENSION: Duration = Duration::from_secs(1);

/// What became of a call offered to the fused model.
pub(super) enum FusedOutcome {
    /// Every member answered in one run, taking this long.
    Ran(Duration),
    /// Not used (a member in trouble, every session busy) or failed: run the members one by one.
    NotUsed,
    /// Cut off when the ensemble's latency budget was spent.
    CutOff,
}

fn run_fused_session(
    session: &mut FusedSession,
    fused: &Fused,
    members: &[Member],
    dense: &[f32],
    rows: usize,
    out: &mut [f32],
    options: Option<&ort::session::RunOptions>,
) -> Result<()> {
    let width = dense.len() / rows;
    let outputs = match &mut session.single {
        Some(single) if rows == 1 => {
            for (member, tensor) in fused.which.iter().map(|&i| &members[i]).zip(&mut single.inputs) {
                let (_, values) = tensor.extract_tensor_mut();
                for (value, &column) in values.iter_mut().zip(&member.indices) {
                    *value = dense[column];
                }
            }
            match options {
                Some(options) => session.session.run_binding_with_options(&single.binding, options)?,
                None => session.session.run_binding(&single.binding)?,
            }
        }
        _ => {
            let mut inputs = Vec::with_capacity(fused.which.len());
            let fused_members = fused.which.iter().map(|&i| &members[i]);
            for ((member, buffer), name) in fused_members.zip(&mut session.inputs).zip(&fused.sessions.inputs) {
                gather(dense, width, &member.indices, buffer);
                let tensor = TensorRef::from_array_view(([rows, member.indices.len()], buffer.as_slice()))?;
                inputs.push((Cow::Borrowed(name.as_str()), SessionInputValue::from(tensor)));
            }
            match options {
                Some(options) => session.session.run_with_options(inputs, options)?,
                None => session.session.run(inputs)?,
            }
        }
    };
    let m = members.len();
    for (&i, name) in fused.which.iter().zip(&fused.sessions.outputs) {
        let meta = &members[i].model.meta;
        let target = OutputTarget { model: &meta.name, spec: &meta.output, name, task: meta.task };
        target.write(outputs.get(name), rows, rows, out, m, i)?;
    }
    Ok(())
}
