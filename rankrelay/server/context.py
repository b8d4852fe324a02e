"""Each request's identity: its ``X-Request-Id`` (the one it came with when it is a sane token, else a new one),
echoed on every answer and put on log lines, and, with OpenTelemetry installed, a server span continuing the
trace of its W3C ``traceparent`` header."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rankrelay.redact import redact_spec
from rankrelay.tracing import request_id, tracer

#: an incoming id is echoed only when it is a short token (no header injection, no unbounded log text)
VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestContext:
    """ASGI middleware (outermost, so even a 401 carries the id): request id, log context and trace context."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        rid = given if VALID_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            with _server_span(scope, headers, rid):
                await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


@contextmanager
def _server_span(scope: Any, headers: dict[str, str], rid: str) -> Iterator[Any]:
    t = tracer()
    if t is None:
        yield None
        return
    from opentelemetry import propagate, trace

    parent = propagate.extract(headers)  # W3C traceparent / tracestate (the API's default propagators)
    with t.start_as_current_span("rankrelay.request", context=parent, kind=trace.SpanKind.SERVER,
                                 attributes={"http.request.method": scope.get("method", ""),
                                             "url.path": scope.get("path", ""),
                                             "rankrelay.request_id": rid}) as current:
        yield current


class RedactQuery(logging.Filter):
    """On uvicorn's access log: secrets in a request's query string (``?api_key=...``, ``&token=...``; the service
    refuses keys sent there, but the line is written first) are logged as ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            record.args = (*record.args[:2], redact_spec(record.args[2]), *record.args[3:])
        return True


#: the one filter on ``uvicorn.access`` (adding it again is a no-op)
REDACT_QUERY = RedactQuery()
