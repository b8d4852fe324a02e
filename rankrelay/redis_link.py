"""A Redis (or Valkey) connection that may go away: the base of the state a service's replicas share there (a pool's
windows, cooldowns and breakers; the clients' usage and budgets).

While Redis cannot be reached, a call runs on this process's own state instead (a warning once, and
:attr:`RedisLink.problem` says why); every ``retry_s`` a call tries Redis again, and when it answers, what this
process counted meanwhile is handed over (:meth:`RedisLink._hand_over`) before Redis is the state again. Replicas
of one process that reach the same Redis share one client (one connection pool). The URL's password is never logged.

Example (no Redis at this address):
    >>> link = RedisLink("redis://:secret@127.0.0.1:9/0", feature="an example")
    >>> link.check()
    'Redis at redis://***@127.0.0.1:9/0 is unreachable: ConnectionError'
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from rankrelay._optional import import_optional
from rankrelay.errors import ConfigError
from rankrelay.redact import redact_spec

T = TypeVar("T")
_clients: dict[tuple[str, float], Any] = {}
_clients_lock = threading.Lock()


def client_for(url: str, timeout_s: float) -> Any:
    """The process's ``redis.Redis`` client of ``url`` (made on first use; thread-safe, with its connection pool):
    connecting and each command wait at most ``timeout_s``."""
    redis = import_optional("redis", extra="redis", feature="state shared through Redis")
    with _clients_lock:
        client = _clients.get((url, timeout_s))
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
            _clients[(url, timeout_s)] = client
        return client


class RedisLink:
    """Runs work on Redis, or on this process's state while Redis is away (see the module's docstring).

    Args:
        url: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
        feature: what needs Redis, for the message when the ``redis`` package is missing.
        timeout_s: how long a call waits for Redis before this process serves on its own state.
        retry_s: how often, while Redis is away, a call tries it again.
    """

    #: What the log lines name, and what this process does while Redis is away.
    what = "shared state"
    meanwhile = "serving on this process's own state"

    def __init__(self, url: str, feature: str, timeout_s: float = 0.25, retry_s: float = 1.0) -> None:
        redis = import_optional("redis", extra="redis", feature=feature)
        self.where = str(redact_spec(url))
        self.retry_s = retry_s
        self._client = client_for(url, timeout_s)
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._refused = redis.exceptions.AuthenticationError
        self._away_since: float | None = None
        self._next_try = -math.inf
        self.problem: str | None = None
        self._link_lock = threading.Lock()
        self._log = logging.getLogger(type(self).__module__)  # said under the subclass's module, as users filter

    @property
    def shared(self) -> bool:
        """Is the state in Redis now (False while this process serves on its own)?"""
        return self._away_since is None

    def health(self) -> dict[str, Any]:
        """``shared`` (is the state in Redis now?) and, while it is not, the ``problem`` (for ``/ready``)."""
        problem = self.problem
        return {"shared": self.shared, **({"problem": problem} if problem else {})}

    def check(self) -> str | None:
        """Reach Redis now (a service does at start): None when it answers, else why not, this process then
        serving on its own state (the first call tries Redis again). A refused password is a :class:`ConfigError`,
        not an outage to wait out."""
        try:
            self._client.ping()
        except self._refused as exc:
            raise ConfigError(f"Redis at {self.where} refused the password ({type(exc).__name__})") from None
        except self._errors as exc:
            self._away(exc, -math.inf)
        return self.problem

    def _away(self, exc: Exception, now: float) -> None:
        with self._link_lock:
            if self._away_since is None:
                self._away_since = now
                self._log.warning("%s: Redis at %s is unreachable (%s): %s until it answers", self.what, self.where,
                               type(exc).__name__, self.meanwhile)
            self.problem = (f"Redis at {self.where} refused the password" if isinstance(exc, self._refused)
                            else f"Redis at {self.where} is unreachable: {type(exc).__name__}")
            self._next_try = now + self.retry_s

    def _run(self, work: Callable[[], T], local: Callable[[], T], now: float) -> T:
        """``work()`` on Redis; while it is away (until the next try at ``now`` on the caller's clock), ``local()``
        on this process's state."""
        if self._away_since is not None and now < self._next_try:
            return local()
        try:
            if self._away_since is not None:
                handed = self._hand_over(now)
                with self._link_lock:
                    since = self._away_since if math.isfinite(self._away_since) else now
                    self._log.warning("%s: Redis at %s answers again after %.1f s; %s", self.what, self.where,
                                   now - since, handed)
                    self._away_since, self.problem = None, None
            return work()
        except self._errors as exc:
            self._away(exc, now)
            return local()

    def _hand_over(self, now: float) -> str:
        """Redis is back: send it what this process counted while it was away; what was handed over, for the log.
        A failure raises (the counts are kept for the next try)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the client's connections (a later call on a client of the same URL connects again)."""
        self._client.close()
