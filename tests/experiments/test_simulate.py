"""Simulation: team-draft and a split test replayed with simulated users on judged rankings."""

import json

import pytest
from conftest import raises_exactly
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


class Recording:
    """A real click model that keeps what each impression showed it: the grades of the listed documents."""

    def __init__(self, model):
        self.model, self.kind, self.user, self.shown = model, model.kind, model.user, []

    def clicks(self, grades, top, rng):
        self.shown.append((list(grades), top))
        return self.model.clicks(grades, top, rng)


def test_a_simulation_is_seeded():
    args = ({"good": GOOD, "worse": WORSE}, QRELS, {"good": 0.9, "worse": 0.7})
    first, second = Recording(click_model("pbm")), Recording(click_model("pbm"))
    assert simulate(*args, first, [20], trials=10, seed=3) == simulate(*args, second, [20], trials=10, seed=3)
    assert first.shown == second.shown  # the same interleavings, impression by impression


# judged 3 and 2, never 1: an unjudged document read as anything but 0 would show in the grades a user sees
GRADED = {q: {f"{q}-rel": 3, f"{q}-n0": 2} for q in QRELS}


def test_each_impression_shows_one_team_draft_list_and_one_split_arms_list_with_their_grades():
    user = Recording(click_model("cascade", "navigational"))
    simulate({"good": GOOD, "worse": WORSE}, GRADED, {"good": 0.9, "worse": 0.7}, user, [3, 7], trials=5, length=6,
             seed=2)
    assert len(user.shown) == 5 * 7 * 2 and {top for _, top in user.shown} == {3}
    team_draft, split = user.shown[0::2], user.shown[1::2]
    assert all(len(grades) == 6 and set(grades) <= {0, 2, 3} for grades, _ in team_draft)
    assert all(len(grades) == 6 and set(grades) <= {0, 2, 3} for grades, _ in split)
    assert sum(max(g) for g, _ in team_draft) > 0 and sum(max(g) for g, _ in split) > 0


def test_the_split_arms_shares_grow_to_certainty_and_one_impression_decides_nothing_significantly():
    result = simulate({"good": GOOD, "worse": WORSE}, QRELS, {"good": 0.9, "worse": 0.7},
                      click_model("cascade", "navigational"), [1, 5, 400], trials=40, seed=1)
    one, five, many = result.rows
    assert one.team_draft_significant == one.split_significant == 0.0  # one impression: never p < 0.05
    assert five.team_draft_significant < five.team_draft  # right is not yet significant
    assert many.split == many.team_draft == 1.0 and 0.5 < many.split_significant <= 1.0
    assert result.to_dict()["click_model"] == "cascade/navigational"


def test_the_defaults_are_200_trials_of_10_documents_from_seed_0_and_a_query_one_arm_lacks_is_left_out():
    user = Recording(click_model())
    longer = {q: [*docs, f"{q}-x", f"{q}-y"] for q, docs in WORSE.items()}  # 12 documents: 10 are shown
    partial = {q: docs for q, docs in GOOD.items() if q != "q0"}  # 'good' never ranked q0
    args = ({"good": partial, "worse": longer}, QRELS, {"good": 0.9, "worse": 0.7})
    result = simulate(*args, user, [1])
    assert result == simulate(*args, click_model(), [1], trials=200, length=10, seed=0) and result.trials == 200
    assert len(user.shown) == 400 and {len(grades) for grades, _ in user.shown} == {10}


def test_needed_is_the_first_row_at_or_over_the_share():
    from rankrelay.experiments.simulate import Simulation, SimulationRow

    rows = [SimulationRow(10, 0.9, 0.5, 0.5, 0.1), SimulationRow(20, 0.95, 0.6, 0.9, 0.2)]
    sim = Simulation(["a", "b"], "a", {"a": 0.6, "b": 0.5}, "cascade/navigational", 10, rows)
    assert (sim.needed("team_draft"), sim.needed("split"), sim.needed("split", 0.6)) == (20, None, 20)


@pytest.mark.parametrize(("rankings", "ndcg", "impressions", "message"), [
    ({"a": GOOD}, {"a": 1.0}, [10], "a simulation compares two arms, got 1: a"),
    ({"a": GOOD, "b": WORSE, "c": WORSE}, {"a": 1.0}, [10], "a simulation compares two arms, got 3: a, b, c"),
    ({"a": GOOD, "b": WORSE}, {"a": 0.5, "b": 0.5}, [10],
     "a and b have the same nDCG@10 (0.5000): no decision could be right"),
    ({"a": GOOD, "b": WORSE}, {"a": 0.9, "b": 0.5}, [0], "impressions and trials must be positive"),
    ({"a": {"x": ["d"]}, "b": {"y": ["d"]}}, {"a": 0.9, "b": 0.5}, [10], "no judged query is ranked by both arms"),
])
def test_a_simulation_that_cannot_decide_is_refused(rankings, ndcg, impressions, message):
    with raises_exactly(ConfigError, message):
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


def test_queries_judged_with_no_grades_are_simulated_without_clicks():
    result = simulate({"good": GOOD, "worse": WORSE}, {q: {} for q in QRELS}, {"good": 0.9, "worse": 0.7},
                      click_model("cascade", "perfect"), [5], trials=4)
    assert result.rows[0].team_draft == result.rows[0].split == 0.0  # no click: no decision, never right
