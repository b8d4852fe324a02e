"""Experiments in the service: a served name whose arms are served models, answered interleaved (or split),
with each impression recorded so feedback can be credited and analysed.

An experiment's answer is one list in the Cohere shape with the impression's id; which arm placed each document is
recorded in the store, never shown. Each arm runs through the service's own path (its fallback chain, batcher,
limits). If an arm fails, another answers alone and the impression is marked ``excluded`` (left out of the
analysis). If the store is away, the answer still goes out: the impression waits in a bounded buffer until the
store is back, and the answer says so (``info["impression_recorded"]``).

Example:
    >>> exp = Experiment("ab", ["a", "b"], "team-draft")
    >>> check_experiments({"ab": exp}, served=["a", "b"])
    >>> split_arm("imp-1", 2) in (0, 1)
    True
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rankrelay.errors import ConfigError, NotFoundError, RankRelayError, StoreUnavailableError
from rankrelay.experiments.interleaving import team_draft
from rankrelay.experiments.store import Impression, SQLStore
from rankrelay.experiments.totals import summary
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
        doc = docs[index]  # (every position comes from the list of the arm credited with it)
        results.append(RankedDocument(index=index, text=doc.text, score=by_arm[team][index].score, rank=rank,
                                      normalized_score=1.0 - (rank - 1) / n, id=doc.id,
                                      metadata=doc.metadata))
    timings = {f"{k}:{i}": v for i, res in enumerate(backend_results) for k, v in res.timings.items()}
    return RerankResult(query=query, results=results, backend=f"experiment:{name}", timings=timings,
                        num_candidates=len(docs),  # (normalized by rank, the default)
                        info={"relevance": "rank", "impression": impression_id})


class Experiments:
    """The service's experiments over one store; :meth:`answer`, :meth:`feedback`, :meth:`report`.

    The store is opened by :meth:`open` (at the service's start). While it is away, impressions wait in a bounded
    buffer (``buffer`` of them) that :meth:`maintain` writes when it is back; an answer says what became of its
    impression in ``info["impression_recorded"]``: ``recorded`` (stored before the answer), ``buffered`` (stored
    when the database is back, unless the process ends first) or ``lost`` (the buffer was full).
    """

    def __init__(self, experiments: Mapping[str, Experiment], store: SQLStore | Callable[[], SQLStore] | None, *,
                 store_text: bool = False, on_event: Callable[[str, str, str], None] | None = None,
                 retry_s: float = 1.0, buffer: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.experiments = dict(experiments)
        self.store: SQLStore | None = store if isinstance(store, SQLStore) else None
        self._opener = None if isinstance(store, SQLStore) else store
        self.store_text = store_text
        self.on_event = on_event or (lambda experiment, kind, outcome: None)
        self.retry_s, self.clock, self.buffer_size = retry_s, clock, buffer
        self._next_try = -math.inf
        self._open_error: str | None = None
        self._pending: deque[Impression] = deque()
        self._pending_ids: set[str] = set()
        self._lock = threading.Lock()  # opening the store (may wait on a database)
        self._buffer_lock = threading.Lock()  # the buffer (taken on the event loop: never held while waiting)

    def open(self, strict: bool = True) -> None:
        """Open the store now: one that cannot be opened raises (``strict``) or leaves the experiments degraded,
        answering without it, with one warning, until :meth:`maintain` opens it."""
        if not self.experiments or self.store is not None or self._opener is None:
            return
        try:
            self.store = self._opener()
            self._open_error = None
        except Exception as exc:
            if strict:
                raise StoreUnavailableError(f"{exc} (serve with [service] store_strict = false to start without "
                                            "it)") from exc
            self._cannot_open(exc)

    def _away(self) -> None:
        """The open store was found away (it says its own outages): not tried again for ``retry_s``."""
        self._next_try = self.clock() + self.retry_s

    def _cannot_open(self, exc: BaseException) -> None:
        """The store could not be opened: said here, once; tried again after ``retry_s``."""
        self._away()
        if self._open_error is None:
            logger.warning("experiment store unavailable (%s); impressions wait in a buffer of %d, feedback is "
                           "answered 503 until it is back", exc, self.buffer_size)
        self._open_error = str(exc)

    def open_store(self) -> SQLStore | None:
        """The store when it can be used now: opened, and not known to be away (tried again after ``retry_s``)."""
        with self._lock:
            if self.clock() < self._next_try:
                return None
            if self.store is None and self._opener is not None:
                try:
                    self.store = self._opener()
                    self._open_error = None
                except Exception as exc:  # the service answers without it
                    self._cannot_open(exc)
            return self.store

    def state(self) -> dict[str, Any]:
        """What ``/ready`` says of the store: ``up`` or ``unavailable`` (with why), impressions waiting and
        outages so far."""
        if not self.experiments:
            return {}
        store = self.store
        reason = self._open_error if store is None else store.outage
        return {"state": "unavailable" if reason or store is None else "up", **({"reason": reason} if reason else {}),
                "pending": len(self._pending), "outages": store.outages if store is not None else 0}

    @property
    def pending(self) -> int:
        """Impressions waiting in the buffer for the store."""
        return len(self._pending)

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
            order, teams, arm_results, excluded = [], [], [], False
        elif exp.method == "split":
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
        result.info["impression_recorded"] = await self._record(Impression(
            impression_id, name, exp.method, list(exp.arms), list(teams), excluded,  # created: now
            query=query if self.store_text else None,
            documents=[docs[i].text for i in order] if self.store_text else None))
        return result

    async def _record(self, impression: Impression) -> str:
        """Store ``impression`` (or buffer it while the store is away); what became of it."""
        store = await asyncio.to_thread(self.open_store)  # the buffer drains beside it (:meth:`maintain`)
        outcome = "recorded"
        if store is None:
            outcome = self._buffer(impression)
        else:
            try:
                await asyncio.to_thread(store.add, impression)
            except StoreUnavailableError:
                self._away()
                outcome = self._buffer(impression)
            except Exception as exc:  # noqa: BLE001 - the answer goes out; the impression is counted lost
                logger.warning("experiment %s: impression %s not recorded (%s: %s)", impression.experiment,
                               impression.id, type(exc).__name__, exc)
                outcome = "lost"
        event = "excluded" if outcome == "recorded" and impression.excluded else outcome
        self.on_event(impression.experiment, "impression", event)
        return outcome

    def _buffer(self, impression: Impression) -> str:
        with self._buffer_lock:
            if len(self._pending) >= self.buffer_size:
                return "lost"
            self._pending.append(impression)
            self._pending_ids.add(impression.id)
        return "buffered"

    def flush(self, batch: int = 500) -> int:
        """Write the buffered impressions, oldest first and ``batch`` to a transaction, while the store takes
        them; returns how many were written. One the store refuses (not an outage: the impression itself) is taken
        out of the buffer and counted lost, never retried for ever nor blocking the rest."""
        written = 0
        while self._pending:
            store = self.open_store()
            if store is None:
                break
            with self._buffer_lock:  # answers append meanwhile
                chunk = list(itertools.islice(self._pending, batch))
            try:
                store.add_many(chunk)
            except StoreUnavailableError:
                self._away()
                break
            except Exception as exc:  # noqa: BLE001 - a bad impression never blocks the rest: one at a time
                logger.warning("experiment store: a buffered batch failed (%s: %s); writing one at a time",
                               type(exc).__name__, exc)
                chunk = chunk[:1]
                try:
                    store.add_many(chunk)
                except StoreUnavailableError:
                    self._away()
                    break
                except Exception:  # noqa: BLE001 - counted lost below
                    self.on_event(chunk[0].experiment, "impression", "lost")
                    written -= 1  # taken out of the buffer, never written
            with self._buffer_lock:
                for impression in chunk:
                    self._pending.popleft()
                    self._pending_ids.discard(impression.id)
            written += len(chunk)
        return written

    async def maintain(self, interval_s: float = 0.5) -> None:
        """Run beside the service: open a store that could not be opened, probe one that is away, write the
        buffer when it is back."""
        while True:
            await asyncio.sleep(interval_s)
            if not self.experiments:
                continue
            try:
                store = self.store
                if store is not None and store.outage is not None and self.clock() >= self._next_try:
                    await asyncio.to_thread(store.ping)
                await asyncio.to_thread(self.flush)
            except StoreUnavailableError:
                self._away()
            except Exception:  # noqa: BLE001 - the loop outlives any one failure
                logger.exception("experiment store maintenance failed")

    async def feedback(self, impression_id: str, clicked: Sequence[int], dwell: Sequence[float] | None = None,
                       grade: float | None = None) -> dict[str, Any]:
        """Record an impression's clicks (positions in the answered list); idempotent per impression."""
        if not self.experiments:
            raise NotFoundError("this service runs no experiments: feedback has nowhere to go")
        if impression_id in self._pending_ids:
            raise StoreUnavailableError(f"impression {impression_id!r} is not stored yet (the experiment store "
                                        "is away); try again later")
        store = await asyncio.to_thread(self._store)
        try:
            recorded = await asyncio.to_thread(store.feedback, impression_id, clicked, dwell=dwell, grade=grade)
        except StoreUnavailableError:
            self._away()
            raise
        self.on_event(recorded.experiment, "feedback", "recorded" if recorded.created else "repeated")
        return {"id": impression_id, "experiment": recorded.experiment, "recorded": recorded.created}

    def _store(self) -> SQLStore:
        store = self.open_store()
        if store is None:
            raise StoreUnavailableError("the experiment store is unavailable; try again later")
        return store

    def report(self, name: str) -> dict[str, Any]:
        """The analysis of experiment ``name`` from the store's running totals (see :func:`summary`)."""
        if name not in self.experiments:
            raise NotFoundError(f"no experiment {name!r}; experiments: {', '.join(self.experiments) or 'none'}")
        exp = self.experiments[name]
        return summary(exp.name, exp.arms, exp.method, self._store().totals(name))
