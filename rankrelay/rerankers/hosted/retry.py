"""The one retry policy every API backend uses (tenacity), sync and async alike.

Retries only what a retry can fix: connection errors, timeouts, 408, 429 and 500/502/503/504
(:class:`~rankrelay.errors.BackendError` with ``retryable`` set); never 400/401/403/404/422.
Exponential backoff with full jitter; a ``Retry-After`` is honoured when it fits in the time left,
and otherwise ends the retries at once. Bounded by attempts and by a total deadline; each attempt
gets the smaller of the request timeout and the time left.

Example:
    >>> from rankrelay.rerankers.hosted.retry import RetryPolicy, parse_retry_after
    >>> RetryPolicy(max_attempts=3, deadline=10.0).run(lambda timeout: round(timeout))
    10
    >>> parse_retry_after("2")
    2.0
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception

from rankrelay.errors import BackendError, BackendTimeoutError, ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: HTTP statuses worth another attempt.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: An attempt with less time than this left is not started.
MIN_ATTEMPT_SECONDS = 0.05


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP date; None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_after_from_headers(headers: Mapping[str, str] | None) -> float | None:
    """``retry-after-ms`` or ``Retry-After`` from response headers (any case)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lower:
        try:
            return max(0.0, float(lower["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    return parse_retry_after(lower.get("retry-after"))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts, deadline and backoff for one logical call.

    Args:
        max_attempts: attempts in all (1 = no retry).
        deadline: seconds for all attempts and waits together.
        timeout: read timeout of one attempt (capped by the time left).
        backoff_initial: first backoff ceiling in seconds (full jitter: uniform in [0, ceiling]).
        backoff_max: largest backoff ceiling.
        clock, sleep, asleep: where time comes from and how a wait is spent (``time.monotonic``,
            ``time.sleep``, ``asyncio.sleep``); tests give a fake clock whose sleeps advance it.
    """

    max_attempts: int = 3
    deadline: float = 30.0
    timeout: float = 30.0
    backoff_initial: float = 0.25
    backoff_max: float = 4.0
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    asleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.deadline <= 0 or self.timeout <= 0:
            raise ConfigError("deadline and timeout must be > 0")

    def _backoff(self, attempt: int) -> float:
        import random

        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)

    def _controls(self, deadline_at: float, name: str) -> dict[str, object]:
        planned: dict[int, float] = {}

        def wait_for(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = getattr(exc, "retry_after", None)
            if state.attempt_number not in planned:
                planned[state.attempt_number] = (
                    retry_after if retry_after is not None else self._backoff(state.attempt_number)
                )
            return planned[state.attempt_number]

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= self.max_attempts:
                return True
            left = deadline_at - self.clock() - wait_for(state)
            return left < MIN_ATTEMPT_SECONDS  # a Retry-After beyond the deadline ends it now

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            logger.warning(
                "%s: attempt %d failed (%s: %s); retrying in %.2f s",
                name, state.attempt_number, type(exc).__name__, exc, wait_for(state),
            )

        return {
            "stop": stop,
            "wait": wait_for,
            "retry": retry_if_exception(lambda e: isinstance(e, BackendError) and e.retryable),
            "reraise": True,
            "before_sleep": before_sleep,
        }

    def _attempt_timeout(self, deadline_at: float, name: str) -> float:
        left = deadline_at - self.clock()
        if left < MIN_ATTEMPT_SECONDS:
            raise BackendTimeoutError(f"{name}: deadline of {self.deadline:.2f} s ran out", backend=name,
                                      retryable=False)
        return min(self.timeout, left)

    def run(self, attempt: Callable[[float], T], *, deadline: float | None = None, name: str = "api") -> T:
        """Call ``attempt(timeout_seconds)`` until it succeeds or the policy gives up (re-raising the last error)."""
        deadline_at = self.clock() + (deadline or self.deadline)
        retrying = Retrying(sleep=self.sleep, **self._controls(deadline_at, name))  # type: ignore[arg-type]
        try:
            for call in retrying:
                with call:
                    return attempt(self._attempt_timeout(deadline_at, name))
        except BackendError as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def arun(
        self, attempt: Callable[[float], Awaitable[T]], *, deadline: float | None = None, name: str = "api"
    ) -> T:
        """Async :meth:`run`: the waits are ``asyncio.sleep``."""
        deadline_at = self.clock() + (deadline or self.deadline)
        retrying = AsyncRetrying(sleep=self.asleep, **self._controls(deadline_at, name))  # type: ignore[arg-type]
        try:
            async for call in retrying:
                with call:
                    return await attempt(self._attempt_timeout(deadline_at, name))
        except BackendError as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)
            raise
        raise AssertionError("unreachable")  # pragma: no cover
