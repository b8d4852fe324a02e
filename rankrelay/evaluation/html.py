"""``report.html``: the comparison as one self-contained page, rendered from report.json.

Jinja2 renders the template (``templates/report.html.j2``); the figures are Vega-Lite charts built with
Altair, and the Vega/Vega-Lite/vega-embed bundle is inlined from ``vl-convert-python``, so the page needs no
network to be read. Sections: the verdict, metrics with 95 % bootstrap intervals, the significance matrix,
quality against latency, agreement, per-query wins/ties/losses and a per-query drill-down (each backend's top
10 side by side, with grades and first-stage ranks). Tables sort by clicking a column. A report.json of an
older version, or with a backend that failed on every query, still renders and says what is missing.

Example:
    >>> from rankrelay.evaluation.html import bootstrap_interval
    >>> bootstrap_interval([0.5, 0.5, 0.5])
    (0.5, 0.5)
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.errors import InvalidInputError
from rankrelay.evaluation.comparison import BASELINE, REPORT_VERSION, wins_ties_losses

MAIN_METRIC = "ndcg@10"
REFERENCES = ("identity", "random")


def bootstrap_interval(values: Sequence[float], samples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean of ``values`` (seeded, so a report renders the same)."""
    import numpy as np

    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(data, size=(samples, data.size), replace=True).mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)


def pvalue(p: float | None) -> str:
    """A p-value as people read it: ``< 0.001`` below that, else three significant digits."""
    if p is None:
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def _is_reference(name: str) -> bool:
    return name == BASELINE or name.split(":")[0] in REFERENCES


def _significance(report: dict[str, Any], a: str, b: str, metric: str = MAIN_METRIC) -> dict[str, Any] | None:
    for s in report.get("significance", []):
        if s["metric"] == metric and {s["a"], s["b"]} == {a, b}:
            return s
    return None


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """Which backend is best on nDCG@10, by how much over the first stage and the runner-up, whether that
    is significant, and at what latency and cost."""
    metrics = report.get("metrics", {})
    rankers = [n for n in metrics if not _is_reference(n)]
    if not rankers or BASELINE not in metrics:
        return {"best": None}
    ordered = sorted(rankers, key=lambda n: metrics[n].get(MAIN_METRIC, float("-inf")), reverse=True)
    best = ordered[0]
    out: dict[str, Any] = {"best": best, "value": metrics[best][MAIN_METRIC],
                           "over_first": metrics[best][MAIN_METRIC] - metrics[BASELINE][MAIN_METRIC],
                           "first_sig": _significance(report, best, BASELINE),
                           "latency": report.get("latency", {}).get(best, {})}
    if len(ordered) > 1:
        second = ordered[1]
        out.update(second=second, over_second=metrics[best][MAIN_METRIC] - metrics[second][MAIN_METRIC],
                   second_sig=_significance(report, best, second))
    return out


def _charts(report: dict[str, Any], intervals: dict[str, dict[str, tuple[float, float]]]) -> dict[str, Any]:
    """Vega-Lite specs (dicts) of the figures."""
    import altair as alt

    metric_rows = [{"backend": n, "value": v[MAIN_METRIC], "low": intervals[n][MAIN_METRIC][0],
                    "high": intervals[n][MAIN_METRIC][1]}
                   for n, v in report.get("metrics", {}).items() if MAIN_METRIC in v]
    charts: dict[str, Any] = {}
    if metric_rows:
        data = alt.Data(values=metric_rows)
        bars = alt.Chart(data).mark_bar().encode(
            x=alt.X("value:Q", title="nDCG@10"), y=alt.Y("backend:N", sort="-x", title=None))
        rules = alt.Chart(data).mark_rule().encode(x="low:Q", x2="high:Q", y=alt.Y("backend:N", sort="-x"))
        charts["metrics"] = (bars + rules).properties(width=520, height=28 * len(metric_rows)).to_dict()
    pareto = [dict(r) for r in report.get("pareto", []) if r.get("p50_ms") is not None]
    if pareto:
        # a log axis whose domain holds every point (a latency of 0 sits at the smallest one); each label inside
        # the axes: right of its point in the left half, left of it in the right half
        positive = [r["p50_ms"] for r in pareto if r["p50_ms"] > 0] or [1.0]
        low, high = min(positive), max(positive)
        for r in pareto:
            r["x_ms"] = max(r["p50_ms"], low)
            r["label_left"] = high > low and math.log(r["x_ms"] / low) > 0.5 * math.log(high / low)
            r["where"] = "on the Pareto front" if r.get("front") else "dominated"
        points = alt.Chart(alt.Data(values=pareto)).encode(
            x=alt.X("x_ms:Q", title="p50 latency per query (ms, log)",
                    scale=alt.Scale(type="log", domain=[low / 2, high * 2], nice=False),
                    axis=alt.Axis(labelOverlap="greedy", labelSeparation=6, tickCount=6)),
            y=alt.Y(f"{MAIN_METRIC}:Q", title="nDCG@10", scale=alt.Scale(zero=False, padding=12)))
        labels = [points.transform_filter(f"{'' if left else '!'}datum.label_left")
                  .mark_text(dx=-8 if left else 8, align="right" if left else "left").encode(text="backend:N")
                  for left in (False, True)]
        charts["pareto"] = alt.layer(points.mark_point(size=90, filled=True).encode(  # the legend below the axes
            color=alt.Color("where:N", title=None, legend=alt.Legend(orient="bottom"),
                            scale=alt.Scale(domain=["on the Pareto front", "dominated"], range=["#C44E52", "#4C72B0"])),
            tooltip=["backend:N", "p50_ms:Q", f"{MAIN_METRIC}:Q"]), *labels).properties(width=520,
                                                                                        height=300).to_dict()
    return charts


