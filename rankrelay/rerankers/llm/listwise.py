"""Listwise LLM reranking (RankGPT): an OpenAI-compatible chat model orders windows of candidates.

``llm:<model>@<base_url>`` slides a window of ``window`` candidates from the back of the list to the front,
``step`` at a time (see :mod:`rankrelay.rerankers.llm.windows`); each window is one chat call whose answer,
``[3] > [1] > [2]``, reorders it. One pass over ``n`` candidates makes ``1 + ceil((n - window) / step)``
calls (one when ``n <= window``, none for a single candidate): 9 for 100 candidates with window 20 and step 10.
``passes`` repeats it.

The raw score is ``n - position`` in the final order (no model score exists), so ``normalize="rank"`` is
the meaningful normalization. ``res.info`` counts calls, answers with no usable identifier (``unparsed``;
a query fails only when every window's answer was unusable), duplicates, out-of-range and missing
identifiers, and the tokens used (``billed_units``) with their price (``cost_usd``). When the context window
cannot hold ``window`` documents of ``max_doc_tokens``, the window shrinks to what fits (``info["window"]``);
fewer than two is a typed error before any call.

Example:
    >>> from rankrelay.rerankers.llm.listwise import LLMListwiseReranker
    >>> rr = LLMListwiseReranker("qwen2.5:7b", base_url="http://127.0.0.1:11434/v1")
    >>> rr.name, rr.window, rr.step, rr.calls(100)
    ('llm', 20, 10, 9)
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rankrelay.billing import add_units
from rankrelay.errors import BadResponseError, ConfigError, QueryTooLongError, positive_int
from rankrelay.rerankers.base import Scored
from rankrelay.rerankers.llm.chat import MESSAGE_TOKENS, ChatReranker, one_line, parse_llm_spec
from rankrelay.rerankers.llm.windows import SlidingPass, calls_per_pass, windows
from rankrelay.results import Document


@dataclass(slots=True)
class _Plan:
    """One query's work: the texts cut to budget, and the window that fits beside the query."""

    query: str
    texts: list[str]
    truncated: list[bool]
    window: int
    step: int


