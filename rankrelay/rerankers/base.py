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
import contextlib
import contextvars
import inspect
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from time import monotonic, perf_counter
from typing import Any, Protocol, runtime_checkable

from rankrelay.errors import (
    ConfigError,
    EmptyQueryError,
    InvalidInputError,
    RankRelayError,
    backend_failure,
    positive_int,
)
from rankrelay.results import Document, DocumentLike, RankedDocument, RerankResult, check_text, to_documents
from rankrelay.scoring import check_normalization, normalize, order_by_score
from rankrelay.tracing import span

logger = logging.getLogger(__name__)

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

    def warm_up(self) -> None:
        """Load what the reranker needs (a model, a client) now rather than on first use; a no-op if nothing."""
        ...

    def close(self) -> None:
        """Let go of what it holds (clients, models); a later call opens them again. A no-op if nothing."""
        ...


def label(reranker: Reranker) -> str:
    """``name:model`` (or the name) of a reranker, for results, logs and reports."""
    model = getattr(reranker, "model", None)
    return f"{reranker.name}:{model}" if model else reranker.name


async def arerank_batch(reranker: Reranker, requests: Sequence[Request], top_n: int | None = None,
                        **kwargs: Any) -> list[RerankResult]:
    """``reranker.arerank_batch`` where it has one, else its ``arerank`` per request, concurrently
    (the protocol asks for ``arerank``; a batch method is an extra)."""
    batch = getattr(reranker, "arerank_batch", None)
    if batch is not None:
        return list(await batch(requests, top_n=top_n, **kwargs))
    return list(await asyncio.gather(*(reranker.arerank(q, d, top_n, **kwargs) for q, d in requests)))


async def aclose(reranker: Reranker) -> None:
    """Close ``reranker`` from async code: its ``aclose()`` when it has one, else ``close()``."""
    closer = getattr(reranker, "aclose", None)
    if closer is not None:
        await closer()
    else:
        reranker.close()


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
    return check_text(query, "the query", InvalidInputError)


def check_top_n(top_n: object) -> int | None:
    """Return ``top_n`` if it is None or an int >= 1, else raise :class:`InvalidInputError`."""
    return None if top_n is None else positive_int(top_n, "top_n (or None)")


def check_budget(budget_ms: object) -> float | None:
    """Return ``budget_ms`` if it is None or a number > 0, else raise :class:`InvalidInputError`."""
    if budget_ms is None:
        return None
    if isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float)) or not budget_ms > 0:
        raise InvalidInputError(f"budget_ms must be a number > 0 or None, got {budget_ms!r}")
    return float(budget_ms)


#: ``time.monotonic()`` by which the current call must end (set by a call with ``budget_ms``)
call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("rankrelay_deadline", default=None)


def seconds_left() -> float | None:
    """Seconds until the current call's deadline (None without a budget)."""
    deadline = call_deadline.get()
    return None if deadline is None else deadline - monotonic()


@contextlib.contextmanager
def within_budget(budget_ms: float | None) -> Iterator[None]:
    """Set ``call_deadline`` to now + ``budget_ms`` (or an outer call's earlier deadline) inside the block."""
    budget = check_budget(budget_ms)
    if budget is None:
        yield
        return
    outer = call_deadline.get()
    deadline = monotonic() + budget / 1000.0
    token = call_deadline.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        call_deadline.reset(token)


def accepts_budget(reranker: object) -> bool:
    """Does ``reranker.rerank_batch`` take ``budget_ms`` (every built-in does; a user's class may not)?"""
    try:
        return "budget_ms" in inspect.signature(reranker.rerank_batch).parameters  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return False


def budget_kwargs(reranker: object) -> dict[str, Any]:
    """``{"budget_ms": time left}`` for a stage of a composite reranker inside a budgeted call (a stage that
    cannot take a budget, or a call without one, gets none)."""
    left = seconds_left()
    if left is None or not accepts_budget(reranker):
        return {}
    return {"budget_ms": max(left * 1000.0, 1e-3)}


