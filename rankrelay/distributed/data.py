"""Reranking on Ray Data: ``map_batches`` with one model per actor, for batch jobs (``rerank-batch --ray``:
the job's parts) and for the comparison harness (``bench --ray``: its queries, each timed on its actor).

Each part (a list of queries with their candidates) is one row; an actor builds the reranker from its
spec once and reranks a part per call with :func:`rankrelay.batch.candidates.rerank_part`, the same code the
in-process run uses, so the outputs are equal row for row. Results stream back to the driver, which writes
each part atomically as it completes: an actor that dies mid-part is restarted by Ray Data (its actor
pools restart actors and retry their tasks by default) and the part redone, so no row is lost or written
twice. An exception raised by the reranker is not retried: it stops the run, and a rerun resumes.

Example:
    >>> from rankrelay.distributed.data import PartReranker
    >>> PartReranker.__name__
    'PartReranker'
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

from rankrelay.batch.candidates import COLUMNS, QueryGroup, rerank_part
from rankrelay.distributed import start_ray, use_threads
from rankrelay.errors import ConfigError

logger = logging.getLogger(__name__)
#: Set to a file path to make the first actor that finds the file missing create it and die mid-part:
#: how the tests kill an actor under load. Never set in production.
KILL_ONCE_ENV = "RANKRELAY_TEST_KILL_ACTOR_ONCE"


class _ModelActor:
    """A Ray Data actor holding one reranker (built from its spec once, warmed before the first call)."""

    def __init__(self, spec: Any, threads: int) -> None:
        from rankrelay.rerankers.registry import load_reranker

        use_threads(threads)
        self.reranker = load_reranker(spec)
        self.reranker.warm_up()


class PartReranker(_ModelActor):
    """Reranks batch-job parts: one part per call, its output rows back as columns."""

    def __init__(self, spec: Any, top_n: int | None, threads: int) -> None:
        super().__init__(spec, threads)
        self.top_n = top_n

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {c: [] for c in ("part", *COLUMNS)}
        for number, payload in zip(batch["part"], batch["groups"]):
            groups = [QueryGroup(**g) for g in json.loads(payload)]
            _maybe_die()
            columns = rerank_part(self.reranker, groups, self.top_n)
            out["part"].extend([int(number)] * len(columns["query_id"]))
            for c in COLUMNS:
                out[c].extend(columns[c])
        return out


class QueryScorer(_ModelActor):
    """Scores benchmark queries one at a time, timed on the actor (``rankrelay bench --ray``)."""

    def __init__(self, spec: Any, budget_ms: float | None, threads: int) -> None:
        super().__init__(spec, threads)
        self.budget_ms = budget_ms

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        from rankrelay.evaluation.comparison import score_query

        out: dict[str, list[Any]] = {"qid": [], "outcome": []}
        for qid, payload in zip(batch["qid"], batch["payload"]):
            query, docs = json.loads(payload)
            out["qid"].append(qid)
            out["outcome"].append(json.dumps(score_query(self.reranker, query, docs, self.budget_ms)))
        return out


def _maybe_die() -> None:
    marker = os.environ.get(KILL_ONCE_ENV)
    if marker and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        logger.warning("test hook: actor %d dies mid-part", os.getpid())
        os._exit(1)


def _shippable(spec: Any) -> None:
    if not isinstance(spec, (str, list, dict)):
        raise ConfigError("running on Ray needs the reranker as a spec (a string, a dict or a list) that each "
                          f"actor can build, not a {type(spec).__name__} object")


def _map_on_actors(rows: list[dict[str, Any]], actor: type, kwargs: dict[str, Any],
                   actors: int | None) -> Iterator[dict[str, list[Any]]]:
    """``rows`` through an actor pool (one row per call), as the result batches arrive."""
    ray = start_ray()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    pool = max(1, min(actors or cpus, len(rows)))
    threads = max(1, cpus // pool)
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        actor, fn_constructor_kwargs={**kwargs, "threads": threads}, batch_size=1, concurrency=pool,
        num_cpus=threads)  # Ray Data restarts dead actors and retries their rows itself
    logger.info("%d rows on Ray Data with %d %s actor(s) of %d thread(s)", len(rows), pool, actor.__name__, threads)
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield batch.to_pydict()


def rerank_parts_on_ray(spec: Any, parts: Sequence[tuple[int, list[QueryGroup]]], top_n: int | None,
                        actors: int | None = None) -> Iterator[tuple[int, dict[str, list[Any]]]]:
    """Rerank ``(number, part)`` pairs on Ray Data; yields each part's columns as it completes."""
    _shippable(spec)
    expected = {n: sum(len(g.doc_ids) if top_n is None else min(top_n, len(g.doc_ids)) for g in part)
                for n, part in parts}
    rows = [{"part": n, "groups": json.dumps([asdict(g) for g in part])} for n, part in parts]
    pending: dict[int, dict[str, list[Any]]] = {}
    for data in _map_on_actors(rows, PartReranker, {"spec": spec, "top_n": top_n}, actors):
        for i, number in enumerate(data["part"]):
            columns = pending.setdefault(number, {c: [] for c in COLUMNS})
            for c in COLUMNS:
                columns[c].append(data[c][i])
            if len(columns["query_id"]) == expected[number]:
                yield number, pending.pop(number)
    if pending:  # cannot happen unless Ray returned a part twice or partly; never write such a part
        raise RuntimeError(f"Ray Data returned parts {sorted(pending)} incomplete")


def score_queries_on_ray(spec: Any, work: Sequence[tuple[str, str, Sequence[Any]]], budget_ms: float | None,
                         actors: int | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Score ``(qid, query, documents)`` on Ray Data, one query per call, each timed on its actor; yields
    ``(qid, outcome)`` as they arrive (the harness's per-query record)."""
    _shippable(spec)
    rows = [{"qid": qid, "payload": json.dumps([query, [_plain(d) for d in docs]])} for qid, query, docs in work]
    for data in _map_on_actors(rows, QueryScorer, {"spec": spec, "budget_ms": budget_ms}, actors):
        for qid, outcome in zip(data["qid"], data["outcome"]):
            yield qid, json.loads(outcome)


def _plain(document: Any) -> Any:
    """A document as JSON: text, or ``{"text", "id", "metadata"}``."""
    if isinstance(document, str):
        return document
    return {"text": document.text, "id": document.id, "metadata": document.metadata}
