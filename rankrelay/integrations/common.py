"""What the framework adapters share: reading texts and the keys reranked documents gain.

Example:
    >>> from rankrelay.integrations.common import RERANK_KEYS
    >>> RERANK_KEYS
    ('relevance_score', 'rerank_score', 'rerank_rank', 'rerank_backend', 'rerank_fallbacks')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rankrelay.errors import InvalidDocumentError
from rankrelay.results import RankedDocument, RerankResult
from rankrelay.scoring import relevance

T = TypeVar("T")

#: Keys a reranked document's metadata gains: the per-document relevance in [0, 1] (``relevance_score``, as
#: Cohere's components name it and with Cohere's meaning, :func:`rankrelay.scoring.relevance`), the raw score,
#: the rank, the backend that served and the backends that failed first.
RERANK_KEYS = ("relevance_score", "rerank_score", "rerank_rank", "rerank_backend", "rerank_fallbacks")


def texts_of(items: Sequence[T], text: Callable[[T], object], what: str) -> list[str]:
    """Each item's text; an item whose text is missing or not a string is an :class:`InvalidDocumentError`
    naming its position (an empty string is text, and is ranked like any other)."""
    out = []
    for i, item in enumerate(items):
        value = text(item)
        if not isinstance(value, str):
            got = "no text" if value is None else f"{type(value).__name__} content"
            raise InvalidDocumentError(f"{what} {i} has {got}; a reranker needs text")
        out.append(value)
    return out


def scored(result: RerankResult) -> list[tuple[RankedDocument, float]]:
    """Each reranked document with its relevance in [0, 1] (Cohere's ``relevance_score``), in rank order."""
    return list(zip(result.results, relevance(result)))


def rerank_metadata(ranked: RankedDocument, result: RerankResult, relevance_score: float) -> dict[str, Any]:
    """The :data:`RERANK_KEYS` of one reranked document (JSON-serializable values)."""
    raw = ranked.score
    return {
        "relevance_score": relevance_score,
        "rerank_score": None if math.isnan(raw) else raw,
        "rerank_rank": ranked.rank,
        "rerank_backend": result.backend,
        "rerank_fallbacks": [f["backend"] for f in result.fallbacks],
    }
