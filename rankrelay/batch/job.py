"""Batch reranking of a large candidates file: read, check every row, rerank query by query in resumable
parts, write Parquet and a TREC run. In this process, or on Ray Data (:mod:`rankrelay.distributed.data`).

Input: Parquet or JSON lines with ``query_id``, ``query``, ``doc_id``, ``text`` (one candidate a row; a
query's candidates keep their file order as the input rank), or a TREC run with a BEIR folder for the
texts. A malformed row is an :class:`InvalidInputError` naming its line (JSON lines) or row (Parquet);
nothing is dropped. Queries are cut into parts of ``part_queries``; each part is written atomically to
``OUT/parts/`` as it finishes, so a run that stops is resumed by running it again (``OUT/job.json``
records what the parts belong to; another job in the same folder is a :class:`ConfigError`). Finally
``OUT/reranked.parquet`` (query_id, doc_id, rank, score, normalized_score, input_rank, backend) and
``OUT/run.trec`` are written.

Example:
    >>> from rankrelay.batch.job import job_manifest
    >>> sorted(job_manifest(__file__, None, "identity", 64, None))
    ['corpus', 'input', 'input_sha256', 'part_queries', 'spec', 'top_n']
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankrelay.batch.candidates import COLUMNS, QueryGroup, chunk, pyarrow_parquet, read_candidates, rerank_part
from rankrelay.errors import ConfigError
from rankrelay.hashing import file_sha256
from rankrelay.io import write_text_atomic
from rankrelay.redact import redact_spec
from rankrelay.rerankers.base import label
from rankrelay.rerankers.registry import check_spec

logger = logging.getLogger(__name__)


# -- the job folder --------------------------------------------------------------------------
@dataclass
class BatchSummary:
    """What a run did: parts and rows written, parts found done from an earlier run, the outputs."""

    queries: int
    rows: int
    parts: int
    resumed_parts: int
    parquet: str
    trec: str


class BatchJob:
    """The output folder of one batch job: its manifest, finished parts (each with its row count and checksum
    in ``job.json``) and final outputs. A part whose file does not match its record (replaced, truncated,
    edited) is not trusted: it is computed again, with a warning."""

    def __init__(self, out: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} is a file; name a folder for the batch job")
        self.parts_dir = self.out / "parts"
        self.manifest = manifest
        self.job = self.out / "job.json"
        self.parts: dict[str, dict[str, Any]] = {}
        if self.job.exists():
            before = self._read_job()
            identity = {k: v for k, v in before.items() if k != "parts"}
            parts = before.get("parts")
            recorded: dict[str, dict[str, Any]] = parts if isinstance(parts, dict) else {}
            if identity != manifest and recorded:
                changed = sorted(k for k in manifest if identity.get(k) != manifest[k])
                raise ConfigError(f"{self.out} holds another batch job with finished parts (it differs in "
                                  f"{', '.join(changed)}); use a new --out folder or delete it")
            if identity == manifest:
                self.parts = recorded
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self._write_job()

    def _read_job(self) -> dict[str, Any]:
        try:
            data = json.loads(self.job.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.job} is damaged ({exc}); delete {self.out} to start the job again") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{self.job} is damaged (not an object); delete {self.out} to start the job again")
        return data

    def _write_job(self) -> None:
        write_text_atomic(self.job, json.dumps({**self.manifest, "parts": self.parts}, indent=2) + "\n")

    def part_path(self, number: int) -> Path:
        return self.parts_dir / f"part-{number:05d}.parquet"

    def done(self, number: int) -> bool:
        """Is part ``number`` finished: its file there and equal to its record (else it is done again)?"""
        path, record = self.part_path(number), self.parts.get(str(number))
        if not path.exists():
            return False
        if not isinstance(record, dict) or file_sha256(path) != record.get("sha256"):
            logger.warning("%s does not match its record in %s (replaced, truncated or edited): computing it "
                           "again", path, self.job)
            return False
        return True

    def write_part(self, number: int, columns: dict[str, list[Any]]) -> None:
        """Write one part atomically (a part file is whole or absent) and record its rows and checksum."""
        pq = pyarrow_parquet()
        tmp = self.part_path(number).with_suffix(".tmp")
        table = _table(columns)
        pq.write_table(table, tmp)
        record = {"rows": table.num_rows, "sha256": file_sha256(tmp)}
        os.replace(tmp, self.part_path(number))
        self.parts[str(number)] = record
        self._write_job()

    def finish(self, parts: int, tag: str) -> tuple[int, Path, Path]:
        """Join the parts into ``reranked.parquet`` and ``run.trec``; returns rows and both paths."""
        pq = pyarrow_parquet()
        import pyarrow as pa

        tables = []
        for i in range(parts):
            path, record = self.part_path(i), self.parts.get(str(i), {})
            if file_sha256(path) != record.get("sha256"):  # changed since it was checked: never joined unseen
                raise ConfigError(f"{path} changed while the job ran; run the job again to recompute it")
            tables.append(pq.read_table(path))
        table = pa.concat_tables(tables)
        parquet, trec = self.out / "reranked.parquet", self.out / "run.trec"
        pq.write_table(table, parquet)
        with trec.open("w", encoding="utf-8") as fh:
            for qid, doc, rank, score in zip(*(table.column(c).to_pylist()
                                               for c in ("query_id", "doc_id", "rank", "score"))):
                fh.write(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n")
        return table.num_rows, parquet, trec


def _table(columns: dict[str, list[Any]]) -> Any:
    import pyarrow as pa

    schema = pa.schema([("query_id", pa.string()), ("doc_id", pa.string()), ("rank", pa.int32()),
                        ("score", pa.float64()), ("normalized_score", pa.float64()), ("input_rank", pa.int32()),
                        ("backend", pa.string())])
    return pa.table({c: columns[c] for c in COLUMNS}, schema=schema)


def job_manifest(input_path: str | os.PathLike[str], corpus: str | os.PathLike[str] | None, spec: Any,
                 part_queries: int, top_n: int | None) -> dict[str, Any]:
    """What identifies a job: the input (by checksum), the reranker spec, the part size and ``top_n``."""
    return {"input": str(input_path), "input_sha256": file_sha256(Path(input_path)),
            "corpus": None if corpus is None else str(corpus),
            "spec": redact_spec(spec) if isinstance(spec, (str, list, dict)) else label(spec),
            "part_queries": part_queries, "top_n": top_n}


def run_batch(input_path: str | os.PathLike[str], spec: Any, out: str | os.PathLike[str], *,
              corpus: str | os.PathLike[str] | None = None, part_queries: int = 64, top_n: int | None = None,
              use_ray: bool = False, actors: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> BatchSummary:
    """Rerank a candidates file into ``out`` (resuming a stopped run of the same job).

    Args:
        input_path: Parquet, JSON lines or (with ``corpus``) a TREC run.
        spec: the reranker: a spec, ``{"spec": ...}`` dict or chain (a Reranker object works in-process).
        part_queries: queries per resumable part (and per model batch).
        top_n: keep the best ``top_n`` of each query (None: all).
        use_ray: rerank on Ray Data, one model per actor (``actors`` of them; default: one per CPU).
        progress: called with (parts done, parts) as parts finish.
    """
    if part_queries < 1:
        raise ConfigError(f"part_queries must be >= 1, got {part_queries}")
    if top_n is not None and top_n < 1:
        raise ConfigError(f"top_n must be >= 1 or None, got {top_n}")
    pyarrow_parquet()
    check_spec(spec)  # a typo is an error before the job folder is written
    groups = read_candidates(input_path, corpus)
    parts = chunk(groups, part_queries)
    job = BatchJob(out, job_manifest(input_path, corpus, spec, part_queries, top_n))
    todo = [i for i in range(len(parts)) if not job.done(i)]
    resumed = len(parts) - len(todo)
    if resumed:
        logger.info("resuming: %d of %d parts are done in %s", resumed, len(parts), job.parts_dir)
    done = resumed
    if progress:
        progress(done, len(parts))
    if todo:
        if use_ray:
            from rankrelay.distributed.data import rerank_parts_on_ray

            finished: Iterable[tuple[int, dict[str, list[Any]]]] = rerank_parts_on_ray(
                spec, [(i, parts[i]) for i in todo], top_n, actors)
        else:
            finished = _rerank_here(spec, [(i, parts[i]) for i in todo], top_n)
        for number, columns in finished:
            job.write_part(number, columns)
            done += 1
            if progress:
                progress(done, len(parts))
    tag = "rankrelay-" + "".join(redact_spec(spec).split()) if isinstance(spec, str) else "rankrelay"
    rows, parquet, trec = job.finish(len(parts), tag)
    return BatchSummary(len(groups), rows, len(parts), resumed, str(parquet), str(trec))


def _rerank_here(spec: Any, parts: list[tuple[int, list[QueryGroup]]],
                 top_n: int | None) -> Iterator[tuple[int, dict[str, list[Any]]]]:
    from rankrelay.rerankers.registry import load_reranker

    reranker = load_reranker(spec)
    reranker.warm_up()
    try:
        for number, part in parts:
            yield number, rerank_part(reranker, part, top_n)
    finally:
        if reranker is not spec:
            reranker.close()

