"""What the local models that score a (query, document) pair share: the cross-encoders
(:mod:`~rankrelay.rerankers.local.cross_encoder`) and the prompted language models
(:mod:`~rankrelay.rerankers.local.prompted`) batch pairs and score the fixed sample the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rankrelay.rerankers.local.model import LocalModelReranker
from rankrelay.rerankers.local.runtimes import Forward
from rankrelay.rerankers.local.sample import sample_pairs


class PairModelReranker(LocalModelReranker):
    """A local model that reads a (query, document) pair and gives one score: the cross-encoders and the prompted
    language models share how pairs are batched and how the fixed sample is scored."""

    def _score_pairs(
        self, pairs: list[tuple[str, str]], forward: Forward | None = None, encoder: Any = None
    ) -> Sequence[float]:
        rows = self._forward_batches(pairs, [len(q) + len(d) for q, d in pairs], forward, encoder=encoder)
        # one logit per pair, or two (a softmax pair): the score is the positive class's margin
        return [float(r[1] - r[0]) if r.shape[-1] == 2 else float(r.reshape(-1)[0]) for r in rows]

    def _sample_query(self, query: str) -> str:
        """The query as the model reads it (a prompted model wraps it in its template)."""
        return query

    def _sample_inputs(self) -> list[tuple[str, str]]:
        queries, documents = sample_pairs()
        return [(self._sample_query(q), d) for q in queries for d in documents]

    def _sample_scores(self, encoder: Any, forward: Forward) -> Any:
        import numpy as np

        queries, documents = sample_pairs()
        scores = self._score_pairs(self._sample_inputs(), forward, encoder)
        return np.asarray(scores).reshape(len(queries), len(documents))
