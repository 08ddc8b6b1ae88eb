//! Arbitrary bytes as the body of every server route that reads one, and as an Open Inference
//! Protocol request with binary tensors.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    quorum_server::fuzzing::request_bodies(data);
});
