//! The `quorum._quorum` extension module. Logic lives in the core crate; this is conversions only.

mod conversion;
mod engine;

use pyo3::prelude::*;

#[pymodule]
fn _quorum(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::InferenceEngine>()?;
    m.add_class::<engine::Prediction>()?;
    m.add_class::<engine::BatchPrediction>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
