"""report.html from report.json: the sections, an older or partly failed report, `rankrelay report`."""

import json
import re

import pytest
from conftest import N_QUERIES
from test_compare import backends  # noqa: F401  (a fixture)
from typer.testing import CliRunner

pytest.importorskip("jinja2", reason="the eval extra is not installed")
pytest.importorskip("vl_convert", reason="the eval extra is not installed")

from rankrelay.cli import app  # noqa: E402
from rankrelay.evaluation import compare  # noqa: E402
from rankrelay.evaluation.html import bootstrap_interval, render, verdict  # noqa: E402


@pytest.fixture
def report_dir(beir, backends, tmp_path):  # noqa: F811
    out = tmp_path / "report"
    compare(beir, str(tmp_path / "cands.trec"), ["identity", "random", "oracle", "anti"], out=out, progress=False)
    return out


def test_bench_writes_a_self_contained_page(report_dir):
    html = (report_dir / "report.html").read_text()
    assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', html)  # nothing fetched at view time
    assert "vegaEmbed" in html and 'id="chart-pareto"' in html and 'id="chart-metrics"' in html
    for section in ("verdict", "metrics", "significance", "latency", "agreement", "wins", "drilldown"):
        assert f'<section id="{section}">' in html
    assert re.search(r'<strong id="best">oracle</strong> is best on nDCG@10 \(1\.0000\)', html)
    assert html.count('<details id="q-') == N_QUERIES
    data = json.loads((report_dir / "report.json").read_text())
    first = data["drilldown"][0]
    assert set(first["top"]) == {"first-stage", "random", "oracle", "anti"}  # identity is the first stage
    assert all(len(ids) == 10 for ids in first["top"].values())
    relevant = [d for d, g in first["grade"].items() if g == 2]
    assert first["top"]["oracle"][0] in relevant and first["first_rank"][first["top"]["oracle"][0]] == 8


def test_verdict_and_intervals(report_dir):
    data = json.loads((report_dir / "report.json").read_text())
    v = verdict(data)
    assert v["best"] == "oracle" and v["second"] == "anti" and v["first_sig"]["significant"]
    low, high = bootstrap_interval([0.0, 1.0] * 20)
    assert 0.3 < low < 0.5 < high < 0.7 and bootstrap_interval([0.0, 1.0] * 20) == (low, high)


def test_an_older_report_and_a_backend_that_failed_everywhere_still_render(report_dir):
    data = json.loads((report_dir / "report.json").read_text())
    for key in ("version", "drilldown", "normalization"):
        data.pop(key)
    data["failures"] = {"cohere:rerank-v3.5": {q: "AuthenticationError: invalid api token" for q in "abc"}}
    html = render(data)
    assert "version 1: it has no per-query drill-down" in html and "No drill-down in this report.json" in html
    assert "cohere:rerank-v3.5 failed on every query (3 failures" in html
    assert '<strong id="best">oracle</strong>' in html


def test_report_command_renders_again_and_says_when_there_is_nothing(report_dir, tmp_path):
    (report_dir / "report.html").unlink()
    (report_dir / "report.md").unlink()
    out = CliRunner().invoke(app, ["report", str(report_dir)])
    assert out.exit_code == 0, out.output
    assert (report_dir / "report.html").exists() and "# Reranker comparison" in (report_dir / "report.md").read_text()
    out = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert out.exit_code == 2 and "no report.json in" in out.output


def test_the_most_different_queries_are_judged_on_the_backends_that_rerank_not_on_random(report_dir):
    from rankrelay.evaluation.metrics import rbo

    data = json.loads((report_dir / "report.json").read_text())
    for d in data["drilldown"]:
        real = ["first-stage", "oracle", "anti"]
        expected = max(1.0 - rbo(d["top"][a], d["top"][b]) for i, a in enumerate(real) for b in real[i + 1:])
        assert d["disagreement"] == pytest.approx(expected)


def test_query_ids_sort_by_number_and_long_queries_are_cut_at_a_word(report_dir):
    data = json.loads((report_dir / "report.json").read_text())
    long_query = "why " * 30 + "stall"
    data["drilldown"][0]["query"] = long_query
    html = render(data)
    table = html[html.index('id="queries-table"'):]
    shown = re.findall(r'class="drill-link">([^<]+)</a>', table)
    assert shown == [f"q{i}" for i in range(N_QUERIES)]  # q2 before q10
    cut = re.search(r'drill-link">' + data["drilldown"][0]["query_id"] + r'</a></td><td class="text">([^<]*)<',
                    html).group(1)
    assert cut.endswith("…") and cut[:-1].strip().split() == ["why"] * len(cut[:-1].split()) and len(cut) <= 81


def test_local_backends_are_not_given_a_cost_of_zero_dollars(report_dir):
    html = (report_dir / "report.html").read_text()
    assert "$0.0000" not in html and "no billed API calls (local compute)" in html


