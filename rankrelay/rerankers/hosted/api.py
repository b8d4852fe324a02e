"""Shared machinery of hosted rerank APIs: clients, chunking, concurrency, reply checks, error mapping.

:class:`ApiReranker` owns the pooled httpx clients (one sync, one async per event loop), their
lifetime (``close()``, ``with`` / ``async with``) and the mapping of transport errors to typed ones.
A subclass says how to send one chunk of documents on a client (:meth:`ApiReranker._send` /
:meth:`ApiReranker._asend`) and how to read the reply (:meth:`ApiReranker._reply`); this module splits
long candidate lists into chunks, sends them concurrently under the one
:class:`~rankrelay.rerankers.hosted.retry.RetryPolicy`, checks that every document was scored exactly once,
and merges the chunks back in input order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import weakref
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import SecretStr

from rankrelay.billing import add_units
from rankrelay.errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    BadResponseError,
    ConfigError,
    RankRelayError,
    RateLimitError,
    positive_int,
)
from rankrelay.redact import remember, scrub
from rankrelay.rerankers.base import BaseReranker, Scored, seconds_left
from rankrelay.rerankers.hosted.retry import MIN_ATTEMPT_SECONDS, RETRY_STATUSES, RetryPolicy, retry_after_from_headers
from rankrelay.results import Document

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Options every API backend takes.
API_OPTIONS = frozenset(
    {"api_key", "base_url", "timeout", "connect_timeout", "max_attempts", "deadline", "chunk_size",
     "max_concurrency", "normalize"}
)


@dataclass(slots=True)
class Reply:
    """One chunk's answer: ``(index within the chunk, score)`` pairs and provider facts."""

    pairs: list[tuple[Any, Any]]
    request_id: str | None = None
    billed: dict[str, float] = field(default_factory=dict)


def secret(value: str | SecretStr | None, *env_names: str) -> SecretStr | None:
    """The key as a SecretStr: the given value, else the first of ``env_names`` that is set; remembered so
    that no message or log line that echoes it shows it (:func:`rankrelay.redact.scrub`)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not value:
        value = next((os.environ[n] for n in env_names if os.environ.get(n)), None)
    if not value:
        return None
    remember(value)
    return SecretStr(value)


def provider_message(body: Any) -> str:
    """The human message of an error body: ``message``, ``error``, ``detail`` or the text itself."""
    if isinstance(body, (bytes, str)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            body = json.loads(text)
        except ValueError:
            return text.strip()[:300] or "(empty body)"
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message", value)
            if value:
                return str(value)[:300]
    return str(body)[:300]


def error_for_status(
    backend: str, status: int, body: Any, headers: Any = None, request_id: str | None = None
) -> BackendError:
    """The typed error for a non-2xx reply, carrying the provider's message."""
    message = f"{backend}: HTTP {status}: {scrub(provider_message(body))}"
    kwargs: dict[str, Any] = {"backend": backend, "status": status, "request_id": request_id}
    if status in (401, 403):
        return AuthenticationError(message, **kwargs)
    if status == 429:
        return RateLimitError(message, retry_after=retry_after_from_headers(headers), **kwargs)
    if status in RETRY_STATUSES:
        return BackendUnavailableError(message, retry_after=retry_after_from_headers(headers), **kwargs)
    if status >= 500:
        return BackendUnavailableError(message, retryable=False, **kwargs)
    return BadRequestError(message, **kwargs)


def check_pairs(backend: str, pairs: Sequence[tuple[Any, Any]], n: int, unscored: bool = False) -> list[float]:
    """Scores in input order from ``(index, score)`` pairs; every index in range, once, with a finite score
    (or NaN, "not scored", where ``unscored`` allows it)."""
    scores: list[float | None] = [None] * n
    for index, score in pairs:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            raise BadResponseError(f"{backend}: reply has index {index!r} for {n} documents", backend=backend)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not (
                math.isfinite(score) or (unscored and score != score)):
            raise BadResponseError(f"{backend}: reply has score {score!r} for index {index}", backend=backend)
        if scores[index] is not None:
            raise BadResponseError(f"{backend}: reply scores index {index} twice", backend=backend)
        scores[index] = float(score)
    missing = [i for i, s in enumerate(scores) if s is None]
    if missing:
        raise BadResponseError(
            f"{backend}: reply leaves {len(missing)} of {n} documents unscored (first: {missing[:5]})",
            backend=backend,
        )
    return scores  # type: ignore[return-value]


def transport_error(backend: str, exc: Exception) -> Exception:
    """The typed error for an httpx transport failure (a read timeout is a timeout; a refused or reset
    connection, and a connect timeout, make the backend unavailable); anything else as it is."""
    import httpx

    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return BackendTimeoutError(f"{backend}: no reply in time ({type(exc).__name__})", backend=backend)
    if isinstance(exc, httpx.TransportError):
        return BackendUnavailableError(f"{backend}: {type(exc).__name__}: {exc}", backend=backend)
    return exc


