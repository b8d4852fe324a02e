"""Running totals: what each impression and feedback adds, taken away by retention, and the summary they give,
which must be the analysis of the impressions themselves."""

import random

import pytest

from rankrelay.experiments.analysis import analyse_interleaved, analyse_split
from rankrelay.experiments.interleaving import Interleaved, credit
from rankrelay.experiments.store import Impression
from rankrelay.experiments.totals import (
    feedback_totals,
    impression_totals,
    merge,
    row_totals,
    summary,
    totals_of,
)


def random_impressions(method: str, arms: int, n: int, seed: int = 3) -> list[Impression]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(0, 6)
        teams = [rng.randrange(arms)] * length if method == "split" else [rng.randrange(arms) for _ in range(length)]
        clicked = None if rng.random() < 0.3 else rng.sample(range(length), rng.randint(0, length))
        out.append(Impression(f"i{i}", "e", method, [f"arm{a}" for a in range(arms)], teams,
                              excluded=rng.random() < 0.1, clicked=clicked))
    return out


def rows(impressions):
    return [(i.method, len(i.arms), i.teams, i.excluded, i.clicked) for i in impressions]


@pytest.mark.parametrize(("method", "arms"), [("team-draft", 2), ("multileave", 3), ("multileave", 4)])
def test_the_summary_of_totals_is_the_analysis_of_the_impressions_themselves(method, arms):
    impressions = random_impressions(method, arms, 400)
    names = [f"arm{a}" for a in range(arms)]
    got = summary("e", names, method, totals_of(rows(impressions)))
    kept = [i for i in impressions if not i.excluded]
    credits = [credit(Interleaved(list(range(len(i.teams))), i.teams, arms), i.clicked) for i in kept
               if i.clicked is not None]
    expected = [p.to_dict() for p in analyse_interleaved(names, credits)]
    assert got["preferences"] == expected
    assert (got["impressions"], got["excluded"]) == (400, sum(i.excluded for i in impressions))
    assert got["with_feedback"] == sum(i.clicked is not None for i in kept)
    assert got["with_clicks"] == sum(bool(i.clicked) for i in kept)


def test_a_split_summary_is_welchs_test_on_each_arms_first_click():
    impressions = random_impressions("split", 2, 600)
    got = summary("e", ["a", "b"], "split", totals_of(rows(impressions)))["split"]
    per_arm = [[], []]
    for i in impressions:
        if not i.excluded and i.clicked is not None and i.teams:
            per_arm[i.teams[0]].append(i.clicked)
    expected = analyse_split(["a", "b"], per_arm).to_dict()
    for mine, theirs in zip(got["arms"], expected["arms"]):
        assert mine["arm"] == theirs["arm"] and mine["impressions"] == theirs["impressions"]
        assert [mine[k] for k in ("click_rate", "clicks", "reciprocal_rank")] == pytest.approx(
            [theirs[k] for k in ("click_rate", "clicks", "reciprocal_rank")])
    for key in ("difference", "low", "high", "p_value"):
        assert got[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12)
    assert got["winner"] == expected["winner"]


def test_what_an_impression_and_its_feedback_add_and_retention_takes_away():
    assert impression_totals(True) == {"impressions": 1.0, "excluded": 1.0}
    added = feedback_totals("team-draft", 2, [0, 1, 0, 1], [0, 2, 3])  # arm 0 credited twice, arm 1 once
    assert added == {"with_feedback": 1.0, "with_clicks": 1.0, "pair:0:1:win": 1.0}
    assert feedback_totals("team-draft", 2, [0, 1], [0, 1])["pair:0:1:tie"] == 1.0
    assert "pair:0:1:tie" not in feedback_totals("team-draft", 2, [0, 1], [])  # no click is not a tie
    assert feedback_totals("team-draft", 2, [0, 1], [1])["pair:0:1:loss"] == 1.0
    split = feedback_totals("split", 2, [1, 1, 1], [2])
    assert split == {"with_feedback": 1.0, "with_clicks": 1.0, "split:1:n": 1.0, "split:1:clicked": 1.0,
                     "split:1:clicks": 1.0, "split:1:rr": pytest.approx(1 / 3), "split:1:rr2": pytest.approx(1 / 9)}
    whole = row_totals("team-draft", 2, [0, 1], False, [0])
    assert merge(whole, whole, sign=-1.0) == {k: -2 * v for k, v in whole.items()}
    assert row_totals("team-draft", 2, [0, 1], True, [0]) == {"impressions": 1.0, "excluded": 1.0}


def test_an_experiment_without_impressions_summarises_to_no_preference():
    empty = summary("e", ["a", "b"], "team-draft", {})
    assert (empty["impressions"], empty["preferences"][0]["winner"], empty["preferences"][0]["p_value"]) == (0, None,
                                                                                                              1.0)
    assert summary("e", ["a", "b"], "split", {})["split"]["p_value"] == 1.0


def test_a_summary_names_its_experiment_method_and_arms():
    got = summary("ranker-test", ["a", "b"], "team-draft", impression_totals(False))
    assert {k: got[k] for k in ("experiment", "method", "arms", "impressions")} == {
        "experiment": "ranker-test", "method": "team-draft", "arms": ["a", "b"], "impressions": 1}
    assert set(got) == {"experiment", "method", "arms", "impressions", "excluded", "with_feedback", "with_clicks",
                        "preferences"}


def test_a_split_of_other_than_two_arms_has_no_test_to_report():
    assert summary("e", ["a", "b", "c"], "split", {"split:0:n": 3.0})["split"] is None
