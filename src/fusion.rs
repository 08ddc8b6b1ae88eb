//! Ensemble fusion: the members' graphs merged into one ONNX model that one session runs, so that a
//! prediction pays ONNX Runtime's per-call cost (execution frame, input and output values, the
//! calling thread's hand-over) once instead of once per member.
//!
//! The fused model has one input and one output per member, and keeps only the nodes each member's
//! prediction output needs, under a prefix of its own (`m0/`, `m1/`…) so names cannot collide. The
//! engine gathers each member's columns into its input as it does for separate sessions: an ONNX
//! `Gather` on axis 1 copies element by element and made 1024-row batches 8% slower (measured).
//! Members that cannot be merged faithfully — different opset versions of one domain, subgraphs
//! (`If`, `Loop`, `Scan`, whose bodies may read outer names), local functions, sparse initializers —
//! are refused with the reason, and the ensemble runs its members one by one as before.
//!
//! The engine also refuses to use a fused model whose answer on a probe row differs from the members'
//! (see `engine.rs`), and falls back to the members on any error, so fusion changes speed, never
//! results or failure isolation.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ort::memory::Allocator;
use ort::session::{IoBinding, Session};
use ort::value::{Tensor, TensorElementType, ValueType};

use crate::onnx;
use crate::onnx::lift::{self, Opsets};
use crate::onnx::proto::{GraphProto, ModelProto, OperatorSetIdProto, ValueInfoProto};
use crate::registry::OutputSpec;
use crate::runtime::Runtime;

/// Members' model files larger than this in total are not fused: the fused sessions hold a second
/// copy of the weights, and for big models the per-call cost fusion saves is small next to compute.
pub const FUSION_MAX_BYTES: u64 = 8 << 20;

/// One member as fusion sees it.
pub(crate) struct FusionMember<'a> {
    pub bytes: &'a [u8],
    pub output: &'a OutputSpec,
}

/// A fused model and the names of each member's input and output in it.
#[derive(Debug)]
pub(crate) struct FusedModel {
    pub bytes: Vec<u8>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Which of the members given to [`fuse`] it holds, in its input and output order.
    pub members: Vec<usize>,
    /// The members left out (they run on their own sessions), with the reason.
    pub left_out: Vec<(usize, String)>,
    /// The opsets every fused member was lifted to.
    pub opsets: Opsets,
}

/// One member's graph, lifted and renamed under its prefix, ready to merge.
struct Prepared {
    input: ValueInfoProto,
    output: ValueInfoProto,
    nodes: Vec<crate::onnx::proto::NodeProto>,
    initializers: Vec<crate::onnx::proto::TensorProto>,
    ir_version: i64,
    /// Its opset imports, in its order (the fused model keeps the order of first appearance).
    imports: Vec<OperatorSetIdProto>,
    /// Imports of domains other than the two that are lifted, kept as they are.
    other_opsets: Vec<OperatorSetIdProto>,
}

