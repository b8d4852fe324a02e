"""What the framework adapters share: building the reranker, reading texts, the keys results gain.

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
from rankrelay.rerankers.base import Reranker
from rankrelay.rerankers.registry import load_chain_item, load_reranker
from rankrelay.results import RankedDocument, RerankResult

T = TypeVar("T")

#: Keys a reranked document's metadata gains: the normalized score (``relevance_score``, as Cohere's
#: components name it), the raw score, the rank, the backend that served and the backends that failed first.
RERANK_KEYS = ("relevance_score", "rerank_score", "rerank_rank", "rerank_backend", "rerank_fallbacks")


def build_reranker(spec: Any) -> Reranker:
    """A spec string (``"minilm-l6"``, ``"tei:http://host"``), a ``{"spec": ..., **options}`` dict, a list (a
    fallback chain) or a :class:`~rankrelay.Reranker` (used as is)."""
    if isinstance(spec, dict):
        return load_chain_item(spec)
    return load_reranker(spec)


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


def rerank_metadata(ranked: RankedDocument, result: RerankResult) -> dict[str, Any]:
    """The :data:`RERANK_KEYS` of one reranked document (JSON-serializable values)."""
    raw = ranked.score
    return {
        "relevance_score": ranked.normalized_score,
        "rerank_score": None if math.isnan(raw) else raw,
        "rerank_rank": ranked.rank,
        "rerank_backend": result.backend,
        "rerank_fallbacks": [f["backend"] for f in result.fallbacks],
    }
