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


class OutcomeError(QuorumError, ValueError):
    """An outcome that cannot be joined with a prediction (unknown or expired id, not a class)."""


class StorageError(QuorumError, OSError):
    """Reading or writing the quorum home failed."""


class JSONError(QuorumError, ValueError):
    """A JSON document or configuration could not be parsed."""


__all__ = [name for name, value in list(globals().items()) if isinstance(value, type) and issubclass(value, QuorumError)]
