"""Batch reranking on Ray Data: ``map_batches`` over the job's parts with one model per actor.

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
from rankrelay.distributed import start_ray
from rankrelay.errors import ConfigError

logger = logging.getLogger(__name__)
#: Set to a file path to make the first actor that finds the file missing create it and die mid-part:
#: how the tests kill an actor under load. Never set in production.
KILL_ONCE_ENV = "RANKRELAY_TEST_KILL_ACTOR_ONCE"


class PartReranker:
    """A Ray Data actor: one reranker, many parts."""

    def __init__(self, spec: Any, top_n: int | None, threads: int) -> None:
        from rankrelay.rerankers.registry import load_reranker

        try:
            import torch

            torch.set_num_threads(max(1, threads))
        except ImportError:
            pass
        self.reranker = load_reranker(spec)
        self.reranker.warm_up()
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


def _maybe_die() -> None:
    marker = os.environ.get(KILL_ONCE_ENV)
    if marker and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        logger.warning("test hook: actor %d dies mid-part", os.getpid())
        os._exit(1)


def rerank_parts_on_ray(spec: Any, parts: Sequence[tuple[int, list[QueryGroup]]], top_n: int | None,
                        actors: int | None = None) -> Iterator[tuple[int, dict[str, list[Any]]]]:
    """Rerank ``(number, part)`` pairs on Ray Data; yields each part's columns as it completes."""
    if not isinstance(spec, (str, list, dict)):
        raise ConfigError("reranking on Ray needs the reranker as a spec (a string, a dict or a list) that each "
                          f"actor can build, not a {type(spec).__name__} object")
    ray = start_ray()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    pool = max(1, min(actors or cpus, len(parts)))
    threads = max(1, cpus // pool)
    expected = {n: sum(len(g.doc_ids) if top_n is None else min(top_n, len(g.doc_ids)) for g in part)
                for n, part in parts}
    rows = [{"part": n, "groups": json.dumps([asdict(g) for g in part])} for n, part in parts]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        PartReranker, fn_constructor_kwargs={"spec": spec, "top_n": top_n, "threads": threads}, batch_size=1,
        concurrency=pool, num_cpus=threads)  # Ray Data restarts dead actors and retries their parts itself
    logger.info("reranking %d parts on Ray Data with %d actor(s) of %d thread(s)", len(parts), pool, threads)
    pending: dict[int, dict[str, list[Any]]] = {}
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        data = batch.to_pydict()
        for i, number in enumerate(data["part"]):
            columns = pending.setdefault(number, {c: [] for c in COLUMNS})
            for c in COLUMNS:
                columns[c].append(data[c][i])
            if len(columns["query_id"]) == expected[number]:
                yield number, pending.pop(number)
    if pending:  # cannot happen unless Ray returned a part twice or partly; never write such a part
        raise RuntimeError(f"Ray Data returned parts {sorted(pending)} incomplete")
