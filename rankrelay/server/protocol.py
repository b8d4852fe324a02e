"""A read deadline for a request's line and headers, which uvicorn does not have: a client that opens a connection
and sends its headers slowly (or not at all) is answered 408 and closed after ``header_timeout_s``, so slow clients
cannot hold the service's connections and file descriptors. The body's deadline is
:class:`~rankrelay.server.guards.BodyLimit`'s.

``rankrelay serve`` runs uvicorn with ``http=deadline_protocol([service] header_timeout_s)``.

Example:
    >>> protocol = deadline_protocol(10.0)
    >>> protocol.header_timeout_s
    10.0
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
from typing import Any

from rankrelay.errors import ConfigError

logger = logging.getLogger(__name__)


def _answer_408(seconds: float) -> bytes:
    body = json.dumps({"message": f"the request's headers did not arrive within {seconds:g} s"}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class HeaderDeadline:
    """Mixed into uvicorn's HTTP protocol: armed when a connection opens and when a request begins, disarmed
    when its headers are complete."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            logger.info("closed a connection whose request headers took over %g s", self.header_timeout_s)
            self.transport.write(_answer_408(self.header_timeout_s))
            self.transport.close()


def deadline_protocol(header_timeout_s: float, http: str = "auto") -> type:
    """uvicorn's HTTP protocol with a header deadline of ``header_timeout_s`` seconds; pass it as
    ``uvicorn.run(..., http=...)``. ``http``: ``httptools``, ``h11``, or ``auto`` (httptools where installed, as
    uvicorn chooses)."""
    if http not in ("auto", "httptools", "h11"):
        raise ConfigError(f"http must be 'auto', 'httptools' or 'h11', got {http!r}")
    if http == "httptools" or (http == "auto" and importlib.util.find_spec("httptools") is not None):
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        class HttpToolsDeadline(HeaderDeadline, HttpToolsProtocol):
            def connection_made(self, transport: Any) -> None:
                super().connection_made(transport)
                self._arm()

            def on_message_begin(self) -> None:
                super().on_message_begin()
                self._arm()

            def on_headers_complete(self) -> None:
                self._disarm()
                super().on_headers_complete()

            def connection_lost(self, exc: Exception | None) -> None:
                self._disarm()
                super().connection_lost(exc)

        base: type = HttpToolsDeadline
    else:  # uvicorn[standard] brings httptools; h11 is uvicorn's fallback
        import h11
        from uvicorn.protocols.http.h11_impl import H11Protocol

        class H11Deadline(HeaderDeadline, H11Protocol):
            def connection_made(self, transport: Any) -> None:
                super().connection_made(transport)
                self._arm()

            def data_received(self, data: bytes) -> None:
                if self._header_timer is None and self.conn.their_state is h11.IDLE:
                    self._arm()  # a new request on a kept-alive connection
                super().data_received(data)
                if self.conn.their_state is not h11.IDLE:
                    self._disarm()

            def connection_lost(self, exc: Exception | None) -> None:
                self._disarm()
                super().connection_lost(exc)

        base = H11Deadline
    return type(base.__name__, (base,), {"header_timeout_s": float(header_timeout_s)})