class LLMListwiseReranker(ChatReranker):
    """RankGPT-style listwise reranking over any OpenAI-compatible chat API.

    Args:
        model: the server's model name.
        window: candidates per call (at least 2).
        step: how far the window moves towards the front (1 <= step < window).
        passes: back-to-front passes (each reorders the list again).
        **options: see :class:`~rankrelay.rerankers.llm.chat.ChatReranker` (``base_url``, ``api_key``,
            ``context_window``, ``max_doc_tokens``, ``prompt``, ...) and
            :class:`~rankrelay.rerankers.hosted.api.ApiReranker` (``timeout``, ``max_attempts``, ``deadline``,
            ``max_concurrency``: queries reranked at once).
    """

    name = "llm"
    default_system = ("You are RankGPT, an intelligent assistant that ranks passages by their relevance to a "
                      "search query.")
    default_prompt = ("I will give you {num} passages, each with a numeric identifier in brackets.\n"
                      "Query: {query}\n\n{passages}\n\n"
                      "Rank the {num} passages above by their relevance to the query, most relevant first. "
                      "Answer only with the identifiers in the form [2] > [1] > [3], without any other words.")
    prompt_fields = {"query", "num", "passages"}

    def __init__(self, model: str | None, *, window: int = 20, step: int = 10, passes: int = 1,
                 **options: Any) -> None:
        super().__init__(model, **options)
        windows(window + 1, window, step)  # checks window and step
        self.window, self.step = window, step
        self.passes = positive_int(passes, "passes", ConfigError)
        # the prompt without query and passages: counted once, not for every query
        self._prompt_tokens = self.budget.count(self.system_prompt) + self.budget.count(
            self.prompt.format(query="", num=self.window, passages="")) + 2 * MESSAGE_TOKENS
        fits = self._fits(0)
        if fits < 2:
            raise ConfigError(
                f"{self.name}: a context window of {self.context_window} tokens holds {max(fits, 0)} document(s) of "
                f"{self.max_doc_tokens} tokens beside the prompt; listwise reranking needs at least 2 per window "
                "(raise context_window or lower max_doc_tokens)")

    # -- budgets ---------------------------------------------------------------------------
    def _answer_tokens(self, window: int) -> int:
        return self.max_tokens or 5 * window + 8  # "[12] > " is about five tokens

    def _fits(self, query_tokens: int) -> int:
        """The largest window (up to ``window``) whose prompt and answer fit the context, 0 if none."""
        fixed = self._prompt_tokens + query_tokens
        per_doc = self.max_doc_tokens + 4  # "[12] " and the line break
        for w in range(self.window, 0, -1):
            if fixed + w * per_doc + self._answer_tokens(w) <= self.context_window:
                return w
        return 0

    def calls(self, n: int) -> int:
        """Chat calls for ``n`` candidates (with the configured window; a long query may shrink it)."""
        return self.passes * calls_per_pass(n, self.window, self.step) if n > 1 else 0

    def _plan(self, query: str, docs: list[Document]) -> _Plan:
        query_tokens = self.budget.count(query)
        fits = self._fits(query_tokens)
        if fits < 2:
            raise QueryTooLongError(
                f"{self.name}: the query takes {query_tokens} tokens, leaving room for {fits} "
                f"document(s) in a context window of {self.context_window}; listwise needs 2")
        window = min(self.window, fits)
        step = self.step if window == self.window else max(1, round(self.step * window / self.window))
        fitted = [self.budget.fit(one_line(d.text), self.max_doc_tokens) for d in docs]
        return _Plan(query, [t for t, _ in fitted], [c for _, c in fitted], window, min(step, window - 1))

    def _window(self, query: str, texts: list[str], timeout: float) -> dict[str, Any]:
        """The chat request that orders one window of (already fitted) ``texts``."""
        passages = "\n".join(f"[{k}] {text}" for k, text in enumerate(texts, start=1))
        messages = self._messages(query=query, num=len(texts), passages=passages)
        return self._request(messages, self._answer_tokens(len(texts)), timeout)

    def _send(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        return client.chat.completions.create(**self._window(query, texts, timeout))

    async def _asend(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        return await client.chat.completions.create(**self._window(query, texts, timeout))

    # -- one query -------------------------------------------------------------------------
    def _result(self, plan: _Plan, order: list[int], totals: dict[str, int], replies: list[Any]) -> Scored:
        totals = {k: totals.get(k, 0) for k in ("calls", "unparsed", "duplicates", "out_of_range", "missing")}
        if totals["calls"] and totals["unparsed"] == totals["calls"]:
            raise BadResponseError(f"{self.name}: none of the {totals['calls']} answers held a usable ranking "
                                   f"(last: {self._text(replies[-1])[:120]!r})", backend=self.name)
        n = len(order)
        scores = [0.0] * n
        for position, i in enumerate(order):
            scores[i] = float(n - position)
        billed: dict[str, float] = {}
        for reply in replies:
            add_units(billed, self.usage(reply))
        ids = [r.id for r in replies if isinstance(getattr(r, "id", None), str)]
        info = {**totals, "requests": totals["calls"], "window": plan.window, "step": plan.step,
                "passes": self.passes, "truncated": sum(plan.truncated), "billed_units": billed,
                "cost_usd": self.cost(billed), "request_ids": ids}
        return Scored(scores, truncated=plan.truncated, info=info)

    def _rank(self, plan: _Plan) -> Scored:
        order, replies = list(range(len(plan.texts))), []
        totals: dict[str, int] = {}
        for _ in range(self.passes if len(order) > 1 else 0):  # one candidate needs no call
            sliding = SlidingPass(order, plan.window, plan.step)
            for items in sliding:
                texts = [plan.texts[i] for i in items]

                def request(timeout: float, texts: list[str] = texts) -> Any:
                    client = self._sync_client()
                    return self._sent(lambda: self._send(client, plan.query, texts, timeout))

                reply = self.policy.run(request, deadline=self._deadline(), name=self.name)
                replies.append(reply)
                sliding.apply(self._text(reply))
            order = sliding.items
            totals = {k: totals.get(k, 0) + v for k, v in sliding.totals.items()}
        return self._result(plan, order, totals, replies)

    async def _arank(self, plan: _Plan) -> Scored:
        order, replies = list(range(len(plan.texts))), []
        totals: dict[str, int] = {}
        for _ in range(self.passes if len(order) > 1 else 0):
            sliding = SlidingPass(order, plan.window, plan.step)
            for items in sliding:
                texts = [plan.texts[i] for i in items]

                async def arequest(timeout: float, texts: list[str] = texts) -> Any:
                    return await self._asent(self._asend(self._aclient(), plan.query, texts, timeout))

                reply = await self.policy.arun(arequest, deadline=self._deadline(), name=self.name)
                replies.append(reply)
                sliding.apply(self._text(reply))
            order = sliding.items
            totals = {k: totals.get(k, 0) + v for k, v in sliding.totals.items()}
        return self._result(plan, order, totals, replies)

    # -- batches ---------------------------------------------------------------------------
    def _score_batch(
        self, queries: list[str], documents: list[list[Document]]
    ) -> tuple[list[Scored], dict[str, float]]:
        plans = [self._plan(q, d) for q, d in zip(queries, documents)]  # every query checked before a call
        if len(plans) == 1:
            return [self._rank(plans[0])], {}
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(plans))) as pool:
            return list(pool.map(self._rank, plans)), {}

    async def _ascore_batch(
        self, queries: list[str], documents: list[list[Document]]
    ) -> tuple[list[Scored], dict[str, float]]:
        plans = [self._plan(q, d) for q, d in zip(queries, documents)]
        limit = asyncio.Semaphore(self.max_concurrency)

        async def one(plan: _Plan) -> Scored:
            async with limit:
                return await self._arank(plan)

        return list(await asyncio.gather(*(one(p) for p in plans))), {}

    def _reply(self, raw: Any) -> Any:  # pragma: no cover - windows are read by _rank, not as chunks of scores
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "window": self.window, "step": self.step, "passes": self.passes}


def from_spec(rest: str | None, **options: Any) -> LLMListwiseReranker:
    """Registry factory: ``llm:<model>`` or ``llm:<model>@<base_url>``."""
    model, url = parse_llm_spec(rest)
    if url is not None:
        options.setdefault("base_url", url)
    return LLMListwiseReranker(model, **options)
