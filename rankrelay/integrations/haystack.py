"""Haystack: :class:`RankRelayRanker`, a ranker component (in code or in a serialized YAML pipeline).

Example:
    >>> from rankrelay.integrations.haystack import RankRelayRanker
    >>> from haystack import Document
    >>> ranker = RankRelayRanker(reranker="random:1", top_k=2)
    >>> ranker.warm_up()
    >>> out = ranker.run(query="query", documents=[Document(content=t) for t in ("a", "b", "c")])
    >>> len(out["documents"]), RankRelayRanker.from_dict(ranker.to_dict()).top_k
    (2, 2)
"""

# No ``from __future__ import annotations``: Haystack 2.x reads a component's input types from the signature
# as written, and string annotations do not connect to other components' outputs.
import dataclasses
from typing import Any

from rankrelay._optional import import_optional

import_optional("haystack", extra="haystack", feature="the Haystack integration", package="haystack-ai")
from haystack import Document, component, default_from_dict, default_to_dict  # noqa: E402

from rankrelay.errors import ConfigError  # noqa: E402
from rankrelay.integrations.common import rerank_metadata, scored, texts_of  # noqa: E402
from rankrelay.rerankers.base import Reranker, aclose  # noqa: E402
from rankrelay.rerankers.registry import load_reranker  # noqa: E402
from rankrelay.results import RerankResult  # noqa: E402


@component
class RankRelayRanker:
    """Rank documents for a query with any rankrelay reranker; keep the best ``top_k``.

    Each output document keeps its id and meta; ``score`` is the per-document relevance in [0, 1] (Cohere's
    meaning, :func:`rankrelay.scoring.relevance`) and ``meta`` gains
    ``relevance_score``, ``rerank_score``, ``rerank_rank``, ``rerank_backend`` and ``rerank_fallbacks``.

    Args:
        reranker: a spec (``"minilm-l6"``), a ``{"spec": ..., **options}`` dict or a list (a fallback chain);
            a :class:`~rankrelay.Reranker` object works too, but only specs serialize with ``to_dict``.
        top_k: documents kept (None: all), unless ``run`` is given its own.
    """

    def __init__(self, reranker: Any = "minilm-l6", top_k: int | None = 10) -> None:
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be an int > 0 or None, got {top_k!r}")
        self.reranker = reranker
        self.top_k = top_k
        self._built: Reranker | None = None

    @property
    def client(self) -> Reranker:
        """The rankrelay reranker (built by :meth:`warm_up`, or on first use)."""
        if self._built is None:
            self._built = load_reranker(self.reranker)
        return self._built

    def warm_up(self) -> None:
        """Build the reranker and load its model (or open its clients)."""
        self.client.warm_up()

    def close(self) -> None:
        """Close the reranker built from the spec (its API clients); a Reranker object given is the caller's."""
        if self._built is not None and self._built is not self.reranker:
            self._built.close()
            self._built = None

    async def close_async(self) -> None:
        """Async :meth:`close` (an API client's async connections are closed on their own loop)."""
        if self._built is not None and self._built is not self.reranker:
            await aclose(self._built)
            self._built = None

    def to_dict(self) -> dict[str, Any]:
        """The component as a dict (for a YAML pipeline); needs the reranker given as a spec."""
        if not isinstance(self.reranker, (str, dict, list)):
            raise ConfigError("RankRelayRanker serializes a reranker given as a spec (a string, a dict or a "
                              f"list), not a {type(self.reranker).__name__} object")
        return default_to_dict(self, reranker=self.reranker, top_k=self.top_k)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RankRelayRanker":
        """The component from :meth:`to_dict`'s output."""
        return default_from_dict(cls, data)

    def _request(self, documents: list[Document], top_k: int | None) -> tuple[list[str], int | None]:
        top_k = self.top_k if top_k is None else top_k
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be > 0, got {top_k}")
        return texts_of(documents, lambda d: d.content, "document"), top_k

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, list[Document]]:
        """The best ``top_k`` of ``documents`` for ``query``, best first (empty in, empty out)."""
        if not documents:
            return {"documents": []}
        texts, top_k = self._request(documents, top_k)
        return {"documents": self._ranked(documents, self.client.rerank(query, texts, top_n=top_k))}

    @component.output_types(documents=list[Document])
    async def run_async(self, query: str, documents: list[Document],
                        top_k: int | None = None) -> dict[str, list[Document]]:
        """Async :meth:`run`: awaits the reranker's ``arerank``."""
        if not documents:
            return {"documents": []}
        texts, top_k = self._request(documents, top_k)
        return {"documents": self._ranked(documents, await self.client.arerank(query, texts, top_n=top_k))}

    @staticmethod
    def _ranked(documents: list[Document], result: RerankResult) -> list[Document]:
        return [dataclasses.replace(documents[r.index], score=score,
                                    meta={**documents[r.index].meta, **rerank_metadata(r, result, score)})
                for r, score in scored(result)]
