"""Simulation: team-draft and a split test replayed with simulated users on judged rankings."""

import json

import pytest
from typer.testing import CliRunner

from rankrelay.cli import app
from rankrelay.errors import ConfigError
from rankrelay.experiments.clicks import click_model
from rankrelay.experiments.simulate import simulate

QRELS = {f"q{i}": {f"q{i}-rel": 4} for i in range(30)}


def ranked(query, at):
    """Nine non-relevant documents and the relevant one at position ``at``."""
    docs = [f"{query}-n{j}" for j in range(9)]
    docs.insert(at, f"{query}-rel")
    return docs


# queries differ in difficulty (the relevant one sits deeper and deeper); the better arm puts it one place higher:
# a split test sees mostly the queries' differences, interleaving compares both arms on each impression
GOOD = {q: ranked(q, i % 9) for i, q in enumerate(QRELS)}
WORSE = {q: ranked(q, i % 9 + 1) for i, q in enumerate(QRELS)}

def test_team_draft_decides_right_with_fewer_impressions_than_a_split():
    result = simulate({"good": GOOD, "worse": WORSE}, QRELS, {"good": 0.9, "worse": 0.7},
                      click_model("cascade", "navigational"), [10, 40, 160], trials=60, seed=1)
    assert result.better == "good" and [r.impressions for r in result.rows] == [10, 40, 160]
    assert result.rows[1].team_draft >= 0.95 > result.rows[1].split
    assert all(r.team_draft >= r.split and r.team_draft_significant >= r.split_significant for r in result.rows)
    assert all(0 <= r.team_draft_significant <= r.team_draft for r in result.rows)
    assert result.needed("team_draft") <= (result.needed("split") or 10**9)
    assert result.to_dict()["needed_95"]["team_draft"] == result.needed("team_draft")


def test_the_truth_decides_what_is_right():
    """Claiming the worse arm is better flips every 'right' share: the simulation checks against the truth."""
    honest = simulate({"good": GOOD, "worse": WORSE}, QRELS, {"good": 0.9, "worse": 0.7},
                      click_model("cascade", "perfect"), [100], trials=20)
    lied = simulate({"good": GOOD, "worse": WORSE}, QRELS, {"good": 0.7, "worse": 0.9},
                    click_model("cascade", "perfect"), [100], trials=20)
    assert honest.rows[0].team_draft == 1.0 and lied.rows[0].team_draft == 0.0


def test_a_simulation_is_seeded():
    args = ({"good": GOOD, "worse": WORSE}, QRELS, {"good": 0.9, "worse": 0.7}, click_model("pbm"), [20])
    assert simulate(*args, trials=10, seed=3) == simulate(*args, trials=10, seed=3)


@pytest.mark.parametrize(("rankings", "ndcg", "impressions", "match"), [
    ({"a": GOOD}, {"a": 1.0}, [10], "two arms"),
    ({"a": GOOD, "b": WORSE}, {"a": 0.5, "b": 0.5}, [10], "same nDCG@10"),
    ({"a": GOOD, "b": WORSE}, {"a": 0.9, "b": 0.5}, [0], "positive"),
    ({"a": {"x": ["d"]}, "b": {"y": ["d"]}}, {"a": 0.9, "b": 0.5}, [10], "no judged query"),
])
def test_a_simulation_that_cannot_decide_is_refused(rankings, ndcg, impressions, match):
    with pytest.raises(ConfigError, match=match):
        simulate(rankings, QRELS, ndcg, click_model(), impressions, trials=1)


def test_the_cli_simulates_on_a_beir_folder_and_writes_the_page(beir, tmp_path):
    out = tmp_path / "sim"
    result = CliRunner().invoke(app, ["experiment", "simulate", str(beir), "--arms", "identity,random",
                                      "--candidates", str(tmp_path / "cands.trec"), "--impressions", "20,80",
                                      "--trials", "8", "--out", str(out), "--json", "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["arms"] == ["identity", "random"] and [r["impressions"] for r in data["rows"]] == [20, 80]
    assert data["better"] == max(data["ndcg@10"], key=data["ndcg@10"].get)
    page = (out / "simulation.html").read_text()
    assert "Interleaving against a split test" in page and "vegaEmbed" in page
    assert json.loads((out / "simulation.json").read_text())["trials"] == 8


@pytest.mark.parametrize(("args", "message"), [
    (["--arms", "identity"], "two reranker specs"),
    (["--arms", "identity,random", "--impressions", "10,x"], "comma-separated whole numbers"),
    (["--arms", "identity,random", "--click-model", "dbn"], "unknown click model"),
])
def test_bad_simulation_options_fail_in_one_line(beir, args, message):
    result = CliRunner().invoke(app, ["experiment", "simulate", str(beir), *args])
    assert result.exit_code == 2 and message in result.output
