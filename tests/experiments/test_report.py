"""The experiment pages: the charts' Vega-Lite specs (what a reader sees) and the files written beside them."""

import json

import pytest

pytest.importorskip("altair", reason="the eval extra is not installed")

from rankrelay.experiments.report import (  # noqa: E402
    javascript_bundle,
    preference_chart,
    simulation_chart,
    write_experiments,
    write_simulation,
)
from rankrelay.experiments.simulate import Simulation, SimulationRow  # noqa: E402

PREFERENCES = [{"a": "x", "b": "y", "share": 0.7, "low": 0.6, "high": 0.8},
               {"a": "x", "b": "z", "share": 0.4, "low": 0.3, "high": 0.5}]


def shown(spec):
    """The spec without what altair adds on its own (its schema URL and default view size)."""
    return {k: v for k, v in spec.items() if k not in ("$schema", "config")}


def test_the_preference_chart_shows_each_pairs_share_its_interval_and_the_line_of_no_preference():
    assert shown(preference_chart(PREFERENCES)) == {
        "data": {"values": [{"pair": "x vs y", "share": 0.7, "low": 0.6, "high": 0.8},
                            {"pair": "x vs z", "share": 0.4, "low": 0.3, "high": 0.5}]},
        "layer": [
            {"mark": {"type": "rule"},  # the 95 % interval, low to high
             "encoding": {"x": {"field": "low", "type": "quantitative"}, "x2": {"field": "high"},
                          "y": {"field": "pair", "type": "nominal"}}},
            {"mark": {"type": "point", "filled": True, "size": 80},  # the observed share
             "encoding": {"x": {"field": "share", "scale": {"domain": [0, 1]}, "title": "preference for the first arm",
                                "type": "quantitative"},
                          "y": {"field": "pair", "title": None, "type": "nominal"}}},
            {"data": {"values": [{"x": 0.5}]},  # no preference
             "mark": {"type": "rule", "color": "#888", "strokeDash": [4, 4]},
             "encoding": {"x": {"field": "x", "type": "quantitative"}}},
        ],
        "height": 80, "width": 560,  # 30 px a pair
    }
    assert preference_chart(PREFERENCES[:1])["height"] == 50


def simulation():
    rows = [SimulationRow(100, 0.8, 0.55, 0.5, 0.1), SimulationRow(1000, 0.97, 0.7, 0.9, 0.3)]
    return Simulation(["good", "bad"], "good", {"good": 0.6, "bad": 0.4}, "cascade/navigational", 50, rows)


def test_the_simulation_chart_draws_each_methods_share_of_right_decisions_against_impressions():
    spec = shown(simulation_chart(simulation()))
    line, goal = spec["layer"]
    assert line["data"]["values"] == [
        {"impressions": 100, "method": "team-draft", "right": 0.8},
        {"impressions": 100, "method": "split", "right": 0.55},
        {"impressions": 1000, "method": "team-draft", "right": 0.97},
        {"impressions": 1000, "method": "split", "right": 0.7}]
    assert line["mark"] == {"type": "line", "point": True}
    assert line["encoding"] == {
        "x": {"field": "impressions", "scale": {"type": "log"}, "title": "impressions", "type": "quantitative"},
        "y": {"axis": {"format": "%"}, "field": "right", "scale": {"domain": [0, 1]}, "title": "trials right",
              "type": "quantitative"},
        "color": {"field": "method", "legend": {"orient": "bottom"}, "type": "nominal"}}
    assert goal == {"data": {"values": [{"y": 0.95}]},  # the 95 % a method must reach
                    "mark": {"type": "rule", "color": "#888", "strokeDash": [4, 4]},
                    "encoding": {"y": {"field": "y", "type": "quantitative"}}}
    assert (spec["width"], spec["height"]) == (640, 320)


