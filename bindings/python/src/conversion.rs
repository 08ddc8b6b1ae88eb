//! Every conversion between quorum and Python in one place: errors, serde values, guarded calls.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::prelude::*;
use pyo3::types::PyType;

/// The Python exception class (in `quorum.errors`) for each error category.
fn class_name(error: &quorum::Error) -> &'static str {
    match error.code() {
        "runtime_unavailable" => "RuntimeUnavailableError",
        "invalid_name" => "InvalidNameError",
        "invalid_input" => "InvalidInputError",
        "missing_feature" => "MissingFeatureError",
        "non_finite" => "NonFiniteError",
        "not_found" => "NotFoundError",
        "already_exists" => "AlreadyExistsError",
        "config" => "ConfigError",
        "checksum_mismatch" => "ChecksumMismatchError",
        "model_load" => "ModelLoadError",
        "output_shape" => "OutputShapeError",
        "inference" => "InferenceError",
        "member_unavailable" => "MemberUnavailableError",
        "quorum_not_reached" => "QuorumNotReachedError",
        "deadline_exceeded" => "DeadlineExceededError",
        "optimize" => "OptimizeError",
        "outcome" => "OutcomeError",
        "io" => "StorageError",
        "json" => "JSONError",
        _ => "QuorumError",
    }
}

/// Raises the `quorum.errors` exception matching `error`, with its message and stable `code`.
pub fn to_py_err(error: quorum::Error) -> PyErr {
    Python::attach(|py| {
        let class = py
            .import("quorum.errors")
            .and_then(|m| m.getattr(class_name(&error)))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
        match class {
            Ok(class) => PyErr::from_type(class, (error.to_string(), error.code())),
            Err(import_error) => import_error,
        }
    })
}

/// Runs `f` without the GIL (other Python threads keep running, and predict in parallel) and turns
/// its error — or a panic, which must never cross into Python — into a Python exception.
pub fn guarded<T: Send>(py: Python<'_>, f: impl FnOnce() -> quorum::Result<T> + Send) -> PyResult<T> {
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    match outcome {
        Ok(result) => result.map_err(to_py_err),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(to_py_err(quorum::Error::Config(format!("internal error (please report): {message}"))))
        }
    }
}

/// Any serialisable quorum value as plain Python objects (dicts, lists, floats), through JSON.
pub fn to_python<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| to_py_err(quorum::Error::json("result", e)))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A Python object (dict, list, numbers) as a serde value, through JSON.
pub fn from_python<T: serde::de::DeserializeOwned>(
    py: Python<'_>,
    value: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<T> {
    let text: String = py.import("json")?.call_method1("dumps", (value,))?.extract()?;
    serde_json::from_str(&text).map_err(|e| to_py_err(quorum::Error::json(what, e)))
}
