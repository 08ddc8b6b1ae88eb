//! Entry points for the fuzz targets in `fuzz/` (not an API): every parser a request body reaches,
//! on arbitrary bytes. A panic here is a bug the fuzzer reports; an error is the expected answer.

use crate::api::{ensembles, models, optimize, predict};
use crate::body::parse;

/// Every route's request body type, parsed from `bytes` as the routes parse them, and the Open
/// Inference Protocol's JSON-plus-binary body split at the length in the first byte.
pub fn request_bodies(bytes: &[u8]) {
    let depth = crate::config::Limits::default().max_json_depth;
    let _ = parse::<predict::PredictRequest<'_>>(bytes, depth, "fuzz");
    let _ = parse::<predict::BatchPredictRequest<'_>>(bytes, depth, "fuzz");
    let _ = parse::<predict::OutcomesRequest>(bytes, depth, "fuzz");
    let _ = parse::<ensembles::CreateEnsemble>(bytes, depth, "fuzz");
    let _ = parse::<models::SetDefault>(bytes, depth, "fuzz");
    let _ = parse::<optimize::OptimizeRequest>(bytes, depth, "fuzz");
    let _ = parse::<optimize::BenchmarkRequest>(bytes, depth, "fuzz");
    let _ = parse::<quorum::ExperimentConfig>(bytes, depth, "fuzz");
    if let Some((&first, rest)) = bytes.split_first() {
        crate::oip::fuzz_infer(rest, usize::from(first).min(rest.len()));
    }
}

/// Alert rules in the story's YAML form.
pub fn alert_rules(text: &str) {
    let _ = crate::alert_rules::parse_rules(text, "fuzz");
}
