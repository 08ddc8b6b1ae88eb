//! One error type for the whole crate.
//!
//! Each variant is one category a caller can act on (and that the Python and Node bindings map 1:1
//! to an exception class or error code). Messages say what was wrong and, where it helps, what to do.

use std::path::PathBuf;

/// Everything quorum can fail with.
///
/// Match on the variant in Rust; [`Error::code`] is the stable name the CLI, the server (in its
/// JSON error body) and the Python and Node packages use.
///
/// ```
/// use quorum::{Error, Features};
///
/// # fn main() -> quorum::Result<()> {
/// # let home = tempfile::tempdir().map_err(|e| quorum::Error::io("tempdir", e))?;
/// # let engine = quorum::InferenceEngine::builder(home.path()).build()?;
/// # engine.register_model(quorum::ModelRegistration::new("sentiment", "examples/models/sentiment.onnx",
/// #     ["vix", "vix_chg_1d", "vix_chg_5d", "vix_rel_20d", "vix_zscore_60d"]))?;
/// # engine.create_ensemble(quorum::EnsembleConfig::new("market", ["sentiment".parse()?]))?;
/// match engine.predict("no-such-ensemble", &Features::new()) {
///     Err(Error::NotFound { what, name }) => assert_eq!((what, name.as_str()), ("ensemble", "no-such-ensemble")),
///     other => panic!("expected not_found, got {other:?}"),
/// }
///
/// let nan = Features::new().with("vix", f32::NAN).with("vix_chg_1d", 0.0).with("vix_chg_5d", 0.0)
///     .with("vix_rel_20d", 0.0).with("vix_zscore_60d", 0.0);
/// let refused = engine.predict("market", &nan).unwrap_err();
/// assert_eq!(refused.code(), "non_finite");
/// println!("{refused}"); // says which feature, and how to impute instead
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error("ONNX Runtime is not available: {0}")]
    RuntimeUnavailable(String),

    /// A name or version that cannot be used as a registry path component.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// What the name is for (`model name`, `version`, ...).
        what: &'static str,
        /// The name as given.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The request's features cannot be turned into model inputs.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A feature the model consumes is absent from the request.
    #[error("missing feature {feature:?} (needed by model {model:?})")]
    MissingFeature {
        /// The feature's name.
        feature: String,
        /// The model that consumes it.
        model: String,
    },

    /// A NaN or infinite feature value and a policy that refuses it.
    #[error("feature {feature:?} is {value}{}; non-finite values are refused (set the ensemble's non_finite policy to impute them)",
        row.map(|r| format!(" in batch row {r}")).unwrap_or_default())]
    NonFinite {
        /// The feature's name.
        feature: String,
        /// The value given (NaN, +inf or -inf).
        value: f32,
        /// Its row in a batch (0-based); `None` for a single request.
        row: Option<usize>,
    },

    /// A model, version, ensemble or request id that does not exist.
    #[error("{what} not found: {name}")]
    NotFound {
        /// What was looked for (`model`, `ensemble`, `request`, ...).
        what: &'static str,
        /// The name, `name@version` or id looked for.
        name: String,
    },

    /// Something with that name and version already exists.
    #[error("{what} already exists: {name}")]
    AlreadyExists {
        /// What exists (`model version`, `experiment`, ...).
        what: &'static str,
        /// Its name.
        name: String,
    },

    /// An invalid configuration: ensemble, metadata, runtime options.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The artifact on disk does not match the sha256 recorded when it was registered.
    #[error("checksum mismatch for {path}: metadata says {expected}, file has {actual}; the artifact was modified or corrupted, re-register it")]
    ChecksumMismatch {
        /// The artifact's path.
        path: PathBuf,
        /// The sha256 (hex) recorded at registration.
        expected: String,
        /// The sha256 (hex) of the file now.
        actual: String,
    },

    /// ONNX Runtime refused the model, or the model does not fit its declared metadata.
    #[error("cannot load model {model:?}: {reason}")]
    ModelLoad {
        /// The model's name (or file).
        model: String,
        /// What ONNX Runtime or the check said.
        reason: String,
    },

    /// A model produced an output that is not what its metadata declares.
    #[error("model {model:?} returned {found}, expected {expected}")]
    OutputShape {
        /// The model's name.
        model: String,
        /// The output its metadata declares.
        expected: String,
        /// The output it returned.
        found: String,
    },

    /// ONNX Runtime failed while running a model.
    #[error("inference failed: {0}")]
    Inference(#[from] ort::Error),

    /// A member was not run or did not finish: its circuit breaker is open, it panicked, or a fault
    /// was injected.
    #[error("model {model:?} is unavailable: {reason}")]
    MemberUnavailable {
        /// The member's model name.
        model: String,
        /// Why it did not run (breaker open, panic, injected fault, timeout).
        reason: String,
    },

    /// Too few ensemble members produced a prediction.
    #[error("ensemble {ensemble:?}: only {succeeded} of {required} required members produced a prediction; first failure: {first_failure}")]
    QuorumNotReached {
        /// The ensemble's name.
        ensemble: String,
        /// How many members answered.
        succeeded: usize,
        /// How many must (`min_members`).
        required: usize,
        /// The first member failure, as text.
        first_failure: String,
    },

    /// A request whose deadline passed, or could not be met, before it ran: refused rather than late.
    #[error("deadline exceeded for {what}: {detail}")]
    DeadlineExceeded {
        /// The ensemble or model the request was for.
        what: String,
        /// How much time was left and how much the run was expected to take.
        detail: String,
    },

    /// The optimizer cannot read, rewrite or judge a model (not ONNX, external data, nothing to
    /// quantize, no data to measure on).
    #[error("optimizer: {0}")]
    Optimize(String),

    /// Outcome tracking is off for this engine (`EngineBuilder::without_tracking`): there are no
    /// outcomes to record and no tracked metrics to read.
    #[error("tracking is disabled for this engine (build it without `without_tracking` to record outcomes and read metrics)")]
    TrackingDisabled,

    /// A tracked outcome that cannot be joined with a prediction.
    #[error("outcome rejected: {0}")]
    Outcome(String),

    /// Reading or writing the quorum home failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A bug in quorum: a panic caught at a boundary (the bindings, the CLI) instead of crossing it.
    #[error("internal error (please report it): {0}")]
    Internal(String),

    /// A JSON document (metadata, ensemble config, request) could not be parsed.
    #[error("invalid JSON in {context}: {source}")]
    Json {
        /// Which document.
        context: String,
        /// The parser's error (with line and column).
        #[source]
        source: serde_json::Error,
    },

    /// Another process writes this home's SQLite state: one writer at a time, since each would
    /// overwrite the other's learnt weights and tracked sums.
    #[error("{path} is in use by another process ({holder}); one process at a time writes a home's state: stop that one, or share state between processes through PostgreSQL (--state postgres://...)")]
    Locked {
        /// The state database's path.
        path: PathBuf,
        /// The process holding it, as its lock file says (pid and host).
        holder: String,
    },

    /// Refused because something still uses it (ensembles using a model): change those first, or force.
    #[error("{what} {name:?} is used by {users}; change or remove those first, or force it")]
    InUse {
        /// What is in use (`model`, `model version`).
        what: &'static str,
        /// Its name.
        name: String,
        /// Who uses it (the ensembles), comma-separated.
        users: String,
    },

    /// An input over its configured size limit.
    #[error("{what} is larger than the limit of {limit} bytes ({size})")]
    TooLarge {
        /// What was too large (a request body, a model file, a batch).
        what: String,
        /// Its size, as measured (bytes or rows, with the unit).
        size: String,
        /// The configured limit, in bytes.
        limit: u64,
    },

    /// Written state no longer reaches its store: the home or its database was deleted or replaced
    /// while the engine ran.
    #[error("state lost: {0}")]
    StateLost(String),

    /// An ensemble's request queue is full (`BatchingOptions::max_queued`): refused at once rather
    /// than queued without bound. Retry later, or raise the bound.
    #[error("{what} is overloaded: {queued} requests are queued, the limit is {limit}; retry later or raise batching max_queued")]
    Overloaded {
        /// The ensemble whose queue is full.
        what: String,
        /// Requests queued when this one came.
        queued: usize,
        /// The bound (`max_queued`).
        limit: usize,
    },
}

