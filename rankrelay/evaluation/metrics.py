"""IR metrics (ranx), paired significance with a multiple-comparison correction, and agreement.

Example:
    >>> from rankrelay.evaluation.metrics import rbo, overlap_at
    >>> round(rbo(["a", "b", "c"], ["a", "b", "c"]), 6), overlap_at(["a", "b"], ["b", "c"], 2)
    (1.0, 0.5)
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

from rankrelay._optional import import_optional

Ranking = list[tuple[str, float]]
#: ranx metric names reported for every run.
METRICS = ("ndcg@10", "mrr@10", "map@100", "recall@10", "recall@100", "precision@5")


def _ranx() -> Any:
    module = import_optional("ranx", extra="eval", feature="the comparison harness")
    warnings.filterwarnings("ignore", message="unsafe cast from uint64 to int64")  # numba, inside ranx
    return module


def to_ranx_run(rankings: dict[str, Ranking], name: str) -> Any:
    """A ranx Run scored by rank (``n - position``), so ties in raw scores cannot reorder it."""
    return _ranx().Run({q: {d: float(len(r) - i) for i, (d, _) in enumerate(r)} for q, r in rankings.items()},
                       name=name)


def evaluate(qrels: dict[str, dict[str, int]], rankings: dict[str, Ranking], name: str = "run",
             metrics: Sequence[str] = METRICS) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean of each metric and its per-query values, over the queries in ``rankings``."""
    ranx = _ranx()
    judged = {q: qrels[q] for q in rankings if q in qrels}
    run = to_ranx_run({q: rankings[q] for q in judged}, name)
    means = ranx.evaluate(ranx.Qrels(judged), run, list(metrics), make_comparable=True)
    means = {m: float(means[m]) for m in metrics} if isinstance(means, dict) else {metrics[0]: float(means)}
    per_query = {m: {q: float(v) for q, v in run.scores[m].items()} for m in metrics}
    return means, per_query


def significance(qrels: dict[str, dict[str, int]], runs: dict[str, dict[str, Ranking]],
                 metrics: Sequence[str] = ("ndcg@10", "mrr@10"), alpha: float = 0.05,
                 permutations: int = 1000) -> list[dict[str, Any]]:
    """Paired randomization (Fisher) tests between every pair of runs (ranx), with Benjamini-Hochberg
    correction (scipy) over all pairs of each metric."""
    from scipy.stats import false_discovery_control

    ranx = _ranx()
    queries = sorted(set.intersection(*(set(r) for r in runs.values())) & set(qrels))
    judged = ranx.Qrels({q: qrels[q] for q in queries})
    ranx_runs = [to_ranx_run({q: r[q] for q in queries}, name) for name, r in runs.items()]
    report = ranx.compare(judged, ranx_runs, list(metrics), stat_test="fisher", n_permutations=permutations,
                          max_p=alpha, random_seed=42)
    means = report.results
    rows = []
    for metric in metrics:
        pairs = list(itertools.combinations(runs, 2))
        p_values = [report.comparisons[frozenset(p)][metric]["p_value"] for p in pairs]
        adjusted = false_discovery_control(p_values) if p_values else []
        for (a, b), p, q in zip(pairs, p_values, adjusted):
            delta = means[a][metric] - means[b][metric]
            rows.append({"a": a, "b": b, "metric": metric, "delta": delta, "p_value": float(p),
                         "p_adjusted": float(q), "significant": bool(q < alpha),
                         "winner": (a if delta > 0 else b) if q < alpha else None})
    return rows


def rbo(a: Sequence[str], b: Sequence[str], p: float = 0.9) -> float:
    """Rank-biased overlap (Webber et al. 2010), extrapolated to the lists' common depth."""
    depth = min(len(a), len(b))
    if depth == 0:
        return 1.0 if len(a) == len(b) else 0.0
    seen_a: set[str] = set()
    seen_b: set[str] = set()
    overlap = 0
    total = 0.0
    for d in range(1, depth + 1):
        x, y = a[d - 1], b[d - 1]
        if x == y:
            overlap += 1
        else:
            overlap += (x in seen_b) + (y in seen_a)
        seen_a.add(x)
        seen_b.add(y)
        total += (overlap / d) * p ** (d - 1)
    return (1 - p) * total + (overlap / depth) * p**depth


def overlap_at(a: Sequence[str], b: Sequence[str], k: int) -> float:
    """Share of the top ``k`` the two rankings have in common."""
    return len(set(a[:k]) & set(b[:k])) / k if k else 1.0


def kendall_tau(a: Sequence[str], b: Sequence[str]) -> float:
    """Kendall tau-b between two orderings of the same items (scipy)."""
    from scipy.stats import kendalltau

    common = [d for d in a if d in set(b)]
    if len(common) < 2:
        return 1.0
    position = {d: i for i, d in enumerate(b)}
    tau = kendalltau(range(len(common)), [position[d] for d in common]).statistic
    return 1.0 if math.isnan(tau) else float(tau)


def agreement(runs: dict[str, dict[str, Ranking]]) -> list[dict[str, Any]]:
    """Per pair of runs, averaged over their common queries: Kendall tau, top-10 overlap, RBO (p=0.9)."""
    rows = []
    for a, b in itertools.combinations(runs, 2):
        queries = sorted(set(runs[a]) & set(runs[b]))
        if not queries:
            continue
        ids = {q: ([d for d, _ in runs[a][q]], [d for d, _ in runs[b][q]]) for q in queries}
        rows.append({
            "a": a, "b": b, "queries": len(queries),
            "kendall_tau": sum(kendall_tau(*ids[q]) for q in queries) / len(queries),
            "overlap@10": sum(overlap_at(*ids[q], 10) for q in queries) / len(queries),
            "rbo": sum(rbo(*ids[q]) for q in queries) / len(queries),
        })
    return rows