def head_then_rest(
    query: str,
    docs: Sequence[Document],
    head: Sequence[int],
    head_scored: Scored,
    rest: Sequence[int],
    rest_scores: Sequence[float] | None,
    *,
    backend: str,
    model: str | None,
    stages: tuple[str, str],
    top_n: int | None,
    timings: dict[str, float],
    info: dict[str, Any],
) -> RerankResult:
    """A ranking whose head was reordered by a model and whose rest keeps an earlier order below it.

    ``head_scored`` holds the model's scores of ``head`` (in that order); ``rest`` is already in its
    final order, with the earlier stage's scores (or NaN: not scored). Raw scores of the two parts are
    not comparable, so ``normalized_score`` is by rank. ``stages`` names the head's and the rest's stage.
    """
    scores = head_scored.scores
    order = sorted(range(len(head)), key=lambda j: (-scores[j], head[j]))
    rows: list[tuple[int, float, tuple[int, int] | None, bool, str]] = []
    for j in order:
        passage = head_scored.passages[j] if head_scored.passages is not None else None
        truncated = bool(head_scored.truncated[j]) if head_scored.truncated is not None else False
        rows.append((head[j], float(scores[j]), passage, truncated, stages[0]))
    for k, i in enumerate(rest):
        rows.append((i, float(rest_scores[k]) if rest_scores is not None else math.nan, None, False, stages[1]))
    normalized = normalize([r[1] for r in rows], "rank")
    results = [
        RankedDocument(
            index=i, text=docs[i].text, score=score, rank=rank, normalized_score=normalized[rank - 1],
            id=docs[i].id, metadata=docs[i].metadata, passage=passage, truncated=truncated, stage=stage,
        )
        for rank, (i, score, passage, truncated, stage) in enumerate(rows, start=1)
    ]
    return RerankResult(
        query=query, results=results[:top_n] if top_n is not None else results, backend=backend, model=model,
        timings=timings, normalization="rank", num_candidates=len(docs),
        info={**(head_scored.info or {}), **info},
    )


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


class SingleQuery:
    """``rerank``/``arerank`` of one query in terms of the class's ``rerank_batch``/``arerank_batch``,
    and the lifetime every reranker shares: :meth:`warm_up`, :meth:`close` and ``with`` / ``async with``."""

    def warm_up(self) -> None:
        """Load whatever the reranker needs (models, clients) now rather than on first use."""

    def close(self) -> None:
        """Release what the reranker holds (nothing here; clients and composites override)."""

    async def aclose(self) -> None:
        """Async :meth:`close` (a reranker with async clients closes them on their event loop)."""
        self.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def rerank_batch(
        self, requests: Sequence[Request], top_n: int | None = None, *, budget_ms: float | None = None
    ) -> list[RerankResult]:
        raise NotImplementedError

    async def arerank_batch(
        self, requests: Sequence[Request], top_n: int | None = None, *, budget_ms: float | None = None
    ) -> list[RerankResult]:
        raise NotImplementedError

    def rerank(
        self, query: str, documents: Sequence[DocumentLike], top_n: int | None = None, *,
        budget_ms: float | None = None,
    ) -> RerankResult:
        """Rank ``documents`` for ``query``, best first.

        Args:
            query: non-blank query text.
            documents: str, :class:`Document` or dicts with ``text``; an empty list gives an empty result.
            top_n: keep the best ``top_n`` (normalization still sees every document).
            budget_ms: answer within this many milliseconds: a local model reranks the longest head of
                ``documents`` that fits and leaves the rest in input order, marked
                (``res.info["reranked"]``); an API backend gives up at the deadline.

        Returns:
            A :class:`RerankResult` with every document (or the best ``top_n``).
        """
        return self.rerank_batch([(query, documents)], top_n=top_n, budget_ms=budget_ms)[0]

    async def arerank(
        self, query: str, documents: Sequence[DocumentLike], top_n: int | None = None, *,
        budget_ms: float | None = None,
    ) -> RerankResult:
        """Async :meth:`rerank`; never blocks the event loop."""
        return (await self.arerank_batch([(query, documents)], top_n=top_n, budget_ms=budget_ms))[0]