def test_the_simulation_page_and_its_json_are_written_and_say_what_each_method_needed(tmp_path):
    import dataclasses

    sim = dataclasses.replace(simulation(), rows=[*simulation().rows, SimulationRow(5000, 0.99, 0.9, 0.95, 0.6)])
    page = write_simulation(sim, tmp_path / "new" / "folder")
    assert page == tmp_path / "new" / "folder" / "simulation.html"
    data = json.loads((page.parent / "simulation.json").read_text())
    assert data == sim.to_dict() and data["needed_95"] == {"team_draft": 1000, "split": None}
    html = page.read_text()
    assert "Interleaving against a split test: good vs bad" in html and "vegaEmbed" in html
    assert json.dumps(simulation_chart(sim)) in html and javascript_bundle() in html
    assert "good has the higher nDCG@10 (good 0.6000, bad 0.4000)." in html
    assert "Team-draft picked it in 95 % of 50 trials at 1000 impressions;\nthe split test at more than 5000 " \
           "impressions." in html  # the split never got there within the last row's impressions
    assert html.count("<tr><td>") == 3 and "<td>100</td><td>80.0 %</td><td>55.0 %</td>" in html
    again = write_simulation(sim, tmp_path / "new" / "folder")  # into the same folder: replaced
    assert again.read_text() == html


def test_an_arm_named_like_markup_is_shown_as_text_on_the_simulation_page(tmp_path):
    import dataclasses

    sim = dataclasses.replace(simulation(), arms=["</script><b>", "bad"], better="</script><b>",
                              ndcg={"</script><b>": 0.6, "bad": 0.4})
    html = write_simulation(sim, tmp_path).read_text()
    assert "</script><b>" not in html and "&lt;/script&gt;&lt;b&gt; has the higher nDCG@10" in html


def test_the_experiments_page_charts_only_experiments_with_preferences_and_escapes_what_arms_are_named(tmp_path):
    reports = [{"name": "ab", "method": "team-draft", "arms": ["x", "</script><b>"], "impressions": 3,
                "preferences": [{"a": "x", "b": "</script><b>", "share": 0.7, "low": 0.6, "high": 0.8,
                                 "wins": 7, "losses": 3, "winner": "x", "significant": False, "p_value": 0.3}]},
               {"name": "quiet", "method": "team-draft", "arms": ["x", "y"], "impressions": 0, "preferences": []}]
    page = write_experiments(reports, tmp_path / "out" / "new")
    assert page == tmp_path / "out" / "new" / "experiments.html"
    assert write_experiments(reports, tmp_path / "out" / "new") == page  # an existing folder: written again
    assert json.loads((page.parent / "experiments.json").read_text()) == reports
    html = page.read_text()
    assert "</script><b>" not in html  # an arm's name cannot end the page's script or add markup
    assert json.dumps(preference_chart(reports[0]["preferences"])).replace("</", "<\\/") in html
    assert html.count("vegaEmbed(") == 1  # one chart: the experiment without preferences has none
    empty = write_experiments([reports[1]], tmp_path / "empty").read_text()
    assert "vegaEmbed(" not in empty and len(empty) < len(html) // 10  # no chart: no bundle inlined either
    assert "<script>" not in empty


def test_each_experiments_chart_is_drawn_in_its_own_section(tmp_path):
    import re

    with_preferences = {"method": "team-draft", "arms": ["x", "y"], "impressions": 3, "preferences": [
        {"a": "x", "b": "y", "share": 0.7, "low": 0.6, "high": 0.8, "wins": 7, "losses": 3, "ties": 0, "winner": "x",
         "significant": False, "p_value": 0.3, "test": "sign"}]}
    reports = [{"name": "quiet", "method": "team-draft", "arms": ["x", "y"], "impressions": 0, "preferences": []},
               {"name": "first", **with_preferences}, {"name": "second", **with_preferences}]
    html = write_experiments(reports, tmp_path).read_text()
    targets = re.findall(r'vegaEmbed\("#(chart-\d+)"', html)
    assert targets == ["chart-2", "chart-3"]  # the sections' places (the first experiment has no chart)
    spec = json.dumps(preference_chart(with_preferences["preferences"])).replace("</", "<\\/")
    assert html.count(spec) == 2
    assert all(f'<div id="{t}"></div>' in html for t in targets)
