"""The clients' usage and budgets in Redis (or Valkey), so every replica of a service counts into one ledger.

Spend is kept in integer micro-dollars per (client, budget period), each reservation one Lua script (check and
add, atomic), so replicas never overshoot a budget together. Usage rows are hashes per hour
(``rankrelay:usage:<namespace>:h:<hour>``, kept 90 days), listed in a sorted set of hours. While Redis cannot be
reached the service keeps counting in this process (a warning, and :attr:`RedisUsageStore.problem` says why; a
budget is then checked against the spend Redis last reported plus this replica's own) and, when Redis answers
again, adds what it counted there: counters only add, so nothing is counted twice. The URL's password is never
logged.

Example (no Redis at this address: this process counts until one answers there):
    >>> store = RedisUsageStore("redis://:secret@127.0.0.1:9/0")
    >>> store.reserve("app|day|2026-12-06", 2000, limit=3000), store.reserve("app|day|2026-12-06", 2000, 3000)
    (2000, None)
    >>> store.shared, store.problem
    (False, 'Redis at redis://***@127.0.0.1:9/0 is unreachable: ConnectionError')
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from rankrelay.redis_link import RedisLink
from rankrelay.server.usage import HOUR_S, KEEP_HOURS, LocalUsageStore

T = TypeVar("T")

#: How long an hour's usage and a period's spend are kept (a total budget's spend is kept for good).
KEEP_S = KEEP_HOURS * HOUR_S
#: KEYS[1] the spend; ARGV: micro-dollars to add, the limit, the key's lifetime in s (0: for good).
RESERVE = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local add = tonumber(ARGV[1])
if spent + add > tonumber(ARGV[2]) then return {0, spent} end
local now = redis.call('INCRBY', KEYS[1], add)
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return {1, now}
"""
_SEP = "\x1f"


class RedisUsageStore(RedisLink):
    """A usage store (see :class:`~rankrelay.server.usage.LocalUsageStore`) in Redis under
    ``rankrelay:usage:<namespace>:``, this process's own counts standing in while Redis is away."""

    what = "usage"
    meanwhile = "counting in this process"

    def __init__(self, url: str, namespace: str = "service", timeout_s: float = 0.25, retry_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(url, "usage shared through Redis", timeout_s, retry_s)
        self.prefix = f"rankrelay:usage:{namespace}:"
        self.clock = clock
        self._reserve = self._client.register_script(RESERVE)
        self._pending = LocalUsageStore()  # counted while Redis was away, added there when it answers
        self._seen: dict[str, int] = {}  # the spend Redis last reported, per key

    def _on_redis(self, work: Callable[[], T], local: Callable[[], T]) -> T:
        return self._run(work, local, self.clock())

    def _hand_over(self, now: float) -> str:
        """Redis is back: what this process counted while it was away is added there."""
        pending, self._pending = self._pending, LocalUsageStore()
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for key, micro in pending.spend_items():
                    pipe.incrby(self._spend_key(key), micro)
                for hour, row, counts in pending.hour_items():
                    for name, value in counts.items():
                        pipe.hincrbyfloat(self._hour_key(hour), _SEP.join((*row, name)), value)
                    pipe.zadd(self.prefix + "hours", {str(hour): hour})
                    pipe.expire(self._hour_key(hour), KEEP_S)
                pipe.execute()
        except self._errors:
            self._pending = pending  # not handed over: kept for the next try
            raise
        return "this process's counts handed over"

    def _spend_key(self, key: str) -> str:
        return f"{self.prefix}spend:{key}"

    def _hour_key(self, hour: int) -> str:
        return f"{self.prefix}h:{hour}"

    def reserve(self, key: str, micro: int, limit: int) -> int | None:
        def shared() -> int | None:
            ok, spent = self._reserve(keys=[self._spend_key(key)],
                                      args=[micro, limit, 0 if key.endswith("|total") else KEEP_S])
            self._seen[key] = int(spent)  # this reservation included: it is in Redis
            return int(spent) if ok else None

        def local() -> int | None:
            seen = self._seen.get(key, 0)
            after = self._pending.reserve(key, micro, limit - seen)
            return None if after is None else after + seen

        return self._on_redis(shared, local)

    def add_spend(self, key: str, micro: int) -> None:
        self._on_redis(lambda: self._client.incrby(self._spend_key(key), micro),
                  lambda: self._pending.add_spend(key, micro))

    def spent(self, key: str) -> int:
        return int(self._on_redis(lambda: int(self._client.get(self._spend_key(key)) or 0),
                             lambda: self._seen.get(key, 0) + self._pending.spent(key)))

    def add(self, hour: int, row: tuple[str, str, str], values: Mapping[str, float]) -> None:
        def shared() -> None:
            with self._client.pipeline(transaction=False) as pipe:
                for name, value in values.items():
                    pipe.hincrbyfloat(self._hour_key(hour), _SEP.join((*row, name)), value)
                pipe.zadd(self.prefix + "hours", {str(hour): hour})
                pipe.expire(self._hour_key(hour), KEEP_S)
                pipe.execute()

        self._on_redis(shared, lambda: self._pending.add(hour, row, values))

    def rows(self, since_hour: int) -> dict[tuple[str, str, str], dict[str, float]]:
        def shared() -> dict[tuple[str, str, str], dict[str, float]]:
            hours = self._client.zrangebyscore(self.prefix + "hours", since_hour, "+inf")
            with self._client.pipeline(transaction=False) as pipe:
                for hour in hours:
                    pipe.hgetall(self._hour_key(int(hour)))
                hashes = pipe.execute()
            out: dict[tuple[str, str, str], dict[str, float]] = {}  # nothing is pending: handed over first
            for fields in hashes:
                for field, value in fields.items():
                    *row, name = field.decode().split(_SEP)
                    counts = out.setdefault((row[0], row[1], row[2]), {})
                    counts[name] = counts.get(name, 0.0) + float(value)
            return out

        return self._on_redis(shared, lambda: self._pending.rows(since_hour))
