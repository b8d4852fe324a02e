"""``rankrelay distill``: a local cross-encoder taught to rank like a teacher (a hosted API, an LLM reranker, a
big local model, a chain), measured against it on held-out queries.

The teacher scores each training query's first-stage candidates once (:class:`RecordedTeacher`: resumable,
counted, priced, bounded); the student learns the teacher's order with sentence-transformers' ``ListNetLoss``
(labels: the teacher's scores standardized per query, over ``temperature``) or ``MarginMSELoss`` (the
teacher's margins between its best candidate and the others), stopping early when its agreement with the
teacher on a dev share of the training queries stops improving. The held-out queries (the dataset's own with
pseudo or captured training queries) then measure the student before and after against the teacher, and
against the judgments where the folder has them (the harness's ``report.html``).

Example (a BEIR folder; writes the model, teacher.jsonl, distill_report.json, README.md and report/)::

    from rankrelay.training import distill
    report = distill("path/to/cranfield", "models/distilled", teacher="bi-encoder:all-minilm-l6",
                     student="all-minilm-l6", queries="pseudo:600")
    report["agreement"]["student"]["overlap@10"], report["agreement"]["before"]["overlap@10"]
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rankrelay.errors import InvalidInputError, RankRelayError
from rankrelay.evaluation.data import BeirDataset, Ranking
from rankrelay.hashing import unit_interval
from rankrelay.progress import steps
from rankrelay.training.distill_options import DistillOptions
from rankrelay.training.examples import cached_first_stage
from rankrelay.training.queries import query_set
from rankrelay.training.teacher import Answer, RecordedTeacher, TeacherBudgetSpent, teacher_ranking

logger = logging.getLogger(__name__)
TEACHER_FILE = "teacher.jsonl"


def _dataset(corpus: str | os.PathLike[str], split: str) -> BeirDataset:
    from rankrelay.evaluation.data import load_beir

    folder = Path(corpus)
    data = load_beir(folder, split, judged=(folder / "qrels" / f"{split}.tsv").exists())
    if not any(d.text.strip() for d in data.corpus.values()):
        raise InvalidInputError(f"{folder}/corpus.jsonl has no document with text: nothing to distil on")
    return data


def _candidates(out: Path, data: BeirDataset, queries: dict[str, str], opts: DistillOptions) -> dict[str, Ranking]:
    """First-stage candidates of every query, kept in ``out/candidates.trec`` (a resumed run reuses them)."""
    return cached_first_stage(out / "candidates.trec", data, queries, opts.candidates, opts.depth,
                              model=opts.retriever_model, device=opts.device)[0]


def ask_teacher(teacher: RecordedTeacher, data: BeirDataset, queries: dict[str, str],
                candidates: dict[str, Ranking], progress: bool = True) -> tuple[dict[str, Answer], dict[str, str]]:
    """The teacher's answer for each query's candidates; a query it fails on (or answers in part) is left out
    and kept with why; at a spent budget the rest are left unasked."""
    answers: dict[str, Answer] = {}
    failed: dict[str, str] = {}
    todo = [q for q in queries if candidates.get(q)]
    for qid in steps(todo, "teacher", total=len(todo)) if progress else todo:
        docs = [data.corpus[d] for d, _ in candidates[qid]]
        try:
            answer, _ = teacher.score(queries[qid], docs)
        except TeacherBudgetSpent as exc:
            logger.warning("%s; %d queries left unasked", exc, len(todo) - len(answers) - len(failed))
            break
        except RankRelayError as exc:
            failed[qid] = f"{type(exc).__name__}: {exc}"
            logger.warning("the teacher failed on query %s (%s); it is left out", qid, exc)
            continue
        if any(s != s for s in answer.scores):  # NaN: a document the teacher did not score
            failed[qid] = "the teacher's answer left documents unscored"
            continue
        answers[qid] = answer
    return answers, failed


def _labels(scores: list[float], temperature: float) -> list[float] | None:
    """The teacher's scores standardized over the query's candidates, over ``temperature``; None when flat."""
    spread = statistics.pstdev(scores)
    if spread == 0:
        return None
    mean = statistics.fmean(scores)
    return [round((s - mean) / spread / temperature, 6) for s in scores]


def training_rows(data: BeirDataset, queries: dict[str, str], candidates: dict[str, Ranking],
                  answers: dict[str, Answer], opts: DistillOptions) -> dict[str, list[Any]]:
    """One row per query: the teacher's best half of ``list_size`` and a seeded sample of the rest, with labels
    (``listnet``), or its best candidate against the others with their scores (``margin-mse``)."""
    rng = random.Random(opts.seed)
    rows: dict[str, list[Any]] = {"query": [], "docs": [], "labels": []}
    for qid, answer in answers.items():
        ids = [d for d, _ in candidates[qid]]
        labels = _labels(answer.scores, opts.temperature)
        if labels is None:
            continue
        order = sorted(range(len(ids)), key=lambda i: -labels[i])
        head = order[: opts.list_size // 2]
        rest = order[len(head):]
        picked = head + sorted(rng.sample(rest, min(len(rest), opts.list_size - len(head))),
                               key=lambda i: -labels[i])
        rows["query"].append(queries[qid])
        rows["docs"].append([data.corpus[ids[i]].text for i in picked])
        rows["labels"].append([labels[i] for i in picked])
    if not rows["query"]:
        raise InvalidInputError("the teacher scored no training query (every one failed, was flat or unasked)")
    if opts.loss in ("listnet", "lambda"):
        return rows
    width = min(len(d) for d in rows["docs"])
    margin: dict[str, list[Any]] = {"query": rows["query"], "positive": [d[0] for d in rows["docs"]]}
    for k in range(1, width):
        margin[f"negative_{k}"] = [d[k] for d in rows["docs"]]
    margin["label"] = [lab[:width] for lab in rows["labels"]]
    return margin


def _spec_of(teacher: Any, recorded: RecordedTeacher) -> Any:
    """What names the teacher in a configuration: the spec or chain given; a Reranker's ``name:model``."""
    if isinstance(teacher, str) or (isinstance(teacher, (list, tuple)) and all(isinstance(s, str) for s in teacher)):
        return teacher
    return recorded.summary()["teacher"]


