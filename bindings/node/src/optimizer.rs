//! `Optimizer`: benchmarks, optimizes and quantizes models of an engine's registry.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::{guarded, to_json, JsInferenceEngine, OptimizeOptions};

/// Options of `quantize`.
#[derive(Debug)]
#[napi(object)]
pub struct QuantizeOptions {
    /// INT8 static methods: one weight scale per output channel.
    pub per_channel: Option<bool>,
    /// INT8 static methods: the CSV file to calibrate on ...
    pub data: Option<String>,
    /// ... and the model's features in input order.
    pub features: Option<Vec<String>>,
}

/// Measures and rewrites models: benchmark, optimize (candidates judged on data, the winner
/// registered as a new version), quantize (one rewrite of one file).
#[derive(Debug)]
#[napi(js_name = "Optimizer")]
pub struct JsOptimizer {
    inner: quorum::Optimizer,
}

impl JsOptimizer {
    pub fn of_engine(engine: &quorum::InferenceEngine) -> JsOptimizer {
        JsOptimizer { inner: quorum::Optimizer::new(engine) }
    }
}

#[napi]
impl JsOptimizer {
    /// An optimizer over `engine`'s registry and ONNX Runtime.
    #[napi(constructor)]
    pub fn new(engine: &JsInferenceEngine) -> Self {
        JsOptimizer::of_engine(engine.core())
    }

    /// Builds INT8 / optimised candidates of a registered model (`name` or `name@version`),
    /// benchmarks them on a CSV file and registers the fastest one within the accuracy threshold as a
    /// new version (or keeps the original). Returns the report.
    #[napi(ts_return_type = "OptimizeReport")]
    pub fn optimize(
        &self,
        model: String,
        data: String,
        outcome: String,
        options: Option<OptimizeOptions>,
    ) -> Result<serde_json::Value> {
        let report = guarded(|| {
            let spec: quorum::MemberSpec = model.parse()?;
            let document = options.map_or(serde_json::Value::Null, |o| {
                serde_json::json!({
                    "accuracy_threshold": o.accuracy_threshold,
                    "methods": o.methods,
                    "target_latency_ms": o.target_latency_ms,
                    "batch_sizes": o.batch_sizes,
                })
            });
            let options = quorum::OptimizeOptions::from_json(document)?;
            self.inner.optimize(&spec.model, spec.version, std::path::Path::new(&data), &outcome, &options)
        })?;
        to_json(&report)
    }

    /// Latency at batch 1/8/64/512, throughput, size, session memory and (with `outcome`) accuracy
    /// of a registered model (`name` or `name@version`) on a CSV file.
    #[napi(ts_return_type = "ModelBenchmark")]
    pub fn benchmark(&self, model: String, data: String, outcome: Option<String>) -> Result<serde_json::Value> {
        let bench = guarded(|| {
            let spec: quorum::MemberSpec = model.parse()?;
            self.inner.benchmark(&spec.model, spec.version, std::path::Path::new(&data), outcome.as_deref())
        })?;
        to_json(&bench)
    }

    /// Rewrites the ONNX file `file` with one method into `out` (int8-dynamic,
    /// int8-dynamic-per-channel, int8-static-minmax / -percentile / -entropy with `data` and
    /// `features`, fp16). Returns `out`, `bytes` and the per-node report.
    #[napi(ts_return_type = "QuantizeReport")]
    pub fn quantize(
        &self,
        file: String,
        out: String,
        method: String,
        options: Option<QuantizeOptions>,
    ) -> Result<serde_json::Value> {
        let report = guarded(|| {
            let (per_channel, data, features) =
                options.map_or((None, None, None), |o| (o.per_channel, o.data, o.features));
            let options = quorum::optimizer::QuantizeOptions {
                method: method.parse()?,
                per_channel: per_channel.unwrap_or(false),
                calibration: data.map(|d| (d.into(), features.unwrap_or_default())),
            };
            self.inner.quantize(std::path::Path::new(&file), std::path::Path::new(&out), &options)
        })?;
        to_json(&report)
    }
}
