//! Unit tests of `src/fusion.rs` (its private items), kept out of `src/` so that the published
//! crate stays within its size budget (`make package`).

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
    // Stamped 13, its nodes unchanged between 13 and 17: lifted to 17 and fused.
    let lifted =
        fuse(&[FusionMember { bytes: &technical, output: &output }, FusionMember { bytes: &other, output: &output }])
            .unwrap();
    assert_eq!((lifted.members.as_slice(), lifted.opsets.default), (&[0, 1][..], Some(17)));
    // A Scatter stamped 10 has no adapter to 11 here: that member is left out, the others fuse.
    let mut upsampled = onnx::decode(&technical).unwrap();
    upsampled.opset_import.iter_mut().filter(|o| o.domain().is_empty()).for_each(|o| o.version = Some(10));
    let graph = upsampled.graph.as_mut().unwrap();
    let producer = graph.node.iter_mut().find(|n| n.output.iter().any(|o| o == "probabilities")).unwrap();
    producer.output[0] = "before_scatter".into();
    graph.initializer.push(onnx::f32_tensor("updates", &[1, 1], &[0.5]));
    graph.initializer.push(onnx::i32_tensor("indices", &[1, 1], &[0]));
    graph.node.push(onnx::node("Scatter", &["before_scatter", "indices", "updates"], &["probabilities"], "sc"));
    let upsampled = onnx::encode(&upsampled);
    let partial = fuse(&[
        FusionMember { bytes: &technical, output: &output },
        FusionMember { bytes: &upsampled, output: &output },
        FusionMember { bytes: &technical, output: &output },
    ])
    .unwrap();
    assert_eq!(partial.members, [0, 2]);
    assert_eq!(partial.left_out.len(), 1);
    assert!(
        partial.left_out[0].1.contains("Scatter") && partial.left_out[0].1.contains("10"),
        "{:?}",
        partial.left_out
    );
    let err = fuse(&[
        FusionMember { bytes: &technical, output: &output },
        FusionMember { bytes: &upsampled, output: &output },
    ])
    .unwrap_err();
    assert!(err.contains("member 1") && err.contains("Scatter"), "{err}");
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

#[test]
fn an_ensemble_at_one_opset_gets_the_same_fused_graph_as_before_lifting_existed() {
    use sha2::{Digest, Sha256};
    let output = probabilities();
    let files = [fixture("technical.onnx"), fixture("fundamental.onnx"), fixture("sentiment.onnx")];
    let members: Vec<FusionMember<'_>> = files.iter().map(|b| FusionMember { bytes: b, output: &output }).collect();
    let fused = fuse(&members).unwrap();
    // The SHA-256 of the fused example ensemble written by the fusion of 0.1.0 before opset
    // lifting (commit 301e764): lifting at one opset changes nothing, byte for byte.
    let digest: [u8; 32] = Sha256::digest(&fused.bytes).into();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "76fc06795d2397430d732a203cd525bafbab1fa1045b4be326ae9cf2bd62aeb7");
    assert!(fused.left_out.is_empty());
}