/// `Result` with quorum's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<quorum_onnx::Error> for Error {
    /// A model the ONNX layer cannot read or rewrite is the optimizer's `optimize` error.
    fn from(e: quorum_onnx::Error) -> Self {
        Error::Optimize(e.0)
    }
}

impl Error {
    /// An [`Error::Io`] (code `io`) saying what was being read or written.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// An [`Error::Json`] (code `json`) naming the document that did not parse.
    pub fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json { context: context.into(), source }
    }

    pub(crate) fn not_found(what: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound { what, name: name.into() }
    }

    /// A stable, machine-readable code for the error's category (used by the bindings and the CLI).
    pub fn code(&self) -> &'static str {
        match self {
            Error::RuntimeUnavailable(_) => "runtime_unavailable",
            Error::InvalidName { .. } => "invalid_name",
            Error::InvalidInput(_) => "invalid_input",
            Error::MissingFeature { .. } => "missing_feature",
            Error::NonFinite { .. } => "non_finite",
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::Config(_) => "config",
            Error::ChecksumMismatch { .. } => "checksum_mismatch",
            Error::ModelLoad { .. } => "model_load",
            Error::OutputShape { .. } => "output_shape",
            Error::Inference(_) => "inference",
            Error::MemberUnavailable { .. } => "member_unavailable",
            Error::QuorumNotReached { .. } => "quorum_not_reached",
            Error::DeadlineExceeded { .. } => "deadline_exceeded",
            Error::Optimize(_) => "optimize",
            Error::TrackingDisabled => "tracking_disabled",
            Error::Outcome(_) => "outcome",
            Error::Io { .. } => "io",
            Error::Json { .. } => "json",
            Error::Internal(_) => "internal",
            Error::Locked { .. } => "locked",
            Error::InUse { .. } => "in_use",
            Error::TooLarge { .. } => "too_large",
            Error::StateLost(_) => "state_lost",
            Error::Overloaded { .. } => "overloaded",
        }
    }

    /// Every code [`Error::code`] can return, in declaration order: the bindings test that each
    /// has its exception class / error code.
    pub const CODES: &'static [&'static str] = &[
        "runtime_unavailable",
        "invalid_name",
        "invalid_input",
        "missing_feature",
        "non_finite",
        "not_found",
        "already_exists",
        "config",
        "checksum_mismatch",
        "model_load",
        "output_shape",
        "inference",
        "member_unavailable",
        "quorum_not_reached",
        "deadline_exceeded",
        "optimize",
        "tracking_disabled",
        "outcome",
        "io",
        "json",
        "internal",
        "locked",
        "in_use",
        "too_large",
        "state_lost",
        "overloaded",
    ];

    /// The error for a panic caught at a boundary, with the panic's message when it has one.
    pub fn from_panic(panic: &(dyn std::any::Any + Send)) -> Self {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Error::Internal(message)
    }

    /// Runs `f`, turning a panic into [`Error::Internal`]: what every boundary (a binding call, a
    /// command) wraps its work in, so that no panic crosses into Python, JavaScript or a shell.
    ///
    /// # Errors
    ///
    /// `internal` when `f` panics (with the panic's message); otherwise `f`'s own error.
    pub fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|panic| Err(Error::from_panic(&*panic)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_is_an_internal_error_with_its_message() {
        let caught = Error::guard::<()>(|| panic!("boom {}", 7));
        assert!(matches!(&caught, Err(Error::Internal(m)) if m == "boom 7"), "{caught:?}");
        assert_eq!(caught.unwrap_err().code(), "internal");
        assert_eq!(Error::guard(|| Ok(3)).unwrap(), 3);
    }

    /// One error of every variant but `Inference` (an `ort::Error` cannot be made without loading
    /// ONNX Runtime). The match below has no wildcard, so a new variant does not compile until it is
    /// added here, and then `CODES` must list its code.
    fn one_of_each() -> Vec<Error> {
        let s = String::new;
        let io = || std::io::Error::other("x");
        let json = || serde_json::from_str::<u8>("x").unwrap_err();
        let all = vec![
            Error::RuntimeUnavailable(s()),
            Error::InvalidName { what: "model name", value: s(), reason: "x" },
            Error::InvalidInput(s()),
            Error::MissingFeature { feature: s(), model: s() },
            Error::NonFinite { feature: s(), value: f32::NAN, row: None },
            Error::NotFound { what: "model", name: s() },
            Error::AlreadyExists { what: "model", name: s() },
            Error::Config(s()),
            Error::ChecksumMismatch { path: PathBuf::new(), expected: s(), actual: s() },
            Error::ModelLoad { model: s(), reason: s() },
            Error::OutputShape { model: s(), expected: s(), found: s() },
            Error::MemberUnavailable { model: s(), reason: s() },
            Error::QuorumNotReached { ensemble: s(), succeeded: 0, required: 1, first_failure: s() },
            Error::DeadlineExceeded { what: s(), detail: s() },
            Error::Optimize(s()),
            Error::TrackingDisabled,
            Error::Outcome(s()),
            Error::io("x", io()),
            Error::json("x", json()),
            Error::Internal(s()),
            Error::Locked { path: PathBuf::new(), holder: s() },
            Error::InUse { what: "model", name: s(), users: s() },
            Error::TooLarge { what: s(), size: s(), limit: 0 },
            Error::StateLost(s()),
            Error::Overloaded { what: s(), queued: 1, limit: 1 },
        ];
        for error in &all {
            match error {
                Error::RuntimeUnavailable(_)
                | Error::InvalidName { .. }
                | Error::InvalidInput(_)
                | Error::MissingFeature { .. }
                | Error::NonFinite { .. }
                | Error::NotFound { .. }
                | Error::AlreadyExists { .. }
                | Error::Config(_)
                | Error::ChecksumMismatch { .. }
                | Error::ModelLoad { .. }
                | Error::OutputShape { .. }
                | Error::Inference(_)
                | Error::MemberUnavailable { .. }
                | Error::QuorumNotReached { .. }
                | Error::DeadlineExceeded { .. }
                | Error::Optimize(_)
                | Error::TrackingDisabled
                | Error::Outcome(_)
                | Error::Io { .. }
                | Error::Json { .. }
                | Error::Internal(_)
                | Error::Locked { .. }
                | Error::InUse { .. }
                | Error::TooLarge { .. }
                | Error::StateLost(_)
                | Error::Overloaded { .. } => {}
            }
        }
        all
    }

    #[test]
    fn codes_lists_the_code_of_every_variant_once_in_declaration_order() {
        let codes: Vec<&str> = one_of_each().iter().map(Error::code).collect();
        let listed: Vec<&str> = Error::CODES.iter().copied().filter(|c| *c != "inference").collect();
        assert_eq!(codes, listed);
        assert_eq!(Error::CODES.iter().position(|c| *c == "inference"), Some(11));
    }
}