class BaseReranker(SingleQuery, ABC):
    """Shared behaviour of the built-in backends.

    Args:
        normalize: how ``normalized_score`` is filled (default ``rank``).
    """

    name: str = "base"
    model: str | None = None

    #: a fitted score -> probability map, for ``normalize="calibrated"`` (set by models that carry one)
    calibration: Any = None
    #: how a raw score becomes a per-document relevance in [0, 1] (:func:`rankrelay.scoring.relevance`)
    relevance: str = "rank"
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
        results = [
            build_result(
                q, d, s, backend=self.name, model=self.model, normalization=self.normalize,
                top_n=top_n, timings=dict(timings), calibration=self.calibration,
            )
            for q, d, s in zip(queries, docs, by_request)
        ]
        for res in results:
            res.info.setdefault("relevance", self.relevance)
        return results

    def _within_deadline(
        self, queries: list[str], docs: list[list[Document]], top_n: int | None, start: float
    ) -> list[RerankResult] | None:
        """Results within ``call_deadline`` when this backend fits its work to a budget (local models);
        None: score as usual (an API backend reads the deadline itself)."""
        return None

    def rerank_batch(
        self, requests: Sequence[Request], top_n: int | None = None, *, budget_ms: float | None = None
    ) -> list[RerankResult]:
        """Rank several ``(query, documents)`` requests with one batched scoring pass.

        Inputs are checked before anything is loaded. Timings of each result are those of the
        whole batch; loading a model is not timed (but it does count against ``budget_ms``).
        """
        with within_budget(budget_ms):
            start = perf_counter()
            queries, docs, todo = self._prepare(requests, top_n)
            if not todo:
                return self._assemble(queries, docs, todo, ([], {}), start, start, top_n)
            with self._boundary():
                start += self._load_seconds()
                if call_deadline.get() is not None:
                    budgeted = self._within_deadline(queries, docs, top_n, start)
                    if budgeted is not None:
                        return budgeted
                model_start = perf_counter()
                scored = self._score_batch([queries[i] for i in todo], [docs[i] for i in todo])
                return self._assemble(queries, docs, todo, scored, start, model_start, top_n)

    @contextlib.contextmanager
    def _boundary(self) -> Iterator[None]:
        """The backend boundary: an exception that is not rankrelay's (a model's runtime error, a malformed
        answer read the wrong way) leaves as a :class:`~rankrelay.errors.BackendFailedError`, so a chain falls
        back on any failure of a backend and the service answers 503, never 500. Traced as one
        ``rankrelay.backend`` span (so each attempt of a fallback chain is one)."""
        with span("rankrelay.backend", backend=label(self)):
            try:
                yield
            except RankRelayError:
                raise
            except Exception as exc:
                logger.warning("%s failed: %s: %s", label(self), type(exc).__name__, exc)
                raise backend_failure(label(self), exc) from exc

    async def _ascore_batch(
        self, queries: list[str], documents: list[list[Document]]
    ) -> tuple[list[Scored], dict[str, float]]:
        """Async scoring; by default :meth:`_score_batch` in a worker thread (API backends override)."""
        return await asyncio.to_thread(self._score_batch, queries, documents)

    async def arerank_batch(
        self, requests: Sequence[Request], top_n: int | None = None, *, budget_ms: float | None = None
    ) -> list[RerankResult]:
        """Async :meth:`rerank_batch`."""
        with within_budget(budget_ms):
            start = perf_counter()
            queries, docs, todo = self._prepare(requests, top_n)
            if not todo:
                return self._assemble(queries, docs, todo, ([], {}), start, start, top_n)
            with self._boundary():
                start += await asyncio.to_thread(self._load_seconds)
                if call_deadline.get() is not None:
                    budgeted = await asyncio.to_thread(self._within_deadline, queries, docs, top_n, start)
                    if budgeted is not None:
                        return budgeted
                model_start = perf_counter()
                scored = await self._ascore_batch([queries[i] for i in todo], [docs[i] for i in todo])
                return self._assemble(queries, docs, todo, scored, start, model_start, top_n)

    def describe(self) -> dict[str, Any]:
        """Backend, model and options, for logs and reports (no secrets)."""
        return {"backend": self.name, "model": self.model, "normalize": self.normalize}
