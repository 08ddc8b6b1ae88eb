//! The `quorum._quorum` extension module. Logic lives in the core crate; this is conversions only.

mod conversion;
mod engine;
mod optimizer;
mod registry;

use pyo3::prelude::*;

#[pymodule]
fn _quorum(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::InferenceEngine>()?;
    m.add_class::<engine::Prediction>()?;
    m.add_class::<engine::BatchPrediction>()?;
    m.add_class::<registry::Registry>()?;
    m.add_class::<optimizer::Optimizer>()?;
    // Every code the core's errors carry, for the test that each has an exception class.
    m.add("ERROR_CODES", quorum::Error::CODES.to_vec())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
