"""Exceptions raised by quorum. Each mirrors one category of the core `Error` and carries its
stable `code` (the same string the CLI prints and the Node package uses)."""


class QuorumError(Exception):
    """Base class of every quorum error."""

    def __init__(self, message: str, code: str = "quorum") -> None:
        super().__init__(message)
        self.code = code


class RuntimeUnavailableError(QuorumError, RuntimeError):
    """ONNX Runtime could not be found or loaded."""


class InvalidInputError(QuorumError, ValueError):
    """The request cannot be turned into model inputs (wrong width, empty batch, bad values...)."""


class MissingFeatureError(InvalidInputError, KeyError):
    """A feature a member consumes is absent from the request."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class NonFiniteError(InvalidInputError):
    """A NaN or infinite feature, refused by the ensemble's policy."""


class InvalidNameError(QuorumError, ValueError):
    """A model or ensemble name (or version) that cannot be used."""


class NotFoundError(QuorumError, LookupError):
    """An unknown model, version, ensemble or request id."""


class AlreadyExistsError(QuorumError, FileExistsError):
    """That model version already exists."""


class ConfigError(QuorumError, ValueError):
    """An invalid configuration (ensemble, metadata, options)."""


class ChecksumMismatchError(QuorumError):
    """An artifact on disk no longer matches the sha256 recorded at registration."""


class ModelLoadError(QuorumError):
    """ONNX Runtime refused the model, or it does not fit its declared metadata."""


class OutputShapeError(QuorumError):
    """A model produced an output that is not what its metadata declares."""


class InferenceError(QuorumError, RuntimeError):
    """ONNX Runtime failed while running a model."""


class MemberUnavailableError(InferenceError):
    """A member was skipped (open circuit breaker) or failed (panic, injected fault)."""


class QuorumNotReachedError(QuorumError, RuntimeError):
    """Too few ensemble members produced a prediction."""


class DeadlineExceededError(QuorumError, TimeoutError):
    """A request whose deadline passed, or could not be met, before it ran: refused, not late."""


class OptimizeError(QuorumError):
    """The optimizer cannot read, rewrite or judge a model (not ONNX, external data, nothing to quantize)."""


class TrackingDisabledError(QuorumError, RuntimeError):
    """Outcome tracking is off for this engine (tracking=False): no outcomes, no tracked metrics."""


class InternalError(QuorumError, RuntimeError):
    """A bug in quorum (a panic caught before it could cross into Python): please report it."""


class OutcomeError(QuorumError, ValueError):
    """An outcome that cannot be joined with a prediction (unknown or expired id, not a class)."""


class StorageError(QuorumError, OSError):
    """Reading or writing the quorum home failed."""


class JSONError(QuorumError, ValueError):
    """A JSON document or configuration could not be parsed."""


class LockedError(QuorumError, RuntimeError):
    """Another process writes this home's state (one writer per SQLite state file); the message names it."""


class InUseError(QuorumError, RuntimeError):
    """Refused because something still uses it (ensembles using a model); pass force=True to override."""


class TooLargeError(QuorumError, ValueError):
    """An input over its configured size limit (a model file, a request body)."""


class StateLostError(QuorumError, OSError):
    """Written state no longer reaches its store: the home or its database was deleted or replaced."""


class OverloadedError(QuorumError, RuntimeError):
    """A model's request queue is full (batching max_queued): refused at once; retry later."""


# The class raised for each of the core's error codes (`quorum._quorum.ERROR_CODES`; a test checks
# that every code has one).
BY_CODE = {
    "runtime_unavailable": RuntimeUnavailableError,
    "invalid_name": InvalidNameError,
    "invalid_input": InvalidInputError,
    "missing_feature": MissingFeatureError,
    "non_finite": NonFiniteError,
    "not_found": NotFoundError,
    "already_exists": AlreadyExistsError,
    "config": ConfigError,
    "checksum_mismatch": ChecksumMismatchError,
    "model_load": ModelLoadError,
    "output_shape": OutputShapeError,
    "inference": InferenceError,
    "member_unavailable": MemberUnavailableError,
    "quorum_not_reached": QuorumNotReachedError,
    "deadline_exceeded": DeadlineExceededError,
    "optimize": OptimizeError,
    "tracking_disabled": TrackingDisabledError,
    "outcome": OutcomeError,
    "io": StorageError,
    "json": JSONError,
    "internal": InternalError,
    "locked": LockedError,
    "in_use": InUseError,
    "too_large": TooLargeError,
    "state_lost": StateLostError,
    "overloaded": OverloadedError,
}

__all__ = [
    "QuorumError",
    "RuntimeUnavailableError",
    "InvalidInputError",
    "MissingFeatureError",
    "NonFiniteError",
    "InvalidNameError",
    "NotFoundError",
    "AlreadyExistsError",
    "ConfigError",
    "ChecksumMismatchError",
    "ModelLoadError",
    "OutputShapeError",
    "InferenceError",
    "MemberUnavailableError",
    "QuorumNotReachedError",
    "DeadlineExceededError",
    "OptimizeError",
    "TrackingDisabledError",
    "InternalError",
    "OutcomeError",
    "StorageError",
    "JSONError",
    "LockedError",
    "InUseError",
    "TooLargeError",
    "StateLostError",
    "OverloadedError",
]
