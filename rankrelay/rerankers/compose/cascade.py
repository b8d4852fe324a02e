"""A cascade: a cheap stage orders every candidate, a strong stage reorders the best ``keep`` of them.

The rest follow below the strong stage's head in the cheap stage's order, and each result says which
stage placed it (``r.stage``). The cheap stage can be any reranker (a bi-encoder, a smaller model) or
``first-stage``: the input order itself, i.e. the retriever's ranking when a :class:`TwoStageSearch`
calls the cascade (which then shows the retriever's scores for the rest).

Spec form: ``cascade:<cheap>><strong>@<keep>``, e.g. ``cascade:bi-encoder:all-minilm-l6>minilm-l6@30``;
dict form: ``{"spec": "cascade", "cheap": ..., "strong": {"spec": ..., "runtime": "openvino"}, "keep": 30}``.
With ``cost_share`` (and ``min_keep``), ``keep`` is the most the strong stage reorders: fewer where this machine
needs it for the cascade to cost at most that share of the strong stage over every candidate on torch fp32
(:mod:`rankrelay.rerankers.compose.keep_plan`; the ``balanced`` profile is built so).

Example:
    >>> from rankrelay import load_reranker
    >>> c = load_reranker("cascade:first-stage>random:1@2")
    >>> res = c.rerank("q", ["a", "b", "c", "d"])
    >>> [r.stage for r in res], res.info["reranked"]
    (['random:seed=1', 'random:seed=1', 'first-stage', 'first-stage'], 2)
    >>> sorted(res.indices[:2]), res.indices[2:]
    ([0, 1], [2, 3])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

from rankrelay.errors import ConfigError, positive_int
from rankrelay.rerankers.base import (
    Request,
    Reranker,
    Scored,
    arerank_batch,
    budget_kwargs,
    check_query,
    check_top_n,
    head_then_rest,
    label,
    within_budget,
)
from rankrelay.rerankers.compose.composite import Composite
from rankrelay.rerankers.compose.keep_plan import StageCosts, check_plan, plan_keep
from rankrelay.rerankers.compose.keep_store import planned_costs
from rankrelay.rerankers.registry import DEFAULT_KEEP, FIRST_STAGE, load_chain_item, parse_cascade, register
from rankrelay.results import RerankResult, to_documents

logger = logging.getLogger(__name__)


class CascadeReranker(Composite):
    """Cheap stage over every candidate, strong stage over the cheap stage's best ``keep``.

    Args:
        cheap: a spec, ``{"spec": ..., **options}`` dict, :class:`Reranker`, or ``first-stage`` (input order).
        strong: the same forms (not ``first-stage``); must not be the cheap stage's object.
        keep: candidates the strong stage reorders (>= 1); with ``cost_share``, the most it reorders.
        cost_share: a cost target: the cascade costs at most this share of the strong stage over every candidate
            on torch fp32, so the strong stage reorders fewer than ``keep`` (not under ``min_keep``) where it
            must; costs from the stages' runtime measurements (local models only; others keep ``keep``).
        min_keep: the fewest the strong stage reorders under ``cost_share`` (default: ``keep``'s half).
        costs: returns the stages' :class:`~rankrelay.rerankers.compose.keep_plan.StageCosts` (default:
            timed on the same passages, once per machine); a fixed cost model in tests.
    """

    name = "cascade"

    def __init__(self, cheap: Any, strong: Any, *, keep: int = DEFAULT_KEEP, cost_share: float | None = None,
                 min_keep: int | None = None, costs: Callable[[], StageCosts | None] | None = None) -> None:
        positive_int(keep, "a cascade's keep", ConfigError)
        check_plan(cost_share, keep, min_keep)
        if strong is None or strong == FIRST_STAGE:
            raise ConfigError("a cascade's strong stage must be a reranker, not the first stage")
        self.cheap: Reranker | None = None if cheap in (None, FIRST_STAGE) else load_chain_item(cheap)
        self.strong: Reranker = load_chain_item(strong)
        if self.cheap is self.strong:
            raise ConfigError("a cascade's cheap and strong stages are the same object; give two rerankers")
        self.keep = keep
        self.cost_share = cost_share
        self.min_keep = (min_keep if min_keep is not None else max(1, keep // 2)) if cost_share else keep
        self._costs = costs or (lambda: planned_costs(self.cheap, self.strong))
        self._planned: list[StageCosts | None] = []  # the costs, once read
        self.cheap_label = FIRST_STAGE if self.cheap is None else label(self.cheap)
        self.strong_label = label(self.strong)
        self.model = f"{self.cheap_label} > {self.strong_label} @{keep}"

    def __repr__(self) -> str:
        return f"<CascadeReranker {self.model}>"

    def parts(self) -> list[Reranker]:
        return [self.strong] if self.cheap is None else [self.cheap, self.strong]

    def describe(self) -> dict[str, Any]:
        plan = {"cost_share": self.cost_share, "min_keep": self.min_keep} if self.cost_share else {}
        return {"backend": self.name, "cheap": self.cheap_label, "strong": self.strong_label, "keep": self.keep,
                **plan}

    def warm_up(self) -> None:
        """Warm up both stages and, with a cost target, read their costs (measured once per machine)."""
        super().warm_up()
        if self.cost_share:
            self.stage_costs()

    def stage_costs(self) -> StageCosts | None:
        """The stages' costs a keep is planned from, read once (None: stages that cannot say)."""
        if not self._planned:
            costs = self._costs()
            if costs is None:
                logger.info("%s: the stages' costs are not known (not local models); it keeps %d", self.model,
                            self.keep)
            self._planned.append(costs)
        return self._planned[0]

    def keep_for(self, n: int) -> int:
        """How many of ``n`` candidates the strong stage reorders: ``keep``, or under a cost target the most
        that fits it on this machine (at least ``min_keep``)."""
        if self.cost_share is None or n <= self.min_keep:  # (the floor covers every candidate)
            return self.keep
        costs = self.stage_costs()
        if costs is None:
            return self.keep
        return plan_keep(n, costs, share=self.cost_share, keep=self.keep, min_keep=self.min_keep)

    # -- ranking ---------------------------------------------------------------------------
    def _check(self, requests: Sequence[Request], top_n: int | None) -> list[tuple[str, list[Any]]]:
        check_top_n(top_n)
        return [(check_query(q), to_documents(d)) for q, d in requests]

    def _cheap_orders(self, checked: list[tuple[str, list[Any]]], cheap: list[RerankResult] | None) -> list[
            tuple[list[int], list[float] | None]]:
        if cheap is None:
            return [(list(range(len(d))), None) for _, d in checked]
        return [(res.indices, [r.score for r in res]) for res in cheap]

    def _merge(
        self, checked: list[tuple[str, list[Any]]], orders: list[tuple[list[int], list[float] | None]],
        keeps: list[int], strong: list[RerankResult], top_n: int | None, timings: dict[str, float],
    ) -> list[RerankResult]:
        out = []
        for (query, docs), (order, cheap_scores), keep, res in zip(checked, orders, keeps, strong):
            head = order[:keep]
            by_head = {r.index: r for r in res}
            scored = Scored([by_head[j].score for j in range(len(head))],
                            [by_head[j].passage for j in range(len(head))],
                            [by_head[j].truncated for j in range(len(head))], dict(res.info))
            rest_scores = cheap_scores[keep:] if cheap_scores is not None else None
            partial = res.info.get("reranked")  # the strong stage ran out of budget: its own rest is marked
            merged = head_then_rest(
                query, docs, head, scored, order[keep:], rest_scores, backend=self.name, model=self.model,
                stages=(self.strong_label, self.cheap_label), top_n=top_n, timings=dict(timings),
                info={"cascade": {"cheap": self.cheap_label, "strong": self.strong_label, "keep": keep},
                      "reranked": len(head) if partial is None else partial},
            )
            if partial is not None:
                for r in merged.results:
                    if r.stage == self.strong_label and by_head[head.index(r.index)].stage == FIRST_STAGE:
                        r.stage = self.cheap_label
            out.append(merged)
        return out

    def rerank_batch(
        self, requests: Sequence[Request], top_n: int | None = None, *, budget_ms: float | None = None
    ) -> list[RerankResult]:
        """:meth:`rerank` for several requests: one batched call per stage."""
        checked = self._check(requests, top_n)
        with within_budget(budget_ms):
            start = perf_counter()
            cheap = None
            if self.cheap is not None:
                cheap = self.cheap.rerank_batch(checked, **budget_kwargs(self.cheap))
            cheap_done = perf_counter()
            orders = self._cheap_orders(checked, cheap)
            keeps = [self.keep_for(len(d)) for _, d in checked]
            heads = [(q, [d[i] for i in order[:k]]) for (q, d), (order, _), k in zip(checked, orders, keeps)]
            strong = self.strong.rerank_batch(heads, **budget_kwargs(self.strong))
            done = perf_counter()
        timings = {"cheap": (cheap_done - start) * 1000, "strong": (done - cheap_done) * 1000,
                   "model": (done - start) * 1000, "total": (done - start) * 1000}
        return self._merge(checked, orders, keeps, strong, top_n, timings)

    async def arerank_batch(
        self, requests: Sequence[Request], top_n: int | None = None, *, budget_ms: float | None = None
    ) -> list[RerankResult]:
        """Async :meth:`rerank_batch` (each stage through its async API)."""
        checked = self._check(requests, top_n)

        async def run(stage: Reranker, batch: list[Any]) -> list[RerankResult]:
            return await arerank_batch(stage, batch, **budget_kwargs(stage))

        with within_budget(budget_ms):
            start = perf_counter()
            cheap = await run(self.cheap, checked) if self.cheap is not None else None
            cheap_done = perf_counter()
            orders = self._cheap_orders(checked, cheap)
            keeps = [self.keep_for(len(d)) for _, d in checked]
            heads = [(q, [d[i] for i in order[:k]]) for (q, d), (order, _), k in zip(checked, orders, keeps)]
            strong = await run(self.strong, heads)
            done = perf_counter()
        timings = {"cheap": (cheap_done - start) * 1000, "strong": (done - cheap_done) * 1000,
                   "model": (done - start) * 1000, "total": (done - start) * 1000}
        return self._merge(checked, orders, keeps, strong, top_n, timings)


def from_spec(rest: str | None, *, cheap: Any = None, strong: Any = None, keep: int | None = None,
              cost_share: float | None = None, min_keep: int | None = None) -> CascadeReranker:
    """Registry factory: ``cascade:<cheap>><strong>@<keep>``, or the stages as options (dict form)."""
    if rest:
        if cheap is not None or strong is not None:
            raise ConfigError("give a cascade's stages in its spec or as options, not both")
        cheap, strong, spec_keep = parse_cascade(rest)
        keep = spec_keep if keep is None else keep
    if strong is None:
        raise ConfigError("a cascade needs a strong stage: cascade:<cheap>><strong>@<keep>")
    return CascadeReranker(cheap if cheap is not None else FIRST_STAGE, strong,
                           keep=DEFAULT_KEEP if keep is None else keep, cost_share=cost_share, min_keep=min_keep)


register(
    "cascade",
    from_spec,
    options={"cheap", "strong", "keep", "cost_share", "min_keep"},
    description="cheap stage over all, strong stage over the best keep (cascade:<cheap>><strong>@<keep>)",
)
