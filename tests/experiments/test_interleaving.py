"""Team-draft interleaving and multileaving: what is shown, who placed it, and how clicks are credited."""

import random
from collections import Counter

import pytest
from conftest import raises_exactly

from rankrelay.errors import InvalidInputError
from rankrelay.experiments.interleaving import TIE, Interleaved, credit, outcome, team_draft


def test_two_arms_take_turns_and_each_places_its_best_unshown_document():
    a, b = ["a1", "a2", "a3", "s"], ["b1", "s", "b2", "b3"]
    for seed in range(50):
        shown = team_draft([a, b], seed=seed)
        picks = Counter()
        for position, (item, team) in enumerate(zip(shown.order, shown.teams)):
            ranking = (a, b)[team]
            placed = set(shown.order[:position])
            assert item == next(d for d in ranking if d not in placed)  # the arm's best not yet shown
            picks[team] += 1
            assert abs(picks[0] - picks[1]) <= 1  # turns alternate (both arms have 4 to give here)
        assert sorted(shown.order) == sorted(set(a) | set(b))


def test_who_draws_first_is_a_fair_coin_and_the_seed_fixes_it():
    firsts = Counter(team_draft([["x"], ["y"]], seed=s).teams[0] for s in range(400))
    assert 160 < firsts[0] < 240
    assert team_draft([["a", "b"], ["b", "a"]], seed="imp-1") == team_draft([["a", "b"], ["b", "a"]], seed="imp-1")


def test_identical_rankings_show_that_ranking():
    ranking = list(range(10))
    for seed in range(20):
        assert team_draft([ranking, ranking], seed=seed).order == ranking


def test_length_cuts_the_shown_list_and_every_arm_still_gets_its_share():
    shown = team_draft([list(range(20)), list(range(19, -1, -1))], length=6, seed=3)
    assert len(shown.order) == 6
    assert Counter(shown.teams) == {0: 3, 1: 3}


def test_three_arms_multileave_with_each_arm_placing_once_per_round():
    rankings = [["a", "b", "c", "d"], ["d", "c", "b", "a"], ["c", "a", "d", "b"]]
    for seed in range(30):
        shown = team_draft(rankings, length=3, seed=seed)
        assert sorted(shown.teams) == [0, 1, 2] and shown.arms == 3


def test_an_arm_that_runs_out_lets_the_others_fill_the_list():
    shown = team_draft([["a"], ["b", "c", "d"]], seed=0)
    assert sorted(shown.order) == ["a", "b", "c", "d"]
    assert shown.teams.count(0) == 1


def test_clicks_are_credited_to_the_arm_that_placed_the_document():
    shown = Interleaved(order=["x", "y", "z"], teams=[1, 0, 1], arms=2)
    assert credit(shown, [0, 2]) == [0, 2]
    assert credit(shown, []) == [0, 0]
    with raises_exactly(InvalidInputError, "click at position 3 is outside the shown list (0..2)"):
        credit(shown, [3])
    with raises_exactly(InvalidInputError, "click at position -1 is outside the shown list (0..2)"):
        credit(shown, [-1])


@pytest.mark.parametrize(("counts", "expected"), [([2, 1], 0), ([0, 3], 1), ([1, 1], TIE), ([0, 0], TIE),
                                                    ([1, 2, 2], TIE), ([0, 1, 3], 2), ([], TIE), ([1, 0], 0),
                                                    ([0, 1, 0], 1)])
def test_the_outcome_is_the_arm_with_strictly_the_most_clicks(counts, expected):
    assert outcome(counts) == expected


def test_bad_rankings_are_refused():
    with raises_exactly(InvalidInputError, "interleaving needs at least two arms' rankings, got 1"):
        team_draft([["a"]])
    with raises_exactly(InvalidInputError, "arm 0's ranking names an item twice"):
        team_draft([["a", "a"], ["b"]])
    with raises_exactly(InvalidInputError, "length must be at least 0, got -1"):
        team_draft([["a"], ["b"]], length=-1)
    empty = team_draft([["a"], ["b"]], length=0)  # nothing to show is a valid (empty) list
    assert (empty.order, empty.teams) == ([], [])


def test_an_unbiased_user_gives_no_preference_between_identical_arms():
    """Clicking uniformly at random must not favour either arm (the draw is fair)."""
    rng = random.Random(5)
    wins = Counter()
    for seed in range(2000):
        shown = team_draft([list(range(10)), list(range(10))], seed=seed)
        wins[outcome(credit(shown, [rng.randrange(10)]))] += 1
    assert abs(wins[0] - wins[1]) < 200
