"""Rerankers made of other rerankers (fallback chains, cascades, A/B splits) share one lifetime:
warming up or closing the whole warms up or closes every part.

Example:
    >>> from rankrelay.rerankers import load_reranker
    >>> with load_reranker(["identity", "random:1"]) as chain:
    ...     chain.rerank("q", ["a", "b"]).backend
    'identity'
    >>> [r.name for r in leaves(load_reranker(["identity", "random:1"]))]
    ['identity', 'random']
"""

from __future__ import annotations

import logging

from rankrelay.rerankers.base import Reranker, SingleQuery, aclose, label

logger = logging.getLogger(__name__)


def leaves(reranker: Reranker) -> list[Reranker]:
    """The rerankers that do the work inside ``reranker`` (itself when it is not made of others), each once, in
    the order the parts are listed."""
    out: dict[int, Reranker] = {}
    todo = [reranker]
    while todo:
        current = todo.pop(0)
        if isinstance(current, Composite):
            todo[:0] = current.parts()
        else:
            out.setdefault(id(current), current)
    return list(out.values())


class Composite(SingleQuery):
    """A reranker whose :meth:`parts` do the work; lifetime calls reach every part once."""

    name: str = "composite"

    def parts(self) -> list[Reranker]:
        """The rerankers this one is made of, each once."""
        raise NotImplementedError

    def _unique_parts(self) -> list[Reranker]:
        seen: set[int] = set()
        out = []
        for part in self.parts():
            if id(part) not in seen:
                seen.add(id(part))
                out.append(part)
        return out

    def warm_up(self) -> None:
        """Warm up every part."""
        for part in self._unique_parts():
            part.warm_up()

    def close(self) -> None:
        """Close every part (one that fails to close is logged; the rest still close)."""
        for part in self._unique_parts():
            try:
                part.close()
            except Exception as exc:  # closing must reach every part
                logger.warning("%s: closing %s failed: %s: %s", label(self), label(part), type(exc).__name__, exc)

    async def aclose(self) -> None:
        """Async :meth:`close`: every part closes on this event loop."""
        for part in self._unique_parts():
            try:
                await aclose(part)
            except Exception as exc:
                logger.warning("%s: closing %s failed: %s: %s", label(self), label(part), type(exc).__name__, exc)
