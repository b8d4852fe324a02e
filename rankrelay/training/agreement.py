"""How closely a student ranks like its teacher, per query and on average: top-10 overlap, Kendall tau over the
candidates, and nDCG@10 with the teacher's scores (min-max per query) as graded labels.

Example:
    >>> teacher = {"q": [("a", 3.0), ("b", 2.0), ("c", 1.0)]}
    >>> rows = agreement_with(teacher, {"q": [("a", 0.9), ("c", 0.5), ("b", 0.1)]})
    >>> rows["overlap@10"], round(rows["kendall_tau"], 3), round(rows["teacher_ndcg@10"], 3)
    (1.0, 0.333, 0.95)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rankrelay.evaluation.metrics import kendall_tau

Ranking = list[tuple[str, float]]
AGREEMENT = ("overlap@10", "kendall_tau", "teacher_ndcg@10")


def teacher_ndcg(teacher: Ranking, student: Sequence[str], k: int = 10) -> float:
    """nDCG@k of ``student``'s order with the teacher's scores, min-max scaled over the candidates, as gains
    (scikit-learn's ``ndcg_score``, which takes real-valued gains)."""
    from sklearn.metrics import ndcg_score

    scores = dict(teacher)
    low, high = min(scores.values()), max(scores.values())
    if high == low or len(scores) < 2:
        return 1.0
    ids = list(scores)
    gains = [[(scores[d] - low) / (high - low) for d in ids]]
    position = {d: i for i, d in enumerate(student)}
    predicted = [[float(len(ids) - position.get(d, len(ids))) for d in ids]]  # by the student's rank
    return float(ndcg_score(gains, predicted, k=k))


def per_query(teacher: Ranking, student: Ranking) -> dict[str, float]:
    """The three agreement measures of one query."""
    t_ids, s_ids = [d for d, _ in teacher], [d for d, _ in student]
    depth = min(10, len(t_ids))  # a list shorter than 10 is whole in both tops
    overlap = len(set(t_ids[:depth]) & set(s_ids[:depth])) / depth if depth else 1.0
    return {"overlap@10": overlap, "kendall_tau": kendall_tau(t_ids, s_ids),
            "teacher_ndcg@10": teacher_ndcg(teacher, s_ids)}


def agreement_with(teacher: dict[str, Ranking], student: dict[str, Ranking]) -> dict[str, Any]:
    """Mean agreement of ``student`` with ``teacher`` over their common queries (and how many)."""
    queries = [q for q in teacher if q in student and teacher[q]]
    rows = [per_query(teacher[q], student[q]) for q in queries]
    out: dict[str, Any] = {m: (sum(r[m] for r in rows) / len(rows) if rows else None) for m in AGREEMENT}
    out["queries"] = len(rows)
    return out
