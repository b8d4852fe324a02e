"""report.html from report.json: the sections, an older or partly failed report, `rankrelay report`."""

import json
import re

import pytest
from test_compare import N_QUERIES, backends, beir  # noqa: F401  (fixtures)
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
    assert set(first["top"]) == {"first-stage", "identity", "random", "oracle", "anti"}
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
