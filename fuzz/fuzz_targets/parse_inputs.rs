//! Arbitrary bytes into every parser quorum exposes to untrusted input: model metadata, ensemble
//! configuration, request features, replay CSV, and the CLI's `name:column` / `model@version` forms.
//! None may panic; each returns a value or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorum::{EnsembleConfig, Features, MemberSpec, ModelMetadata, OutputSpec};

fuzz_target!(|data: &[u8]| {
    let _ = ModelMetadata::from_json(data);
    let _ = EnsembleConfig::from_json(data);
    let text = String::from_utf8_lossy(data);
    let _ = Features::from_json(&text);
    let _ = quorum::replay::Table::parse(&text);
    let _ = text.parse::<OutputSpec>();
    let _ = text.parse::<MemberSpec>();
});
