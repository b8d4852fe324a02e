"""The :class:`Reranker` protocol and :class:`BaseReranker`, which holds the shared work.

A backend subclasses :class:`BaseReranker` and implements :meth:`BaseReranker._score_batch`:
scores for already-validated queries and documents. Input checks, ordering (raw score
descending, ties by input index), ``top_n``, normalization, timings and the async API live here.

Example:
    >>> from rankrelay.rerankers.base import BaseReranker, Scored
    >>> class Overlap(BaseReranker):
    ...     name = "overlap"
    ...     def _score_batch(self, queries, documents):
    ...         return [Scored([float(len(set(q.split()) & set(d.text.split()))) for d in docs])
    ...                 for q, docs in zip(queries, documents)], {}
    >>> Overlap().rerank("red apple", ["green pear", "red apple pie", "red car"]).indices
    [1, 2, 0]
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Protocol, runtime_checkable

from rankrelay.errors import ConfigError, EmptyQueryError, InvalidInputError
from rankrelay.results import Document, DocumentLike, RankedDocument, RerankResult, to_documents
from rankrelay.scoring import check_normalization, normalize, order_by_score

Request = tuple[str, Sequence[DocumentLike]]


@runtime_checkable
class Reranker(Protocol):
    """What every reranker offers; a user's own class with these members works everywhere."""

    @property
    def name(self) -> str:
        """Backend name, e.g. ``cross-encoder``."""
        ...

    def rerank(
        self, query: str, documents: Sequence[DocumentLike], top_n: int | None = None
    ) -> RerankResult:
        """Rank ``documents`` for ``query``, best first."""
        ...

    async def arerank(
        self, query: str, documents: Sequence[DocumentLike], top_n: int | None = None
    ) -> RerankResult:
        """Async :meth:`rerank`; never blocks the event loop."""
        ...

    def rerank_batch(
        self, requests: Sequence[Request], top_n: int | None = None
    ) -> list[RerankResult]:
        """Rank several ``(query, documents)`` requests together."""
        ...


@dataclass(slots=True)
class Scored:
    """A backend's scores for one query's documents, in input order."""

    scores: Sequence[float]
    passages: Sequence[tuple[int, int] | None] | None = None
    truncated: Sequence[bool] | None = None
    info: dict[str, Any] | None = None


def check_query(query: object) -> str:
    """Return ``query`` if it is non-blank text, else raise a typed error."""
    if not isinstance(query, str):
        raise InvalidInputError(f"query must be str, got {type(query).__name__}")
    if not query.strip():
        raise EmptyQueryError("query is empty or blank")
    return query


def check_top_n(top_n: object) -> int | None:
    """Return ``top_n`` if it is None or an int >= 1, else raise :class:`InvalidInputError`."""
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise InvalidInputError(f"top_n must be an int >= 1 or None, got {top_n!r}")
    return top_n


def build_result(
    query: str,
    docs: Sequence[Document],
    scored: Scored,
    *,
    backend: str,
    model: str | None,
    normalization: str,
    top_n: int | None,
    timings: dict[str, float],
    calibration: Any = None,
) -> RerankResult:
    """Order documents by score (ties by index), normalize over all of them, then cut to ``top_n``."""
    scores = scored.scores
    if len(scores) != len(docs):
        raise RuntimeError(f"{backend} returned {len(scores)} scores for {len(docs)} documents")
    order = order_by_score(scores)
    normalized = normalize([float(scores[i]) for i in order], normalization, calibration)
    if top_n is not None:
        order = order[:top_n]
    passages, truncated = scored.passages, scored.truncated
    results = []
    for rank, i in enumerate(order, start=1):
        doc = docs[i]
        results.append(
            RankedDocument(
                index=i,
                text=doc.text,
                score=float(scores[i]),
                rank=rank,
                normalized_score=normalized[rank - 1],
                id=doc.id,
                metadata=doc.metadata,
                passage=passages[i] if passages is not None else None,
                truncated=bool(truncated[i]) if truncated is not None else False,
            )
        )
    return RerankResult(
        query=query,
        results=results,
        backend=backend,
        model=model,
        timings=timings,
        normalization=normalization,
        num_candidates=len(docs),
        info=dict(scored.info) if scored.info else {},
    )


