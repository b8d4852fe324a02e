"""Reference backends for comparisons: ``identity`` keeps the first-stage order, ``random`` shuffles.

A reranker that does not beat ``random`` on the same candidates is not reranking.

Example:
    >>> from rankrelay.rerankers.reference import IdentityReranker, RandomReranker
    >>> IdentityReranker().rerank("q", ["a", "b", "c"]).indices
    [0, 1, 2]
    >>> docs = ["a", "b", "c", "d"]
    >>> RandomReranker(seed=1).rerank("q", docs).indices == RandomReranker(seed=1).rerank("q", docs).indices
    True
"""

from __future__ import annotations

import random
from typing import Any

from rankrelay.errors import ConfigError
from rankrelay.hashing import stable_int
from rankrelay.rerankers.base import BaseReranker, Scored
from rankrelay.results import Document


class IdentityReranker(BaseReranker):
    """Scores ``-index``: the input (first-stage) order, unchanged."""

    name = "identity"

    def _score_batch(
        self, queries: list[str], documents: list[list[Document]]
    ) -> tuple[list[Scored], dict[str, float]]:
        return [Scored([-float(i) for i in range(len(docs))]) for docs in documents], {}


class RandomReranker(BaseReranker):
    """Uniform random scores, reproducible per (seed, query)."""

    name = "random"

    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(**options)
        self.seed = seed
        self.model = f"seed={seed}"

    def _score_batch(
        self, queries: list[str], documents: list[list[Document]]
    ) -> tuple[list[Scored], dict[str, float]]:
        out = []
        for query, docs in zip(queries, documents):
            rng = random.Random(stable_int(f"{self.seed}\x1f{query}"))
            out.append(Scored([rng.random() for _ in docs]))
        return out, {}


def identity_from_spec(model: str | None, **options: Any) -> IdentityReranker:
    """Registry factory: ``identity``."""
    return IdentityReranker(**options)


def random_from_spec(model: str | None, **options: Any) -> RandomReranker:
    """Registry factory: ``random`` or ``random:<seed>``."""
    try:
        seed = int(model) if model else 0
    except ValueError:
        raise ConfigError(f"random takes an integer seed (random:7), got {model!r}") from None
    return RandomReranker(seed, **options)
