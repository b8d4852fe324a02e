"""Pages that need no network (the Vega bundle inlined, as in ``bench``'s report): ``simulation.html``, the two
curves (team-draft and split) of a simulation, and ``experiments.html``, the decision of each online experiment."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rankrelay.evaluation.html import javascript_bundle
from rankrelay.experiments.simulate import Simulation
from rankrelay.io import write_text_atomic


def simulation_chart(result: Simulation) -> dict[str, Any]:
    """A Vega-Lite line chart: share of right decisions against impressions (log scale), one line a method."""
    import altair as alt

    rows = [{"impressions": r.impressions, "method": label, "right": getattr(r, key)}
            for r in result.rows for key, label in (("team_draft", "team-draft"), ("split", "split"))]
    line = alt.Chart(alt.Data(values=rows)).mark_line(point=True).encode(
        x=alt.X("impressions:Q", scale=alt.Scale(type="log"), title="impressions"),
        y=alt.Y("right:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title="trials right"),
        color=alt.Color("method:N", legend=alt.Legend(orient="bottom")))
    goal = alt.Chart(alt.Data(values=[{"y": 0.95}])).mark_rule(strokeDash=[4, 4], color="#888").encode(y="y:Q")
    return dict((line + goal).properties(width=640, height=320).to_dict())


def write_simulation(result: Simulation, folder: str | os.PathLike[str]) -> Path:
    """Write ``simulation.json`` and ``simulation.html`` into ``folder``; returns the page's path."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "simulation.json", json.dumps(result.to_dict(), indent=2))
    page = _render("simulation.html.j2",
        s=result, needed={m: result.needed(m) for m in ("team_draft", "split")}, last=result.rows[-1].impressions,
        spec=json.dumps(simulation_chart(result)).replace("</", "<\\/"), bundle=javascript_bundle())
    path = out / "simulation.html"
    write_text_atomic(path, page)
    return path


def preference_chart(preferences: list[dict[str, Any]]) -> dict[str, Any]:
    """Each pair's preference for its first arm with its 95 % interval, against the 0.5 of no preference."""
    import altair as alt

    rows = [{"pair": f"{p['a']} vs {p['b']}", "share": p["share"], "low": p["low"], "high": p["high"]}
            for p in preferences]
    data = alt.Data(values=rows)
    axis = alt.X("share:Q", scale=alt.Scale(domain=[0, 1]), title="preference for the first arm")
    points = alt.Chart(data).mark_point(filled=True, size=80).encode(x=axis, y=alt.Y("pair:N", title=None))
    rules = alt.Chart(data).mark_rule().encode(x="low:Q", x2="high:Q", y="pair:N")
    even = alt.Chart(alt.Data(values=[{"x": 0.5}])).mark_rule(strokeDash=[4, 4], color="#888").encode(x="x:Q")
    return dict((rules + points + even).properties(width=560, height=30 * len(rows) + 20).to_dict())


def write_experiments(reports: list[dict[str, Any]], folder: str | os.PathLike[str]) -> Path:
    """Write ``experiments.json`` and ``experiments.html`` (one section per experiment); returns the page."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "experiments.json", json.dumps(reports, indent=2))
    charts = {str(i): json.dumps(preference_chart(r["preferences"])).replace("</", "<\\/")
              for i, r in enumerate(reports, start=1) if r.get("preferences")}
    path = out / "experiments.html"
    write_text_atomic(path, _render("experiments.html.j2", reports=reports, charts=charts,
                                    bundle=javascript_bundle() if charts else ""))
    return path


def _render(template: str, **context: Any) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("rankrelay.experiments", "templates"), autoescape=True)
    return env.get_template(template).render(**context)
