//! Native executors: a model whose graph uses only operators quorum knows (tree ensembles, linear
//! models, scalers, and the dense operators of small MLPs) runs on a plan of Rust kernels instead of
//! ONNX Runtime. The plans are the `quorum-native` crate's, re-exported here; this module adds the
//! proof a plan must pass, against ONNX Runtime, before the engine lets it serve ([`verified`]).

pub use quorum_native::*;

mod probe;

pub use probe::{compare, verified};