class BaseReranker(ABC):
    """Shared behaviour of the built-in backends.

    Args:
        normalize: how ``normalized_score`` is filled (default ``rank``).
    """

    name: str = "base"
    model: str | None = None

    #: a fitted score -> probability map, for ``normalize="calibrated"`` (set by models that carry one)
    calibration: Any = None
    supports_calibration = False

    def __init__(self, *, normalize: str = "rank") -> None:
        self.normalize = check_normalization(normalize)
        if normalize == "calibrated" and not self.supports_calibration:
            raise ConfigError(f"the {self.name} backend has no calibration; normalize='calibrated' is for "
                              "cross-encoders trained by rankrelay train")

    def __repr__(self) -> str:
        model = f" model={self.model!r}" if self.model else ""
        return f"<{type(self).__name__} {self.name}{model}>"

    @abstractmethod
    def _score_batch(
        self, queries: list[str], documents: list[list[Document]]
    ) -> tuple[list[Scored], dict[str, float]]:
        """Score every query's (non-empty) document list; return scores and extra timings in ms."""

    def warm_up(self) -> None:
        """Load whatever the backend needs (models, clients) now rather than on first use."""

    def rerank(
        self, query: str, documents: Sequence[DocumentLike], top_n: int | None = None
    ) -> RerankResult:
        """Rank ``documents`` for ``query``, best first.

        Args:
            query: non-blank query text.
            documents: str, :class:`Document` or dicts with ``text``; an empty list gives an empty result.
            top_n: keep the best ``top_n`` (normalization still sees every document).

        Returns:
            A :class:`RerankResult` with every document (or the best ``top_n``).
        """
        return self.rerank_batch([(query, documents)], top_n=top_n)[0]

    def _prepare(
        self, requests: Sequence[Request], top_n: int | None
    ) -> tuple[list[str], list[list[Document]], list[int]]:
        """Check every input (before anything is loaded or sent); return queries, documents and
        the positions of requests that have documents."""
        check_top_n(top_n)
        queries: list[str] = []
        docs: list[list[Document]] = []
        for query, documents in requests:
            queries.append(check_query(query))
            docs.append(to_documents(documents))
        return queries, docs, [i for i, d in enumerate(docs) if d]

    def _load_seconds(self) -> float:
        """Warm up; return the seconds it took (loading a model is not a request's latency)."""
        start = perf_counter()
        self.warm_up()
        return perf_counter() - start

    def _assemble(
        self,
        queries: list[str],
        docs: list[list[Document]],
        todo: list[int],
        scored: tuple[list[Scored], dict[str, float]],
        start: float,
        model_start: float,
        top_n: int | None,
    ) -> list[RerankResult]:
        """Results in request order, each with the batch's timings (ms)."""
        out, extra = scored
        now = perf_counter()
        if todo:
            extra.setdefault("model", (now - model_start) * 1000.0)
        timings = {"model": 0.0, **extra, "total": (now - start) * 1000.0}
        by_request: list[Scored] = [Scored([]) for _ in queries]
        for i, s in zip(todo, out):
            by_request[i] = s
        return [
            build_result(
                q, d, s, backend=self.name, model=self.model, normalization=self.normalize,
                top_n=top_n, timings=dict(timings), calibration=self.calibration,
            )
            for q, d, s in zip(queries, docs, by_request)
        ]

    def rerank_batch(
        self, requests: Sequence[Request], top_n: int | None = None
    ) -> list[RerankResult]:
        """Rank several ``(query, documents)`` requests with one batched scoring pass.

        Inputs are checked before anything is loaded. Timings of each result are those of the
        whole batch; loading a model is not timed.
        """
        start = perf_counter()
        queries, docs, todo = self._prepare(requests, top_n)
        if not todo:
            return self._assemble(queries, docs, todo, ([], {}), start, start, top_n)
        start += self._load_seconds()
        model_start = perf_counter()
        scored = self._score_batch([queries[i] for i in todo], [docs[i] for i in todo])
        return self._assemble(queries, docs, todo, scored, start, model_start, top_n)

    async def _ascore_batch(
        self, queries: list[str], documents: list[list[Document]]
    ) -> tuple[list[Scored], dict[str, float]]:
        """Async scoring; by default :meth:`_score_batch` in a worker thread (API backends override)."""
        return await asyncio.to_thread(self._score_batch, queries, documents)

    async def arerank(
        self, query: str, documents: Sequence[DocumentLike], top_n: int | None = None
    ) -> RerankResult:
        """Async :meth:`rerank`: model work runs in a worker thread, the event loop stays free."""
        return (await self.arerank_batch([(query, documents)], top_n=top_n))[0]

    async def arerank_batch(
        self, requests: Sequence[Request], top_n: int | None = None
    ) -> list[RerankResult]:
        """Async :meth:`rerank_batch`."""
        start = perf_counter()
        queries, docs, todo = self._prepare(requests, top_n)
        if not todo:
            return self._assemble(queries, docs, todo, ([], {}), start, start, top_n)
        start += await asyncio.to_thread(self._load_seconds)
        model_start = perf_counter()
        scored = await self._ascore_batch([queries[i] for i in todo], [docs[i] for i in todo])
        return self._assemble(queries, docs, todo, scored, start, model_start, top_n)

    def describe(self) -> dict[str, Any]:
        """Backend, model and options, for logs and reports (no secrets)."""
        return {"backend": self.name, "model": self.model, "normalize": self.normalize}
