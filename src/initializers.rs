//! The large float initializers (weights) of an ONNX model, read straight from its protobuf bytes so
//! that every replica of a model can share one copy.
//!
//! Initializers added to ONNX Runtime's session options (`AddInitializer`) are referenced rather than
//! copied, so every replica can use one set. Such sessions run with prepacking off: a kernel that
//! prepacks a weight keeps a private packed copy of it, which would undo the sharing. Measured on a
//! 68 MB MLP (`make replica-memory`): an extra replica costs ~2–3 MB instead of ~70 MB, the first one
//! the same, and single-row latency is unchanged. ONNX Runtime's prepacked-weights container was tried
//! too: each session still kept its own copy of every weight (no saving at all).
//!
//! Only what sharing needs is decoded: `ModelProto.graph` (field 7) → `GraphProto.initializer`
//! (field 5) → `TensorProto` dims (1), data_type (2), float_data (4), name (8), raw_data (9),
//! data_location (14). Anything unexpected means "nothing to share" — ONNX Runtime then reads the
//! model itself and reports any real problem; this reader never fails a load or panics.

use std::sync::Arc;

use ort::value::{DynValue, Tensor};

/// Initializers smaller than this are not worth sharing.
const MIN_SHARED_BYTES: usize = 16 * 1024;

const FLOAT: u64 = 1;
const EXTERNAL: u64 = 1;

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
        let values = float_initializers(model)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| {
                let value = Tensor::from_array((t.dims, t.data)).ok()?;
                Some((t.name, Arc::new(value.into_dyn())))
            })
            .collect();
        SharedInitializers { values }
    }
}

struct FloatTensor {
    name: String,
    dims: Vec<i64>,
    data: Vec<f32>,
}

fn float_initializers(model: &[u8]) -> Option<Vec<FloatTensor>> {
    let graph = fields(model)?.into_iter().find_map(|(field, value)| match (field, value) {
        (7, Field::Bytes(b)) => Some(b),
        _ => None,
    })?;
    let mut found = Vec::new();
    for (field, value) in fields(graph)? {
        if let (5, Field::Bytes(tensor)) = (field, value) {
            if let Some(t) = float_tensor(tensor) {
                found.push(t);
            }
        }
    }
    Some(found)
}

fn float_tensor(bytes: &[u8]) -> Option<FloatTensor> {
    let (mut name, mut dims, mut data_type, mut raw, mut floats, mut external) =
        (None, Vec::new(), 0, None, Vec::new(), false);
    for (field, value) in fields(bytes)? {
        match (field, value) {
            (1, Field::Varint(d)) => dims.push(d as i64),
            (1, Field::Bytes(packed)) => dims.extend(varints(packed)?.into_iter().map(|d| d as i64)),
            (2, Field::Varint(t)) => data_type = t,
            (4, Field::Bytes(packed)) => floats.extend(f32s(packed)?),
            (4, Field::Fixed32(bits)) => floats.push(f32::from_bits(bits)),
            (8, Field::Bytes(n)) => name = Some(std::str::from_utf8(n).ok()?.to_string()),
            (9, Field::Bytes(r)) => raw = Some(r),
            (14, Field::Varint(location)) => external = location == EXTERNAL,
            _ => {}
        }
    }
    if data_type != FLOAT || external || dims.iter().any(|d| *d < 0) {
        return None;
    }
    let data = match raw {
        Some(r) => f32s(r)?,
        None => floats,
    };
    let count = dims.iter().try_fold(1usize, |n, d| n.checked_mul(usize::try_from(*d).ok()?))?;
    if data.len() != count || count * 4 < MIN_SHARED_BYTES {
        return None;
    }
    Some(FloatTensor { name: name?, dims, data })
}

enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The top-level fields of one protobuf message; `None` if it is malformed.
fn fields(mut bytes: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let value = match key & 7 {
            0 => Field::Varint(varint(&mut bytes)?),
            1 => {
                bytes = bytes.get(8..)?;
                Field::Fixed64
            }
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                let (value, rest) = (bytes.get(..len)?, bytes.get(len..)?);
                bytes = rest;
                Field::Bytes(value)
            }
            5 => {
                let value = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
                bytes = bytes.get(4..)?;
                Field::Fixed32(value)
            }
            _ => return None,
        };
        out.push((key >> 3, value));
    }
    Some(out)
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

fn varints(mut bytes: &[u8]) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        out.push(varint(&mut bytes)?);
    }
    Some(out)
}

fn f32s(bytes: &[u8]) -> Option<Vec<f32>> {
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(field: u64, wire: u64) -> Vec<u8> {
        encode_varint((field << 3) | wire)
    }

    fn encode_varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn bytes_field(field: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = key(field, 2);
        out.extend(encode_varint(payload.len() as u64));
        out.extend_from_slice(payload);
        out
    }

    fn tensor(name: &str, dims: &[u64], data: &[f32]) -> Vec<u8> {
        let mut t = Vec::new();
        for d in dims {
            t.extend(key(1, 0));
            t.extend(encode_varint(*d));
        }
        t.extend(key(2, 0));
        t.extend(encode_varint(FLOAT));
        t.extend(bytes_field(8, name.as_bytes()));
        let raw: Vec<u8> = data.iter().flat_map(|f| f.to_le_bytes()).collect();
        t.extend(bytes_field(9, &raw));
        t
    }

    #[test]
    fn finds_large_float_initializers_and_skips_small_ones() {
        let big: Vec<f32> = (0..8192).map(|i| i as f32).collect();
        let mut graph = bytes_field(5, &tensor("w", &[64, 128], &big));
        graph.extend(bytes_field(5, &tensor("b", &[2], &[1.0, 2.0])));
        let mut model = key(1, 0);
        model.extend(encode_varint(8));
        model.extend(bytes_field(7, &graph));
        let found = float_initializers(&model).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].name.as_str(), found[0].dims.as_slice()), ("w", &[64i64, 128][..]));
        assert_eq!(found[0].data[8191], 8191.0);
    }

    #[test]
    fn reads_the_weights_of_a_real_onnx_file() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dense.onnx");
        let found = float_initializers(&std::fs::read(path).unwrap()).unwrap();
        // w1 (8 × 512, 16 KiB) is shared; w2 (512 × 2) is too small to bother.
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].name.as_str(), found[0].dims.as_slice()), ("w1", &[8i64, 512][..]));
        assert!(found[0].data.iter().all(|v| v.is_finite()) && found[0].data.iter().any(|v| *v != 0.0));
    }

    #[test]
    fn malformed_bytes_share_nothing_and_never_panic() {
        for bytes in [&b""[..], &[0xff; 12], &[0x3a, 0x80], &[0x3a, 0x05, 0x2a, 0x10], &[0x0f]] {
            assert!(float_initializers(bytes).is_none_or(|v| v.is_empty()));
        }
        // A declared shape that does not match the data.
        let graph = bytes_field(5, &tensor("w", &[100, 100], &vec![0.0; 8192]));
        assert!(float_initializers(&bytes_field(7, &graph)).unwrap().is_empty());
    }
}
