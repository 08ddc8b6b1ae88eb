//! Arbitrary bytes as an ensemble configuration, checked as a save would.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = quorum::EnsembleConfig::from_json(data) {
        let _ = config.validate();
        let _ = config.latency_budget();
    }
});
