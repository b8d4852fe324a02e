"""An asyncio event loop on virtual time: whenever nothing is ready, its clock jumps to the next timer.

A timeout of two seconds takes no real time and ends exactly two seconds later on ``loop.time()``, so a test
asserts *when* an answer came (one hedge interval, not two) without timing the machine. Only for coroutines
that do not wait on threads: a thread's answer arrives in real time, which this clock does not wait for.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any


class _JumpingSelector:
    """The loop's selector, except that a wait with nothing ready moves the loop's clock instead of sleeping."""

    def __init__(self, selector: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._selector, self._loop = selector, loop

    def select(self, timeout: float | None = None) -> list[Any]:
        events = self._selector.select(0)
        if events or timeout == 0:
            return events
        if timeout is None:  # no timer at all: only real I/O can wake the loop
            return self._selector.select(None)
        self._loop.now += timeout
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """``run(coro)`` runs ``coro`` on virtual time and returns its result; ``time()`` reads the virtual clock."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self._selector = _JumpingSelector(self._selector, self)  # type: ignore[assignment]

    def time(self) -> float:
        return self.now

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            return self.run_until_complete(coro)
        finally:
            self.run_until_complete(self.shutdown_asyncgens())
            self.close()
