"""A fallback chain (a hosted API first, a local model next) with a circuit breaker per backend.

Example:
    >>> from rankrelay.rerankers.compose.fallback import CircuitBreaker
    >>> b = CircuitBreaker(failure_threshold=2, reset_timeout=60)
    >>> b.record_failure(), b.record_failure(), b.state  # the second failure opens it
    (False, True, 'open')
    >>> b.allow()
    False
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

from rankrelay.errors import (
    UNAVAILABLE,
    AllBackendsFailedError,
    AuthenticationError,
    BackendUnavailableError,
    ConfigError,
    InvalidInputError,
    RankRelayError,
    backend_failure,
    positive_int,
)
from rankrelay.rerankers.base import (
    Request,
    Reranker,
    SingleQuery,
    arerank_batch,
    budget_kwargs,
    check_budget,
    check_query,
    check_top_n,
    label,
    within_budget,
)
from rankrelay.rerankers.compose.composite import Composite
from rankrelay.rerankers.compose.pool_state import PoolState, state_health
from rankrelay.rerankers.compose.redis_state import open_state
from rankrelay.rerankers.registry import load_chain_item, register
from rankrelay.results import RerankResult, to_documents
from rankrelay.scoring import check_normalization, normalize

logger = logging.getLogger(__name__)

ChainItem = str | Reranker | dict[str, Any]


class CircuitBreaker:
    """Closed -> open after ``failure_threshold`` consecutive failures -> half-open after
    ``reset_timeout`` seconds, when one probe call is let through: success closes, failure re-opens.

    Small on purpose (pybreaker's API is sync-only and raises instead of answering "skip?"). With ``shared``
    (a pool's or chain's state, kept in Redis by a service's replicas), opening it opens it for every breaker of
    ``key`` sharing that state, for ``reset_timeout``. The shared state is asked at most every ``recheck_s`` (and
    not again before a breaker it saw open closes), so a request does not pay a round trip to Redis per backend:
    another replica's open breaker is seen within ``recheck_s``.
    """

    def __init__(
        self, failure_threshold: int = 3, reset_timeout: float = 30.0, clock: Callable[[], float] = time.monotonic,
        shared: PoolState | None = None, key: str = "", recheck_s: float = 1.0,
    ) -> None:
        positive_int(failure_threshold, "failure_threshold", ConfigError)
        for name, value in (("reset_timeout", reset_timeout), ("recheck_s", recheck_s)):
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value!r}")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._lock = threading.Lock()
        self.shared, self.key, self.recheck_s = shared, key, recheck_s
        self._shared_open, self._shared_known_until = False, -math.inf  # the shared state's last answer, and until when

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_timeout:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """May a call go through now? In half-open state only one probe at a time; never while another breaker
        sharing its state has it open."""
        with self._lock:
            state = self._state()
            if state == "half-open" and not self._probing:
                self._probing = True
            elif state != "closed":
                return False
        if self.shared is not None and self._open_elsewhere(self._clock()):
            self.release()
            return False
        return True

    def _open_elsewhere(self, now: float) -> bool:
        """Whether a breaker sharing this one's state has its key open: the last answer while it holds (an open
        breaker's until it closes, a closed one's for ``recheck_s``), else the shared state's answer now."""
        if now >= self._shared_known_until:
            left = self.shared.tripped(self.key, now) if self.shared is not None else 0.0
            self._shared_open = left > 0
            self._shared_known_until = now + (left if self._shared_open else self.recheck_s)
        return self._shared_open

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def record_failure(self) -> bool:
        """Count a failure; True when it opened the breaker (again)."""
        with self._lock:
            self._failures += 1
            opened = self._probing or self._failures >= self.failure_threshold
            if opened:
                self._opened_at = self._clock()
            self._probing = False
        if opened and self.shared is not None:
            self.shared.trip(self.key, self.reset_timeout, self._clock())
        return opened

    def release(self) -> None:
        """A probe that neither succeeded nor failed (cancelled): let the next call probe."""
        with self._lock:
            self._probing = False


class Unavailable(SingleQuery):
    """A chain's backend that could not be built or loaded (no credentials, no weights, no package): the chain
    skips it at no cost, and says why (:meth:`FallbackReranker.availability`)."""

    name = "unavailable"

    def __init__(self, what: str, reason: str) -> None:
        self.model = what
        self.reason = reason

    def _raise(self) -> list[RerankResult]:
        raise BackendUnavailableError(f"{self.model} is unavailable: {self.reason}", backend=self.model,
                                      retryable=False)

    def rerank_batch(self, requests: Sequence[Request], top_n: int | None = None, *,
                     budget_ms: float | None = None) -> list[RerankResult]:
        return self._raise()

    async def arerank_batch(self, requests: Sequence[Request], top_n: int | None = None, *,
                            budget_ms: float | None = None) -> list[RerankResult]:
        return self._raise()


def _item_label(item: Any) -> str:
    from rankrelay.redact import redact_spec

    if isinstance(item, dict):
        item = item.get("spec")
    return str(redact_spec(item)) if isinstance(item, str) else label(item)


def _releasing(breaker: CircuitBreaker) -> Callable[[cf.Future[list[RerankResult]]], None]:
    """A done-callback that frees the breaker's probe of an attempt whose answer nobody waits for."""
    return lambda _future: breaker.release()


class FallbackReranker(Composite):
    """Try each backend in order until one answers.

    Retryable failures, exhausted deadlines and auth errors (logged as errors: a bad key must be
    noticed) move on to the next backend; input errors do not. A backend whose breaker is open is
    skipped at no cost. ``res.backend`` names the backend that served, ``res.info["fallbacks"]``
    (also ``res.fallbacks``) lists the failed attempts. Normalized scores are by rank, since raw
    scores of different backends are not comparable.

    Args:
        chain: spec strings, Reranker instances, or ``{"spec": ..., **options}`` dicts, best first.
        failure_threshold: consecutive failures that open a backend's breaker.
        reset_timeout: seconds before an open breaker lets one probe through.
        hedge_after_ms: start the next backend if the current one has not answered in this time;
            the first good answer wins (the sync API races them on a small thread pool).
        normalize: ``rank`` (default) or ``backend`` (keep each backend's own normalization).
        budget_ms: default latency budget of a call (a call's own ``budget_ms`` wins): each backend gets
            the time the ones before it left, so a local fallback answers within the caller's deadline
            (reranking the head of the list that fits, see :meth:`BaseReranker.rerank`).
        preload: warm up the chain's backends in a background thread now, so that the first call that
            falls back does not wait for torch and the model to load.
        strict: fail at construction (and warm-up) when a backend lacks credentials, weights or its package;
            by default such a backend is marked unavailable with one warning and the chain serves from the next.
        state: where the breakers' open states are kept: this chain's own by default, a ``redis://`` URL (or a
            :class:`~rankrelay.rerankers.compose.pool_state.PoolState`) to share them with a service's replicas, so
            a backend one replica found failing is left alone by all of them for ``reset_timeout``.
        namespace: the name a shared state keeps this chain's backends under (a service uses the model's).
        clock: seconds for the breakers' reset timeout (``time.monotonic``; tests pass their own).
    """

    name = "fallback"

    def __init__(
        self,
        chain: Sequence[ChainItem],
        *,
        failure_threshold: int = 3,
        reset_timeout: float = 30.0,
        hedge_after_ms: float | None = None,
        normalize: str = "rank",
        budget_ms: float | None = None,
        preload: bool = False,
        strict: bool = False,
        state: PoolState | str | None = None,
        namespace: str = "default",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(chain, (str, dict)) or not chain:
            raise ConfigError("a fallback chain needs a non-empty list of backends")
        if normalize != "backend":
            check_normalization(normalize)
        if normalize == "calibrated":
            raise ConfigError("a chain cannot calibrate scores of different backends; give each backend "
                              "normalize='calibrated' and the chain normalize='backend'")
        self.strict = strict
        CircuitBreaker(failure_threshold, reset_timeout)  # checks both before any backend loads
        self.backends: list[Reranker] = [self._load(item) for item in chain]
        self._owns_state = isinstance(state, str)  # a state opened here is closed here; a caller's stays theirs
        self.state: PoolState | None = None if state is None else open_state(state, namespace)
        self.breakers = [CircuitBreaker(failure_threshold, reset_timeout, clock, self.state, label(b))
                         for b in self.backends]
        self.hedge_after_ms = hedge_after_ms
        self.normalize = normalize
        self.model = " -> ".join(label(b) for b in self.backends)
        self.budget_ms = check_budget(budget_ms)
        self._pool: cf.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._preload: threading.Thread | None = None
        if preload:
            self._preload = threading.Thread(target=self.warm_up, name="rankrelay-preload", daemon=True)
            self._preload.start()

    def __repr__(self) -> str:
        return f"<FallbackReranker {self.model}>"

    @property
    def preloaded(self) -> bool:
        """True once a background preload (``preload=True``) has finished."""
        return self._preload is not None and not self._preload.is_alive()

    def parts(self) -> list[Reranker]:
        return list(self.backends)

    def _load(self, item: ChainItem) -> Reranker:
        try:
            return load_chain_item(item)
        except UNAVAILABLE as exc:
            if self.strict:
                raise
            return self._unavailable(_item_label(item), exc)

    @staticmethod
    def _unavailable(what: str, exc: Exception) -> Unavailable:
        logger.warning("fallback: %s is unavailable, the chain serves from the next backend: %s", what, exc)
        return Unavailable(what, str(exc))

    def availability(self) -> list[dict[str, Any]]:
        """Each backend: its label, whether it can serve, and why not; true before :meth:`warm_up` too, by each
        backend's cheap checks (weights on disk, a key for a public API; no request, nothing loaded)."""
        out = []
        for b in self.backends:
            if isinstance(b, Unavailable):
                out.append({"backend": b.model, "available": False, "reason": b.reason})
                continue
            check = getattr(b, "unavailable_reason", None)
            reason = check() if check is not None else None
            out.append({"backend": label(b), "available": reason is None, "reason": reason})
        return out

    def warm_up(self) -> None:
        """Warm up every backend that can be: one without weights (or credentials, or its package) is marked
        unavailable (``strict``: raised); another failure is logged, not raised: it may recover."""
        for i, backend in enumerate(self.backends):
            try:
                backend.warm_up()
            except UNAVAILABLE as exc:
                if self.strict:
                    raise
                self.backends[i] = self._unavailable(label(backend), exc)
            except RankRelayError as exc:
                logger.warning("fallback: %s cannot warm up: %s", label(backend), exc)
        check = getattr(self.state, "check", None)  # a shared state is reached now (a refused password raises)
        if check is not None:
            check()

    def shared_state(self) -> dict[str, Any] | None:
        """Whether the state the breakers share answers and why not (None when each breaker is this chain's)."""
        return state_health(self.state)

    def close(self) -> None:
        """Close every backend, the hedging threads and the shared state's connection when the chain opened it."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        super().close()
        if self._owns_state:
            self.state.close()  # type: ignore[union-attr]

    # -- helpers ---------------------------------------------------------------------------
    def _finish(self, results: list[RerankResult], failures: list[dict[str, Any]]) -> list[RerankResult]:
        for res in results:
            res.info["fallbacks"] = list(failures)
            if self.normalize != "backend" and res.normalization != self.normalize:
                if self.normalize == "rank":
                    n = max(res.num_candidates, len(res.results))
                    values = [1.0 - (r.rank - 1) / n for r in res.results]
                else:
                    values = normalize([r.score for r in res.results], self.normalize)
                for r, v in zip(res.results, values):
                    r.normalized_score = v
                res.normalization = self.normalize
        return results

    def _failed(self, i: int, exc: BaseException, started: float, failures: list[dict[str, Any]]) -> None:
        if not isinstance(exc, RankRelayError):  # a backend's own exception, typed at the chain's boundary
            exc = backend_failure(label(self.backends[i]), exc)
        backend = self.backends[i]
        if isinstance(backend, Unavailable):
            self.breakers[i].release()
            failures.append({"backend": backend.model, "error": "Unavailable", "message": backend.reason, "ms": 0.0})
            return
        self.breakers[i].record_failure()
        name = label(self.backends[i])
        ms = (perf_counter() - started) * 1000.0
        failures.append({"backend": name, "error": type(exc).__name__, "message": str(exc), "ms": round(ms, 1)})
        log = logger.error if isinstance(exc, AuthenticationError) else logger.warning
        log("fallback: %s failed after %.0f ms (%s: %s); trying the next backend", name, ms,
            type(exc).__name__, exc)

    def _skipped(self, i: int, failures: list[dict[str, Any]]) -> None:
        failures.append({"backend": label(self.backends[i]), "error": "CircuitOpen",
                         "message": "circuit breaker open", "ms": 0.0})

    def _all_failed(self, failures: list[dict[str, Any]]) -> AllBackendsFailedError:
        summary = "; ".join(f"{f['backend']}: {f['error']}: {f['message']}" for f in failures)
        return AllBackendsFailedError(f"every backend of the chain failed ({summary})", failures)

    @staticmethod
    def _check(requests: Sequence[Request], top_n: int | None) -> None:
        check_top_n(top_n)
        for query, documents in requests:
            check_query(query)
            to_documents(documents)

    # -- sync ------------------------------------------------------------------------------
    def _budget(self, budget_ms: float | None) -> float | None:
        return check_budget(budget_ms) if budget_ms is not None else self.budget_ms

    def rerank_batch(
        self, requests: Sequence[Request], top_n: int | None = None, *, budget_ms: float | None = None
    ) -> list[RerankResult]:
        """Rerank a batch with the first backend that answers (the whole batch moves together)."""
        self._check(requests, top_n)
        budget = self._budget(budget_ms)
        with within_budget(budget):
            if self.hedge_after_ms is not None:
                return self._hedged_batch(requests, top_n)
            return self._rerank_batch(requests, top_n)

    def _rerank_batch(self, requests: Sequence[Request], top_n: int | None) -> list[RerankResult]:
        failures: list[dict[str, Any]] = []
        for i, backend in enumerate(self.backends):
            if not self.breakers[i].allow():
                self._skipped(i, failures)
                continue
            started = perf_counter()
            try:
                results = backend.rerank_batch(requests, top_n=top_n, **budget_kwargs(backend))
            except InvalidInputError:
                self.breakers[i].release()
                raise
            except Exception as exc:  # any failure of a backend moves on (typed in _failed)
                self._failed(i, exc, started, failures)
                continue
            self.breakers[i].record_success()
            return self._finish(results, failures)
        raise self._all_failed(failures)

    def _threads(self) -> cf.ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = cf.ThreadPoolExecutor(max_workers=32,
                                                   thread_name_prefix="rankrelay-hedge")
            return self._pool

    def _hedged_batch(self, requests: Sequence[Request], top_n: int | None) -> list[RerankResult]:
        """The async hedging race on threads: no event loop, so it also works inside a running one."""

        def launch(backend: Reranker) -> cf.Future[list[RerankResult]]:
            call = functools.partial(backend.rerank_batch, requests, top_n, **budget_kwargs(backend))
            return self._threads().submit(contextvars.copy_context().run, call)  # the deadline goes along

        race = _Race(self, launch)
        try:
            while race.running:
                done, _ = cf.wait(race.running, timeout=race.hedge, return_when=cf.FIRST_COMPLETED)
                answer = race.step(done)
                if answer is not None:
                    return answer
        finally:
            for future, (i, _) in race.running.items():  # a thread cannot be stopped: its answer is dropped
                future.cancel()
                future.add_done_callback(_releasing(self.breakers[i]))
        raise self._all_failed(race.failures)

    def _failed_or_raise(self, i: int, exc: BaseException, started: float, failures: list[dict[str, Any]]) -> None:
        """A hedged attempt's error: input errors propagate, any other failure of a backend falls through."""
        if isinstance(exc, InvalidInputError) or not isinstance(exc, Exception):
            self.breakers[i].release()
            raise exc
        self._failed(i, exc, started, failures)

    # -- async -----------------------------------------------------------------------------
    async def arerank_batch(
        self, requests: Sequence[Request], top_n: int | None = None, *, budget_ms: float | None = None
    ) -> list[RerankResult]:
        """Async :meth:`rerank_batch`; with hedging, a slow backend is raced by the next one."""
        self._check(requests, top_n)
        with within_budget(self._budget(budget_ms)):
            return await self._arerank_batch(requests, top_n)

    async def _arerank_batch(self, requests: Sequence[Request], top_n: int | None) -> list[RerankResult]:
        def launch(backend: Reranker) -> asyncio.Task[list[RerankResult]]:
            return asyncio.ensure_future(arerank_batch(backend, requests, top_n, **budget_kwargs(backend)))

        race = _Race(self, launch)
        try:
            while race.running:
                done, _ = await asyncio.wait(race.running, timeout=race.hedge, return_when=asyncio.FIRST_COMPLETED)
                answer = race.step(done)
                if answer is not None:
                    return answer
        finally:
            for task, (i, _) in race.running.items():
                task.cancel()
                self.breakers[i].release()
        raise self._all_failed(race.failures)


class _Race:
    """One call's race through a chain (sync on threads or async on tasks): which backend starts next, which
    attempts run, what failed. Without hedging one attempt runs at a time; with it, the next backend starts
    whenever the running ones have not answered within ``hedge`` seconds."""

    def __init__(self, chain: FallbackReranker, launch: Callable[[Reranker], Any]) -> None:
        self.chain = chain
        self.launch = launch
        self.hedge = None if chain.hedge_after_ms is None else chain.hedge_after_ms / 1000.0
        self.failures: list[dict[str, Any]] = []
        self.running: dict[Any, tuple[int, float]] = {}
        self.next_i = 0
        self.start_next()

    def start_next(self) -> None:
        chain = self.chain
        while self.next_i < len(chain.backends):
            i = self.next_i
            self.next_i += 1
            if not chain.breakers[i].allow():
                chain._skipped(i, self.failures)
                continue
            self.running[self.launch(chain.backends[i])] = (i, perf_counter())
            return

    def step(self, done: set[Any]) -> list[RerankResult] | None:
        """Settle the attempts in ``done`` (none: the hedge timer fired); the answer, or None to go on."""
        if not done:
            self.start_next()
            return None
        for attempt in done:
            i, started = self.running.pop(attempt)
            exc = attempt.exception()
            if exc is None:
                self.chain.breakers[i].record_success()
                return self.chain._finish(attempt.result(), self.failures)
            self.chain._failed_or_raise(i, exc, started, self.failures)
        if not self.running:
            self.start_next()
        return None

FALLBACK_OPTIONS = frozenset(
    {"chain", "failure_threshold", "reset_timeout", "hedge_after_ms", "normalize", "budget_ms", "preload", "strict",
     "state", "namespace"}
)


def from_spec(rest: str | None, *, chain: Sequence[ChainItem] | None = None, **options: Any) -> FallbackReranker:
    """Registry factory: a list spec (or ``settings.fallback``) becomes ``fallback`` with ``chain=[...]``."""
    if rest:
        raise ConfigError("a fallback chain is given as a list of specs, not as 'fallback:...'")
    if not chain:
        raise ConfigError("a fallback chain needs a non-empty list of backends")
    return FallbackReranker(chain, **options)


register("fallback", from_spec, options=FALLBACK_OPTIONS,
         description="try backends in order with circuit breakers (a list of specs; [fallback] in the config)")
