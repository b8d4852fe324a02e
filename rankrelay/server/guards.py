"""What stands before the models: the body-size limit, bearer-token auth and the request limits.

Example:
    >>> from rankrelay.server.guards import check_limits
    >>> from rankrelay.config import Limits
    >>> check_limits(Limits(max_documents=2), "q", ["a", "b", "c"])
    Traceback (most recent call last):
    ...
    rankrelay.server.guards.LimitExceededError: 3 documents is over the limit of 2
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse

from rankrelay.config import Limits
from rankrelay.errors import ConfigError, InvalidInputError, NotFoundError, RankRelayError
from rankrelay.rerankers.compose.pool_state import LocalPoolState, PoolState
from rankrelay.server.clients import CURRENT_CLIENT, Client, ClientKeys

#: Where :class:`BearerAuth` puts the request's :class:`~rankrelay.server.clients.Client` in its scope's state.
CLIENT_KEY = "rankrelay_client"

T = TypeVar("T")
logger = logging.getLogger(__name__)


class LimitExceededError(InvalidInputError):
    """A request over one of the service's limits (answered with 422)."""


class NotServedError(NotFoundError):
    """The request names a model (or an index) the service does not have (answered with 404)."""


class UnauthorizedError(RankRelayError):
    """No valid bearer token (answered with 401)."""


class UnsupportedMediaError(RankRelayError):
    """A request body that is declared as something other than JSON (answered with 415)."""


class ClientGoneError(RankRelayError):
    """The caller closed the connection before its answer was ready (counted as 499; nobody reads it)."""


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then ``work`` is cancelled (a queued request
    leaves the batcher before the model sees it) and :class:`ClientGoneError` is raised."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if not task.cancelled() and task.done():
        return task.result()
    with contextlib.suppress(asyncio.CancelledError):
        await task  # until the work has let go of its place in the queue
    raise ClientGoneError("the client closed the connection before the answer was ready")


async def _disconnect(request: Request) -> None:
    """Returns when the ASGI server reports that the client went away (the body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _AsciiJSON(JSONResponse):
    """JSON in ASCII: a message that quotes a client's text (a lone surrogate, say) always encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The service's error body for every non-2xx status: ``{"message": ...}`` (what the Cohere SDK reads)."""
    return _AsciiJSON({"message": message}, status_code=status, headers=headers)


def json_only(request: Request) -> None:
    """A FastAPI dependency: a POST body declared as anything but JSON is a 415 (an absent type is read as JSON)."""
    if request.method != "POST":
        return
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaError(f"the body must be JSON (Content-Type: application/json), not "
                                    f"{media or '(empty)'!r}")


def check_limits(limits: Limits, query: str, texts: Sequence[str] = ()) -> None:
    """Raise :class:`LimitExceededError` for a query, document count or document over the limits."""
    if len(texts) > limits.max_documents:
        raise LimitExceededError(f"{len(texts)} documents is over the limit of {limits.max_documents}")
    if len(query) > limits.max_query_chars:
        raise LimitExceededError(f"the query has {len(query)} characters; the limit is {limits.max_query_chars}")
    for i, t in enumerate(texts):
        if len(t) > limits.max_document_chars:
            raise LimitExceededError(f"document {i} has {len(t)} characters; the limit is {limits.max_document_chars}")


def check_api_keys(keys: Sequence[str]) -> list[bytes]:
    """The keys as the UTF-8 bytes a client sends; an empty or blank key (an unset ``$KEY``, ``[""]`` in the
    config) is a :class:`ConfigError`, never a key that a request without credentials would match."""
    for i, key in enumerate(keys):
        if not key or not key.strip():
            raise ConfigError(f"API key {i + 1} of {len(keys)} is empty or blank (an unset environment variable?): "
                              "give real keys, or --no-auth to serve without auth")
        if key != key.strip():
            raise ConfigError(f"API key {i + 1} of {len(keys)} has leading or trailing whitespace, which no "
                              "Authorization header can carry")
    return [k.encode("utf-8") for k in keys]


def _bearer_token(scope: Any) -> bytes | None:
    """The token of the request's ``Authorization: Bearer`` header, as the bytes sent; None without one."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            token = token.strip()
            return token if scheme.lower() == b"bearer" and token else None
    return None