def test_the_latency_chart_holds_every_point_and_keeps_each_label_inside_its_axes():
    from rankrelay.evaluation.html import _charts

    pareto = [{"backend": "identity", "p50_ms": 0.0, "ndcg@10": 0.5, "front": True},
              {"backend": "fast", "p50_ms": 0.04, "ndcg@10": 0.55, "front": True},
              {"backend": "a-long-model-name", "p50_ms": 90.0, "ndcg@10": 0.6, "front": True},
              {"backend": "slow", "p50_ms": 120.0, "ndcg@10": 0.52, "front": False}]
    spec = _charts({"pareto": pareto}, {})["pareto"]
    values = spec["datasets"][next(iter(spec["datasets"]))] if "datasets" in spec else spec["data"]["values"]
    x = spec["layer"][0]["encoding"]["x"]
    low, high = x["scale"]["domain"]
    assert x["scale"]["type"] == "log" and low <= 0.02 and high >= 240.0  # every point inside, with room
    assert x["axis"] == {"labelOverlap": "greedy", "labelSeparation": 6, "tickCount": 6}  # no label over another
    by_name = {v["backend"]: v for v in values}
    assert by_name["identity"]["x_ms"] == 0.04  # a latency of 0 on a log axis: at the smallest one
    assert [n for n, v in by_name.items() if v["label_left"]] == ["a-long-model-name", "slow"]  # the right half
    assert {v["where"] for v in values} == {"on the Pareto front", "dominated"}
    texts = [layer for layer in spec["layer"][1:] if layer["mark"]["type"] == "text"]
    assert sorted((t["mark"]["align"], t["mark"]["dx"]) for t in texts) == [("left", 8), ("right", -8)]


def test_the_png_chart_holds_every_point_and_puts_its_legend_below():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rankrelay.evaluation.plots import _log_share, _room_for_labels

    fig, ax = plt.subplots()
    ax.set_xscale("log")
    _room_for_labels(ax, [0.0, 0.04, 90.0], [0.5, 0.6, 0.55])
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x0 < 0.04 and x1 > 90.0 and y0 < 0.5 and y1 > 0.6
    plt.close(fig)
    assert _log_share(0.04, [0.04, 4.0, 400.0]) == 0.0 and _log_share(4.0, [0.04, 4.0, 400.0]) == pytest.approx(0.5)
    assert _log_share(400.0, [0.04, 400.0]) == pytest.approx(1.0) and _log_share(0.0, [0.04, 400.0]) == 0.0


def test_a_significance_entry_without_an_adjusted_p_shows_its_own_p():
    from rankrelay.evaluation.html import _matrix

    entry = {"a": "x", "b": "y", "metric": "ndcg@10", "delta": 0.1, "p_value": 0.03, "significant": True}
    matrix = _matrix({"significance": [entry]}, ["x", "y"])
    assert matrix[("x", "y")] == {"delta": 0.1, "p": 0.03, "significant": True}
    assert matrix[("y", "x")]["delta"] == -0.1
    adjusted = _matrix({"significance": [{**entry, "p_adjusted": 0.06}]}, ["x", "y"])
    assert adjusted[("x", "y")]["p"] == 0.06


def test_the_markdown_report_names_each_latency_column(report_dir):
    text = (report_dir / "report.md").read_text()
    assert ("| backend | p50 ms | p95 ms | p99 ms | docs/s | outside model calls | compute s | billed | $ est. | "
            "failures |") in text


def test_the_png_latency_chart_s_legend_says_what_each_mark_is(beir, backends, tmp_path, monkeypatch):  # noqa: F811
    import matplotlib.figure

    said = []
    legend = matplotlib.figure.Figure.legend

    def spy(self, *args, **kwargs):
        said.append(list(args[1]) if len(args) > 1 else [])
        return legend(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "legend", spy)
    compare(beir, str(tmp_path / "cands.trec"), ["identity", "random", "oracle"], out=tmp_path / "r", progress=False)
    assert said and set(said[-1]) <= {"on the Pareto front", "dominated", "Pareto front"}  # each mark once
    assert len(said[-1]) == len(set(said[-1])) and "on the Pareto front" in said[-1]


def test_the_markdown_reports_calibration_under_its_column_names():
    from rankrelay.evaluation.comparison import Comparison
    from rankrelay.evaluation.metrics import METRICS
    from rankrelay.evaluation.report import markdown

    metrics = dict.fromkeys(METRICS, 0.5)
    per_query = {n: {m: {"q1": 0.5} for m in METRICS} for n in ("first-stage", "b")}
    c = Comparison.from_report({"metrics": {"first-stage": metrics, "b": metrics}, "per_query": per_query,
                                "normalization": {"b": "sigmoid"}, "latency": {"b": {}},
                                "calibration": {"b": {"ece": 0.12, "mean_probability": 0.4, "relevant_share": 0.3,
                                                      "pairs": 50}}})
    md = markdown(c)
    assert "| backend | normalization | ECE | mean probability | relevant share | pairs |" in md
    assert "| b | sigmoid | 0.120 | 0.400 | 0.300 | 50 |" in md
