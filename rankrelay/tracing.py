"""Traces and request ids.

With the ``otel`` extra (``opentelemetry-api``) installed, :func:`span` opens an OpenTelemetry span (recorded by
whatever tracer provider the application configures; the API alone records nothing). Without it, nothing from
OpenTelemetry is imported and :func:`span` costs a function call. The service opens a span per request from
the W3C ``traceparent`` it receives; below it: ``rankrelay.rerank`` (the served model, ``served_by``), one
``rankrelay.backend`` per backend called (so each attempt of a fallback chain), ``rankrelay.batch`` (time queued
for a shared forward pass and model time) and, for ``/search``, ``rankrelay.retrieve``.

:data:`request_id` holds the current request's id (the ``X-Request-Id`` it came with, or a new one); the
service echoes it and :class:`RequestIdFilter` puts it on log records.

Example:
    >>> with span("rankrelay.example", documents=3) as s:
    ...     set_attributes(s, served_by="identity")
"""

from __future__ import annotations

import contextvars
import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: the id of the request being answered ("-" outside one)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("rankrelay_request_id", default="-")

_tracer: Any = None
_checked = False


def tracer() -> Any:
    """OpenTelemetry's tracer for rankrelay, or None when the API is not installed (then nothing is imported)."""
    global _tracer, _checked
    if not _checked:
        _checked = True
        if importlib.util.find_spec("opentelemetry") is not None:
            from importlib.metadata import PackageNotFoundError, version

            from opentelemetry import trace

            try:
                release = version("rankrelay")
            except PackageNotFoundError:  # a source tree that was never installed
                release = None
            _tracer = trace.get_tracer("rankrelay", release)
    return _tracer


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span named ``name`` with ``attributes`` (None values left out), current inside the block; an
    exception leaving the block marks it an error and is recorded by its type only (never its message, which may
    echo a query or a document). Yields None without OpenTelemetry."""
    t = tracer()
    if t is None:
        yield None
        return
    with t.start_as_current_span(name, attributes=_clean(attributes), record_exception=False,
                                 set_status_on_exception=False) as current:
        try:
            yield current
        except BaseException as exc:  # the type only: a provider's message may echo the query or documents
            from opentelemetry.trace import Status, StatusCode

            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            current.add_event("exception", {"exception.type": type(exc).__name__})
            raise


def set_attributes(current: Any, **attributes: Any) -> None:
    """Add ``attributes`` to a span from :func:`span` (nothing when it is None)."""
    if current is not None:
        current.set_attributes(_clean(attributes))


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {f"rankrelay.{k}": v for k, v in attributes.items() if v is not None}


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record (``%(request_id)s`` in a format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True
