"""Two-stage search: a retriever's candidates reranked by any :class:`~rankrelay.Reranker` (or by none).

The one two-stage path: the library, ``rankrelay search``, the demo and the service's ``/search`` all
go through :class:`TwoStageSearch` (the service hands it its batcher as a reranker).

Example:
    >>> from rankrelay.retrieval.pipeline import TwoStageSearch
    >>> TwoStageSearch.__init__.__kwdefaults__["retrieve_k"]
    100
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from rankrelay.errors import ConfigError, InvalidInputError, positive_int
from rankrelay.rerankers.base import Reranker, arerank_batch, check_query
from rankrelay.rerankers.compose.cascade import FIRST_STAGE
from rankrelay.results import RerankResult
from rankrelay.retrieval.base import Retriever, warm_up_retriever
from rankrelay.scoring import fuse
from rankrelay.tracing import span


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
    """Retrieve ``retrieve_k`` candidates, rerank them (unless ``reranker`` is None), keep ``top_n``.

    Args:
        retriever: a :class:`~rankrelay.retrieval.base.Retriever` (dense, BM25, hybrid, or your own).
        reranker: any :class:`~rankrelay.Reranker`, a fallback chain included; None keeps the first stage's order.
        retrieve_k: first-stage depth.
        top_n: results kept.
        final_score: ``rerank`` (the reranker's order) or ``hybrid`` (the seed's
            ``alpha * first-stage score + (1 - alpha) * sigmoid(rerank score)``, the first stage's scores
            brought to [0, 1] as its ``score_normalization`` says).
        alpha: weight of the first stage in ``hybrid``.
    """

    def __init__(
        self,
        retriever: Retriever,
        reranker: Reranker | None,
        *,
        retrieve_k: int = 100,
        top_n: int = 10,
        final_score: str = "rerank",
        alpha: float = 0.5,
    ) -> None:
        if final_score not in ("rerank", "hybrid"):
            raise ConfigError(f"final_score must be 'rerank' or 'hybrid', got {final_score!r}")
        if final_score == "hybrid" and reranker is None:
            raise ConfigError("final_score='hybrid' needs a reranker")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        self.retriever = retriever
        self.reranker = reranker
        self.retrieve_k = positive_int(retrieve_k, "retrieve_k", ConfigError)
        self.top_n = positive_int(top_n, "top_n", ConfigError)
        self.final_score = final_score
        self.alpha = alpha

    def __call__(self, query: str) -> SearchResult:
        return self.batch([query])[0]

    def warm_up(self) -> None:
        """Load the first stage's encoders and the reranker now, so no query's timings include loading."""
        warm_up_retriever(self.retriever)
        if self.reranker is not None:
            self.reranker.warm_up()

    def _plan(self, queries: Sequence[str], retrieve_k: int | None, top_n: int | None) -> tuple[list[str], int, int]:
        if isinstance(queries, str):
            raise InvalidInputError("batch takes a list of queries")
        return ([check_query(q) for q in queries],
                self.retrieve_k if retrieve_k is None else positive_int(retrieve_k, "retrieve_k"),
                self.top_n if top_n is None else positive_int(top_n, "top_n"))

    def batch(self, queries: Sequence[str], *, retrieve_k: int | None = None,
              top_n: int | None = None) -> list[SearchResult]:
        """Search many queries: one batched first stage, one batched rerank (``retrieve_k`` and ``top_n``
        override the search's own for this call)."""
        queries, k, n = self._plan(queries, retrieve_k, top_n)
        if not queries:
            return []
        start = perf_counter()
        with span("rankrelay.retrieve", queries=len(queries), retrieve_k=k):
            firsts = self.retriever.search_batch(queries, k)
        retrieved = perf_counter()
        reranked = None
        if self.reranker is not None:
            reranked = self.reranker.rerank_batch(self._requests(queries, firsts), top_n=self._keep(n))
        return self._results(firsts, reranked, n, start, retrieved, perf_counter())

    async def abatch(self, queries: Sequence[str], *, retrieve_k: int | None = None,
                     top_n: int | None = None) -> list[SearchResult]:
        """Async :meth:`batch`: the first stage in a worker thread, the reranker through its async API."""
        queries, k, n = self._plan(queries, retrieve_k, top_n)
        if not queries:
            return []
        start = perf_counter()
        with span("rankrelay.retrieve", queries=len(queries), retrieve_k=k):
            firsts = await asyncio.to_thread(self.retriever.search_batch, queries, k)
        retrieved = perf_counter()
        reranked = None
        if self.reranker is not None:
            reranked = await arerank_batch(self.reranker, self._requests(queries, firsts), top_n=self._keep(n))
        return self._results(firsts, reranked, n, start, retrieved, perf_counter())

    async def asearch(self, query: str, *, retrieve_k: int | None = None, top_n: int | None = None) -> SearchResult:
        """Async search of one query."""
        return (await self.abatch([query], retrieve_k=retrieve_k, top_n=top_n))[0]

    @staticmethod
    def _requests(queries: list[str], firsts: list[RerankResult]) -> list[tuple[str, list[Any]]]:
        return [(q, [r.document for r in first.results]) for q, first in zip(queries, firsts)]

    def _keep(self, top_n: int) -> int | None:
        return None if self.final_score == "hybrid" else top_n

    def _results(self, firsts: list[RerankResult], reranked: list[RerankResult] | None, top_n: int,
                 start: float, retrieved: float, done: float) -> list[SearchResult]:
        n = len(firsts)
        out = []
        for i, first in enumerate(firsts):
            if reranked is None:
                res = first.top_k(top_n) if first.results else first
            else:
                res = reranked[i]
                for r in res.results:  # candidate position -> corpus position
                    candidate = first.results[r.index]
                    if r.stage == FIRST_STAGE and math.isnan(r.score):  # left in first-stage order: its score
                        r.score = candidate.score
                    r.index = candidate.index
            served_by, model_ms = res.backend, res.timings.get("model", 0.0) if reranked is not None else 0.0
            if self.final_score == "hybrid" and res.results:
                res = fuse([first, res], "weighted", [self.alpha, 1 - self.alpha],
                           normalize_inputs=[self.retriever.score_normalization, "sigmoid"]).top_k(top_n)
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
