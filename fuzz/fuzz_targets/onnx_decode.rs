//! Arbitrary bytes as an ONNX model: quorum's own protobuf decoder and the graph reader the
//! server's metadata route uses (ONNX Runtime itself is not fuzzed here).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = quorum::onnx::decode(data) {
        let _ = quorum::onnx::default_opset(&model);
        let _ = quorum::onnx::encode(&model);
    }
    let _ = quorum::graph_io(data);
});