def distill(corpus: str | os.PathLike[str], out: str | os.PathLike[str], *, teacher: Any, student: str,
            clock: Callable[[], float] = time.perf_counter, **options: Any) -> dict[str, Any]:
    """Teach ``student`` to rank ``corpus``'s candidates as ``teacher`` does; returns the report (also
    ``out/distill_report.json``). The model in ``out`` loads with ``load_reranker("cross-encoder:" + out)``.

    ``teacher``: a spec, a chain (list) or a Reranker; ``student``: see :mod:`rankrelay.training.student`.
    Bad input (a corpus without text, a student that cannot be trained, ``max_cost_usd`` on an unpriced
    teacher) is refused before any teacher call. ``clock`` times training against ``max_minutes``.
    """
    from rankrelay.rerankers.registry import load_reranker
    from rankrelay.training.distill_run import evaluate_held_out, train_student, write_outputs
    from rankrelay.training.student import load_student, student_kind

    opts = DistillOptions(**options)
    opts.check()
    student_kind(student)
    started = time.perf_counter()
    out = Path(out)
    data = _dataset(corpus, opts.qrels_split)
    qs = query_set(opts.queries, data, seed=opts.seed)
    # the student is loaded before the teacher is paid: weights that are not here fail now
    student_model = load_student(student, max_length=opts.max_length, device=opts.device, seed=opts.seed)
    out.mkdir(parents=True, exist_ok=True)
    loaded = teacher if hasattr(teacher, "rerank") else load_reranker(teacher)
    recorded = RecordedTeacher(loaded, out / TEACHER_FILE, max_calls=opts.max_teacher_calls,
                               max_cost_usd=opts.max_cost_usd)
    try:
        candidates = _candidates(out, data, {**qs.train, **qs.held_out}, opts)
        dev = dict(list((q, t) for q, t in qs.train.items()
                        if unit_interval(f"dev:{opts.seed}:{q}") < opts.dev_share)[: opts.max_dev])
        train = {q: t for q, t in qs.train.items() if q not in dev}
        answers, failed = ask_teacher(recorded, data, qs.train, candidates, opts.progress)
        rows = training_rows(data, train, candidates, {q: a for q, a in answers.items() if q in train}, opts)
        dev_teacher = {q: teacher_ranking(a, [d for d, _ in candidates[q]]) for q, a in answers.items() if q in dev}
        prepared = time.perf_counter()
        trained = train_student(out, student_model, rows, data, dev, dev_teacher, candidates, opts, clock)
        held_answers, held_failed = ask_teacher(recorded, data, qs.held_out, candidates, opts.progress)
        held_teacher = {q: teacher_ranking(a, [d for d, _ in candidates[q]]) for q, a in held_answers.items()}
        evaluation = evaluate_held_out(out, data, held_teacher, candidates, recorded, trained, opts)
    finally:
        if loaded is not teacher:  # a caller's reranker is the caller's to close
            recorded.close()
    report = {
        "options": asdict(opts), "teacher": recorded.summary(), "teacher_spec": _spec_of(teacher, recorded),
        "student": {"spec": student, **trained.info},
        "queries": {"source": qs.source, "train": len(train), "dev": len(dev), "held_out": len(qs.held_out),
                    "teacher_failed": len(failed) + len(held_failed),
                    "unasked": len(qs.train) - len(answers) - len(failed),
                    "held_out_unasked": len(qs.held_out) - len(held_answers) - len(held_failed),
                    "lists": len(rows["query"])},
        "failed": {**failed, **held_failed}, "dev_ids": sorted(dev), **evaluation,
        "timings": {"prepare_s": prepared - started, **trained.timings, "total_s": time.perf_counter() - started},
        "history": [h for h in trained.history if "loss" in h or "eval_dev_teacher_ndcg@10" in h],
    }
    write_outputs(out, report)
    shutil.rmtree(out / ".student-before", ignore_errors=True)
    return report


__all__ = ["DistillOptions", "ask_teacher", "distill", "training_rows"]
