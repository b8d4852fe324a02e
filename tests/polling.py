"""Waiting for what a concurrent part did, by polling it: a hang guard, never a timing assertion.

A test that needs the service, a batcher or a server to reach some state polls for that state (the 499 counted,
the listener closed, the database back) instead of sleeping for it; the limit only stops a test that would
otherwise hang, and its failure names what never happened.

    >>> until(lambda: 41 + 1, "the answer")
    42
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(condition: Callable[[], T], what: str = "the service got there", seconds: float = 10.0,
          every: float = 0.01) -> T:
    """Call ``condition`` until it returns something true, and return that; fail naming ``what`` after
    ``seconds``."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"never happened within {seconds:g} s: {what}"
        time.sleep(every)
    return value


async def until_async(condition: Callable[[], T], what: str, seconds: float = 10.0, every: float = 0.005) -> T:
    """:func:`until` between event-loop turns (the loop runs the tasks the condition waits for)."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"never happened within {seconds:g} s: {what}"
        await asyncio.sleep(every)
    return value
