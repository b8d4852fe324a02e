"""Typed errors: every failure rankrelay raises derives from :class:`RankRelayError`.

Input problems also derive from :class:`ValueError`, a missing optional dependency from
:class:`ImportError`, so callers that catch the built-in types keep working.

Example:
    >>> from rankrelay.errors import EmptyQueryError, RankRelayError
    >>> issubclass(EmptyQueryError, (RankRelayError, ValueError))
    True
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RankRelayError(Exception):
    """Base class of every error raised by rankrelay."""


def positive_int(value: object, what: str, error: type[RankRelayError] | None = None) -> int:
    """Return ``value`` if it is an int >= 1 (not a bool), else raise ``error`` (default
    :class:`InvalidInputError`) naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise (error or InvalidInputError)(f"{what} must be an int >= 1, got {value!r}")
    return value


class InvalidInputError(RankRelayError, ValueError):
    """A query, document or parameter given by the caller is not usable."""


class EmptyQueryError(InvalidInputError):
    """The query is empty or only whitespace."""


class InvalidDocumentError(InvalidInputError):
    """A document is neither text, a :class:`~rankrelay.Document`, nor a dict with ``text``."""


class DocumentTooLongError(InvalidInputError):
    """A document does not fit the model's window and ``long_documents="error"`` was chosen."""

    def __init__(self, message: str, *, index: int, tokens: int, limit: int) -> None:
        super().__init__(message)
        self.index = index
        self.tokens = tokens
        self.limit = limit


class QueryTooLongError(InvalidInputError):
    """The query alone leaves no room for document text in the model's window."""


class ConfigError(RankRelayError, ValueError):
    """A setting or option is unknown or has a bad value."""


class UnknownBackendError(ConfigError):
    """A backend spec names no registered backend, preset or profile."""

    def __init__(self, spec: str, known: Iterable[str]) -> None:
        self.spec = spec
        self.known = sorted(known)
        hint = ""
        close = difflib.get_close_matches(spec.partition(":")[0].strip().lower(), self.known, n=1, cutoff=0.6)
        if "/" in spec and ":" not in spec:
            hint = f" For a Hugging Face model id or a local path, write 'cross-encoder:{spec}'."
        elif close:
            hint = f" Did you mean {close[0]!r}?"
        super().__init__(f"unknown backend, preset or profile {spec!r}; known: {', '.join(self.known)}.{hint}")


class NotFoundError(RankRelayError, LookupError):
    """A request names something that does not exist here (an impression, an experiment): answered with 404."""


class ConflictError(RankRelayError):
    """A request contradicts what is already recorded (other feedback for an impression): answered with 409."""


class StoreUnavailableError(RankRelayError):
    """The experiment store cannot be reached: reranking goes on, feedback is answered 503 until it is back."""


class MissingDependencyError(RankRelayError, ImportError):
    """An optional dependency of a backend is not installed."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{feature} needs the optional package {package!r}: pip install 'rankrelay[{extra}]'"
        )


class ModelNotFoundError(RankRelayError, OSError):
    """Model weights could not be found locally and could not be downloaded."""


class DamagedArtifactError(InvalidInputError):
    """A file rankrelay wrote (an index, a manifest, a batch part, a report) does not read back as written;
    the message names the file and how to rebuild it."""


class ModelLoadError(RankRelayError, RuntimeError):
    """Model files were found but do not form a usable model for this backend."""


class ConversionError(ModelLoadError):
    """A model could not be converted to (or loaded in) a faster runtime."""

    def __init__(self, message: str, *, model: str, runtime: str) -> None:
        self.model = model
        self.runtime = runtime
        super().__init__(message)


class LowAgreementError(ConversionError):
    """A converted (quantized) model ranks too differently from the original; ``agreement`` says how."""

    def __init__(self, message: str, *, model: str, runtime: str, agreement: dict[str, float]) -> None:
        self.agreement = agreement
        super().__init__(message, model=model, runtime=runtime)


class BackendError(RankRelayError):
    """A backend (a hosted API, or a model that failed at run time) could not serve the request.

    Attributes:
        backend: the backend's name.
        status: the HTTP status, when there was a reply.
        retryable: whether the one retry policy may try again.
        retry_after: seconds the server asked to wait (``Retry-After``), if any.
        request_id: the provider's request id, if it sent one.
        attempts: how many attempts were made before this error was raised.
    """

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        backend: str | None = None,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        from rankrelay.redact import scrub  # a provider's message may echo the key

        super().__init__(scrub(message))
        self.backend = backend
        self.status = status
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after = retry_after
        self.request_id = request_id
        self.attempts = 1


class AuthenticationError(BackendError):
    """The API rejected the key (401/403) or no key was configured."""


class RateLimitError(BackendError):
    """The API answered 429 Too Many Requests."""

    default_retryable = True


class BackendUnavailableError(BackendError):
    """Connection refused or reset, or a 5xx/408 reply; also raised when every backend of a chain failed."""

    default_retryable = True


class BackendTimeoutError(BackendError, TimeoutError):
    """No reply within the read timeout, or the call's deadline ran out."""

    default_retryable = True


class BadResponseError(BackendError):
    """A reply that is not what the API promises: malformed JSON, missing, duplicate or out-of-range indices."""


class BadRequestError(BackendError):
    """The API refused the request itself (400, 404, 413, 422): a model name or a limit, not a passing fault."""


class BackendFailedError(BackendError):
    """A backend failed with an exception of its own (a model's runtime error, a bug in a user's reranker):
    mapped at the backend boundary so that a fallback chain moves on and the service answers 503."""


def backend_failure(backend: str, exc: BaseException) -> BackendError:
    """The typed error for an exception a backend raised that is not one of rankrelay's."""
    return BackendFailedError(f"{backend} failed: {type(exc).__name__}: {exc}", backend=backend)


#: what makes a fallback chain's backend unavailable rather than failing the chain: no credentials, no weights,
#: no package
UNAVAILABLE: tuple[type[RankRelayError], ...] = (AuthenticationError, ModelNotFoundError, MissingDependencyError)


class AllBackendsFailedError(BackendUnavailableError):
    """Every backend of a fallback chain failed or was skipped by its circuit breaker."""

    default_retryable = False

    def __init__(self, message: str, attempts: list[dict[str, object]]) -> None:
        super().__init__(message, backend="fallback", retryable=False)
        self.failures = attempts


#: The name the API docs use; it is a :class:`BackendTimeoutError` (and a builtin ``TimeoutError``).
TimeoutError = BackendTimeoutError  # noqa: A001
