"""A fake clock for tests: time passes only when something sleeps, so waits are asserted, never timed.

Example:
    >>> from rankrelay.rerankers.hosted.retry import RetryPolicy
    >>> from rankrelay.errors import RateLimitError
    >>> from rankrelay.testing.clock import FakeClock
    >>> clock, tries = FakeClock(), []
    >>> def attempt(timeout):
    ...     tries.append(timeout)
    ...     if len(tries) == 1:
    ...         raise RateLimitError("429", retry_after=2.5)
    ...     return "ok"
    >>> clock.policy(RetryPolicy(max_attempts=3, deadline=10.0)).run(attempt), clock.waits
    ('ok', [2.5])
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any


class FakeClock:
    """``clock()`` reads the time, ``sleep(s)`` / ``await asleep(s)`` advance it by ``s`` at once; ``waits``
    lists every sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)

    def policy(self, policy: Any) -> Any:
        """``policy`` (a :class:`~rankrelay.rerankers.hosted.retry.RetryPolicy`) on this clock."""
        return dataclasses.replace(policy, clock=self, sleep=self.sleep, asleep=self.asleep)
