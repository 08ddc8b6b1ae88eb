//! Arbitrary text as a request's `--features` JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = quorum::Features::from_json(text);
});
