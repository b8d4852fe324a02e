"""Typed errors: every failure rankrelay raises derives from :class:`RankRelayError`.

Input problems also derive from :class:`ValueError`, a missing optional dependency from
:class:`ImportError`, so callers that catch the built-in types keep working.

Example:
    >>> from rankrelay.errors import EmptyQueryError, RankRelayError
    >>> issubclass(EmptyQueryError, (RankRelayError, ValueError))
    True
"""

from __future__ import annotations

from collections.abc import Iterable


class RankRelayError(Exception):
    """Base class of every error raised by rankrelay."""


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
    """A backend spec names no registered backend and no preset."""

    def __init__(self, spec: str, known: Iterable[str]) -> None:
        self.spec = spec
        self.known = sorted(known)
        hint = ""
        if "/" in spec and ":" not in spec:
            hint = f" For a Hugging Face model id or a local path, write 'cross-encoder:{spec}'."
        super().__init__(f"unknown backend or preset {spec!r}; known: {', '.join(self.known)}.{hint}")


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


class ModelLoadError(RankRelayError, RuntimeError):
    """Model files were found but do not form a usable model for this backend."""
