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
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rankrelay.billing import add_units
from rankrelay.evaluation.data import Ranking
from rankrelay.rerankers.base import Reranker
from rankrelay.results import DocumentLike

BASELINE = "first-stage"
#: report.json's layout version (2: ``normalization`` and ``drilldown``)
REPORT_VERSION = 2
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

    def record(self, qid: str, outcome: dict[str, Any]) -> None:
        """Add one query's :func:`score_query` outcome (a failure is kept apart, out of every metric)."""
        if outcome.get("error"):
            self.failures[qid] = outcome["error"]
            return
        self.latency_ms[qid] = outcome["latency_ms"]
        self.model_ms[qid] = outcome["model_ms"]
        self.rankings[qid] = [(d, s) for d, s in outcome["ranking"]]
        self.served_by[qid] = outcome["backend"]
        self.normalization = outcome["normalization"]
        if outcome["normalization"] in PROBABILITY_NORMALIZATIONS:
            self.probabilities[qid] = outcome["normalized"]
        add_units(self.billed, outcome["billed"])
        add_units(self.cache, outcome["cache"])
        if outcome["reranked"] is not None:
            self.reranked[qid] = outcome["reranked"]


def score_query(reranker: Reranker, query: str, docs: list[DocumentLike],
                budget_ms: float | None = None) -> dict[str, Any]:
    """Rerank one query's candidates and time it: what :meth:`BackendRun.record` keeps (JSON-ready, so it
    travels from a Ray actor too). A backend error becomes the outcome's ``error``."""
    kwargs: dict[str, Any] = {"budget_ms": budget_ms} if budget_ms else {}
    start = time.perf_counter()
    try:
        res = reranker.rerank(query, docs, **kwargs)
    except Exception as exc:  # a typed backend error, or a user's reranker's own: this query failed, not the run
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "error": None, "latency_ms": (time.perf_counter() - start) * 1000.0, "model_ms": res.timings.get("model", 0.0),
        "ranking": [(str(r.id), r.score) for r in res.results], "normalized": [r.normalized_score for r in res.results],
        "backend": res.backend, "normalization": res.normalization,
        "billed": dict(res.info.get("billed_units", {})), "cache": dict(res.info.get("score_cache") or {}),
        "reranked": res.info.get("reranked"),
    }


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
    #: per query: its text, each backend's top 10, the first-stage rank and grade of those documents, their
    #: text (a snippet) and the query's nDCG@10 per backend (the HTML report's drill-down)
    drilldown: list[dict[str, Any]] = field(default_factory=list)
    #: backends left out because they cannot run here (weights not on this machine, a missing extra): name -> why
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """report.json (``version`` 2 added ``normalization`` and ``drilldown``)."""
        return {
            "version": REPORT_VERSION,
            "dataset": self.dataset, "candidates": self.candidates, "depth": self.depth,
            "queries": len(self.queries), "metrics": self.metrics, "significance": self.significance,
            "agreement": self.agreement, "latency": self.latency, "calibration": self.calibration,
            "disagreements": self.disagreements, "pareto": self.pareto,
            "warnings": self.warnings,
            "failures": {n: r.failures for n, r in self.runs.items() if r.failures},
            "served_by": {n: dict(Counter(r.served_by.values())) for n, r in self.runs.items()},
            "billed_units": {n: r.billed for n, r in self.runs.items() if r.billed},
            "per_query": self.per_query,
            "normalization": {n: r.normalization for n, r in self.runs.items()},
            "drilldown": self.drilldown,
            "skipped": self.skipped,
        }

    @classmethod
    def from_report(cls, data: dict[str, Any]) -> Comparison:
        """A comparison back from report.json, enough to write the reports again (the rankings are not in it;
        a report.json of an older version lacks what it did not hold: those sections say so)."""
        names = [n for n in data.get("metrics", {}) if n != BASELINE] + list(data.get("failures", {}))
        runs = {n: BackendRun(n, failures=data.get("failures", {}).get(n, {}),
                              billed=data.get("billed_units", {}).get(n, {}),
                              normalization=data.get("normalization", {}).get(n, ""))
                for n in dict.fromkeys(names)}
        count = data.get("queries", 0)
        return cls(dataset=data.get("dataset", "?"), candidates=data.get("candidates", "?"),
                   depth=data.get("depth", 0), queries=[""] * count if isinstance(count, int) else list(count),
                   runs=runs, baseline={}, metrics=data.get("metrics", {}), per_query=data.get("per_query", {}),
                   significance=data.get("significance", []), agreement=data.get("agreement", []),
                   latency=data.get("latency", {}), disagreements=data.get("disagreements", []),
                   warnings=data.get("warnings", []), calibration=data.get("calibration", {}),
                   pareto=data.get("pareto", []), drilldown=data.get("drilldown", []),
                   skipped=data.get("skipped", {}))


def wins_ties_losses(per_query: dict[str, dict[str, dict[str, float]]], a: str, b: str,
                     metric: str = "ndcg@10", eps: float = 1e-9) -> dict[str, float]:
    """How many queries ``a`` wins, ties and loses against ``b`` on ``metric``."""
    qa, qb = per_query[a][metric], per_query[b][metric]
    deltas = [qa[q] - qb[q] for q in qa if q in qb]
    return {"wins": sum(d > eps for d in deltas), "ties": sum(abs(d) <= eps for d in deltas),
            "losses": sum(d < -eps for d in deltas), "median_delta": statistics.median(deltas) if deltas else 0.0}