class BearerAuth:
    """ASGI middleware: every request but those to the ``open_paths`` (health, readiness, metrics) needs
    ``Authorization: Bearer <key>`` for one of ``keys`` (the admin keys, constant-time compare of the UTF-8 bytes)
    or of a client's (:mod:`~rankrelay.server.clients`), checked before its body is read or parsed; with no keys
    and no clients, everyone. Open is the exception that is listed, so a new route (a path with a parameter too) is
    behind the key without anyone remembering to protect it. A request without a token is never authorized when
    keys are set, and an empty key is refused at start-up (:func:`check_api_keys`). The client a request is from is
    put in its scope's state (``CLIENT_KEY``); a client over its ``rpm`` is answered 429 with a Retry-After."""

    def __init__(self, app: Any, keys: Sequence[str], open_paths: Collection[str], clients: Sequence[Client] = (),
                 state: PoolState | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.keys = ClientKeys(check_api_keys(keys), clients)
        self.open_paths = frozenset(open_paths)
        self.state = state if state is not None else LocalPoolState()
        self.clock = clock

    def refusal(self, scope: Any) -> str | None:
        """Why this request is not authorized, or None when it is (its client then in its scope's state)."""
        if not self.keys or scope["type"] != "http" or scope["path"] in self.open_paths:
            return None
        token = _bearer_token(scope)
        if token is None:
            return "no api token: send 'Authorization: Bearer <key>'"
        client = self.keys.identify(token)
        if client is None:
            return "invalid api token"
        scope.setdefault("state", {})[CLIENT_KEY] = client
        return None

    def over_rate(self, scope: Any) -> float | None:
        """Seconds until the request's client may send again when it is over its ``rpm`` (the request is then not
        counted), else None (counted)."""
        client = scope.get("state", {}).get(CLIENT_KEY)
        if client is None or client.rpm is None:
            return None
        wait = self.state.acquire(f"client:{client.name}", client.rpm, self.clock())
        return wait if wait > 0 else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        why = self.refusal(scope)
        if why is not None:
            return await error_response(401, why, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        wait = self.over_rate(scope)
        if wait is not None:
            client = scope["state"][CLIENT_KEY]
            return await error_response(429, f"client {client.name!r} is over its {client.rpm} requests a minute",
                                        {"Retry-After": str(max(1, math.ceil(wait)))})(scope, receive, send)
        token = CURRENT_CLIENT.set(scope.get("state", {}).get(CLIENT_KEY))
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT_CLIENT.reset(token)


class Contained:
    """ASGI middleware: an exception that escapes the app is logged and answered here with a 500
    ``{"message": ...}``, so the server never sees it (uvicorn would drop the kept-alive connection, and the
    client's next request on it would fail)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watch(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            logger.error("unexpected error on %s: %s: %s", scope.get("path"), type(exc).__name__, exc,
                         exc_info=exc)
            if started:  # half an answer is out: only closing the connection is left
                raise
            await error_response(500, "internal error")(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body (chunked or not) over ``limit`` bytes is answered 413 before the app
    sees it. The bytes actually received are counted, so a missing or false Content-Length does not help;
    the body is read at most to the limit and then handed on unchanged. A client that pauses over
    ``timeout_s`` while sending it (a body that stops short of its Content-Length) is answered 408 and the
    connection closed."""

    def __init__(self, app: Any, limit: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send, f"request body of {int(declared)} bytes is over the "
                                                            f"limit of {self.limit}")
        chunks: list[dict[str, Any]] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                logger.info("a request body on %s paused over %g s: answered 408", scope.get("path"), self.timeout_s)
                return await error_response(408, f"the request body did not arrive within {self.timeout_s:g} s",
                                            {"Connection": "close"})(scope, receive, send)
            chunks.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                return await self._refuse(scope, receive, send, f"request body is over the limit of {self.limit} "
                                                                "bytes")
            if not message.get("more_body", False):
                break

        async def replay() -> Any:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Any, receive: Any, send: Any, message: str) -> None:
        await error_response(413, message)(scope, receive, send)
