"""What a comparison of rerankers holds: each backend's run and the measured :class:`Comparison`.

Shared by the harness (:mod:`rankrelay.evaluation.compare`), which fills them, and the report
writers (:mod:`~rankrelay.evaluation.report`, :mod:`~rankrelay.evaluation.plots`), which read them.

Example:
    >>> from rankrelay.evaluation.comparison import wins_ties_losses
    >>> per_query = {"a": {"ndcg@10": {"q1": 0.5, "q2": 0.25}}, "b": {"ndcg@10": {"q1": 0.25, "q2": 0.25}}}
    >>> wins_ties_losses(per_query, "a", "b")
    {'wins': 1, 'ties': 1, 'losses': 0, 'median_delta': 0.125}
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rankrelay.evaluation.data import Ranking

BASELINE = "first-stage"
PROBABILITY_NORMALIZATIONS = ("sigmoid", "calibrated")


@dataclass(slots=True)
class BackendRun:
    """One backend's rankings of the candidates, with per-query latency and failures."""

    name: str
    rankings: dict[str, Ranking] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    model_ms: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    served_by: dict[str, str] = field(default_factory=dict)
    billed: dict[str, float] = field(default_factory=dict)
    normalization: str = ""
    #: normalized scores per query (in ranking order) when they are probabilities (sigmoid, calibrated)
    probabilities: dict[str, list[float]] = field(default_factory=dict)
    #: score-cache hits and misses over the run (local models)
    cache: dict[str, int] = field(default_factory=dict)
    #: documents per query a model reordered, where a cascade or a budget left the rest (query -> n)
    reranked: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class Comparison:
    """Everything the harness measured (``compare`` writes it as report.json, report.md and plots)."""

    dataset: str
    candidates: str
    depth: int
    queries: list[str]
    runs: dict[str, BackendRun]
    baseline: dict[str, Ranking]
    metrics: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, dict[str, float]]]
    significance: list[dict[str, Any]]
    agreement: list[dict[str, Any]]
    latency: dict[str, dict[str, float]]
    disagreements: list[dict[str, Any]]
    warnings: list[str]
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)
    pareto: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "candidates": self.candidates, "depth": self.depth,
            "queries": len(self.queries), "metrics": self.metrics, "significance": self.significance,
            "agreement": self.agreement, "latency": self.latency, "calibration": self.calibration,
            "disagreements": self.disagreements, "pareto": self.pareto,
            "warnings": self.warnings,
            "failures": {n: r.failures for n, r in self.runs.items() if r.failures},
            "served_by": {n: dict(Counter(r.served_by.values())) for n, r in self.runs.items()},
            "billed_units": {n: r.billed for n, r in self.runs.items() if r.billed},
            "per_query": self.per_query,
        }


def wins_ties_losses(per_query: dict[str, dict[str, dict[str, float]]], a: str, b: str,
                     metric: str = "ndcg@10", eps: float = 1e-9) -> dict[str, float]:
    """How many queries ``a`` wins, ties and loses against ``b`` on ``metric``."""
    qa, qb = per_query[a][metric], per_query[b][metric]
    deltas = [qa[q] - qb[q] for q in qa if q in qb]
    return {"wins": sum(d > eps for d in deltas), "ties": sum(abs(d) <= eps for d in deltas),
            "losses": sum(d < -eps for d in deltas), "median_delta": statistics.median(deltas) if deltas else 0.0}
