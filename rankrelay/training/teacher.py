"""A teacher whose answers are recorded: each (query, candidates) is sent once, its scores kept in a JSON-lines
file, and a call that would pass ``max_calls`` or ``max_cost_usd`` is refused before it is sent.

The file is the resume point of a distillation: a stopped run, started again, reads it and calls the teacher
for no query it has scored. Spend and calls are counted over the whole file (every run), so a limit holds
across restarts. It is a :class:`~rankrelay.rerankers.base.Reranker`, so the harness measures the teacher
through it without calling it again.

Example:
    >>> import pathlib, tempfile
    >>> from rankrelay import load_reranker
    >>> teacher = RecordedTeacher(load_reranker("identity"), pathlib.Path(tempfile.mkdtemp()) / "teacher.jsonl")
    >>> teacher.rerank("wings", ["lift", "drag"]).indices, teacher.rerank("wings", ["lift", "drag"]).indices
    ([0, 1], [0, 1])
    >>> teacher.calls, teacher.replayed
    (1, 1)
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankrelay.billing import add_units
from rankrelay.errors import ConfigError, RankRelayError
from rankrelay.hashing import short_hash
from rankrelay.rerankers.base import Reranker, Scored, build_result, check_query, label
from rankrelay.results import Document, DocumentLike, RerankResult, to_documents

logger = logging.getLogger(__name__)


class TeacherBudgetSpent(RankRelayError):
    """The next teacher call would pass ``max_calls`` or ``max_cost_usd``; nothing was sent."""


@dataclass(slots=True)
class Answer:
    """One recorded teacher answer: raw scores in input order, who served it, what it was billed."""

    scores: list[float]
    backend: str
    model: str | None
    billed: dict[str, float]
    usd: float


def answer_key(query: str, docs: Sequence[Document]) -> str:
    """What identifies a teacher call: the query and its candidates' texts, in order."""
    return short_hash(query + "\x1f" + "\x1e".join(d.text for d in docs), 20)


