"""Several deployments of one model behind one name (two regions, two keys), balanced by load and by each one's
rate limit, with a fallback when none can take a request.

A deployment over its ``rpm`` is not sent a request (the limit is kept here, no 429 provoked); one that answers
429 cools down for its Retry-After (``cooldown_s`` when it sends none) and the request goes to the next; a
request no deployment can take now waits for the first free slot, at most ``max_wait_s`` (or its budget), then
goes to ``fallback``. Hosted deployments make one attempt each (``max_attempts = 1`` unless a deployment says
otherwise): the pool, not the backend's retry loop, decides where a request goes next. Each result says which
deployment served it and why (``res.info["pool"]``).

Example:
    >>> from rankrelay.rerankers import load_reranker
    >>> pool = load_reranker({"spec": "pool", "routing": "round-robin",
    ...                       "deployments": [{"spec": "identity", "name": "eu"}, {"spec": "identity", "name": "us"}]})
    >>> [pool.rerank("q", ["a", "b"]).info["pool"]["deployment"] for _ in range(3)]
    ['eu', 'us', 'eu']
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rankrelay.errors import (
    AllBackendsFailedError,
    BackendError,
    ConfigError,
    RankRelayError,
    RateLimitError,
    backend_failure,
)
from rankrelay.rerankers.base import (
    Request,
    Reranker,
    arerank_batch,
    budget_kwargs,
    check_budget,
    label,
    seconds_left,
    within_budget,
)
from rankrelay.rerankers.compose.composite import Composite
from rankrelay.rerankers.compose.fallback import CircuitBreaker
from rankrelay.rerankers.compose.pool_state import PoolState, state_health
from rankrelay.rerankers.compose.redis_state import open_state
from rankrelay.rerankers.registry import backends, load_reranker, parse_spec, register, split_options
from rankrelay.results import RerankResult
from rankrelay.tracing import span

logger = logging.getLogger(__name__)

ROUTINGS = ("least-busy", "latency", "usage", "round-robin", "weighted")
#: What a deployment dict says to the pool; every other key is an option of its backend.
POOL_KEYS = frozenset({"spec", "name", "rpm", "max_concurrency", "weight", "api_key_env"})
#: The share of a new latency in a deployment's running mean.
LATENCY_WEIGHT = 0.3
#: The shortest cooldown after a 429 (a ``Retry-After: 0`` would have every waiting request sent again at once).
MIN_COOLDOWN_S = 1.0


@dataclass
class Deployment:
    """One deployment of a pool: its reranker and limits, and what the pool measured of it in this process."""

    name: str
    reranker: Reranker
    rpm: int | None = None
    max_concurrency: int | None = None
    weight: float = 1.0
    in_flight: int = 0
    latency_s: float | None = None
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)

    def busy(self) -> bool:
        return self.max_concurrency is not None and self.in_flight >= self.max_concurrency


def _positive(value: Any, what: str) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
        raise ConfigError(f"{what} must be a positive number, got {value!r}")
    return value


def build_deployment(item: Any, position: int, breaker: Callable[[str], CircuitBreaker]) -> Deployment:
    """A :class:`Deployment` from a spec string, a ``{"spec": ..., "rpm": ..., **backend options}`` dict or a
    reranker. A hosted backend is given ``max_attempts = 1`` unless the dict sets it."""
    where = f"deployments[{position}]"
    if not isinstance(item, dict):
        item = {"spec": item}
    if not isinstance(item.get("spec"), str) and not hasattr(item.get("spec"), "rerank_batch"):
        raise ConfigError(f"{where}: a deployment needs a 'spec' (a string or a reranker), got {item!r}")
    pool_part = {k: v for k, v in item.items() if k in POOL_KEYS}
    options = {k: v for k, v in item.items() if k not in POOL_KEYS}
    spec = pool_part["spec"]
    if "api_key_env" in pool_part:
        env = pool_part["api_key_env"]
        if not os.environ.get(env):
            raise ConfigError(f"{where}.api_key_env: ${env} is not set")
        options["api_key"] = os.environ[env]
    if isinstance(spec, str):
        backend = parse_spec(split_options(spec)[0].strip())[0]
        if any(b.name == backend and "max_attempts" in b.options for b in backends()):
            options.setdefault("max_attempts", 1)
    reranker = load_reranker(spec, **options)
    name = pool_part.get("name") or (spec if isinstance(spec, str) else label(reranker))
    rpm = _positive(pool_part.get("rpm"), f"{where}.rpm")
    concurrency = _positive(pool_part.get("max_concurrency"), f"{where}.max_concurrency")
    return Deployment(str(name), reranker, rpm=None if rpm is None else int(rpm),
                      max_concurrency=None if concurrency is None else int(concurrency),
                      weight=float(_positive(pool_part.get("weight", 1.0), f"{where}.weight")),
                      breaker=breaker(str(name)))


class PoolReranker(Composite):
    """Send each request to one of ``deployments``, chosen by ``routing`` among those that may take it now.

    Args:
        deployments: specs, rerankers or dicts (``spec``, ``name``, ``rpm``, ``max_concurrency``, ``weight``,
            ``api_key_env`` and the backend's own options).
        routing: ``least-busy`` (fewest requests in flight), ``latency`` (fastest so far; unmeasured first),
            ``usage`` (most headroom under its rpm), ``round-robin`` or ``weighted`` (at random by ``weight``).
        fallback: what answers when no deployment can (a spec, a list for a chain, or a reranker).
        max_wait_s: the longest a request waits for a free deployment (a request's budget may shorten it).
        cooldown_s: how long a deployment that answered 429 without a Retry-After is left alone.
        failure_threshold: consecutive failures (other than 429s) that open a deployment's circuit breaker.
        reset_timeout: seconds an open breaker keeps the deployment out (in every replica sharing ``state``)
            before one probe request is let through.
        state: the rate-limit windows, cooldowns and open breakers: this process's by default, a ``redis://`` URL (or a
            :class:`~rankrelay.rerankers.compose.pool_state.PoolState`) to share them with other replicas.
        namespace: the name a shared state keeps this pool's deployments under (a service uses the model's).
        seed: the ``weighted`` routing's random draws.
    """

    name = "pool"

    def __init__(self, deployments: Sequence[Any], routing: str = "least-busy", fallback: Any = None,
                 max_wait_s: float = 5.0, cooldown_s: float = 30.0, failure_threshold: int = 3,
                 reset_timeout: float = 30.0, state: PoolState | str | None = None,
                 namespace: str = "default", seed: int | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, asleep: Callable[[float], Any] = asyncio.sleep) -> None:
        if routing not in ROUTINGS:
            raise ConfigError(f"routing must be one of {', '.join(ROUTINGS)}, got {routing!r}")
        if not deployments:
            raise ConfigError("a pool needs at least one deployment")
        if max_wait_s < 0 or cooldown_s < 0:
            raise ConfigError("max_wait_s and cooldown_s must be >= 0")
        self._clock, self._sleep, self._asleep = clock, sleep, asleep
        CircuitBreaker(failure_threshold, reset_timeout)  # checks both before any deployment loads
        self._owns_state = isinstance(state, str)  # a state built here is closed here; a caller's stays theirs
        self.state: PoolState = open_state(state, namespace)
        self.deployments = [
            build_deployment(d, i, lambda name: CircuitBreaker(failure_threshold, reset_timeout, clock, self.state,
                                                               name))
            for i, d in enumerate(deployments)]
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ConfigError(f"deployment names must differ, got {names} (give each a 'name')")
        self.routing = routing
        self.fallback = None if fallback is None else load_reranker(fallback)
        self.max_wait_s, self.cooldown_s = max_wait_s, cooldown_s
        self._rng = random.Random(seed)
        self._turn = 0
        self._lock = threading.Lock()
        self.model = f"{routing}: {', '.join(names)}"

    def __repr__(self) -> str:
        return f"PoolReranker({self.model!r})"

    def warm_up(self) -> None:
        """Warm up every deployment and the fallback; reach a shared state now (a password it refuses is a
        :class:`ConfigError`; an unreachable one is logged, the pool serving on this process's counts)."""
        super().warm_up()
        check = getattr(self.state, "check", None)
        if check is not None:
            check()

    def shared_state(self) -> dict[str, Any] | None:
        """Whether the shared state answers and why not (None when the state is this process's own)."""
        return state_health(self.state)

    def close(self) -> None:
        """Close every deployment and the fallback, and the shared state's connection when the pool opened it."""
        super().close()
        if self._owns_state:
            self.state.close()  # type: ignore[attr-defined]

    def parts(self) -> list[Reranker]:
        return [d.reranker for d in self.deployments] + ([self.fallback] if self.fallback is not None else [])

    def _turn_of_request(self) -> int:
        """Round-robin's first deployment for a new request (one turn per request, however many it tries)."""
        with self._lock:
            turn, self._turn = self._turn, (self._turn + 1) % len(self.deployments)
        return turn

    def _order(self, now: float, turn: int) -> list[Deployment]:
        """The deployments in the order routing prefers them (all of them; the caller skips who cannot take it)."""
        ds = self.deployments
        if self.routing == "least-busy":
            return sorted(ds, key=lambda d: d.in_flight)
        if self.routing == "latency":
            return sorted(ds, key=lambda d: -1.0 if d.latency_s is None else d.latency_s)
        if self.routing == "usage":
            return sorted(ds, key=lambda d: 0.0 if d.rpm is None else self.state.used(d.name, now) / d.rpm)
        if self.routing == "round-robin":
            return ds[turn:] + ds[:turn]
        with self._lock:  # weighted: Efraimidis-Spirakis, a draw without replacement by weight
            keys = {d.name: self._rng.random() ** (1.0 / d.weight) for d in ds}
        return sorted(ds, key=lambda d: -keys[d.name])

    def _take(self, tried: set[str], now: float, turn: int) -> tuple[Deployment | None, float]:
        """The first deployment routing prefers that may take a request now (its breaker passed, a slot of its
        concurrency and of its rpm taken, no cooldown: the last two in one call of the state, one Redis round trip), or
        None and the seconds until one may (infinite when none will: each left failed this request or has its
        breaker open)."""
        soonest = math.inf
        for d in self._order(now, turn):
            if d.name in tried or not d.breaker.allow():
                continue
            with self._lock:
                busy = d.busy()
                d.in_flight += 0 if busy else 1
            wait = 0.01 if busy else self.state.acquire(d.name, d.rpm, now)  # busy: one in flight ends soon
            if wait == 0.0:
                return d, 0.0
            if not busy:
                with self._lock:
                    d.in_flight -= 1
            d.breaker.release()  # not sent: a half-open breaker's probe goes to the next request
            soonest = min(soonest, wait)
        return None, soonest

    def _succeeded(self, d: Deployment, started: float) -> None:
        took = self._clock() - started
        with self._lock:
            d.in_flight -= 1
            d.latency_s = took if d.latency_s is None else (1 - LATENCY_WEIGHT) * d.latency_s + LATENCY_WEIGHT * took
        d.breaker.record_success()

    def _failed(self, d: Deployment, exc: Exception, tried: set[str], failures: list[dict[str, Any]]) -> None:
        """Account for an attempt that raised: the caller's own error (bad input) is raised as it is; a 429 leaves
        the deployment to its cooldown (it may serve this request when that ends); any other failure counts against
        its breaker and rules it out for this request."""
        with self._lock:
            d.in_flight -= 1
        if isinstance(exc, RankRelayError) and not isinstance(exc, BackendError):
            d.breaker.release()
            raise exc
        error = exc if isinstance(exc, BackendError) else backend_failure(d.name, exc)
        if isinstance(error, RateLimitError):
            wait = self.cooldown_s if error.retry_after is None else max(error.retry_after, MIN_COOLDOWN_S)
            self.state.cool_down(d.name, wait, self._clock())
            d.breaker.release()
        else:
            d.breaker.record_failure()  # opened, it is open for every replica sharing the state
            tried.add(d.name)
        logger.warning("pool: deployment %s failed: %s", d.name, type(error).__name__)
        failures.append({"deployment": d.name, "error": type(error).__name__, "message": str(error)})

    def _deadline(self, budget_ms: float | None, start: float) -> float:
        budget = check_budget(budget_ms)
        wait = self.max_wait_s if budget is None else min(self.max_wait_s, budget / 1000.0)
        return start + wait

    def _label(self, res: RerankResult, d: Deployment | None, queued: float, failures: list[dict[str, Any]],
               reason: str | None = None) -> RerankResult:
        res.info["pool"] = {"routing": self.routing, "deployment": None if d is None else d.name,
                            "queued_ms": round(queued * 1000.0, 3), "failures": failures,
                            **({"fell_back": reason} if reason else {})}
        return res

    def _exhausted(self, failures: list[dict[str, Any]], soonest: float) -> RankRelayError:
        """The error when no deployment answered in time: a :class:`RateLimitError` saying when a slot frees when
        one will, else every failure (or every open breaker)."""
        failed = [f"{f['deployment']} ({f['error']})" for f in failures if f["error"] != "RateLimitError"]
        if not math.isinf(soonest):
            why = f"{', '.join(failed)} failed, the rest are" if failed else "every deployment is"
            return RateLimitError(f"pool: {why} at the rate limit or cooling down (a slot frees in {soonest:.3g} s)",
                                  backend=self.name, retry_after=max(soonest, 0.001), retryable=False)
        if not failures:
            return AllBackendsFailedError(f"pool: every deployment's circuit breaker is open: "
                                          f"{', '.join(d.name for d in self.deployments)}", [])
        names = ", ".join(f"{f['deployment']} ({f['error']})" for f in failures)
        return AllBackendsFailedError(f"pool: no deployment answered: {names}", failures)

    def _route(self, budget_ms: float | None) -> Generator[tuple[str, Any], Any, None]:
        """One request's way through the pool, the same for sync and async: yields ``("send", reranker)`` (send the
        request to it; its answer or exception is sent back), ``("wait", seconds)``, ``("fallback", reranker)``
        (no deployment in time: the same, from the fallback) and last ``("done", result)``; raises what the caller
        gets when there is no fallback."""
        start = self._clock()
        deadline, tried, turn = self._deadline(budget_ms, start), set[str](), self._turn_of_request()
        failures: list[dict[str, Any]] = []
        while True:
            now = self._clock()
            left = seconds_left()  # a request's budget spent: no deployment is sent what it cannot answer in time
            d, wait = (None, math.inf) if left is not None and left <= 0 else self._take(tried, now, turn)
            if d is not None:
                with span("rankrelay.pool", deployment=d.name, routing=self.routing, queued_ms=(now - start) * 1e3):
                    outcome = yield "send", d.reranker
                if isinstance(outcome, Exception):
                    self._failed(d, outcome, tried, failures)
                    continue
                self._succeeded(d, now)
                yield "done", self._label(outcome, d, now - start, failures)
                return
            if now + wait > deadline:
                error = self._exhausted(failures, wait)
                if self.fallback is None:
                    raise error
                logger.info("pool: falling back to %s: %s", label(self.fallback), error)
                outcome = yield "fallback", self.fallback
                if isinstance(outcome, Exception):
                    raise outcome
                yield "done", self._label(outcome, None, now - start, failures, str(error))
                return
            yield "wait", wait

    def _one(self, request: Request, top_n: int | None, budget_ms: float | None) -> RerankResult:
        with within_budget(budget_ms):  # what is left of it goes to each attempt
            return self._walk(request, top_n, budget_ms)

    def _walk(self, request: Request, top_n: int | None, budget_ms: float | None) -> RerankResult:
        route = self._route(budget_ms)
        step, value = next(route)
        while step != "done":
            if step == "wait":
                self._sleep(value)
                step, value = next(route)
                continue
            outcome: RerankResult | Exception
            try:
                outcome = value.rerank_batch([request], top_n, **budget_kwargs(value))[0]
            except Exception as exc:  # the route decides what a failure means (and raises the caller's own)
                outcome = exc
            step, value = route.send(outcome)
        return value

    def rerank_batch(self, requests: Sequence[Request], top_n: int | None = None, *,
                     budget_ms: float | None = None) -> list[RerankResult]:
        """Each request to one deployment (in turn), results in order."""
        return [self._one(r, top_n, budget_ms) for r in requests]

    async def _aone(self, request: Request, top_n: int | None, budget_ms: float | None) -> RerankResult:
        with within_budget(budget_ms):
            return await self._awalk(request, top_n, budget_ms)

    async def _awalk(self, request: Request, top_n: int | None, budget_ms: float | None) -> RerankResult:
        route = self._route(budget_ms)
        step, value = next(route)
        while step != "done":
            if step == "wait":
                await self._asleep(value)
                step, value = next(route)
                continue
            outcome: RerankResult | Exception
            try:
                outcome = (await arerank_batch(value, [request], top_n, **budget_kwargs(value)))[0]
            except Exception as exc:
                outcome = exc
            step, value = route.send(outcome)
        return value

    async def arerank_batch(self, requests: Sequence[Request], top_n: int | None = None, *,
                            budget_ms: float | None = None) -> list[RerankResult]:
        """Async :meth:`rerank_batch`: the requests concurrently, each to its own deployment."""
        return list(await asyncio.gather(*(self._aone(r, top_n, budget_ms) for r in requests)))

    def describe(self) -> list[dict[str, Any]]:
        """Each deployment's limits and what the pool knows of it now (``rankrelay`` shows it in ``/ready``)."""
        now = self._clock()
        return [{"deployment": d.name, "backend": label(d.reranker), "rpm": d.rpm, "used": self.state.used(d.name, now),
                 "in_flight": d.in_flight, "cooling_s": round(self.state.cooling(d.name, now), 3),
                 "breaker": d.breaker.state, "latency_ms": None if d.latency_s is None else round(d.latency_s * 1e3, 3)}
                for d in self.deployments]


POOL_OPTIONS = frozenset({"deployments", "routing", "fallback", "max_wait_s", "cooldown_s", "failure_threshold",
                          "reset_timeout", "state", "namespace", "seed"})


def from_spec(rest: str | None, *, deployments: Sequence[Any] | None = None, **options: Any) -> PoolReranker:
    """Registry factory: ``{"spec": "pool", "deployments": [...], "routing": ...}``."""
    if rest:
        raise ConfigError("a pool is given as {'spec': 'pool', 'deployments': [...]}, not as 'pool:...'")
    if not deployments:
        raise ConfigError("a pool needs a non-empty 'deployments' list")
    return PoolReranker(deployments, **options)


register("pool", from_spec, options=POOL_OPTIONS,
         description="several deployments of one model behind one name: rpm limits, cooldowns on 429, routing "
                     "(least-busy, latency, usage, round-robin, weighted), a fallback")
