"""The candidates of a batch job: reading and checking them, cutting them into parts, reranking a part.

Example:
    >>> from rankrelay.batch.candidates import QueryGroup, chunk
    >>> [len(p) for p in chunk([QueryGroup(str(i), "q", ["d"], ["t"]) for i in range(5)], 2)]
    [2, 2, 1]
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.errors import InvalidInputError
from rankrelay.rerankers.base import Reranker
from rankrelay.results import unencodable

FIELDS = ("query_id", "query", "doc_id", "text")
COLUMNS = ("query_id", "doc_id", "rank", "score", "normalized_score", "input_rank", "backend")
#: Errors listed in one message before the rest are counted.
SHOWN_ERRORS = 10


@dataclass
class QueryGroup:
    """One query's candidates, in input order."""

    query_id: str
    query: str
    doc_ids: list[str]
    texts: list[str]


def pyarrow_parquet() -> Any:
    """``pyarrow.parquet``, or an error naming ``rankrelay[batch]``."""
    return import_optional("pyarrow.parquet", extra="batch", feature="batch reranking (Parquet)",
                           package="pyarrow")


# -- reading ---------------------------------------------------------------------------------
def read_candidates(path: str | os.PathLike[str], corpus: str | os.PathLike[str] | None = None) -> list[QueryGroup]:
    """The query groups of a candidates file (see the module docstring); every row is checked."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"no such candidates file: {path}")
    if corpus is not None:
        return _from_trec(path, Path(corpus))
    if path.suffix == ".parquet":
        try:
            table = pyarrow_parquet().read_table(path)
        except Exception as exc:  # pyarrow's ArrowInvalid / OSError for a truncated or non-Parquet file
            raise InvalidInputError(f"{path} is not a readable Parquet file ({type(exc).__name__}: {exc})") from None
        missing = [f for f in FIELDS if f not in table.column_names]
        if missing:
            raise InvalidInputError(f"{path}: no column {', '.join(missing)} (needs {', '.join(FIELDS)})")
        rows = table.select(list(FIELDS)).to_pylist()
        return _group(((f"{path} row {i}", row) for i, row in enumerate(rows, start=1)), str(path))
    return _group(_json_lines(path), str(path))


def _json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, ValueError(f"invalid UTF-8 at byte {exc.start}")
                continue
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except ValueError as exc:
                yield where, exc


def _group(rows: Iterable[tuple[str, Any]], source: str) -> list[QueryGroup]:
    groups: dict[str, QueryGroup] = {}
    errors: list[str] = []
    for where, row in rows:
        problem = _problem(row)
        if problem is None:
            qid = str(row["query_id"])
            group = groups.setdefault(qid, QueryGroup(qid, row["query"], [], []))
            if group.query != row["query"]:
                problem = f"query {qid!r} has another text than on its first row"
            else:
                group.doc_ids.append(str(row["doc_id"]))
                group.texts.append(row["text"])
        if problem is not None:
            errors.append(f"{where}: {problem}")
    if errors:
        raise _listed(errors, f"malformed row(s) in {source}")
    if not groups:
        raise InvalidInputError(f"{source} holds no candidates")
    return list(groups.values())


def _listed(errors: list[str], what: str) -> InvalidInputError:
    """One error naming how many ``what`` there are and listing the first :data:`SHOWN_ERRORS`."""
    more = f" (and {len(errors) - SHOWN_ERRORS} more)" if len(errors) > SHOWN_ERRORS else ""
    return InvalidInputError(f"{len(errors)} {what}{more}:\n" + "\n".join(errors[:SHOWN_ERRORS]))


def _problem(row: Any) -> str | None:
    if isinstance(row, ValueError):
        return f"not JSON ({row})"
    if not isinstance(row, dict):
        return f"a row is an object with {', '.join(FIELDS)}, got {type(row).__name__}"
    for field in FIELDS:
        value = row.get(field)
        if value is None:
            return f"{field!r} is missing"
        if field in ("query", "text"):
            if not isinstance(value, str):
                return f"{field!r} is {type(value).__name__}, not text"
            why = unencodable(value)
            if why is not None:
                return f"{field!r} is not valid text: {why}"
        if field in ("query_id", "doc_id"):
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                return f"{field!r} is {type(value).__name__}, not an id (a string or an integer)"
            if isinstance(value, str) and (not value or any(c.isspace() for c in value)
                                           or unencodable(value) is not None):
                return f"{field!r} {value!r} is empty or holds whitespace, which a TREC run cannot carry"
    if not row["query"].strip():
        return "'query' is empty"
    return None


def _from_trec(run_path: Path, corpus: Path) -> list[QueryGroup]:
    from rankrelay.evaluation.data import read_trec
    from rankrelay.io import load_corpus
    from rankrelay.retrieval.corpus import load_queries

    run = read_trec(run_path)
    texts = {d.id: d.text for d in load_corpus(corpus)}
    queries = load_queries(corpus)
    errors = [f"{run_path}: query {qid!r} is not in {corpus}/queries.jsonl" for qid in run if qid not in queries]
    errors += [f"{run_path}: document {doc!r} (query {qid!r}) is not in {corpus}'s corpus"
               for qid, ranking in run.items() for doc, _ in ranking if doc not in texts]
    if errors:
        raise _listed(errors, "unknown id(s)")
    return [QueryGroup(qid, queries[qid], [d for d, _ in ranking], [texts[d] for d, _ in ranking])
            for qid, ranking in run.items()]


# -- reranking -------------------------------------------------------------------------------
def chunk(groups: Sequence[QueryGroup], size: int) -> list[list[QueryGroup]]:
    """``groups`` cut into parts of ``size`` queries, in order."""
    return [list(groups[i:i + size]) for i in range(0, len(groups), size)]


def rerank_part(reranker: Reranker, part: Sequence[QueryGroup], top_n: int | None = None) -> dict[str, list[Any]]:
    """One part's output rows as columns (:data:`COLUMNS`), queries in order, each best first."""
    results = reranker.rerank_batch([(g.query, g.texts) for g in part], top_n=top_n)
    out: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for group, res in zip(part, results):
        for r in res.results:
            out["query_id"].append(group.query_id)
            out["doc_id"].append(group.doc_ids[r.index])
            out["rank"].append(r.rank)
            out["score"].append(r.score)
            out["normalized_score"].append(r.normalized_score)
            out["input_rank"].append(r.index + 1)
            out["backend"].append(res.backend)
    return out


