"""What a pool of deployments remembers between requests: each deployment's requests in the last minute (its rpm
window), when its cooldown after a 429 ends, and when a breaker opened by repeated failures lets it be tried again.

The window is a log of send times, so "at most ``rpm`` requests in any 60 seconds" holds exactly (a fixed
per-minute counter lets twice ``rpm`` through across a minute's edge). :class:`LocalPoolState` keeps it in this
process; a shared store (the gateway's Redis) implements the same calls, so that one replica's 429 or open breaker
keeps every replica off the deployment.

Example:
    >>> from rankrelay.rerankers.compose.pool_state import LocalPoolState
    >>> state = LocalPoolState()
    >>> [state.acquire("eu", rpm=2, now=t) for t in (0.0, 1.0, 2.0)]
    [0.0, 0.0, 58.0]
    >>> state.acquire("eu", rpm=2, now=60.0)
    0.0
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict, deque
from typing import Any, Protocol

#: The rpm window, in seconds.
WINDOW_S = 60.0


class PoolState(Protocol):
    """Rate-limit windows, cooldowns and open breakers of a pool's deployments, keyed by deployment name."""

    def acquire(self, key: str, rpm: int | None, now: float) -> float:
        """Take a request slot of ``key`` at ``now``: 0.0 when taken (the send is counted), else the seconds until
        one may be (nothing counted): the end of ``key``'s cooldown, or a slot of its window freeing."""
        ...

    def trip(self, key: str, seconds: float, now: float) -> None:
        """``key``'s circuit breaker opened: every breaker of ``key`` sharing this state stays open for ``seconds``
        from ``now``."""
        ...

    def tripped(self, key: str, now: float) -> float:
        """Seconds left of ``key``'s open breaker at ``now`` (0.0 when none is open)."""
        ...

    def cool_down(self, key: str, seconds: float, now: float) -> None:
        """``key`` gets no request for ``seconds`` from ``now`` (a cooldown never shortens one that ends later)."""
        ...

    def cooling(self, key: str, now: float) -> float:
        """Seconds of cooldown left for ``key`` at ``now`` (0.0 when it may be sent to)."""
        ...

    def used(self, key: str, now: float) -> int:
        """Requests sent to ``key`` in the window ending at ``now``."""
        ...


def state_health(state: Any) -> dict[str, Any] | None:
    """Whether a shared ``state`` is reached now, and why not (None for this process's own)."""
    health = getattr(state, "health", None)
    return None if health is None else dict(health())


class LocalPoolState:
    """:class:`PoolState` in this process (thread-safe): what N replicas share needs a shared store.

    Each send is kept with an id, so that a shared store that takes the counts over (:meth:`snapshot`) counts a send
    it already has once.
    """

    def __init__(self) -> None:
        self._sent: defaultdict[str, deque[tuple[float, str]]] = defaultdict(deque)
        self._cool: dict[str, float] = {}
        self._open: dict[str, float] = {}
        self._lock = threading.Lock()

    def _window(self, key: str, now: float) -> deque[tuple[float, str]]:
        sent = self._sent[key]
        while sent and sent[0][0] <= now - WINDOW_S:
            sent.popleft()
        return sent

    def acquire(self, key: str, rpm: int | None, now: float) -> float:
        with self._lock:
            cooling = self._cool.get(key, now) - now
            if cooling > 0:
                return cooling
            sent = self._window(key, now)
            if rpm is not None and len(sent) >= rpm:
                return sent[len(sent) - rpm][0] + WINDOW_S - now
            sent.append((now, uuid.uuid4().hex))
            return 0.0

    def record(self, key: str, now: float, send_id: str) -> None:
        """Count a send made elsewhere (a shared store's, mirrored here for when that store is away)."""
        with self._lock:
            self._window(key, now).append((now, send_id))

    def cool_down(self, key: str, seconds: float, now: float) -> None:
        with self._lock:
            self._cool[key] = max(now + seconds, self._cool.get(key, now))

    def cooling(self, key: str, now: float) -> float:
        with self._lock:
            return max(0.0, self._cool.get(key, now) - now)

    def trip(self, key: str, seconds: float, now: float) -> None:
        with self._lock:
            self._open[key] = max(now + seconds, self._open.get(key, now))

    def tripped(self, key: str, now: float) -> float:
        with self._lock:
            return max(0.0, self._open.get(key, now) - now)

    def used(self, key: str, now: float) -> int:
        with self._lock:
            return len(self._window(key, now))

    def snapshot(self, now: float) -> tuple[dict[str, list[tuple[float, str]]], dict[str, float], dict[str, float]]:
        """Each key's sends in the window (age before ``now``, id), cooldown left and open breaker's time left (what a
        shared store takes over when it comes back)."""
        with self._lock:
            sent = {k: [(now - t, i) for t, i in self._window(k, now)] for k in list(self._sent)}
            cool = {k: until - now for k, until in self._cool.items() if until > now}
            tripped = {k: until - now for k, until in self._open.items() if until > now}
        return {k: v for k, v in sent.items() if v}, cool, tripped