/// Merges the members' graphs (see the module documentation), lifting each to the highest opset of
/// each domain among them; a member that cannot be merged or lifted is left out with the reason,
/// and `Err` says why fewer than two members remain.
pub(crate) fn fuse(members: &[FusionMember<'_>]) -> std::result::Result<FusedModel, String> {
    let decoded: Vec<std::result::Result<ModelProto, String>> =
        members.iter().map(|m| onnx::decode(m.bytes).map_err(|e| e.to_string())).collect();
    let target = decoded.iter().flatten().fold(Opsets::default(), |t, m| t.max(Opsets::of(m)));
    let mut graph = GraphProto { name: Some("quorum_fused_ensemble".into()), ..Default::default() };
    let mut other_opsets: Vec<OperatorSetIdProto> = Vec::new();
    let mut opsets: Vec<OperatorSetIdProto> = Vec::new();
    let mut ir_version = 0;
    let (mut inputs, mut outputs, mut fused, mut left_out) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (member, model)) in members.iter().zip(decoded).enumerate() {
        let prepared = model.and_then(|model| prepare(&format!("m{i}/"), model, member.output, target)).and_then(|p| {
            merge_opsets(&other_opsets, &p.other_opsets)?;
            Ok(p)
        });
        let p = match prepared {
            Ok(p) => p,
            Err(reason) => {
                left_out.push((i, reason));
                continue;
            }
        };
        ir_version = ir_version.max(p.ir_version);
        for o in p.other_opsets {
            if !other_opsets.iter().any(|x| x.domain() == o.domain()) {
                other_opsets.push(o);
            }
        }
        // Each domain once, "ai.onnx" written "", at the target version where it is lifted.
        for o in p.imports {
            let domain = if o.domain() == "ai.onnx" { String::new() } else { o.domain().to_string() };
            if !opsets.iter().any(|x| x.domain() == domain) {
                let version = match domain.as_str() {
                    "" => target.default,
                    onnx::ML_DOMAIN => target.ml,
                    _ => o.version,
                };
                opsets.push(OperatorSetIdProto { domain: Some(domain), version });
            }
        }
        inputs.push(p.input.name().to_string());
        outputs.push(p.output.name().to_string());
        graph.input.push(p.input);
        graph.output.push(p.output);
        graph.node.extend(p.nodes);
        graph.initializer.extend(p.initializers);
        fused.push(i);
    }
    if fused.len() < 2 {
        let reasons: Vec<String> = left_out.iter().map(|(i, why)| format!("member {i}: {why}")).collect();
        return Err(if reasons.is_empty() { "fewer than two members to fuse".into() } else { reasons.join("; ") });
    }
    let model = ModelProto {
        ir_version: Some(ir_version),
        opset_import: opsets,
        producer_name: Some("quorum".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    };
    Ok(FusedModel { bytes: onnx::encode(&model), inputs, outputs, members: fused, left_out, opsets: target })
}

/// One member's needed nodes, lifted to `target` and renamed under `prefix`; `Err` says why it
/// cannot join the fused graph.
fn prepare(
    prefix: &str,
    model: ModelProto,
    output: &OutputSpec,
    target: Opsets,
) -> std::result::Result<Prepared, String> {
    if !model.functions.is_empty() {
        return Err("it defines local functions".into());
    }
    let from = Opsets::of(&model);
    let other_opsets: Vec<OperatorSetIdProto> = model
        .opset_import
        .iter()
        .filter(|o| !(o.domain().is_empty() || o.domain() == "ai.onnx" || o.domain() == onnx::ML_DOMAIN))
        .cloned()
        .collect();
    let ir_version = model.ir_version();
    let imports = model.opset_import.clone();
    let g = model.graph.ok_or("it has no graph")?;
    if !g.sparse_initializer.is_empty() {
        return Err("it has sparse initializers".into());
    }
    let initialized: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let real: Vec<&ValueInfoProto> = g.input.iter().filter(|v| !initialized.contains(v.name())).collect();
    let [input] = real[..] else {
        return Err(format!("it has {} inputs; fusion needs exactly one", real.len()));
    };
    let graph_output = g
        .output
        .iter()
        .find(|o| o.name() == output.name)
        .ok_or_else(|| format!("it has no output {:?}", output.name))?;
    let needed = onnx::nodes_needed_for(&g.node, graph_output.name());
    if let Some(node) = g.node.iter().zip(&needed).find(|(n, keep)| **keep && onnx::has_subgraph(n)).map(|(n, _)| n) {
        return Err(format!("it runs a {} node with a subgraph", node.op_type()));
    }
    let kept: Vec<_> = g.node.iter().zip(&needed).filter(|(_, keep)| **keep).map(|(n, _)| n.clone()).collect();
    // Nodes whose schema is the same at both opsets stay as they are; the others are adapted.
    let lifted = lift::lift_nodes(&g, &kept, from, target).map_err(|why| {
        let version = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        format!(
            "cannot be lifted from opset {}/{} to {}/{} (ai.onnx/ai.onnx.ml): {why}",
            version(from.default),
            version(from.ml),
            version(target.default),
            version(target.ml)
        )
    })?;
    // Empty names mean "optional input not given" and stay empty.
    let rename = |name: &str| -> String {
        if name.is_empty() {
            String::new()
        } else {
            format!("{prefix}{name}")
        }
    };
    let mut used: HashSet<String> = HashSet::new();
    let mut nodes = Vec::with_capacity(lifted.nodes.len());
    for mut node in lifted.nodes {
        used.extend(node.input.iter().cloned());
        node.input.iter_mut().for_each(|n| *n = rename(n));
        node.output.iter_mut().for_each(|n| *n = rename(n));
        if let Some(name) = node.name.as_mut().filter(|n| !n.is_empty()) {
            *name = format!("{prefix}{name}");
        }
        nodes.push(node);
    }
    let initializers = g
        .initializer
        .iter()
        .chain(&lifted.initializers)
        .filter(|t| used.contains(t.name()))
        .map(|t| {
            let mut t = t.clone();
            t.name = Some(rename(t.name()));
            t
        })
        .collect();
    Ok(Prepared {
        input: ValueInfoProto { name: Some(rename(input.name())), ..input.clone() },
        output: ValueInfoProto { name: Some(rename(graph_output.name())), ..graph_output.clone() },
        nodes,
        initializers,
        ir_version,
        imports,
        other_opsets,
    })
}

/// One domain at two versions cannot be merged (domains other than the two that are lifted).
fn merge_opsets(merged: &[OperatorSetIdProto], model: &[OperatorSetIdProto]) -> std::result::Result<(), String> {
    for op in model {
        if let Some(o) = merged.iter().find(|o| o.domain() == op.domain() && o.version != op.version) {
            return Err(format!(
                "other members use version {} of the {:?} opset, and it uses {}",
                o.version(),
                op.domain(),
                op.version()
            ));
        }
    }
    Ok(())
}

/// A fused session and its reusable input buffers, one per member.
pub(crate) struct FusedSession {
    pub session: Session,
    pub inputs: Vec<Vec<f32>>,
    /// Single rows run through an I/O binding: one input tensor per member and the outputs allocated
    /// once, so a call creates no ONNX Runtime values. `None` when an output's shape is not fixed
    /// apart from its batch dimension.
    pub single: Option<SingleRow>,
    /// Lets an ensemble's latency budget cut a run off (`None` if its run options could not be made).
    pub watch: Option<std::sync::Arc<crate::replicas::Watch>>,
}

pub(crate) struct SingleRow {
    pub binding: IoBinding,
    /// One `[1, features]` tensor per member, bound once: ort binds a tensor that owns its data
    /// without copying it, so writing into it is what the next run reads.
    pub inputs: Vec<Tensor<f32>>,
}

impl FusedSession {
    fn new(session: Session, inputs: &[String], outputs: &[String]) -> FusedSession {
        let single = single_row_binding(&session, inputs, outputs).ok().flatten();
        let watch = crate::replicas::new_watch().ok();
        FusedSession { session, inputs: vec![Vec::new(); inputs.len()], single, watch }
    }
}

/// The I/O binding for single rows, if every input is `[N, k]` and every output `[N, ...]` with the
/// rest of its shape fixed.
fn single_row_binding(session: &Session, inputs: &[String], outputs: &[String]) -> ort::Result<Option<SingleRow>> {
    let one_row = |name: &str, list: &[ort::value::Outlet]| -> Option<Vec<i64>> {
        let outlet = list.iter().find(|o| o.name() == name)?;
        match outlet.dtype() {
            ValueType::Tensor { ty: TensorElementType::Float32, shape, .. }
                if !shape.is_empty() && shape[1..].iter().all(|d| *d > 0) =>
            {
                Some(std::iter::once(1).chain(shape[1..].iter().copied()).collect())
            }
            _ => None,
        }
    };
    let mut binding = session.create_binding()?;
    let mut bound = Vec::with_capacity(inputs.len());
    for name in inputs {
        let Some(shape) = one_row(name, session.inputs()) else { return Ok(None) };
        let width = shape.iter().product::<i64>() as usize;
        let tensor = Tensor::from_array((shape, vec![0f32; width]))?;
        binding.bind_input(name.as_str(), &tensor)?;
        bound.push(tensor);
    }
    for name in outputs {
        let Some(shape) = one_row(name, session.outputs()) else { return Ok(None) };
        binding.bind_output(name, Tensor::<f32>::new(&Allocator::default(), shape)?)?;
    }
    Ok(Some(SingleRow { binding, inputs: bound }))
}

/// The sessions of a fused model: a pool that grows on demand up to `max`. A caller that finds every
/// session busy at the cap gets `None` and runs the members one by one (their own pools), instead
/// of waiting.
pub(crate) struct FusedSessions {
    runtime: Runtime,
    label: String,
    bytes: Vec<u8>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    idle: Mutex<Vec<FusedSession>>,
    total: AtomicUsize,
    /// Lowered to the sessions built so far when building another fails, so that a failing build is
    /// not retried on every busy call.
    max: AtomicUsize,
    /// Until when (watchdog µs) calls take the members' own path, after a fused run outlasted its
    /// ensemble's latency budget: there, a slow member is cut off alone and the others still answer.
    suspended_until_us: std::sync::atomic::AtomicU64,
}

impl FusedSessions {
    pub fn new(runtime: &Runtime, label: String, model: FusedModel, max: usize) -> crate::Result<FusedSessions> {
        let first = runtime.session(&label, &model.bytes, None)?;
        Ok(FusedSessions {
            runtime: runtime.clone(),
            label,
            bytes: model.bytes,
            idle: Mutex::new(vec![FusedSession::new(first, &model.inputs, &model.outputs)]),
            inputs: model.inputs,
            outputs: model.outputs,
            total: AtomicUsize::new(1),
            max: AtomicUsize::new(max.max(1)),
            suspended_until_us: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Sends calls to the members' own path for `duration`.
    pub fn suspend(&self, duration: std::time::Duration) {
        let until = crate::replicas::monotonic_us() + duration.as_micros() as u64;
        self.suspended_until_us.store(until, Ordering::Relaxed);
    }

    /// Whether calls should skip the fused model now.
    pub fn suspended(&self) -> bool {
        let until = self.suspended_until_us.load(Ordering::Relaxed);
        until != 0 && crate::replicas::monotonic_us() < until
    }

    /// An idle session, a new one below the cap, or `None`.
    pub fn checkout(&self) -> Option<FusedSession> {
        if let Some(session) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Some(session);
        }
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max.load(Ordering::Relaxed) {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        // Built outside the lock (milliseconds, once per extra concurrent caller).
        match self.runtime.session(&self.label, &self.bytes, None) {
            Ok(session) => Some(FusedSession::new(session, &self.inputs, &self.outputs)),
            Err(_) => {
                let built = self.total.fetch_sub(1, Ordering::Relaxed) - 1;
                self.max.store(built.max(1), Ordering::Relaxed);
                None
            }
        }
    }

    pub fn give_back(&self, session: FusedSession) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(session);
    }

    pub fn sessions(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[path = "../tests/unit/fusion.rs"]
mod tests;
