"""Training lists from relevance judgments: positives, hard negatives from a first stage, random negatives,
title-to-abstract pseudo-queries, and teacher scores from the first stage's bi-encoder.

Each :class:`TrainList` is one query with its documents and a label per document. With a teacher the label
is ``teacher_score / temperature + boost * grade`` (listwise distillation that the judgments move up);
without one it is the grade.

Example:
    >>> from rankrelay.training.examples import listwise_labels
    >>> listwise_labels([0.8, 0.5], [2, 0], temperature=0.1, boost=1.0)
    [10.0, 5.0]
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rankrelay.errors import ConfigError, InvalidInputError
from rankrelay.evaluation.data import (
    CANDIDATE_KINDS,
    BeirDataset,
    Ranking,
    first_stage_retriever,
    rank_queries,
    read_trec,
    write_trec,
)

if TYPE_CHECKING:
    from rankrelay.retrieval.dense import DenseRetriever

logger = logging.getLogger(__name__)
NEGATIVE_SOURCES = CANDIDATE_KINDS


@dataclass(slots=True)
class TrainList:
    """One training query: its documents (positives first) and a label per document."""

    qid: str
    query: str
    ids: list[str]
    docs: list[str]
    labels: list[float]
    grades: list[int]
    pseudo: bool = False


def listwise_labels(teacher: Sequence[float], grades: Sequence[int], temperature: float,
                    boost: float) -> list[float]:
    """``teacher / temperature + boost * grade`` per document."""
    return [round(t / temperature + boost * g, 6) for t, g in zip(teacher, grades)]


def first_stage(dataset: BeirDataset, queries: dict[str, str], kind: str, depth: int,
                model: str = "all-minilm-l6", device: str = "auto",
                dense: DenseRetriever | None = None) -> tuple[dict[str, Ranking], DenseRetriever | None]:
    """Candidates for ``queries`` (id -> text) from ``dense``, ``bm25`` or ``hybrid`` retrieval (the harness's
    first stage). Returns the rankings and the dense retriever (built once, reused for teacher scores), or None.
    """
    if kind not in NEGATIVE_SOURCES:
        raise ConfigError(f"negatives come from {', '.join(NEGATIVE_SOURCES)}, got {kind!r}")
    retriever, dense = first_stage_retriever(list(dataset.corpus.values()), kind, model=model, device=device,
                                             dense=dense)
    return rank_queries(retriever, queries, depth), dense


def cached_first_stage(cache: Path, dataset: BeirDataset, queries: dict[str, str], kind: str, depth: int,
                       model: str = "all-minilm-l6", device: str = "auto",
                       ) -> tuple[dict[str, Ranking], DenseRetriever | None]:
    """:func:`first_stage`, kept in the TREC run file ``cache``: a run that holds every query is read back (a
    resumed job does not retrieve again; no dense retriever is built then)."""
    if cache.exists():
        try:
            run = read_trec(cache)
        except (InvalidInputError, ValueError) as exc:  # a run stopped while writing it, or a damaged file
            logger.warning("%s cannot be read (%s); the candidates are retrieved again", cache, exc)
            run = {}
        if set(queries) <= set(run):
            return run, None
    run, dense = first_stage(dataset, queries, kind, depth, model=model, device=device)
    write_trec(cache, run, tag=kind)
    return run, dense


def teacher_scores(dense: DenseRetriever, queries: dict[str, str], depth: int) -> dict[str, dict[str, float]]:
    """The bi-encoder's score of each query's top ``depth`` documents (``{qid: {doc_id: score}}``)."""
    ids = list(queries)
    results = dense.search_batch([queries[q] for q in ids], depth)
    return {q: {str(r.id): r.score for r in res.results} for q, res in zip(ids, results)}


def pseudo_queries(dataset: BeirDataset, limit: int | None, seed: int) -> dict[str, tuple[str, str]]:
    """Title -> abstract pairs: ``{"title:<doc id>": (title, doc id)}`` for documents with a title."""
    titled = [(d.id, d.metadata.get("title")) for d in dataset.corpus.values()]
    items = [(str(i), t.strip()) for i, t in titled if isinstance(t, str) and len(t.split()) >= 3]
    random.Random(seed).shuffle(items)
    if limit is not None:
        items = items[:limit]
    return {f"title:{doc_id}": (title, doc_id) for doc_id, title in items}


def body(dataset: BeirDataset, doc_id: str) -> str:
    """A document's text without its title (pseudo-queries are titles; the answer must not repeat them)."""
    doc = dataset.corpus[doc_id]
    title = doc.metadata.get("title")
    if isinstance(title, str) and title and doc.text.startswith(title):
        return doc.text[len(title):].strip() or doc.text
    return doc.text