def _close_on_loop(loop: asyncio.AbstractEventLoop, client: Any) -> None:
    """Close an async client from sync code, on the loop it belongs to (a closed loop took it along)."""
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        loop.create_task(client.aclose())
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(client.aclose(), loop)
    else:
        loop.run_until_complete(client.aclose())


class ApiReranker(BaseReranker):
    """Base of hosted backends.

    Args:
        model: the provider's model name.
        timeout: read timeout of one attempt, seconds.
        connect_timeout: connect timeout, seconds.
        max_attempts: attempts per chunk (retries = attempts - 1).
        deadline: seconds for all attempts of one chunk, waits included.
        chunk_size: documents per request; larger lists are split and sent concurrently.
        max_concurrency: requests in flight at once for one call.
        normalize: how ``normalized_score`` is filled.
    """

    #: a reply may leave a document unscored (NaN: ranked last), as an LLM judge that gave no usable answer
    allow_unscored = False

    def __init__(
        self,
        model: str | None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_attempts: int = 3,
        deadline: float | None = None,
        chunk_size: int = 1000,
        max_concurrency: int = 4,
        normalize: str = "rank",
    ) -> None:
        super().__init__(normalize=normalize)
        positive_int(chunk_size, "chunk_size", ConfigError)
        positive_int(max_concurrency, "max_concurrency", ConfigError)
        self.model = model
        self.connect_timeout = float(connect_timeout)
        self.chunk_size = chunk_size
        self.max_concurrency = max_concurrency
        self.policy = RetryPolicy(
            max_attempts=max_attempts,
            timeout=float(timeout),
            deadline=float(deadline) if deadline is not None else float(timeout) * max_attempts + 5.0,
        )
        self._client: Any = None  # what _send talks to: the httpx client, or an SDK client around it
        self._http: Any = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any]] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()

    # -- what a provider says --------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        """Headers of every request (a bearer token, say)."""
        return {"Accept": "application/json"}

    def _wrap(self, http: Any, *, asynchronous: bool) -> Any:
        """The client :meth:`_send` uses, built on the pooled httpx client (an SDK wraps it)."""
        return http

    @abstractmethod
    def _send(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        """Send one chunk on ``client`` (from :meth:`_wrap`); return the raw reply."""

    @abstractmethod
    async def _asend(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        """Async :meth:`_send`."""

    @abstractmethod
    def _reply(self, raw: Any) -> Reply:
        """Read a raw reply; raise typed errors for error statuses and malformed bodies."""

    def _error(self, exc: Exception) -> Exception:
        """The typed error for an exception raised while sending (transport errors here; SDKs add theirs)."""
        return transport_error(self.name, exc)

    # -- clients ---------------------------------------------------------------------------
    def _httpx(self) -> Any:
        """The HTTP library the pooled clients come from (httpx; an SDK built on a fork of it says which)."""
        import httpx

        return httpx

    def _http_options(self) -> dict[str, Any]:
        httpx = self._httpx()
        return {
            "headers": self._headers(),
            "timeout": httpx.Timeout(self.policy.timeout, connect=self.connect_timeout),
            "limits": httpx.Limits(max_connections=100, max_keepalive_connections=32),
        }

    def warm_up(self) -> None:
        """Create the pooled sync client (no request is sent)."""
        self._sync_client()

    def _sync_client(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._http = self._httpx().Client(**self._http_options())
                    self._client = self._wrap(self._http, asynchronous=False)
                client = self._client
        return client

    def _aclient(self) -> Any:
        """The async client of the running event loop (one per loop: an httpx client is bound to its loop)."""
        loop = asyncio.get_running_loop()
        pair = self._aclients.get(loop)
        if pair is None:
            http = self._httpx().AsyncClient(**self._http_options())
            pair = self._aclients[loop] = (http, self._wrap(http, asynchronous=True))
        return pair[1]

    def _take_clients(self) -> tuple[Any, list[tuple[asyncio.AbstractEventLoop, Any]]]:
        with self._lock:
            http, self._http, self._client = self._http, None, None
            pairs = [(loop, pair[0]) for loop, pair in self._aclients.items()]
            self._aclients.clear()
        return http, pairs

    def close(self) -> None:
        """Close the pooled clients (async ones on their own event loop); a later call opens new ones."""
        http, pairs = self._take_clients()
        if http is not None:
            http.close()
        for loop, client in pairs:
            _close_on_loop(loop, client)

    async def aclose(self) -> None:
        """Async :meth:`close`: the running loop's client is closed before this returns."""
        http, pairs = self._take_clients()
        if http is not None:
            http.close()
        current = asyncio.get_running_loop()
        for loop, client in pairs:
            if loop is current:
                await client.aclose()
            else:
                _close_on_loop(loop, client)

    # -- one chunk -------------------------------------------------------------------------
    def _sent(self, send: Callable[[], T]) -> T:
        """``send()``, its failures mapped to typed errors (:meth:`_error`; ours pass through as they are; an
        SDK's own parse failure of a 2xx reply is a :class:`BadResponseError`)."""
        try:
            return send()
        except RankRelayError:
            raise
        except Exception as exc:
            raise self._typed(exc) from None

    async def _asent(self, send: Awaitable[T]) -> T:
        """Async :meth:`_sent`."""
        try:
            return await send
        except RankRelayError:
            raise
        except Exception as exc:
            raise self._typed(exc) from None

    def _typed(self, exc: Exception) -> RankRelayError:
        mapped = self._error(exc)
        if isinstance(mapped, RankRelayError):
            return mapped
        return BadResponseError(f"{self.name}: the request failed ({type(exc).__name__}: {exc})", backend=self.name)

    def _read(self, raw: Any) -> Reply:
        """:meth:`_reply`, a reply it cannot read in any way (a field of the wrong type, say) being a
        :class:`BadResponseError`: never a bare exception that a fallback chain would not recognise."""
        try:
            return self._reply(raw)
        except RankRelayError:
            raise
        except Exception as exc:
            raise BadResponseError(f"{self.name}: unreadable reply ({type(exc).__name__}: {exc})",
                                   backend=self.name) from None

    def _call(self, query: str, texts: list[str], timeout: float) -> Reply:
        """Send one chunk; raise typed errors."""
        client = self._sync_client()
        return self._read(self._sent(lambda: self._send(client, query, texts, timeout)))

    async def _acall(self, query: str, texts: list[str], timeout: float) -> Reply:
        """Async :meth:`_call`."""
        return self._read(await self._asent(self._asend(self._aclient(), query, texts, timeout)))

    def _chunks(self, queries: list[str], documents: list[list[Document]]) -> list[tuple[int, int, str, list[str]]]:
        jobs = []
        for qi, (query, docs) in enumerate(zip(queries, documents)):
            texts = [d.text for d in docs]
            for start in range(0, len(texts), self.chunk_size):
                jobs.append((qi, start, query, texts[start : start + self.chunk_size]))
        return jobs

    def _merge(
        self, documents: list[list[Document]], jobs: list[tuple[int, int, str, list[str]]], replies: list[Reply]
    ) -> list[Scored]:
        scores: list[list[float]] = [[0.0] * len(d) for d in documents]
        infos: list[dict[str, Any]] = [{"request_ids": [], "billed_units": {}, "requests": 0} for _ in documents]
        for (qi, start, _, texts), reply in zip(jobs, replies):
            chunk = check_pairs(self.name, reply.pairs, len(texts), self.allow_unscored)
            scores[qi][start : start + len(texts)] = chunk
            info = infos[qi]
            info["requests"] += 1
            if reply.request_id:
                info["request_ids"].append(reply.request_id)
            add_units(info["billed_units"], reply.billed)
        return [Scored(s, info=i) for s, i in zip(scores, infos)]

    def _deadline(self) -> float | None:
        """Seconds for this call's attempts: the policy's deadline, or less when a budget is running out."""
        left = seconds_left()
        if left is None:
            return None
        if left < MIN_ATTEMPT_SECONDS:
            raise BackendTimeoutError(f"{self.name}: the latency budget ran out before the request was sent",
                                      backend=self.name, retryable=False)
        return min(self.policy.deadline, left)

    def _score_batch(
        self, queries: list[str], documents: list[list[Document]]
    ) -> tuple[list[Scored], dict[str, float]]:
        jobs = self._chunks(queries, documents)
        deadline = self._deadline()

        def send(job: tuple[int, int, str, list[str]]) -> Reply:
            _, _, query, texts = job
            reply = self.policy.run(lambda timeout: self._call(query, texts, timeout), deadline=deadline,
                                    name=self.name)
            check_pairs(self.name, reply.pairs, len(texts), self.allow_unscored)
            return reply

        if len(jobs) == 1:
            replies = [send(jobs[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs))) as pool:
                replies = list(pool.map(send, jobs))
        return self._merge(documents, jobs, replies), {}

    async def _ascore_batch(
        self, queries: list[str], documents: list[list[Document]]
    ) -> tuple[list[Scored], dict[str, float]]:
        jobs = self._chunks(queries, documents)
        limit = asyncio.Semaphore(self.max_concurrency)
        deadline = self._deadline()

        async def send(job: tuple[int, int, str, list[str]]) -> Reply:
            _, _, query, texts = job
            async with limit:
                reply = await self.policy.arun(lambda timeout: self._acall(query, texts, timeout),
                                               deadline=deadline, name=self.name)
            check_pairs(self.name, reply.pairs, len(texts), self.allow_unscored)
            return reply

        replies = list(await asyncio.gather(*(send(job) for job in jobs)))
        return self._merge(documents, jobs, replies), {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "chunk_size": self.chunk_size, "max_attempts": self.policy.max_attempts,
                "timeout": self.policy.timeout, "deadline": self.policy.deadline}
