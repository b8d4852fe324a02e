"""The report's figures (matplotlib with the Agg backend, so no display is needed; the ``eval`` extra):
metric bars with 95% bootstrap confidence intervals (scipy), per-query deltas of the metric against the
first stage, and quality against p50 latency with the Pareto front marked. Read from a
:class:`~rankrelay.evaluation.comparison.Comparison`; written by :func:`~rankrelay.evaluation.compare.compare`.

Example:
    >>> from rankrelay.evaluation.plots import FIGURES
    >>> FIGURES
    ('metrics.png', 'deltas.png', 'latency_quality.png')
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.evaluation.comparison import BASELINE, Comparison

FIGURES = ("metrics.png", "deltas.png", "latency_quality.png")


def _pyplot() -> Any:
    matplotlib = import_optional("matplotlib", extra="eval", feature="the report's plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confidence_interval(values: list[float], seed: int = 0) -> tuple[float, float]:
    """95% bootstrap (BCa where possible, scipy) interval of the mean."""
    import numpy as np
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    if len(data) < 2 or np.all(data == data[0]):
        return float(data.mean()) if len(data) else 0.0, float(data.mean()) if len(data) else 0.0
    res = bootstrap((data,), np.mean, confidence_level=0.95, n_resamples=2000, random_state=seed,
                    method="percentile")
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def write_plots(c: Comparison, folder: Path, metric: str = "ndcg@10") -> list[Path]:
    """Write :data:`FIGURES` into ``folder``; returns their paths."""
    plt = _pyplot()
    names = list(c.metrics)
    paths = []

    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 4))
    means = [c.metrics[n][metric] for n in names]
    cis = [confidence_interval(list(c.per_query[n][metric].values())) for n in names]
    errors = [[m - lo for m, (lo, _) in zip(means, cis)], [hi - m for m, (_, hi) in zip(means, cis)]]
    ax.bar([_short(n) for n in names], means, yerr=errors, capsize=4, color="#4C72B0")
    ax.set_ylabel(f"{metric} (mean, 95% CI)")
    ax.set_title(f"{c.dataset}: {len(c.queries)} queries, {c.candidates} candidates")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    paths.append(folder / FIGURES[0])
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    base = c.per_query[BASELINE][metric]
    for n in names:
        if n != BASELINE:
            ax.hist([c.per_query[n][metric][q] - base[q] for q in base], bins=21, range=(-1, 1), alpha=0.5,
                    label=_short(n))
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"per-query {metric} minus first stage")
    ax.set_ylabel("queries")
    ax.legend()
    fig.tight_layout()
    paths.append(folder / FIGURES[1])
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    front = [r for r in c.pareto if r["front"]]
    for r in c.pareto:
        ax.scatter(r["p50_ms"], r[metric], s=70 if r["front"] else 40, color="#C44E52" if r["front"] else "#4C72B0",
                   zorder=3, label="on the Pareto front" if r["front"] else "dominated")
    for r in c.pareto:  # a label to the right of its point, or to the left in the right half (inside the axes)
        right_half = _log_share(r["p50_ms"], [p["p50_ms"] for p in c.pareto]) > 0.5
        ax.annotate(_short(r["backend"]), (r["p50_ms"], r[metric]), textcoords="offset points",
                    xytext=(-5, 5) if right_half else (5, 5), ha="right" if right_half else "left", fontsize=8)
    if len(front) > 1:
        ax.plot([r["p50_ms"] for r in front], [r[metric] for r in front], color="#C44E52", linewidth=1,
                linestyle="--", label="Pareto front", zorder=2)
    ax.set_xscale("log")
    _room_for_labels(ax, [r["p50_ms"] for r in c.pareto], [r[metric] for r in c.pareto])
    ax.set_xlabel("p50 latency per query, ms (log)")
    ax.set_ylabel(metric)
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))  # one entry a label
    if handles:  # below the axes: it never hides a point
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles), frameon=False,
                   fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    paths.append(folder / FIGURES[2])
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _log_share(x: float, xs: list[float]) -> float:
    """Where ``x`` lies between the smallest and the largest of ``xs`` on a log scale (0 to 1)."""
    positive = [v for v in xs if v > 0]
    if x <= 0 or len(positive) < 2 or max(positive) == min(positive):
        return 0.0
    return math.log(x / min(positive)) / math.log(max(positive) / min(positive))


def _room_for_labels(ax: Any, xs: list[float], ys: list[float]) -> None:
    """Axis limits that hold every point with room around it (x on a log scale)."""
    positive = [x for x in xs if x > 0] or [1.0]
    low, high = min(positive), max(positive)
    ax.set_xlim(low / 2, high * 2)
    bottom, top = min(ys), max(ys)
    pad = (top - bottom) * 0.12 or 0.05
    ax.set_ylim(bottom - pad, top + pad)


def _short(name: str, width: int = 28) -> str:
    """A backend name short enough for a figure (long model paths keep their end)."""
    return name if len(name) <= width else "…" + name[-(width - 1):]