class RecordedTeacher:
    """``teacher`` behind a record file (``path``, JSON lines), with a call and a dollar limit.

    ``prices`` (:class:`~rankrelay.server.usage.Prices`) cost each answer; ``max_cost_usd`` needs the teacher to
    be priced there (checked here, before any call).
    """

    def __init__(self, teacher: Reranker, path: str | Path, *, max_calls: int | None = None,
                 max_cost_usd: float | None = None, prices: Any = None) -> None:
        from rankrelay.server.usage import Prices

        self.teacher = teacher
        self.path = Path(path)
        self.prices = prices if prices is not None else Prices()
        self.max_calls = max_calls
        self.max_cost_usd = max_cost_usd
        if max_calls is not None and max_calls < 0:
            raise ConfigError(f"max_calls must be >= 0, got {max_calls}")
        if max_cost_usd is not None:
            if not max_cost_usd > 0:
                raise ConfigError(f"max_cost_usd must be > 0, got {max_cost_usd}")
            if not self.prices.of(label(teacher)):
                raise ConfigError(f"--max-cost-usd: the teacher {label(teacher)!r} has no price; give it one in "
                                  "model_prices (dollars per billed unit) or leave the limit out")
        self.answers: dict[str, Answer] = {}
        self.calls = 0  # this run's
        self.unrecorded = 0  # this run's answers the record could not keep (a full disk)
        self.replayed = 0
        self.billed: dict[str, float] = {}
        self.spent_usd = 0.0
        self._lock = threading.Lock()
        self._read()

    @property
    def name(self) -> str:
        return self.teacher.name

    @property
    def model(self) -> str | None:
        return getattr(self.teacher, "model", None)

    @property
    def recorded_calls(self) -> int:
        """Teacher calls in the record file, every run's."""
        return len(self.answers)

    def _read(self) -> None:
        if not self.path.is_file():
            return
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                row = json.loads(line)
                answer = Answer([float(s) for s in row["scores"]], row["backend"], row.get("model"),
                                dict(row.get("billed", {})), float(row.get("usd", 0.0)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                logger.warning("%s:%d is not a teacher answer (a run stopped while writing it?); it is asked "
                               "again", self.path, number)
                continue
            self._count(row["key"], answer)
        logger.info("%d teacher answers read from %s ($%.4f)", len(self.answers), self.path, self.spent_usd)

    def _count(self, key: str, answer: Answer) -> None:
        self.answers[key] = answer
        add_units(self.billed, answer.billed)
        self.spent_usd += answer.usd

    def _check_budget(self, documents: int) -> None:
        if self.max_calls is not None and self.recorded_calls >= self.max_calls:
            raise TeacherBudgetSpent(f"the teacher was called {self.recorded_calls} times: --max-teacher-calls "
                                     f"{self.max_calls} is reached")
        if self.max_cost_usd is not None:
            backend = label(self.teacher)
            next_usd = self.prices.cost(backend, {}, documents)
            if self.spent_usd + next_usd > self.max_cost_usd + 1e-12:
                raise TeacherBudgetSpent(f"the teacher has cost ${self.spent_usd:.4f}; the next call "
                                         f"(${next_usd:.4f}) would pass --max-cost-usd {self.max_cost_usd}")

    def score(self, query: str, documents: Sequence[DocumentLike]) -> tuple[Answer, bool]:
        """The teacher's answer for ``query`` over ``documents`` and whether it was called now (False: replayed)."""
        docs = to_documents(documents)
        key = answer_key(check_query(query), docs)
        with self._lock:
            if key in self.answers:
                self.replayed += 1
                return self.answers[key], False
            self._check_budget(len(docs))
        res = self.teacher.rerank(query, docs)
        scores = [math.nan] * len(docs)
        for r in res.results:
            scores[r.index] = r.score
        billed = dict(res.info.get("billed_units", {}))
        answer = Answer(scores, res.backend, res.model, billed, self.prices.cost(res.backend_label, billed, len(docs)))
        with self._lock:
            self.calls += 1
            self._count(key, answer)
            line = json.dumps({"key": key, "scores": scores, "backend": answer.backend, "model": answer.model,
                               "billed": billed, "usd": answer.usd}) + "\n"
            try:
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(line)
            except OSError as exc:  # a full disk: the answer serves this run; a restart would ask it again
                self.unrecorded += 1
                if self.unrecorded == 1:  # once a run, not once an answer
                    logger.warning("could not record the teacher's answer in %s (%s); this run uses it, a restart "
                                   "would pay for it again (later answers not recorded are counted, not logged)",
                                   self.path, exc)
        return answer, True

    def rerank(self, query: str, documents: Sequence[DocumentLike], top_n: int | None = None) -> RerankResult:
        docs = to_documents(documents)
        if not docs:
            return build_result(query, docs, Scored([]), backend=self.name, model=self.model,
                                normalization="rank", top_n=top_n, timings={"model": 0.0, "total": 0.0})
        answer, called = self.score(query, docs)
        res = build_result(query, docs, Scored(answer.scores, info={"billed_units": answer.billed if called else {}}),
                           backend=answer.backend, model=answer.model, normalization="rank", top_n=top_n,
                           timings={"model": 0.0, "total": 0.0})
        res.info["teacher"] = "called" if called else "replayed"
        return res

    async def arerank(self, query: str, documents: Sequence[DocumentLike], top_n: int | None = None) -> RerankResult:
        return await asyncio.to_thread(self.rerank, query, documents, top_n)

    def rerank_batch(self, requests: Sequence[tuple[str, Sequence[DocumentLike]]],
                     top_n: int | None = None) -> list[RerankResult]:
        return [self.rerank(q, d, top_n) for q, d in requests]

    def warm_up(self) -> None:
        self.teacher.warm_up()

    def close(self) -> None:
        self.teacher.close()

    def summary(self) -> dict[str, Any]:
        """Calls made this run and in all, answers replayed, units billed and dollars spent (every run)."""
        return {"teacher": label(self.teacher), "calls_this_run": self.calls, "calls_recorded": self.recorded_calls,
                "replayed": self.replayed, "billed_units": dict(self.billed), "usd": round(self.spent_usd, 6)}


def teacher_ranking(answer: Answer, ids: Sequence[str]) -> list[tuple[str, float]]:
    """``ids`` ordered by the teacher's scores (ties by input order)."""
    return sorted(zip(ids, answer.scores), key=lambda x: -x[1] if not math.isnan(x[1]) else math.inf)


__all__ = ["Answer", "RecordedTeacher", "TeacherBudgetSpent", "answer_key", "teacher_ranking"]
