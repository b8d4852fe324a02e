"""A pool's rate-limit windows, cooldowns and open breakers in Redis (or Valkey), shared by every replica of a
service, so that N replicas behind one upstream key send what one would, and a deployment one replica found failing
is left alone by all of them until its breaker lets it be tried again.

Each call is one Lua script, atomic on the server, timed by the server's clock (``TIME``), so replicas on machines
whose clocks disagree still share one window. When Redis cannot be reached the pool keeps serving on this
process's own state (a warning, and :attr:`RedisPoolState.problem` says why); every ``retry_s`` it tries again,
and when Redis answers it hands over this replica's sends of the last minute, its cooldowns and its open breakers
(a send Redis still
holds is counted once, by its id), so a restarted, empty Redis does not open a fresh minute. The URL's password
is never logged.

Example (no Redis at this address: the pool counts in this process until one answers there):
    >>> state = RedisPoolState("redis://:secret@127.0.0.1:9/0", namespace="cohere")
    >>> [state.acquire("eu", rpm=1, now=t) for t in (0.0, 1.0)]
    [0.0, 59.0]
    >>> state.shared, state.problem
    (False, 'Redis at redis://***@127.0.0.1:9/0 is unreachable: ConnectionError')
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from rankrelay.redis_link import RedisLink
from rankrelay.rerankers.compose.pool_state import WINDOW_S, LocalPoolState, PoolState

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "

#: KEYS[1] the window (a sorted set of send times), KEYS[2] the cooldown's end; ARGV: rpm (-1 for none), a unique
#: member, the window in s. One round trip a send: the cooldown left, or the wait for a slot, or 0 (counted).
ACQUIRE = _NOW + """
local cool = tonumber(redis.call('GET', KEYS[2]) or '0')
if cool > now then return tostring(cool - now) end
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local rpm = tonumber(ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if rpm >= 0 and n >= rpm then
  local oldest = redis.call('ZRANGE', KEYS[1], n - rpm, n - rpm, 'WITHSCORES')
  return tostring(tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
return '0'
"""
#: KEYS[1] the cooldown's (or open breaker's) end; ARGV[1] its length in s (a shorter one never replaces a longer one).
COOL_DOWN = _NOW + """
local untl = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > current then
  redis.call('SET', KEYS[1], tostring(untl), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1)
end
return 'ok'
"""
#: KEYS[1] the cooldown's end: seconds left.
COOLING = _NOW + """
local untl = tonumber(redis.call('GET', KEYS[1]) or '0')
return tostring(math.max(0, untl - now))
"""
#: KEYS[1] the window; ARGV[1] the window in s: sends in it.
USED = _NOW + "return redis.call('ZCOUNT', KEYS[1], '(' .. tostring(now - tonumber(ARGV[1])), '+inf')"
#: KEYS[1] window, KEYS[2] cooldown; ARGV: the cooldown left (s), the window (s), then (age, member) pairs of sends.
HAND_OVER = _NOW + """
local window = tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], now - tonumber(ARGV[i]), ARGV[i + 1])
end
if #ARGV > 2 then redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000) end
local left = tonumber(ARGV[1])
if left > 0 then
  local untl = now + left
  if untl > tonumber(redis.call('GET', KEYS[2]) or '0') then
    redis.call('SET', KEYS[2], tostring(untl), 'PX', math.ceil(left * 1000) + 1)
  end
end
return 'ok'
"""


class RedisPoolState(RedisLink):
    """:class:`~rankrelay.rerankers.compose.pool_state.PoolState` in Redis, under ``rankrelay:pool:<namespace>:``.

    Args:
        url: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
        namespace: keeps two pools' deployments of the same name apart (a service uses the model's name).
        timeout_s: how long a call waits for Redis before this process serves on its own state.
        retry_s: how often, while Redis is away, a call tries it again.
    """

    what = "pool state"
    meanwhile = "serving on this process's own counts"

    def __init__(self, url: str, namespace: str = "default", timeout_s: float = 0.25, retry_s: float = 1.0) -> None:
        super().__init__(url, "a pool's state shared through Redis", timeout_s, retry_s)
        self.prefix = f"rankrelay:pool:{namespace}:"
        self._scripts = {name: self._client.register_script(body) for name, body in (
            ("acquire", ACQUIRE), ("cool_down", COOL_DOWN), ("cooling", COOLING), ("used", USED),
            ("hand_over", HAND_OVER))}
        self._local = LocalPoolState()

    def _script(self, script: str, keys: list[str], args: list[Any], local: Callable[[], Any], now: float) -> Any:
        """``script`` on Redis; while it is away, ``local()`` on this process's state (``now``: the pool's clock,
        which the local state and the retries keep time by)."""
        return self._run(lambda: self._scripts[script](keys=keys, args=args), local, now)

    def _hand_over(self, now: float) -> str:
        """Redis is back: what this process counted while it was away goes there, then Redis is the state again."""
        sent, cool, tripped = self._local.snapshot(now)
        for name in sorted(set(sent) | set(cool)):
            args: list[Any] = [cool.get(name, 0.0), WINDOW_S]
            for age, send_id in sent.get(name, []):
                args += [age, send_id]
            self._scripts["hand_over"](keys=[self._key(name, "sent"), self._key(name, "cool")], args=args)
        for name, left in sorted(tripped.items()):  # no sends: only the breaker's end is set
            self._scripts["hand_over"](keys=[self._key(name, "sent"), self._key(name, "open")], args=[left, WINDOW_S])
        return f"{len(set(sent) | set(cool) | set(tripped))} deployments' counts handed over"

    def _key(self, name: str, part: str) -> str:
        return f"{self.prefix}{name}:{part}"

    def acquire(self, key: str, rpm: int | None, now: float) -> float:
        send_id = uuid.uuid4().hex
        wait = float(self._script("acquire", [self._key(key, "sent"), self._key(key, "cool")],
                                  [-1 if rpm is None else rpm, send_id, WINDOW_S],
                                  lambda: self._local.acquire(key, rpm, now), now))
        if wait == 0.0 and self.shared:  # this replica's own sends, for when Redis is away (or comes back empty)
            self._local.record(key, now, send_id)
        return wait

    def cool_down(self, key: str, seconds: float, now: float) -> None:
        self._local.cool_down(key, seconds, now)  # kept here too, for when Redis is away
        self._script("cool_down", [self._key(key, "cool")], [seconds], lambda: None, now)

    def trip(self, key: str, seconds: float, now: float) -> None:
        self._local.trip(key, seconds, now)  # kept here too, for when Redis is away
        self._script("cool_down", [self._key(key, "open")], [seconds], lambda: None, now)

    def tripped(self, key: str, now: float) -> float:
        return float(self._script("cooling", [self._key(key, "open")], [], lambda: self._local.tripped(key, now),
                                  now))

    def cooling(self, key: str, now: float) -> float:
        return float(self._script("cooling", [self._key(key, "cool")], [], lambda: self._local.cooling(key, now), now))

    def used(self, key: str, now: float) -> int:
        return int(self._script("used", [self._key(key, "sent")], [WINDOW_S], lambda: self._local.used(key, now), now))


def open_state(state: PoolState | str | None, namespace: str) -> PoolState:
    """The state a pool or chain keeps: a ``redis://`` URL's (a :class:`RedisPoolState` under ``namespace``), the
    one given, or this process's own."""
    if isinstance(state, str):
        return RedisPoolState(state, namespace=namespace)
    return state if state is not None else LocalPoolState()
