"""Pointwise LLM reranking: one relevance judgement per document from an OpenAI-compatible chat model.

``llm-pointwise:<model>@<base_url>`` asks about each document on its own, ``max_concurrency`` at a time.
With ``judge="auto"`` (the default) it asks for a one-token Yes/No answer with log-probabilities and scores
the document by the log-odds ``log P(yes) - log P(no)`` (a token missing from the top list counts as the
least likely one listed). A server that returns no log-probabilities is then asked for a grade from 0 to
``max_grade`` as text instead, which is logged once and said in every result (``info["judge"] == "grade"``,
``info["logprobs_fallback"]``). ``judge="logprobs"`` makes a missing log-probability an error;
``judge="grade"`` never asks for them. A Yes/No judgement is one token; ``max_tokens`` gives text grades room
(for a reasoning model, whose ``<think>`` block is dropped before the grade is read).

An answer that can be read neither way leaves its document unscored (NaN, ranked after the scored ones
in input order) and counted in ``info["unparsed"]``; a query fails only when no answer could be read.

Example:
    >>> from rankrelay.rerankers.llm.pointwise import LLMPointwiseReranker, log_odds
    >>> rr = LLMPointwiseReranker("qwen2.5:7b", base_url="http://127.0.0.1:11434/v1")
    >>> rr.name, rr.judge, rr.max_concurrency
    ('llm-pointwise', 'auto', 8)
    >>> round(log_odds([("Yes", -0.1), ("No", -2.4)]), 2)
    2.3
"""

from __future__ import annotations

import logging
import math
import re
import threading
from typing import Any

from rankrelay.billing import add_units
from rankrelay.errors import BadResponseError, ConfigError, QueryTooLongError, positive_int
from rankrelay.rerankers.base import Scored
from rankrelay.rerankers.hosted.api import Reply
from rankrelay.rerankers.llm.chat import MESSAGE_TOKENS, ChatReranker, one_line, parse_llm_spec
from rankrelay.results import Document

logger = logging.getLogger(__name__)

JUDGES = ("auto", "logprobs", "grade")
_GRADE = re.compile(r"-?\d+(?:\.\d+)?")


def log_odds(top: list[tuple[str, float]]) -> float:
    """``log P(yes) - log P(no)`` from ``(token, logprob)`` pairs (NaN when neither is there)."""
    groups: dict[str, list[float]] = {"yes": [], "no": []}
    for token, logprob in top:
        word = token.strip().lower()
        if word in groups:
            groups[word].append(logprob)
    if not groups["yes"] and not groups["no"]:
        return math.nan
    floor = min(lp for _, lp in top)  # a token not listed is at most as likely as the least likely listed

    def total(values: list[float]) -> float:
        if not values:
            return floor
        peak = max(values)
        return peak + math.log(sum(math.exp(v - peak) for v in values))

    return total(groups["yes"]) - total(groups["no"])


