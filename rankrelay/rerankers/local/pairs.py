"""What the local models that score a (query, document) pair share: the cross-encoders
(:mod:`~rankrelay.rerankers.local.cross_encoder`) and the prompted language models
(:mod:`~rankrelay.rerankers.local.prompted`) batch pairs and score the fixed sample the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rankrelay.rerankers.local.auto_runtime import trial_seconds
from rankrelay.rerankers.local.model import LocalModelReranker
from rankrelay.rerankers.local.runtimes import Forward
from rankrelay.rerankers.local.sample import sample_pairs, timing_pairs
from rankrelay.results import to_documents


class PairModelReranker(LocalModelReranker):
    """A local model that reads a (query, document) pair and gives one score: the cross-encoders and the prompted
    language models share how pairs are batched and how the fixed sample is scored."""

    _pass_seconds: tuple[float, float] | None = None

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

    def pass_seconds(self, repeats: int = 2) -> tuple[float, float]:
        """(this reranker, torch fp32): seconds to rerank the timing passages
        (:func:`~rankrelay.rerankers.local.sample.timing_pairs`) the way it reranks (passages planned, pairs
        tokenized, the forward pass; no score cache), best of ``repeats`` on :attr:`clock`, measured once. torch
        fp32's adds the forward-pass time that ``runtime="auto"`` measured between the two runtimes on the same
        passages (none when it measured nothing: then this reranker's own runtime is the bar)."""
        self.warm_up()
        if self._pass_seconds is None:
            query, passages = timing_pairs()
            documents = to_documents(list(passages))
            best = float("inf")
            with self._score_lock:  # (held: no request can see the score cache switched off)
                cache, self.score_cache = self.score_cache, None
                try:
                    for _ in range(repeats):
                        start = self.clock()
                        self._score_locked([query], [documents])
                        best = min(best, self.clock() - start)
                finally:
                    self.score_cache = cache
            gap = 0.0
            if self.runtime_choice is not None:
                times = trial_seconds(self.runtime_choice)
                fp32, own = times.get(("torch", "fp32")), times.get((self.runtime, self.precision))
                gap = fp32 - own if fp32 is not None and own is not None else 0.0
            self._pass_seconds = (best, best + gap)
        return self._pass_seconds

    def _sample_scores(self, encoder: Any, forward: Forward) -> Any:
        import numpy as np

        queries, documents = sample_pairs()
        scores = self._score_pairs(self._sample_inputs(), forward, encoder)
        return np.asarray(scores).reshape(len(queries), len(documents))

    def _timing_scores(self, encoder: Any, forward: Forward) -> Any:
        query, passages = timing_pairs()
        return self._score_pairs([(self._sample_query(query), p) for p in passages], forward, encoder)
