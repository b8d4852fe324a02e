"""Evaluation data: a BEIR dataset, first-stage candidates, and TREC run files.

The candidates are built once per (dataset, first stage, depth) and written as a TREC run file;
every backend reranks exactly these lists, which is what makes a comparison fair.

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.trec"
    >>> write_trec(path, {"q1": [("d2", 3.0), ("d1", 1.5)]}, tag="bm25")
    >>> read_trec(path)
    {'q1': [('d2', 3.0), ('d1', 1.5)]}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rankrelay.errors import ConfigError, InvalidInputError
from rankrelay.hashing import file_sha256
from rankrelay.results import Document
from rankrelay.retrieval.base import Retriever
from rankrelay.retrieval.corpus import load_corpus, load_qrels, load_queries

if TYPE_CHECKING:
    from rankrelay.retrieval.dense import DenseRetriever

logger = logging.getLogger(__name__)

Ranking = list[tuple[str, float]]
CANDIDATE_KINDS = ("bm25", "dense", "hybrid")


@dataclass(slots=True)
class BeirDataset:
    """Corpus by id, queries by id, and graded qrels ``{query_id: {doc_id: grade}}``."""

    name: str
    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def judged_queries(self) -> list[str]:
        """Query ids that have relevance judgments, in the queries file's order."""
        return [q for q in self.queries if q in self.qrels]


def load_beir(path: str | os.PathLike[str], split: str = "test", *, judged: bool = True) -> BeirDataset:
    """Read a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``; ``judged=False``: no
    judgments are read, the qrels are empty)."""
    folder = Path(path)
    for part in ("corpus.jsonl", "queries.jsonl", *([f"qrels/{split}.tsv"] if judged else [])):
        if not (folder / part).exists():
            raise InvalidInputError(f"{str(folder)!r} is not a BEIR folder: {part} is missing")
    docs = load_corpus(folder)
    return BeirDataset(folder.name, {str(d.id): d for d in docs}, load_queries(folder),
                       load_qrels(folder, split) if judged else {})


def write_trec(path: Path, run: dict[str, Ranking], tag: str) -> None:
    """A TREC run file: ``qid Q0 docid rank score tag``, best first."""
    with path.open("w", encoding="utf-8") as fh:
        for qid, ranking in run.items():
            for rank, (doc_id, score) in enumerate(ranking, start=1):
                fh.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def read_trec(path: Path) -> dict[str, Ranking]:
    """Read a TREC run file, keeping each query's order by rank."""
    rows: dict[str, list[tuple[int, str, float]]] = {}
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise InvalidInputError(f"{path}:{number}: a TREC run line has 6 fields, got {len(parts)}")
            rows.setdefault(parts[0], []).append((int(parts[3]), parts[2], float(parts[4])))
    return {q: [(d, s) for _, d, s in sorted(r)] for q, r in rows.items()}


def file_checksum(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256 (cache keys of candidate sets)."""
    return file_sha256(path, 16)


def first_stage_retriever(docs: Sequence[Document], kind: str, *, model: str = "all-minilm-l6",
                          device: str = "cpu", dense: DenseRetriever | None = None,
                          ) -> tuple[Retriever, DenseRetriever | None]:
    """The first stage over ``docs``: ``bm25``, ``dense`` or ``hybrid`` (RRF of both); also returns the
    dense retriever (None for ``bm25``) so a caller can reuse it. ``dense`` reuses one already built."""
    from rankrelay.retrieval import BM25Retriever, DenseRetriever, HybridRetriever

    if kind not in CANDIDATE_KINDS:
        raise ConfigError(f"unknown first stage {kind!r}; use {', '.join(CANDIDATE_KINDS)}")
    if dense is None and kind in ("dense", "hybrid"):
        dense = DenseRetriever.build(list(docs), model=model, device=device)
    parts: list[Retriever] = []
    if kind in ("bm25", "hybrid"):
        parts.append(BM25Retriever.build(list(docs)))
    if kind in ("dense", "hybrid") and dense is not None:
        parts.append(dense)
    return (parts[0] if len(parts) == 1 else HybridRetriever(parts)), dense


def rank_queries(retriever: Retriever, queries: dict[str, str], depth: int) -> dict[str, Ranking]:
    """``{query id: [(doc id, score), ...]}``: the retriever's ``depth`` best for each query (id -> text)."""
    ids = list(queries)
    results = retriever.search_batch([queries[q] for q in ids], depth)
    return {q: [(str(r.id), r.score) for r in res.results] for q, res in zip(ids, results)}


def build_candidates(
    dataset: BeirDataset, kind: str, depth: int, query_ids: Sequence[str], model: str = "all-minilm-l6"
) -> dict[str, Ranking]:
    """First-stage candidates for ``query_ids``: ``bm25``, ``dense`` or ``hybrid`` (RRF), ``depth`` each."""
    if kind not in CANDIDATE_KINDS:
        raise ConfigError(f"unknown candidates {kind!r}; use {', '.join(CANDIDATE_KINDS)} or a TREC run file")
    retriever, _ = first_stage_retriever(list(dataset.corpus.values()), kind, model=model)
    return rank_queries(retriever, {q: dataset.queries[q] for q in query_ids}, depth)