class LLMPointwiseReranker(ChatReranker):
    """One Yes/No (or graded) judgement per document over any OpenAI-compatible chat API.

    Args:
        model: the server's model name.
        judge: ``auto`` (log-probabilities, else text grades), ``logprobs`` or ``grade``.
        max_grade: the top of the text grade scale (0 to ``max_grade``).
        grade_prompt: the user message template for text grades (``{query}``, ``{text}``, ``{max_grade}``).
        max_concurrency: judgements in flight at once (default 8).
        **options: see :class:`~rankrelay.rerankers.llm.chat.ChatReranker` and
            :class:`~rankrelay.rerankers.hosted.api.ApiReranker`.
    """

    name = "llm-pointwise"
    relevance = "sigmoid"  # of log P(yes) - log P(no); text grades have no probability: "rank"
    default_system = "You judge whether a passage is relevant to a search query."
    default_prompt = ("Query: {query}\nPassage: {text}\n\n"
                      "Is the passage relevant to the query? Answer Yes or No.")
    default_grade_prompt = ("Query: {query}\nPassage: {text}\n\n"
                            "How relevant is the passage to the query, on a scale from 0 to {max_grade} "
                            "(0: not relevant, {max_grade}: perfectly relevant)? Answer with the number only.")
    prompt_fields = {"query", "text", "max_grade"}
    # unreadable answers leave a document unscored (NaN) instead of failing the chunk
    allow_unscored = True

    def __init__(self, model: str | None, *, judge: str = "auto", max_grade: int = 3,
                 grade_prompt: str | None = None, max_concurrency: int = 8, **options: Any) -> None:
        if options.get("chunk_size", 1) != 1:
            raise ConfigError("llm-pointwise judges one document per request; chunk_size cannot be set")
        super().__init__(model, max_concurrency=max_concurrency, **options)
        if judge not in JUDGES:
            raise ConfigError(f"judge must be one of {', '.join(JUDGES)}, got {judge!r}")
        self.judge = judge
        self.max_grade = positive_int(max_grade, "max_grade", ConfigError)
        self.grade_prompt = self._template(grade_prompt or self.default_grade_prompt, "grade prompt")
        self._no_logprobs = False  # learnt from the server: it ignores the logprobs option
        self._lock_mode = threading.Lock()
        room = self.context_window - self._fixed_tokens("") - self.max_doc_tokens - self._answer_tokens()
        if room < 0:
            raise ConfigError(f"{self.name}: a context window of {self.context_window} tokens cannot hold one "
                              f"document of {self.max_doc_tokens} tokens beside the prompt")

    def _fixed_tokens(self, query: str) -> int:
        prompt = max(self.prompt, self.grade_prompt, key=len)
        return (self.budget.count(self.system_prompt) + 2 * MESSAGE_TOKENS
                + self.budget.count(prompt.format(query=query, text="", max_grade=self.max_grade)))

    def _answer_tokens(self) -> int:
        return self.max_tokens or 8

    def mode(self) -> str:
        """How the next document is judged: ``logprobs`` or ``grade``."""
        return "grade" if self.judge == "grade" or self._no_logprobs else "logprobs"

    # -- ApiReranker's chunks of one document ---------------------------------------------------
    def _chunks(self, queries: list[str], documents: list[list[Document]]) -> list[tuple[int, int, str, list[str]]]:
        for query in queries:  # every query checked before any call
            if self._fixed_tokens(query) + self.max_doc_tokens + self._answer_tokens() > self.context_window:
                raise QueryTooLongError(f"{self.name}: the query leaves no room for a document of "
                                        f"{self.max_doc_tokens} tokens in a context window of {self.context_window}")
        return [(qi, i, query, [self.budget.fit(one_line(doc.text), self.max_doc_tokens)[0]])
                for qi, (query, docs) in enumerate(zip(queries, documents)) for i, doc in enumerate(docs)]

    def _judge_request(self, mode: str, query: str, text: str, timeout: float) -> dict[str, Any]:
        if mode == "logprobs":
            return self._request(self._messages(query=query, text=text, max_grade=self.max_grade), 1, timeout,
                                 logprobs=True, top_logprobs=5)
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        user = {"role": "user", "content": self.grade_prompt.format(query=query, text=text, max_grade=self.max_grade)}
        return self._request([*system, user], self.max_tokens or 4, timeout)

    def _fell_back(self, response: Any) -> bool:
        """Did a logprobs request come back without them (switching this reranker to grades)?"""
        content = getattr(getattr(response.choices[0], "logprobs", None), "content", None) if response.choices else None
        if content:
            return False
        if self.judge == "logprobs":
            raise BadResponseError(f"{self.name}: the server returned no log-probabilities (judge='logprobs'); "
                                   "use judge='auto' or 'grade' for servers without them", backend=self.name)
        with self._lock_mode:
            if not self._no_logprobs:
                logger.warning("%s: %s returned no log-probabilities; judging by text grades 0-%d from now on",
                               self.name, self.base_url, self.max_grade)
            self._no_logprobs = True
        return True

    def _send(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        mode = self.mode()
        replies = [(mode, client.chat.completions.create(**self._judge_request(mode, query, texts[0], timeout)))]
        if mode == "logprobs" and self._fell_back(replies[0][1]):
            replies.append(("grade", client.chat.completions.create(
                **self._judge_request("grade", query, texts[0], timeout))))
        return replies

    async def _asend(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        mode = self.mode()
        replies = [(mode, await client.chat.completions.create(**self._judge_request(mode, query, texts[0], timeout)))]
        if mode == "logprobs" and self._fell_back(replies[0][1]):
            replies.append(("grade", await client.chat.completions.create(
                **self._judge_request("grade", query, texts[0], timeout))))
        return replies

    def _reply(self, raw: Any) -> Reply:
        mode, response = raw[-1]
        if mode == "logprobs":
            content = response.choices[0].logprobs.content
            top = [(t.token, t.logprob) for t in (content[0].top_logprobs or [])] or [
                (content[0].token, content[0].logprob)]
            score = log_odds(top)
        else:
            found = _GRADE.search(self._text(response))
            grade = float(found.group()) if found else math.nan
            score = grade if 0 <= grade <= self.max_grade else math.nan
        billed: dict[str, float] = {}
        for _, reply in raw:
            add_units(billed, self.usage(reply))
        request_id = getattr(response, "id", None)
        return Reply([(0, score)], request_id if isinstance(request_id, str) else None, billed)

    def _merge(self, documents: list[list[Document]], jobs: list[tuple[int, int, str, list[str]]],
               replies: list[Reply]) -> list[Scored]:
        merged = super()._merge(documents, jobs, replies)
        sent = {(qi, i): texts[0] for qi, i, _, texts in jobs}  # what each document was cut to in _chunks
        for qi, (scored, docs) in enumerate(zip(merged, documents)):
            unparsed = sum(1 for s in scored.scores if s != s)
            if unparsed == len(docs):
                raise BadResponseError(f"{self.name}: none of the {len(docs)} answers could be read as a judgement",
                                       backend=self.name)
            assert scored.info is not None  # ApiReranker._merge fills it
            scored.info.update(unparsed=unparsed, judge=self.mode(), logprobs_fallback=self._no_logprobs,
                               relevance="sigmoid" if self.mode() == "logprobs" else "rank",
                               cost_usd=self.cost(scored.info["billed_units"]))
            scored.truncated = [sent[qi, i] != one_line(d.text) for i, d in enumerate(docs)]
        return merged

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "judge": self.judge, "max_grade": self.max_grade}


def from_spec(rest: str | None, **options: Any) -> LLMPointwiseReranker:
    """Registry factory: ``llm-pointwise:<model>`` or ``llm-pointwise:<model>@<base_url>``."""
    model, url = parse_llm_spec(rest)
    if url is not None:
        options.setdefault("base_url", url)
    return LLMPointwiseReranker(model, **options)
