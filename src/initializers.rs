//! The large float initializers (weights) of an ONNX model, so that every replica of a model can
//! share one copy.
//!
//! Initializers added to ONNX Runtime's session options (`AddInitializer`) are referenced rather than
//! copied, so every replica can use one set. Such sessions run with prepacking off: a kernel that
//! prepacks a weight keeps a private packed copy of it, which would undo the sharing. Measured on a
//! 68 MB MLP (`make replica-memory`): an extra replica costs ~2 MB instead of ~70 MB, the first one
//! the same, and single-row latency is unchanged. ONNX Runtime's prepacked-weights container was tried
//! too: each session still kept its own copy of every weight (no saving at all).
//!
//! A model that cannot be read (or keeps its data in external files) simply shares nothing: ONNX
//! Runtime then reads it itself and reports any real problem.

use std::sync::Arc;

use ort::value::{DynValue, Tensor};

use crate::onnx;

/// Initializers smaller than this are not worth sharing.
const MIN_SHARED_BYTES: usize = 16 * 1024;

/// A model's shareable weights: ONNX Runtime values built once and handed to every replica's session.
#[derive(Clone, Default)]
pub(crate) struct SharedInitializers {
    pub values: Vec<(String, Arc<DynValue>)>,
}

impl std::fmt::Debug for SharedInitializers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.values.iter().map(|(name, _)| name)).finish()
    }
}

impl SharedInitializers {
    /// The float initializers of at least 16 KiB in `model` (an ONNX `ModelProto`), as values.
    pub fn from_model(model: &[u8]) -> SharedInitializers {
        let values = large_float_initializers(model)
            .into_iter()
            .filter_map(|(name, dims, data)| {
                let value = Tensor::from_array((dims, data)).ok()?;
                Some((name, Arc::new(value.into_dyn())))
            })
            .collect();
        SharedInitializers { values }
    }
}

/// (name, dims, values) of each float initializer of at least [`MIN_SHARED_BYTES`].
fn large_float_initializers(model: &[u8]) -> Vec<(String, Vec<i64>, Vec<f32>)> {
    let Ok(model) = onnx::decode(model) else { return Vec::new() };
    model
        .graph
        .into_iter()
        .flat_map(|g| g.initializer)
        .filter_map(|t| {
            let values = onnx::float_values(&t)?;
            (values.len() * 4 >= MIN_SHARED_BYTES).then(|| (t.name().to_string(), t.dims.clone(), values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_large_weights_of_a_real_onnx_file() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dense.onnx");
        let found = large_float_initializers(&std::fs::read(path).unwrap());
        // w1 (8 × 512, 16 KiB) is shared; w2 (512 × 2) is too small to bother.
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].0.as_str(), found[0].1.as_slice()), ("w1", &[8i64, 512][..]));
        assert!(found[0].2.iter().all(|v| v.is_finite()) && found[0].2.iter().any(|v| *v != 0.0));
    }

    #[test]
    fn unreadable_bytes_share_nothing() {
        for bytes in [&b""[..], &[0xff; 12], &[0x3a, 0x80], &[0x3a, 0x05, 0x2a, 0x10], &[0x0f]] {
            assert!(large_float_initializers(bytes).is_empty());
        }
    }
}
