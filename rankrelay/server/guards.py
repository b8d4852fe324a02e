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
import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse

from rankrelay.config import Limits
from rankrelay.errors import InvalidInputError, RankRelayError

T = TypeVar("T")


class LimitExceededError(InvalidInputError):
    """A request over one of the service's limits (answered with 422)."""


class NotServedError(RankRelayError, LookupError):
    """The request names a model (or an index) the service does not have (answered with 404)."""


class UnauthorizedError(RankRelayError):
    """No valid bearer token (answered with 401)."""


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


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The service's error body: ``{"message": ...}`` (what the Cohere SDK reads)."""
    return JSONResponse({"message": message}, status_code=status, headers=headers)


def check_limits(limits: Limits, query: str, texts: Sequence[str] = ()) -> None:
    """Raise :class:`LimitExceededError` for a query, document count or document over the limits."""
    if len(texts) > limits.max_documents:
        raise LimitExceededError(f"{len(texts)} documents is over the limit of {limits.max_documents}")
    if len(query) > limits.max_query_chars:
        raise LimitExceededError(f"the query has {len(query)} characters; the limit is {limits.max_query_chars}")
    for i, t in enumerate(texts):
        if len(t) > limits.max_document_chars:
            raise LimitExceededError(f"document {i} has {len(t)} characters; the limit is {limits.max_document_chars}")


def bearer_auth(keys: Sequence[str]) -> Callable[[Request], None]:
    """A FastAPI dependency accepting ``Authorization: Bearer <key>`` for any of ``keys`` (constant-time
    compare); with no keys, everyone."""
    encoded = [k.encode() for k in keys]

    def authorized(request: Request) -> None:
        if not encoded:
            return
        header = request.headers.get("authorization", "")
        token = (header[7:] if header.lower().startswith("bearer ") else "").encode()
        if not any(hmac.compare_digest(token, k) for k in encoded):
            raise UnauthorizedError("invalid api token")

    return authorized


class BodyLimit:
    """ASGI middleware: a request body (chunked or not) over ``limit`` bytes is answered 413 before the app
    sees it. The bytes actually received are counted, so a missing or false Content-Length does not help;
    the body is read at most to the limit and then handed on unchanged."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

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
            message = await receive()
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
