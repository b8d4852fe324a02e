"""Simulated users: cascade and position-based click models with the published parameters."""

import random

import pytest

from rankrelay.errors import ConfigError
from rankrelay.experiments.clicks import USERS, click_model


def test_the_published_parameters_are_kept():
    assert USERS["navigational"] == ((0.05, 0.3, 0.5, 0.7, 0.95), (0.2, 0.3, 0.5, 0.7, 0.9))
    assert USERS["informational"] == ((0.4, 0.6, 0.7, 0.8, 0.9), (0.1, 0.2, 0.3, 0.4, 0.5))
    assert USERS["perfect"][1] == (0.0,) * 5


def test_a_perfect_cascade_user_clicks_exactly_the_best_grades():
    model = click_model("cascade", "perfect")
    assert model.clicks([0, 4, 0, 4, 0], top=4, rng=random.Random(1)) == [1, 3]
    assert model.clicks([0, 0, 0], top=4, rng=random.Random(1)) == []


def test_a_cascade_user_stops_after_a_satisfying_click():
    model = click_model("cascade", "navigational")
    rng = random.Random(0)
    lists = [model.clicks([4] * 10, top=4, rng=rng) for _ in range(2000)]
    first_at_top = sum(c[:1] == [0] for c in lists) / len(lists)
    single = sum(len(c) == 1 for c in lists) / len(lists)
    assert first_at_top == pytest.approx(0.95, abs=0.02)  # P(click | best grade)
    assert single == pytest.approx(0.9, abs=0.02)  # after a click on the best grade, P(stop) = 0.9
    assert all(c == sorted(c) for c in lists)


def test_grades_of_any_scale_map_onto_five_levels():
    model = click_model("cascade", "perfect")
    rng = random.Random(0)
    assert model.clicks([1, 0], top=1, rng=rng) == [0]  # binary: relevant is the top level
    assert model.clicks([2], top=2, rng=rng) == [0]
    assert model.clicks([-1, 0], top=4, rng=rng) == []


@pytest.mark.parametrize("eta", [1.0, 2.0])
def test_a_position_based_user_examines_rank_k_with_probability_one_over_k_to_the_eta(eta):
    model = click_model("pbm", "perfect", eta=eta)
    assert (model.kind, model.user, model.eta) == ("pbm", "perfect", eta)
    rng = random.Random(0)
    counts = [0] * 5
    for _ in range(4000):
        for position in model.clicks([4] * 5, top=4, rng=rng):
            counts[position] += 1
    for position, count in enumerate(counts):
        assert count / 4000 == pytest.approx(1 / (position + 1) ** eta, abs=0.03)  # click certain when seen


def test_unknown_models_and_users_are_config_errors():
    with pytest.raises(ConfigError) as err:
        click_model("dbn")
    assert str(err.value) == "unknown click model 'dbn'; use cascade, pbm"
    with pytest.raises(ConfigError) as err:
        click_model("cascade", "lazy")
    assert str(err.value) == "unknown user type 'lazy'; use perfect, navigational, informational"


def test_grades_are_rounded_to_the_nearest_level_not_floored():
    """0.9 on a 0..1 scale is 3.6 of 4: level 4, which a perfect user always clicks (level 3: 80 % of the time)."""
    model = click_model("cascade", "perfect")
    rng = random.Random(0)
    assert all(model.clicks([0.9], top=1, rng=rng) == [0] for _ in range(200))
    assert sum(model.clicks([0.1], top=1, rng=rng) == [0] for _ in range(200)) == 0  # 0.4 of 4: level 0


@pytest.mark.parametrize(("grade", "top", "level"), [
    (0, 4, 0), (1, 4, 1), (2, 4, 2), (3, 4, 3), (4, 4, 4), (6, 4, 4),  # above the scale's top: the top level
    (1, 2, 2), (1, 3, 1), (2, 3, 3), (1, 1, 4), (-1, 4, 0), (3, 0, 0), (3, -1, 0),  # no scale: nothing is relevant
])
def test_a_grade_becomes_the_nearest_of_five_levels(grade, top, level):
    from rankrelay.experiments.clicks import _level

    assert _level(grade, top) == level


def test_grades_above_the_top_are_the_top_level_and_a_scale_of_zero_has_no_relevant_document():
    model = click_model("cascade", "perfect")
    assert model.clicks([6, 0, 5], top=4, rng=random.Random(0)) == [0, 2]
    assert model.clicks([3, 3], top=0, rng=random.Random(0)) == []