def javascript_bundle() -> str:
    vl_convert = import_optional("vl_convert", extra="eval", feature="the HTML report's charts",
                                 package="vl-convert-python")
    return str(vl_convert.javascript_bundle()).replace("</script", "<\\/script")


def render(report: dict[str, Any]) -> str:
    """The HTML page of a report.json dict."""
    jinja2 = import_optional("jinja2", extra="eval", feature="the HTML report")
    env = jinja2.Environment(loader=jinja2.PackageLoader("rankrelay.evaluation", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    env.filters["pvalue"] = pvalue
    metrics = report.get("metrics", {})
    per_query = report.get("per_query", {})
    intervals = {n: {m: bootstrap_interval(list(per_query.get(n, {}).get(m, {}).values()))
                     for m in v} for n, v in metrics.items()}
    names = [n for n in metrics if n != BASELINE]
    wtl = {n: wins_ties_losses(per_query, n, BASELINE) for n in names
           if MAIN_METRIC in per_query.get(n, {}) and MAIN_METRIC in per_query.get(BASELINE, {})}
    failed_everywhere = [n for n, f in report.get("failures", {}).items() if n not in metrics]
    missing = []
    if report.get("version", 1) < REPORT_VERSION:
        missing.append(f"this report.json is version {report.get('version', 1)}: it has no per-query drill-down "
                       "(run `rankrelay bench` again for one)")
    drill = sorted(report.get("drilldown", []), key=lambda d: -d.get("disagreement", 0.0))
    charts = _charts(report, intervals)
    return env.get_template("report.html.j2").render(
        r=report, metrics=metrics, metric_names=sorted({m for v in metrics.values() for m in v}),
        intervals=intervals, verdict=verdict(report), sig_matrix=_matrix(report, list(metrics)),
        names=list(metrics), wtl=wtl, failed_everywhere=failed_everywhere, missing=missing, drill=drill,
        per_query_rows=_per_query_rows(report, drill),
        drill_json=json.dumps(drill, separators=(",", ":")).replace("</", "<\\/"),
        charts={k: json.dumps(v).replace("</", "<\\/") for k, v in charts.items()},
        bundle=javascript_bundle() if charts else "", baseline=BASELINE, main_metric=MAIN_METRIC)


def _matrix(report: dict[str, Any], names: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(row, column) -> the significance entry on nDCG@10, delta oriented as row minus column."""
    out = {}
    for a in names:
        for b in names:
            s = _significance(report, a, b)
            if a != b and s is not None:
                delta = s["delta"] if s["a"] == a else -s["delta"]
                out[(a, b)] = {"delta": delta, "p": s.get("p_adjusted", s.get("p_value")),
                               "significant": s["significant"]}
    return out


def _per_query_rows(report: dict[str, Any], drill: list[dict[str, Any]]) -> list[dict[str, Any]]:
    per_query = report.get("per_query", {})
    texts = {d["query_id"]: d["query"] for d in drill}
    gaps = {d["query_id"]: d.get("disagreement", 0.0) for d in drill}
    qids = sorted({q for n in per_query for q in per_query[n].get(MAIN_METRIC, {})}, key=natural)
    return [{"qid": q, "query": texts.get(q, ""), "disagreement": gaps.get(q),
             "values": {n: per_query[n].get(MAIN_METRIC, {}).get(q) for n in per_query}} for q in qids]


def natural(text: str) -> list[Any]:
    """A sort key that orders the numbers inside ids by value: q2 before q10.

    Example:
        >>> sorted(["10", "2", "q10", "q9", "1"], key=natural)
        ['1', '2', '10', 'q9', 'q10']
    """
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]


def write_html(report: dict[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Write ``report.html`` into ``folder``."""
    path = Path(folder) / "report.html"
    path.write_text(render(report), encoding="utf-8")
    return path


def read_report(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """report.json of a ``rankrelay bench`` folder; :class:`InvalidInputError` when there is none."""
    path = Path(folder) / "report.json"
    if not path.is_file():
        raise InvalidInputError(f"no report.json in {folder} (write one with 'rankrelay bench --out {folder}')")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InvalidInputError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or "metrics" not in data:
        raise InvalidInputError(f"{path} is not a rankrelay report (no 'metrics')")
    return data
