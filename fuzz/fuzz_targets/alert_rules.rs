//! Arbitrary text as an alert rule file (the story's YAML form).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    quorum_server::fuzzing::alert_rules(text);
});
