"""What every first-stage retriever shares: the :class:`Retriever` protocol, query checks, ``search``,
results and the document store.

Example:
    >>> from rankrelay.retrieval.base import with_ids
    >>> [d.id for d in with_ids(["a", "b"], start=5)]
    ['5', '6']
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from rankrelay.errors import positive_int
from rankrelay.rerankers.base import check_query
from rankrelay.results import Document, DocumentLike, RankedDocument, RerankResult, to_documents
from rankrelay.scoring import normalize


def check_k(k: object) -> int:
    """Return ``k`` if it is an int >= 1, else raise :class:`InvalidInputError`."""
    return positive_int(k, "k")


def with_ids(documents: Sequence[DocumentLike], start: int = 0) -> list[Document]:
    """Documents whose missing ids become their corpus positions (as strings)."""
    return [d if d.id is not None else Document(d.text, str(start + i), d.metadata)
            for i, d in enumerate(to_documents(documents))]


def write_docs(path: Path, docs: Sequence[Document]) -> None:
    """The document store: one JSON line per document (id, text, metadata)."""
    with path.open("w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"id": d.id, "text": d.text, "metadata": d.metadata}, ensure_ascii=False) + "\n")


def read_docs(path: Path) -> list[Document]:
    """Read what :func:`write_docs` wrote."""
    with path.open(encoding="utf-8") as fh:
        return [Document(r["text"], r["id"], r.get("metadata") or {}) for r in map(json.loads, fh)]


def hits_result(query: str, docs: Sequence[Document], positions: Sequence[int], scores: Sequence[float],
                backend: str, model: str | None, ms: float) -> RerankResult:
    """A first-stage ranking as a RerankResult: ``index`` is the corpus position."""
    normalized = normalize(list(scores), "rank")
    results = [
        RankedDocument(index=int(p), text=docs[p].text, score=float(s), rank=r, normalized_score=n,
                       id=docs[p].id, metadata=docs[p].metadata)
        for r, (p, s, n) in enumerate(zip(positions, scores, normalized), start=1)
    ]
    return RerankResult(query, results, backend=backend, model=model, timings={"total": ms, "model": ms},
                        normalization="rank", num_candidates=len(docs))


@runtime_checkable
class Retriever(Protocol):  # pragma: no mutate block (mutmut's trampolines would be protocol members)
    """A first stage: the ``k`` best documents of a corpus for each query, as :class:`RerankResult` whose
    ``index`` is the corpus position. ``score_normalization`` says how its raw scores are brought to
    [0, 1] when they are fused with a reranker's (``none`` where they already are comparable, such as
    cosine similarities; ``minmax`` where they are not, such as BM25 or RRF scores)."""

    @property
    def name(self) -> str: ...

    @property
    def score_normalization(self) -> str: ...

    def search(self, query: str, k: int = 100) -> RerankResult: ...

    def search_batch(self, queries: Sequence[str], k: int = 100) -> list[RerankResult]: ...


def warm_up_retriever(retriever: Retriever) -> None:
    """Load what ``retriever``'s first query would (its encoders) now; a Retriever of one's own without
    ``warm_up`` has nothing to load."""
    warm = getattr(retriever, "warm_up", None)
    if warm is not None:
        warm()


class BaseRetriever(ABC):
    """A retriever over ``self.docs``; subclasses implement :meth:`_search`."""

    name = "retriever"
    score_normalization = "minmax"
    docs: list[Document]

    def __len__(self) -> int:
        return len(self.docs)

    def warm_up(self) -> None:
        """Load what the first query would (an encoder's weights) now; nothing for a lexical index."""
        encoder = getattr(self, "encoder", None)
        if encoder is not None:
            encoder.warm_up()

    def search(self, query: str, k: int = 100) -> RerankResult:
        """The ``k`` best documents for ``query`` (fewer when the corpus is smaller)."""
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[str], k: int = 100) -> list[RerankResult]:
        """Search several queries at once."""
        queries = [check_query(q) for q in queries]
        check_k(k)
        if not queries:
            return []
        return self._search(list(queries), min(k, len(self)))

    @abstractmethod
    def _search(self, queries: list[str], k: int) -> list[RerankResult]:
        """Checked queries, ``k`` capped at the corpus size."""
