"""Experiments in the service: a served name whose arms are served models, answered interleaved (or split),
with each impression recorded so feedback can be credited and analysed.

An experiment's answer is one list in the Cohere shape with the impression's id; which arm placed each document is
recorded in the store, never shown. Each arm runs through the service's own path (its fallback chain, batcher,
limits). If an arm fails, another answers alone and the impression is marked ``excluded`` (left out of the
analysis). If the store cannot be written, the answer still goes out: the impression is lost, counted and logged.

Example:
    >>> exp = Experiment("ab", ["a", "b"], "team-draft")
    >>> check_experiments({"ab": exp}, served=["a", "b"])
    >>> split_arm("imp-1", 2) in (0, 1)
    True
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rankrelay.errors import ConfigError, NotFoundError, RankRelayError, StoreUnavailableError
from rankrelay.experiments.analysis import analyse_interleaved, analyse_split
from rankrelay.experiments.interleaving import Interleaved, credit, team_draft
from rankrelay.experiments.store import Impression, SQLStore
from rankrelay.hashing import short_hash
from rankrelay.results import Document, RankedDocument, RerankResult

logger = logging.getLogger(__name__)

METHODS = ("team-draft", "multileave", "split")
Rerank = Callable[[str, str, Sequence[Document], int | None], Awaitable[RerankResult]]


@dataclass(frozen=True, slots=True)
class Experiment:
    """``[service.experiments.<name>]``: the arms (served model names) and how they are compared."""

    name: str
    arms: list[str]
    method: str = "team-draft"


def check_experiments(experiments: Mapping[str, Experiment], served: Collection[str]) -> None:
    """Refuse at start what cannot run: unknown method, arms that are not served models, too few or too many arms
    for the method, a name that is also a served model's."""
    for name, exp in experiments.items():
        where = f"experiment {name!r}"
        if exp.method not in METHODS:
            raise ConfigError(f"{where}: unknown method {exp.method!r}; use {', '.join(METHODS)}")
        if name in served:
            raise ConfigError(f"{where}: the name is also a served model's; give the experiment its own name")
        missing = [a for a in exp.arms if a not in served]
        if missing:
            raise ConfigError(f"{where}: arms {missing} are not served models (served: {', '.join(served)})")
        if len(set(exp.arms)) != len(exp.arms):
            raise ConfigError(f"{where}: an arm is named twice: {exp.arms}")
        if len(exp.arms) < 2:
            raise ConfigError(f"{where}: needs at least two arms, got {exp.arms}")
        if exp.method in ("team-draft", "split") and len(exp.arms) != 2:
            raise ConfigError(f"{where}: {exp.method} compares two arms, got {len(exp.arms)}; use multileave")


def split_arm(impression_id: str, arms: int) -> int:
    """The arm a split experiment shows for an impression (a stable hash of its id: equal shares)."""
    return int(short_hash(impression_id, 8), 16) % arms


def _result(name: str, impression_id: str, query: str, docs: Sequence[Document], order: Sequence[int],
            backend_results: Sequence[RerankResult], teams: Sequence[int]) -> RerankResult:
    """The answered list: ``order`` (document indices), each taken from the result of the arm that placed it."""
    by_arm = [{r.index: r for r in res.results} for res in backend_results]
    n = len(order)
    results = []
    for rank, (index, team) in enumerate(zip(order, teams), start=1):
        source = by_arm[team].get(index)
        doc = docs[index]
        results.append(RankedDocument(index=index, text=doc.text, score=source.score if source else float("nan"),
                                      rank=rank, normalized_score=1.0 - (rank - 1) / max(n, 1), id=doc.id,
                                      metadata=doc.metadata))
    timings = {f"{k}:{i}": v for i, res in enumerate(backend_results) for k, v in res.timings.items()}
    return RerankResult(query=query, results=results, backend=f"experiment:{name}", timings=timings,
                        normalization="rank", num_candidates=len(docs),
                        info={"relevance": "rank", "impression": impression_id})


