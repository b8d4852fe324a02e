"""``report.md``: the comparison's tables in Markdown.

Example:
    >>> from rankrelay.evaluation.report import table
    >>> print(table(["a", "b"], [[1, 2.5]]))
    | a | b |
    |---|---|
    | 1 | 2.500 |
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rankrelay.evaluation.comparison import BASELINE, Comparison, wins_ties_losses
from rankrelay.evaluation.metrics import METRICS


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], optional: Sequence[str] = ()) -> str:
    """A Markdown table; a column named in ``optional`` is left out when none of its cells holds anything."""
    empty = {i for i, name in enumerate(header) if name in optional and all(row[i] in ("", None) for row in rows)}
    header = [h for i, h in enumerate(header) if i not in empty]
    rows = [[v for i, v in enumerate(row) if i not in empty] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(c: Comparison) -> str:
    """The whole report."""
    sig = {(s["a"], s["b"], s["metric"]): s for s in c.significance}

    def mark(name: str, metric: str) -> str:
        s = sig.get((name, BASELINE, metric)) or sig.get((BASELINE, name, metric))
        if name == BASELINE or s is None or not s["significant"]:
            return ""
        return " ▲" if s["winner"] == name else " ▼"

    parts = [f"# Reranker comparison: {c.dataset}",
             f"{len(c.queries)} queries, {c.candidates} candidates (depth {c.depth}); every backend reranked the "
             "same candidates (candidates.trec). ▲/▼: significantly better/worse than the first stage "
             "(paired randomization test, Benjamini-Hochberg adjusted p < 0.05)."]
    if c.warnings:
        parts.append("**Warnings:** " + "; ".join(c.warnings))
    parts.append("## Metrics\n" + table(
        ["backend", *METRICS],
        [[n, *[f"{c.metrics[n][m]:.4f}{mark(n, m) if m in ('ndcg@10', 'mrr@10') else ''}" for m in METRICS]]
         for n in c.metrics] + [[n, f"not compared: {why}", *[""] * (len(METRICS) - 1)]
                                for n, why in c.skipped.items()]))
    parts.append("## Significance (all pairs)\n" + table(
        ["a", "b", "metric", "delta", "p", "p (BH)", "significant"],
        [[s["a"], s["b"], s["metric"], s["delta"], s["p_value"], s["p_adjusted"], "yes" if s["significant"] else ""]
         for s in c.significance]))
    names = [n for n in c.metrics if n != BASELINE]
    parts.append("## Per-query nDCG@10 against the first stage\n" + table(
        ["backend", "wins", "ties", "losses", "median delta"],
        [[n, *wins_ties_losses(c.per_query, n, BASELINE).values()] for n in names]))
    parts.append("## Agreement (same candidates)\n" + table(
        ["a", "b", "Kendall tau", "top-10 overlap", "RBO p=0.9"],
        [[a["a"], a["b"], a["kendall_tau"], a["overlap@10"], a["rbo"]] for a in c.agreement]))
    parts.append("## Latency and cost per query\n" + table(
        ["backend", "p50 ms", "p95 ms", "p99 ms", "docs/s", "outside model calls", "compute s", "billed", "$ est.",
         "failures"],
        [[n, *(c.latency[n].get(k, 0.0) for k in ("p50_ms", "p95_ms", "p99_ms", "docs_per_s")),
          f"{c.latency[n].get('outside_model_share', 0.0):.1%}", c.latency[n].get("compute_s", 0.0),
          c.runs[n].billed or "", f"{c.latency[n].get('cost_usd', 0.0):.4f}", len(c.runs[n].failures)]
         for n in names]))
    if c.pareto:
        parts.append("## Quality against latency\n"
                     "Fastest first; **front**: no other backend is both at least as fast and at least as good. "
                     "reranked: documents per query a model reordered (a cascade's keep, or what a budget allowed)."
                     "\n\n" + table(
                         ["backend", "p50 ms", "nDCG@10", "front", "reranked / query", "score-cache hits"],
                         [[r["backend"], r["p50_ms"], f"{r['ndcg@10']:.4f}", "**yes**" if r["front"] else "",
                           "" if r["reranked_mean"] is None else f"{r['reranked_mean']:.1f}",
                           "" if r["cache_hit_rate"] is None else f"{r['cache_hit_rate']:.0%}"]
                          for r in c.pareto], optional=("reranked / query", "score-cache hits")))
    if c.calibration:
        parts.append("## Calibration (normalized scores as P(relevant))\n" + table(
            ["backend", "normalization", "ECE", "mean probability", "relevant share", "pairs"],
            [[n, c.runs[n].normalization, v["ece"], v["mean_probability"], v["relevant_share"], v["pairs"]]
             for n, v in c.calibration.items()]))
    parts.append("## Figures\n![metrics](metrics.png) ![per-query deltas](deltas.png) "
                 "![quality against latency, Pareto front](latency_quality.png)")
    if c.disagreements:
        lines = ["## Where rankings differ most"]
        for d in c.disagreements:
            lines.append(f"### {d['query_id']}: {d['query']}  (1 - RBO = {d['disagreement']:.2f})")
            for name, top in d["top3"].items():
                lines.append(f"- **{name}** (nDCG@10 {d['ndcg@10'][name]:.3f}): " + "; ".join(
                    f"`{t['id']}` [grade {t['grade']}] {t['text'][:80]}" for t in top))
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
