"""Online A/B tests: a stable share of requests goes to arm B, and every result says which arm served.

The arm is chosen from a hash of a request key (a user or session id; the query by default), so a
key always lands in the same arm and the logged outcomes can be scored later by arm.

Example:
    >>> from rankrelay.rerankers.compose.ab_split import SplitReranker
    >>> split = SplitReranker("identity", "random:1", share_b=0.5)
    >>> res = split.rerank("query", ["a", "b", "c"], key="user-42")
    >>> res.info["arm"] == split.arm("user-42")
    True
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from rankrelay.errors import ConfigError
from rankrelay.hashing import short_hash, unit_interval
from rankrelay.rerankers.base import Request, Reranker, accepts_budget, arerank_batch
from rankrelay.rerankers.compose.composite import Composite
from rankrelay.rerankers.registry import load_reranker
from rankrelay.results import DocumentLike, RerankResult

logger = logging.getLogger(__name__)


class SplitReranker(Composite):
    """Send ``share_b`` of request keys to ``b`` and the rest to ``a``.

    Args:
        a: arm "a", a spec or reranker (any :class:`~rankrelay.Reranker`, a fallback chain included).
        b: arm "b", the same kinds.
        share_b: the share of keys routed to ``b``, in [0, 1].
        salt: changes the assignment (a new experiment re-draws the arms).
    """

    name = "split"

    def __init__(self, a: Any, b: Any, share_b: float = 0.1, salt: str = "rankrelay") -> None:
        if not 0.0 <= share_b <= 1.0:
            raise ConfigError(f"share_b must be in [0, 1], got {share_b}")
        self.arms = {"a": load_reranker(a), "b": load_reranker(b)}
        self.share_b = share_b
        self.salt = salt
        self.model = f"a={self.arms['a'].name} b={self.arms['b'].name} share_b={share_b}"  # (a Reranker has a name)

    def arm(self, key: str) -> str:
        """``a`` or ``b`` for ``key``: stable across processes and runs (SHA-256, not Python's hash)."""
        return "b" if unit_interval(f"{self.salt}\x1f{key}") < self.share_b else "a"

    def parts(self) -> list[Reranker]:
        return [self.arms["a"], self.arms["b"]]

    def _label(self, res: RerankResult, arm: str, key: str) -> RerankResult:
        res.info["arm"] = arm
        res.info["split"] = {"salt": self.salt, "share_b": self.share_b}
        logger.info("split: arm %s served by %s (key hash %s)", arm, res.backend,
                    short_hash(key, 12))
        return res

    def rerank(self, query: str, documents: Sequence[DocumentLike], top_n: int | None = None, *,
               budget_ms: float | None = None, key: str | None = None) -> RerankResult:
        """Rerank with the arm of ``key`` (default: the query); ``res.info["arm"]`` says which."""
        return self.rerank_batch([(query, documents)], top_n, budget_ms=budget_ms,
                                 keys=None if key is None else [key])[0]

    async def arerank(self, query: str, documents: Sequence[DocumentLike], top_n: int | None = None, *,
                      budget_ms: float | None = None, key: str | None = None) -> RerankResult:
        return (await self.arerank_batch([(query, documents)], top_n, budget_ms=budget_ms,
                                         keys=None if key is None else [key]))[0]

    def _route(self, requests: Sequence[Request], keys: Sequence[str] | None) -> tuple[list[str], list[str]]:
        """Each request's key and arm."""
        keys = list(keys) if keys is not None else [q for q, _ in requests]
        if len(keys) != len(requests):
            raise ConfigError(f"got {len(keys)} keys for {len(requests)} requests")
        return keys, [self.arm(k) for k in keys]

    def rerank_batch(self, requests: Sequence[Request], top_n: int | None = None, *,
                     budget_ms: float | None = None, keys: Sequence[str] | None = None) -> list[RerankResult]:
        """Each request goes to its key's arm; each arm gets one batch; results come back in order."""
        keys, arms = self._route(requests, keys)
        out: list[RerankResult | None] = [None] * len(requests)
        for name in ("a", "b"):
            positions = [i for i, a in enumerate(arms) if a == name]
            if positions:
                reranker = self.arms[name]
                kwargs = {"budget_ms": budget_ms} if budget_ms is not None and accepts_budget(reranker) else {}
                results = reranker.rerank_batch([requests[i] for i in positions], top_n, **kwargs)
                for i, res in zip(positions, results):
                    out[i] = self._label(res, name, keys[i])
        return [r for r in out if r is not None]

    async def arerank_batch(self, requests: Sequence[Request], top_n: int | None = None, *,
                            budget_ms: float | None = None, keys: Sequence[str] | None = None) -> list[RerankResult]:
        """Async :meth:`rerank_batch` (both arms concurrently, each through its async API)."""
        keys, arms = self._route(requests, keys)
        out: list[RerankResult | None] = [None] * len(requests)

        async def serve(name: str, positions: list[int]) -> None:
            reranker = self.arms[name]
            kwargs = {"budget_ms": budget_ms} if budget_ms is not None and accepts_budget(reranker) else {}
            results = await arerank_batch(reranker, [requests[i] for i in positions], top_n, **kwargs)
            for i, res in zip(positions, results):
                out[i] = self._label(res, name, keys[i])

        await asyncio.gather(*(serve(name, [i for i, a in enumerate(arms) if a == name])
                               for name in ("a", "b") if name in arms))
        return [r for r in out if r is not None]
