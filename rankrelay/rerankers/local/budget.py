"""Latency budgets for local models: rerank the longest head of the list that fits, leave the rest.

A call with ``budget_ms`` scores documents in input order, chunk by chunk, while the next chunk is
predicted to end before the deadline. The prediction comes from the forward pass's measured speed in
tokens per second (so it holds for short and long inputs alike), updated after every chunk; pairs in
the score cache cost nothing. The documents no chunk reached keep their input order below the
reranked head, marked ``stage="first-stage"``; ``res.info["reranked"]`` says how many were reranked.
"""

from __future__ import annotations

import threading
from time import monotonic, perf_counter
from typing import Any

from rankrelay.rerankers.base import Scored, build_result, head_then_rest, seconds_left
from rankrelay.rerankers.local.score_cache import ScoreCache, score_key
from rankrelay.results import Document, RerankResult

#: Share of the time left that a budgeted call plans to fill (the rest absorbs misestimates).
BUDGET_SAFETY = 0.85
#: Weight of the newest measurement in the tokens-per-second estimate.
RATE_SMOOTHING = 0.5


class BudgetedScoring:
    """Mixed into :class:`~rankrelay.rerankers.local.model.LocalModelReranker`."""

    name: str
    model: str | None
    normalize: str
    calibration: Any
    score_cache: ScoreCache | None
    _planner: Any
    _identity: str
    _score_lock: threading.RLock
    #: measured forward-pass speed (tokens per second); None until the first budgeted chunk
    _tokens_per_s: float | None = None

    def _score_locked(
        self, queries: list[str], documents: list[list[Document]]
    ) -> tuple[list[Scored], dict[str, float]]:
        raise NotImplementedError

    def _within_deadline(
        self, queries: list[str], docs: list[list[Document]], top_n: int | None, start: float
    ) -> list[RerankResult]:
        """Rerank the longest head of each request that fits the deadline; the rest stays in input order."""
        out = []
        for n, (query, documents) in enumerate(zip(queries, docs)):
            left = seconds_left() or 0.0
            if documents:
                share = left / sum(1 for d in docs[n:] if d)  # what is left, split among the requests to come
                k, scored, timings = self._head_within(query, documents, monotonic() + share)
            else:  # (an empty request last in a batch has no one to share with)
                k, scored, timings = 0, Scored([]), {"model": 0.0}
            timings["total"] = (perf_counter() - start) * 1000.0
            info = {"reranked": k, "budget_left_ms": round(max(left, 0.0) * 1000.0, 3)}
            if k == len(documents):
                res = build_result(query, documents, scored, backend=self.name, model=self.model,
                                   normalization=self.normalize, top_n=top_n, timings=timings,
                                   calibration=self.calibration)
                res.info.update(info)
            else:
                res = head_then_rest(query, documents, range(k), scored, range(k, len(documents)), None,
                                     backend=self.name, model=self.model, stages=(self.name, "first-stage"),
                                     top_n=top_n, timings=timings, info=info)
            out.append(res)
        return out

    def _pair_costs(self, query: str, texts: list[str]) -> list[int]:
        """Tokens the model reads for each text (all its passages, with the query each time); 0 for a text
        whose every passage is in the score cache."""
        planner = self._planner
        assert planner is not None
        budget = planner.budget(query)
        per_pair = planner.max_length - budget  # the query and the special tokens
        pieces = planner.plan(query, texts)
        lengths = [len(offsets) for offsets, _ in planner.tokenize(texts)]
        costs = [len(p.spans) * (per_pair + (budget if p.split else min(n, budget))) for p, n in zip(pieces, lengths)]
        if self.score_cache is not None:
            keys = [[score_key(self._identity, query, t[a:b]) for a, b in p.spans] for t, p in zip(texts, pieces)]
            found = self.score_cache.get_many([k for ks in keys for k in ks])
            costs = [0 if all(k in found for k in ks) else c for ks, c in zip(keys, costs)]
        return costs

    def _head_within(
        self, query: str, documents: list[Document], until: float
    ) -> tuple[int, Scored, dict[str, float]]:
        """Score documents in input order, chunk by chunk, while the next chunk is predicted to end by
        ``until`` (from the measured tokens per second; cached pairs cost nothing)."""
        with self._score_lock:
            texts = [d.text for d in documents]
            costs = self._pair_costs(query, texts)
            scores: list[float] = []
            passages: list[tuple[int, int] | None] = []
            truncated: list[bool] = []
            model_ms = 0.0
            cache_counts: dict[str, int] = {"hits": 0, "misses": 0}
            k = 0
            while k < len(documents):
                left = until - monotonic()
                if self._tokens_per_s is None:  # nothing measured yet: one document first
                    take = 1 if left > 0 else 0
                else:
                    room, take = left * self._tokens_per_s * BUDGET_SAFETY, 0
                    while k + take < len(documents) and costs[k + take] <= room:
                        room -= costs[k + take]
                        take += 1
                if take == 0:
                    break
                began = perf_counter()
                (chunk,), _ = self._score_locked([query], [documents[k : k + take]])
                seconds = perf_counter() - began
                model_ms += seconds * 1000.0
                tokens = sum(costs[k : k + take])
                if tokens and seconds > 0:
                    rate = tokens / seconds
                    old = self._tokens_per_s
                    self._tokens_per_s = rate if old is None else (1 - RATE_SMOOTHING) * old + RATE_SMOOTHING * rate
                scores += chunk.scores
                passages += chunk.passages or [None] * take
                truncated += chunk.truncated or [False] * take
                for name, value in ((chunk.info or {}).get("score_cache") or {}).items():
                    cache_counts[name] = cache_counts.get(name, 0) + value
                k += take
        info = {"score_cache": cache_counts} if self.score_cache is not None else None
        return k, Scored(scores, passages, truncated, info), {"model": model_ms}