class Experiments:
    """The service's experiments over one store; :meth:`answer`, :meth:`feedback`, :meth:`report`."""

    def __init__(self, experiments: Mapping[str, Experiment], store: SQLStore | Callable[[], SQLStore] | None, *,
                 store_text: bool = False, on_event: Callable[[str, str, str], None] | None = None,
                 retry_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.experiments = dict(experiments)
        self.store: SQLStore | None = store if isinstance(store, SQLStore) else None
        self._opener = None if isinstance(store, SQLStore) else store
        self.store_text = store_text
        self.on_event = on_event or (lambda experiment, kind, outcome: None)
        self.retry_s, self.clock = retry_s, clock
        self._next_try = -math.inf
        self._lock = threading.Lock()

    def open_store(self) -> SQLStore | None:
        """The store, opened on first use; an unreachable one is tried again after ``retry_s`` (None meanwhile)."""
        with self._lock:
            if self.store is None and self._opener is not None and self.clock() >= self._next_try:
                try:
                    self.store = self._opener()
                except Exception as exc:  # the service answers without it
                    self._next_try = self.clock() + self.retry_s
                    logger.warning("experiment store unreachable (%s: %s); trying again in %g s",
                                   type(exc).__name__, exc, self.retry_s)
            return self.store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def __contains__(self, name: object) -> bool:
        return name in self.experiments

    async def answer(self, name: str, query: str, docs: Sequence[Document], top_n: int | None,
                     rerank: Rerank) -> RerankResult:
        """One impression of experiment ``name``: every arm ranks (a split: one arm), the lists are merged, the
        impression is recorded, and the merged list is answered with its id in ``info["impression"]``."""
        exp = self.experiments[name]
        impression_id = uuid.uuid4().hex
        if not docs:
            return _result(name, impression_id, query, docs, [], [], [])
        if exp.method == "split":
            chosen = split_arm(impression_id, len(exp.arms))
            order_of_tries = [chosen] + [i for i in range(len(exp.arms)) if i != chosen]
            results: list[RerankResult | BaseException] = []
            for i in order_of_tries:
                try:
                    results.append(await rerank(exp.arms[i], query, docs, top_n))
                    break
                except RankRelayError as exc:
                    results.append(exc)
            answered = order_of_tries[len(results) - 1]
            outcome = results[-1]
            if isinstance(outcome, BaseException):
                raise outcome
            order = [r.index for r in outcome.results]
            teams = [answered] * len(order)
            arm_results = [outcome] * len(exp.arms)  # every position is the answering arm's
            excluded = len(results) > 1
        else:
            gathered = await asyncio.gather(*(rerank(arm, query, docs, None) for arm in exp.arms),
                                            return_exceptions=True)
            ok = [i for i, r in enumerate(gathered) if not isinstance(r, BaseException)]
            if not ok:
                raise next(r for r in gathered if isinstance(r, BaseException))
            unexpected = [r for r in gathered if isinstance(r, BaseException)
                          and not isinstance(r, RankRelayError | TimeoutError)]
            if unexpected:  # a bug or a cancellation, not an arm's failure
                raise unexpected[0]
            first = gathered[ok[0]]
            assert isinstance(first, RerankResult)
            arm_results = [r if isinstance(r, RerankResult) else first for r in gathered]
            if len(ok) == len(exp.arms):
                shown = team_draft([[r.index for r in res.results] for res in arm_results], top_n, seed=impression_id)
                order, teams, excluded = shown.order, shown.teams, False
            else:  # an arm failed: the first that answered answers alone, and the impression is left out
                alone = arm_results[ok[0]]
                order = [r.index for r in alone.results][: top_n]
                teams, excluded = [ok[0]] * len(order), True
                logger.warning("experiment %s: %s failed; %s answered alone (impression left out of the analysis)",
                               name, ", ".join(exp.arms[i] for i in range(len(exp.arms)) if i not in ok),
                               exp.arms[ok[0]])
        result = _result(name, impression_id, query, docs, order, arm_results, teams)
        await self._record(Impression(impression_id, name, exp.method, list(exp.arms), list(teams), excluded,
                                      query=query if self.store_text else None,
                                      documents=[docs[i].text for i in order] if self.store_text else None))
        return result

    async def _record(self, impression: Impression) -> None:
        if not self.experiments:
            return
        try:
            store = await asyncio.to_thread(self.open_store)
            if store is None:
                raise StoreUnavailableError("the experiment store is unreachable")
            await asyncio.to_thread(store.add, impression)
        except Exception as exc:  # the answer goes out; the impression is lost, counted and logged
            logger.warning("experiment %s: impression %s not recorded (%s: %s)", impression.experiment,
                           impression.id, type(exc).__name__, exc)
            self.on_event(impression.experiment, "impression", "lost")
            return
        self.on_event(impression.experiment, "impression", "excluded" if impression.excluded else "recorded")

    async def feedback(self, impression_id: str, clicked: Sequence[int], dwell: Sequence[float] | None = None,
                       grade: float | None = None) -> dict[str, Any]:
        """Record an impression's clicks (positions in the answered list); idempotent per impression."""
        store = await asyncio.to_thread(self._store)
        recorded = await asyncio.to_thread(store.feedback, impression_id, clicked, dwell=dwell, grade=grade)
        impression = await asyncio.to_thread(store.get, impression_id)
        self.on_event(impression.experiment, "feedback", "recorded" if recorded.created else "repeated")
        return {"id": impression_id, "experiment": impression.experiment, "recorded": recorded.created}

    def _store(self) -> SQLStore:
        store = self.open_store()
        if store is None:
            raise StoreUnavailableError("the experiment store is unreachable; try again later")
        return store

    def report(self, name: str) -> dict[str, Any]:
        """The analysis of experiment ``name`` from the store (see :func:`summarise`)."""
        if name not in self.experiments:
            raise NotFoundError(f"no experiment {name!r}; experiments: {', '.join(self.experiments) or 'none'}")
        exp = self.experiments[name]
        return summarise(exp.name, exp.arms, exp.method, self._store().impressions(name))


def summarise(name: str, arms: Sequence[str], method: str, impressions: Sequence[Impression]) -> dict[str, Any]:
    """Counts and the decision of one experiment: impressions, with clicks, excluded, and the per-pair preferences
    (interleaving) or the per-arm click metrics with Welch's test (split)."""
    kept = [i for i in impressions if not i.excluded]
    clicked = [i for i in kept if i.clicked]
    out: dict[str, Any] = {"experiment": name, "method": method, "arms": list(arms), "impressions": len(impressions),
                           "excluded": len(impressions) - len(kept), "with_feedback": sum(i.clicked is not None
                                                                                          for i in kept),
                           "with_clicks": len(clicked)}
    if method == "split":
        per_arm: list[list[list[int]]] = [[] for _ in arms]
        for i in kept:
            if i.clicked is not None and i.teams:
                per_arm[i.teams[0]].append(i.clicked)
        out["split"] = analyse_split(list(arms), per_arm).to_dict() if len(arms) == 2 else None
    else:
        credits = [credit_of(i, len(arms)) for i in kept if i.clicked is not None]
        out["preferences"] = [p.to_dict() for p in analyse_interleaved(list(arms), credits)]
    return out


def credit_of(impression: Impression, arms: int) -> list[int]:
    """Clicks per arm of a recorded impression."""
    shown = Interleaved(order=list(range(len(impression.teams))), teams=impression.teams, arms=arms)
    return credit(shown, impression.clicked or [])
