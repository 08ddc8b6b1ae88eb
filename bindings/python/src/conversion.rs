//! Every conversion between quorum and Python in one place: errors, serde values, guarded calls.

use pyo3::prelude::*;
use pyo3::types::PyType;

/// Raises the `quorum.errors` exception matching `error`, with its message and stable `code`.
pub fn to_py_err(error: quorum::Error) -> PyErr {
    Python::attach(|py| {
        // quorum.errors.BY_CODE has a class for every code (tests/test_errors.py checks it).
        let class = py
            .import("quorum.errors")
            .and_then(|m| m.getattr("BY_CODE"))
            .and_then(|by_code| by_code.get_item(error.code()))
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
    py.detach(|| quorum::Error::guard(f)).map_err(to_py_err)
}

/// Any serialisable quorum value as plain Python objects: dicts, lists, tuples (serde tuples, such as
/// `(member, metrics)` pairs), floats, ints, `None`, as the stubs' TypedDicts describe them.
pub fn to_python<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, value).map_err(|e| to_py_err(quorum::Error::Internal(format!("result conversion: {e}"))))
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

/// A Python `version=None` / `version=3` argument as the core's version spec.
pub fn version_spec(version: Option<Version>) -> quorum::VersionSpec {
    version.map_or(quorum::VersionSpec::Default, |v| quorum::VersionSpec::Exact(v.0))
}

/// A version argument: an int from 1 to 2147483647, else `InvalidNameError` (never `True`, a
/// float, or a number wrapped into range), the same rule as the Node package's.
#[derive(Debug, Clone, Copy)]
pub struct Version(pub u32);

impl<'a, 'py> FromPyObject<'a, 'py> for Version {
    type Error = PyErr;

    fn extract(value: pyo3::Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let invalid = || {
            let shown = value.repr().map_or_else(|_| "?".to_string(), |r| r.to_string());
            to_py_err(quorum::Error::InvalidName {
                what: "version",
                value: shown,
                reason: "a version is a whole number from 1 to 2147483647",
            })
        };
        if value.is_instance_of::<pyo3::types::PyBool>() {
            return Err(invalid());
        }
        let n: i64 = value.extract().map_err(|_| invalid())?;
        quorum::check_version("version", n as f64).map(Version).map_err(|_| invalid())
    }
}
