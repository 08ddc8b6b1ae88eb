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
}

/// Merges the members' graphs (see the module documentation); `Err` says why they cannot be.
pub(crate) fn fuse(members: &[FusionMember<'_>]) -> std::result::Result<FusedModel, String> {
    let mut graph = GraphProto { name: Some("quorum_fused_ensemble".into()), ..Default::default() };
    let mut opsets: Vec<OperatorSetIdProto> = Vec::new();
    let mut ir_version = 0;
    let (mut inputs, mut outputs) = (Vec::with_capacity(members.len()), Vec::with_capacity(members.len()));
    for (i, member) in members.iter().enumerate() {
        let prefix = format!("m{i}/");
        let model = onnx::decode(member.bytes).map_err(|e| format!("member {i}: {e}"))?;
        if !model.functions.is_empty() {
            return Err(format!("member {i} defines local functions"));
        }
        ir_version = ir_version.max(model.ir_version());
        merge_opsets(&mut opsets, &model)?;
        let g = model.graph.ok_or_else(|| format!("member {i} has no graph"))?;
        if !g.sparse_initializer.is_empty() {
            return Err(format!("member {i} has sparse initializers"));
        }
        let initialized: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
        let real: Vec<&ValueInfoProto> = g.input.iter().filter(|v| !initialized.contains(v.name())).collect();
        let [input] = real[..] else {
            return Err(format!("member {i} has {} inputs; fusion needs exactly one", real.len()));
        };
        let output = g
            .output
            .iter()
            .find(|o| o.name() == member.output.name)
            .ok_or_else(|| format!("member {i} has no output {:?}", member.output.name))?;
        let needed = onnx::nodes_needed_for(&g.node, output.name());
        if let Some(node) = g.node.iter().zip(&needed).find(|(n, keep)| **keep && onnx::has_subgraph(n)).map(|(n, _)| n)
        {
            return Err(format!("member {i} runs a {} node with a subgraph", node.op_type()));
        }
        // Empty names mean "optional input not given" and stay empty.
        let rename = |name: &str| -> String {
            if name.is_empty() {
                String::new()
            } else {
                format!("{prefix}{name}")
            }
        };
        let fused_input = rename(input.name());
        graph.input.push(ValueInfoProto { name: Some(fused_input.clone()), ..input.clone() });
        inputs.push(fused_input);
        let mut used: HashSet<&str> = HashSet::new();
        for (node, _) in g.node.iter().zip(&needed).filter(|(_, keep)| **keep) {
            used.extend(node.input.iter().map(String::as_str));
            let mut node = node.clone();
            node.input.iter_mut().for_each(|n| *n = rename(n));
            node.output.iter_mut().for_each(|n| *n = rename(n));
            if let Some(name) = node.name.as_mut().filter(|n| !n.is_empty()) {
                *name = format!("{prefix}{name}");
            }
            graph.node.push(node);
        }
        for t in g.initializer.iter().filter(|t| used.contains(t.name())) {
            let mut t = t.clone();
            t.name = Some(rename(t.name()));
            graph.initializer.push(t);
        }
        let fused_output = rename(output.name());
        graph.output.push(ValueInfoProto { name: Some(fused_output.clone()), ..output.clone() });
        outputs.push(fused_output);
    }
    let model = ModelProto {
        ir_version: Some(ir_version),
        opset_import: opsets,
        producer_name: Some("quorum".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    };
    Ok(FusedModel { bytes: onnx::encode(&model), inputs, outputs })
}

/// Adds `model`'s opsets to `opsets`; one domain at two versions cannot be merged.
fn merge_opsets(opsets: &mut Vec<OperatorSetIdProto>, model: &ModelProto) -> std::result::Result<(), String> {
    let domain = |o: &OperatorSetIdProto| if o.domain() == "ai.onnx" { String::new() } else { o.domain().to_string() };
    for op in &model.opset_import {
        let d = domain(op);
        match opsets.iter().find(|o| domain(o) == d) {
            Some(o) if o.version != op.version => {
                return Err(format!(
                    "members use versions {} and {} of the {:?} opset",
                    o.version(),
                    op.version(),
                    if d.is_empty() { "ai.onnx" } else { &d }
                ))
            }
            Some(_) => {}
            None => opsets.push(OperatorSetIdProto { domain: Some(d), version: op.version }),
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
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models").join(name)).unwrap()
    }

    fn probabilities() -> OutputSpec {
        OutputSpec { name: "probabilities".into(), column: Some(1), label: None }
    }

    #[test]
    fn members_keep_only_what_their_output_needs_under_their_own_prefix() {
        let (technical, sentiment, output) = (fixture("technical.onnx"), fixture("sentiment.onnx"), probabilities());
        let fused = fuse(&[
            FusionMember { bytes: &technical, output: &output },
            FusionMember { bytes: &sentiment, output: &output },
        ])
        .unwrap();
        assert_eq!(fused.inputs, ["m0/X", "m1/X"]);
        assert_eq!(fused.outputs, ["m0/probabilities", "m1/probabilities"]);
        let model = onnx::decode(&fused.bytes).unwrap();
        let graph = model.graph.unwrap();
        assert_eq!(graph.input.iter().map(|i| i.name()).collect::<Vec<_>>(), ["m0/X", "m1/X"]);
        // Every node left feeds another or a graph output (the technical model's `label` branch is
        // gone), and every name is under its member's prefix.
        let consumed: HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .chain(graph.output.iter().map(|o| o.name()))
            .collect();
        assert!(graph.node.iter().all(|n| n.output.iter().any(|o| consumed.contains(o.as_str()))));
        let original = onnx::decode(&technical).unwrap().graph.unwrap().node.len() + 2;
        assert!(graph.node.len() < original, "{} nodes", graph.node.len());
        assert!(graph.node.iter().flat_map(|n| n.output.iter()).all(|o| o.starts_with("m0/") || o.starts_with("m1/")));
        assert!(graph.initializer.iter().all(|t| t.name().starts_with("m0/") || t.name().starts_with("m1/")));
        // The sentiment model imports the default opset twice: merged once.
        assert_eq!(model.opset_import.iter().filter(|o| o.domain().is_empty()).count(), 1);
    }

    #[test]
    fn the_same_model_twice_gets_two_independent_copies() {
        let (sentiment, output) = (fixture("sentiment.onnx"), probabilities());
        let member = FusionMember { bytes: &sentiment, output: &output };
        let fused = fuse(&[member, FusionMember { bytes: &sentiment, output: &output }]).unwrap();
        let graph = onnx::decode(&fused.bytes).unwrap().graph.unwrap();
        let names: HashSet<&str> = graph.node.iter().flat_map(|n| n.output.iter().map(String::as_str)).collect();
        assert_eq!(names.len(), graph.node.iter().map(|n| n.output.len()).sum::<usize>());
    }

    #[test]
    fn unmergeable_members_are_refused_with_the_reason() {
        let (technical, output) = (fixture("technical.onnx"), probabilities());
        let mut other = onnx::decode(&technical).unwrap();
        other.opset_import.iter_mut().filter(|o| o.domain().is_empty()).for_each(|o| o.version = Some(13));
        let other = onnx::encode(&other);
        let err = fuse(&[
            FusionMember { bytes: &technical, output: &output },
            FusionMember { bytes: &other, output: &output },
        ])
        .unwrap_err();
        assert!(err.contains("versions 17 and 13"), "{err}");
        let missing = OutputSpec { name: "nope".into(), column: None, label: None };
        let err = fuse(&[FusionMember { bytes: &technical, output: &missing }]).unwrap_err();
        assert!(err.contains("no output"), "{err}");
        let err = fuse(&[FusionMember { bytes: b"garbage", output: &output }]).unwrap_err();
        assert!(err.contains("member 0"), "{err}");
        let mut looped = onnx::decode(&technical).unwrap();
        let graph = looped.graph.as_mut().unwrap();
        let body = crate::onnx::proto::AttributeProto {
            name: Some("body".into()),
            g: Some(GraphProto::default()),
            ..Default::default()
        };
        let producer = graph.node.iter_mut().find(|n| n.output.iter().any(|o| o == "probabilities")).unwrap();
        producer.attribute.push(body);
        let looped = onnx::encode(&looped);
        let err = fuse(&[FusionMember { bytes: &looped, output: &output }]).unwrap_err();
        assert!(err.contains("subgraph"), "{err}");
    }
}
