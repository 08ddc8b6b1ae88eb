//! Reading an ONNX node's attributes for the native compiler, and refusing the ones it does not know.

use quorum_onnx::proto::{AttributeProto, NodeProto};

/// Refuses an attribute this compiler does not know for the operator: it might change the result.
pub(super) fn known_attributes(node: &NodeProto, known: &[&str]) -> Result<(), String> {
    match node.attribute.iter().find(|a| !known.contains(&a.name())) {
        Some(a) => Err(format!("attribute {:?} is not supported", a.name())),
        None => Ok(()),
    }
}

pub(super) fn attribute<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

pub(super) fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    attribute(node, name).and_then(|a| a.i)
}

pub(super) fn attr_f(node: &NodeProto, name: &str) -> Option<f32> {
    attribute(node, name).and_then(|a| a.f)
}

pub(super) fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attribute(node, name).and_then(|a| a.s.as_ref()).map(|s| String::from_utf8_lossy(s).into_owned())
}

pub(super) fn attr_floats(node: &NodeProto, name: &str) -> Vec<f32> {
    attribute(node, name).map(|a| a.floats.clone()).unwrap_or_default()
}

pub(super) fn attr_ints(node: &NodeProto, name: &str) -> Vec<i64> {
    attribute(node, name).map(|a| a.ints.clone()).unwrap_or_default()
}

pub(super) fn attr_strings(node: &NodeProto, name: &str) -> Vec<String> {
    attribute(node, name)
        .map(|a| a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
        .unwrap_or_default()
}

/// An attribute that must be absent or hold exactly `allowed`.
pub(super) fn require_i(node: &NodeProto, name: &str, allowed: &[i64]) -> Result<(), String> {
    match attr_i(node, name) {
        Some(v) if !allowed.contains(&v) => Err(format!("{name}={v} is not supported")),
        _ => Ok(()),
    }
}