def build_lists(
    dataset: BeirDataset,
    query_ids: Sequence[str],
    candidates: dict[str, Ranking],
    *,
    negatives: int,
    random_share: float,
    skip_top: int,
    max_positives: int,
    seed: int,
    teacher: dict[str, dict[str, float]] | None = None,
    temperature: float = 0.05,
    boost: float = 1.0,
    pseudo: dict[str, tuple[str, str]] | None = None,
) -> list[TrainList]:
    """One :class:`TrainList` per judged query (and per pseudo-query).

    Hard negatives are the first stage's candidates below rank ``skip_top`` that are not judged relevant;
    ``random_share`` of the ``negatives`` are random corpus documents instead.
    """
    if negatives < 1:
        raise ConfigError("negatives per query must be >= 1")
    if not 0.0 <= random_share <= 1.0:
        raise ConfigError(f"random_share must be in [0, 1], got {random_share}")
    rng = random.Random(seed)
    corpus_ids = list(dataset.corpus)
    out: list[TrainList] = []
    for qid in query_ids:
        judged = dataset.qrels.get(qid, {})
        positives = [d for d, g in sorted(judged.items(), key=lambda x: (-x[1], x[0])) if g > 0 and d in dataset.corpus]
        if not positives:
            continue
        positives = positives[:max_positives]
        docs = _negatives(candidates.get(qid, []), set(judged), positives, negatives, random_share, skip_top,
                          corpus_ids, rng)
        ids = positives + docs
        grades = [judged.get(d, 0) for d in ids]
        out.append(_make(qid, dataset.queries[qid], ids, [dataset.corpus[d].text for d in ids], grades, teacher,
                         temperature, boost, False))
    for pid, (title, doc_id) in (pseudo or {}).items():
        docs = _negatives(candidates.get(pid, []), {doc_id}, [doc_id], negatives, random_share, skip_top,
                          corpus_ids, rng)
        ids = [doc_id] + docs
        out.append(_make(pid, title, ids, [body(dataset, d) for d in ids], [1] + [0] * len(docs), teacher,
                         temperature, boost, True))
    if not out:
        raise InvalidInputError("no training query has a judged relevant document in the corpus")
    return out


def _negatives(ranking: Ranking, judged: set[str], positives: list[str], n: int, random_share: float,
               skip_top: int, corpus_ids: list[str], rng: random.Random) -> list[str]:
    n_random = round(n * random_share)
    hard = [d for d, _ in ranking[skip_top:] if d not in judged][: n - n_random]
    taken = set(hard) | set(positives) | judged
    pool = [d for d in corpus_ids if d not in taken]
    extra = rng.sample(pool, min(len(pool), n - len(hard)))
    return hard + extra


def _make(qid: str, query: str, ids: list[str], texts: list[str], grades: list[int],
          teacher: dict[str, dict[str, float]] | None, temperature: float, boost: float, pseudo: bool) -> TrainList:
    if teacher is None:
        labels = [float(g) for g in grades]
    else:
        scores = teacher.get(qid, {})
        floor = min(scores.values()) if scores else 0.0  # unseen by the teacher's top: no better than its last
        labels = listwise_labels([scores.get(d, floor) for d in ids], grades, temperature, boost)
    return TrainList(qid, query, ids, texts, labels, grades, pseudo)
