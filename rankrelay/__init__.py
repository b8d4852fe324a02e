"""rankrelay: every reranker behind one interface.

Example:
    >>> from rankrelay import load_reranker
    >>> rr = load_reranker("random:7")                  # or "minilm-l6", "cohere:rerank-v3.5", [chain, ...]
    >>> res = rr.rerank("capital of France", ["Berlin is in Germany", "Paris is in France"])
    >>> sorted(res.indices), res.backend
    ([0, 1], 'random')
"""

from __future__ import annotations

import logging

from rankrelay.config import PRESETS, Preset, Settings
from rankrelay.errors import (
    AllBackendsFailedError,
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    BadResponseError,
    ConfigError,
    DocumentTooLongError,
    EmptyQueryError,
    InvalidDocumentError,
    InvalidInputError,
    MissingDependencyError,
    ModelLoadError,
    ModelNotFoundError,
    QueryTooLongError,
    RankRelayError,
    RateLimitError,
    UnknownBackendError,
)
from rankrelay.rerankers import BaseReranker, FallbackReranker, Reranker, load_reranker, register
from rankrelay.rerankers.compose.ab_split import SplitReranker
from rankrelay.results import Document, RankedDocument, RerankResult
from rankrelay.scoring import fuse, normalize

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "AllBackendsFailedError",
    "AuthenticationError",
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "BadRequestError",
    "BadResponseError",
    "FallbackReranker",
    "RateLimitError",
    "BaseReranker",
    "ConfigError",
    "Document",
    "DocumentTooLongError",
    "EmptyQueryError",
    "InvalidDocumentError",
    "InvalidInputError",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelNotFoundError",
    "Preset",
    "QueryTooLongError",
    "RankRelayError",
    "RankedDocument",
    "RerankResult",
    "Reranker",
    "Settings",
    "SplitReranker",
    "TwoStageSearch",
    "UnknownBackendError",
    "__version__",
    "fuse",
    "load_reranker",
    "normalize",
    "register",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> object:
    """``TwoStageSearch`` is imported on first use (it pulls in numpy and the retrieval stack)."""
    if name == "TwoStageSearch":
        from rankrelay.retrieval.pipeline import TwoStageSearch

        return TwoStageSearch
    raise AttributeError(f"module 'rankrelay' has no attribute {name!r}")
