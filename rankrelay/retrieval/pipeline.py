"""Two-stage search: a retriever's candidates reranked by any :class:`~rankrelay.Reranker`.

Example:
    >>> from rankrelay.retrieval.pipeline import TwoStageSearch
    >>> TwoStageSearch.__init__.__kwdefaults__["retrieve_k"]
    100
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from rankrelay.errors import ConfigError, InvalidInputError
from rankrelay.rerankers.base import Reranker, check_query
from rankrelay.rerankers.cascade import FIRST_STAGE
from rankrelay.results import RerankResult
from rankrelay.scoring import fuse


@dataclass(slots=True)
class SearchResult(RerankResult):
    """A reranked result that remembers its first stage.

    ``timings`` has ``retrieve_ms``, ``rerank_ms`` and ``total_ms`` (and ``total``/``model``);
    ``index`` of each result is the document's corpus position.
    """

    first_stage: RerankResult | None = None
    served_by: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def movement(self) -> list[dict[str, Any]]:
        """Per final result: its id, first-stage rank and final rank (``moved`` > 0 means up)."""
        first = {r.index: r.rank for r in self.first_stage.results} if self.first_stage else {}
        return [
            {"id": r.id, "index": r.index, "first_rank": first.get(r.index), "final_rank": r.rank,
             "moved": (first[r.index] - r.rank) if r.index in first else None}
            for r in self.results
        ]


class TwoStageSearch:
    """Retrieve ``retrieve_k`` candidates, rerank them, keep ``top_n``.

    Args:
        retriever: anything with ``search_batch(queries, k)`` returning RerankResults (dense, BM25, hybrid).
        reranker: any :class:`~rankrelay.Reranker`, a fallback chain included.
        retrieve_k: first-stage depth.
        top_n: results kept.
        final_score: ``rerank`` (the reranker's order) or ``hybrid`` (the seed's
            ``alpha * first-stage score + (1 - alpha) * sigmoid(rerank score)``).
        alpha: weight of the first stage in ``hybrid``.
    """

    def __init__(
        self,
        retriever: Any,
        reranker: Reranker,
        *,
        retrieve_k: int = 100,
        top_n: int = 10,
        final_score: str = "rerank",
        alpha: float = 0.5,
    ) -> None:
        if final_score not in ("rerank", "hybrid"):
            raise ConfigError(f"final_score must be 'rerank' or 'hybrid', got {final_score!r}")
        if retrieve_k < 1 or top_n < 1:
            raise ConfigError("retrieve_k and top_n must be >= 1")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        self.retriever = retriever
        self.reranker = reranker
        self.retrieve_k = retrieve_k
        self.top_n = top_n
        self.final_score = final_score
        self.alpha = alpha

    def __call__(self, query: str) -> SearchResult:
        return self.batch([query])[0]

    def batch(self, queries: Sequence[str]) -> list[SearchResult]:
        """Search many queries: one batched first stage, one batched rerank."""
        if isinstance(queries, str):
            raise InvalidInputError("batch takes a list of queries")
        queries = [check_query(q) for q in queries]
        if not queries:
            return []
        start = perf_counter()
        firsts = self.retriever.search_batch(queries, self.retrieve_k)
        retrieved = perf_counter()
        requests = [(q, [r.document for r in first.results]) for q, first in zip(queries, firsts)]
        keep = None if self.final_score == "hybrid" else self.top_n
        reranked = self.reranker.rerank_batch(requests, top_n=keep)
        done = perf_counter()
        n = len(queries)
        out = []
        for first, res in zip(firsts, reranked):
            for r in res.results:  # candidate position -> corpus position
                candidate = first.results[r.index]
                if r.stage == FIRST_STAGE and math.isnan(r.score):  # left in first-stage order: its score
                    r.score = candidate.score
                r.index = candidate.index
            served_by, model_ms = res.backend, res.timings.get("model", 0.0)
            if self.final_score == "hybrid" and res.results:
                first_norm = "none" if getattr(self.retriever, "name", "") == "dense" else "minmax"
                res = fuse([first, res], "weighted", [self.alpha, 1 - self.alpha],
                           normalize_inputs=[first_norm, "sigmoid"]).top_k(self.top_n)
            timings = {
                "retrieve_ms": (retrieved - start) * 1000.0 / n,
                "rerank_ms": (done - retrieved) * 1000.0 / n,
                "model": model_ms / n,
            }
            timings["total_ms"] = timings["total"] = timings["retrieve_ms"] + timings["rerank_ms"]
            out.append(SearchResult(
                query=first.query, results=res.results, backend=res.backend, model=res.model, timings=timings,
                normalization=res.normalization, num_candidates=len(first.results), info=dict(res.info),
                first_stage=first, served_by=served_by,
            ))
        return out

