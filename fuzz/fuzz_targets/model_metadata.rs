//! Arbitrary bytes as a model's metadata.json, and text as the CLI's `name:column` and
//! `model@version` forms.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = quorum::ModelMetadata::from_json(data);
    let text = String::from_utf8_lossy(data);
    let _ = text.parse::<quorum::OutputSpec>();
    let _ = text.parse::<quorum::MemberSpec>();
});
