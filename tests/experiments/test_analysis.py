"""The analysis that decides: sign test and Wilson interval, bootstrap for multileaving, Welch for a split."""

import math

import pytest
from conftest import raises_exactly
from scipy.stats import binomtest

from rankrelay.errors import InvalidInputError
from rankrelay.experiments.analysis import analyse_interleaved, analyse_split, reciprocal_rank


def test_two_arms_use_an_exact_sign_test_over_non_tied_impressions():
    credits = [[2, 0]] * 30 + [[0, 1]] * 18 + [[1, 1]] * 7 + [[0, 0]] * 40
    (pref,) = analyse_interleaved(["a", "b"], credits)
    assert (pref.wins, pref.losses, pref.ties) == (30, 18, 7)  # no-click impressions are not ties
    assert pref.share == pytest.approx(30 / 48)
    reference = binomtest(30, 48, 0.5)
    assert pref.p_value == pytest.approx(reference.pvalue)
    ci = reference.proportion_ci(0.95, method="wilson")
    assert (pref.low, pref.high) == pytest.approx((ci.low, ci.high))
    assert pref.test == "sign test" and pref.winner == "a" and not pref.significant  # p ~ 0.11


def test_a_clear_preference_is_significant_and_names_the_arm():
    (pref,) = analyse_interleaved(["a", "b"], [[0, 1]] * 40 + [[1, 0]] * 10)
    assert pref.winner == "b" and pref.significant and pref.high < 0.5
    assert pref.to_dict()["winner"] == "b" and pref.to_dict()["significant"] is True


def test_no_decided_impression_is_no_preference():
    (pref,) = analyse_interleaved(["a", "b"], [[1, 1], [0, 0]])
    assert (pref.share, pref.p_value, pref.winner, pref.ties) == (0.5, 1.0, None, 1)
    (empty,) = analyse_interleaved(["a", "b"], [])
    assert empty.winner is None and empty.wins == empty.losses == 0


def test_multileaving_compares_every_pair_with_a_seeded_bootstrap():
    credits = [[1, 0, 0]] * 30 + [[0, 1, 0]] * 20 + [[0, 0, 1]] * 5 + [[1, 1, 0]] * 5
    prefs = analyse_interleaved(["a", "b", "c"], credits)
    assert [(p.a, p.b) for p in prefs] == [("a", "b"), ("a", "c"), ("b", "c")]
    ab, ac, bc = prefs
    assert (ab.wins, ab.losses, ab.ties) == (30, 20, 5)
    assert (ac.wins, ac.losses) == (35, 5) and ac.significant and ac.low > 0.5
    assert bc.winner == "b" and all(p.test == "bootstrap" for p in prefs)
    assert ab.low < ab.share < ab.high and not ab.significant  # 30 against 20: not enough
    assert analyse_interleaved(["a", "b", "c"], credits) == prefs  # seeded: the same every time
    other_seed = analyse_interleaved(["a", "b", "c"], credits, seed=1)[0]
    assert other_seed.p_value != ab.p_value and other_seed.p_value == pytest.approx(ab.p_value, abs=0.05)


def test_the_bootstrap_agrees_with_the_sign_test_on_a_pair():
    credits = [[1, 0, 0]] * 36 + [[0, 1, 0]] * 24
    bootstrap = analyse_interleaved(["a", "b", "c"], credits, bootstrap=4000)[0]
    exact = analyse_interleaved(["a", "b"], [row[:2] for row in credits])[0]
    assert bootstrap.share == exact.share
    assert bootstrap.p_value == pytest.approx(exact.p_value, abs=0.08)
    assert bootstrap.low == pytest.approx(exact.low, abs=0.04) and bootstrap.high == pytest.approx(exact.high, abs=0.04)


def test_an_analysis_needs_two_arms():
    with raises_exactly(InvalidInputError, "a comparison needs at least two arms, got 1"):
        analyse_interleaved(["a"], [[1]])
    with raises_exactly(InvalidInputError, "a split test compares two arms, got 3"):
        analyse_split(["a", "b", "c"], [[], [], []])


def test_a_split_compares_reciprocal_rank_of_the_first_click_with_welch():
    from scipy.stats import ttest_ind

    a = [[0]] * 20 + [[2, 4]] * 10 + [[]] * 10
    b = [[1]] * 15 + [[5]] * 5 + [[]] * 20
    result = analyse_split(["a", "b"], [a, b])
    first, second = result.arms
    assert (first.impressions, first.click_rate, first.clicks) == (40, 0.75, 1.0)
    assert first.reciprocal_rank == pytest.approx((20 + 10 / 3) / 40)
    assert second.reciprocal_rank == pytest.approx((15 / 2 + 5 / 6) / 40)
    reference = ttest_ind([reciprocal_rank(c) for c in a], [reciprocal_rank(c) for c in b], equal_var=False)
    assert result.p_value == pytest.approx(reference.pvalue)
    assert result.low < result.difference < result.high
    assert result.winner == "a" and result.significant
    assert result.to_dict()["arms"][1]["arm"] == "b"


def test_a_split_without_spread_or_with_too_few_impressions_does_not_claim_more_than_it_has():
    level = analyse_split(["a", "b"], [[[0]] * 5, [[0]] * 5])
    assert level.p_value == 1.0 and level.winner is None
    gap = analyse_split(["a", "b"], [[[0]] * 5, [[1]] * 5])
    assert gap.p_value == 0.0 and gap.winner == "a"
    few = analyse_split(["a", "b"], [[[0]], [[]] * 3])
    assert few.p_value == 1.0 and few.winner == "a"
    empty = analyse_split(["a", "b"], [[], []])
    assert empty.arms[0].click_rate == 0.0 and not math.isnan(empty.difference)


def test_reciprocal_rank_is_of_the_first_click():
    assert reciprocal_rank([3, 1]) == 0.5 and reciprocal_rank([]) == 0.0 and reciprocal_rank([0]) == 1.0


@pytest.mark.parametrize("share", [0.5, 0.65])
def test_the_bootstraps_95_percent_interval_covers_the_true_preference_95_percent_of_the_time(share):
    """1,000 simulated three-arm experiments of 200 impressions with a known preference of a over b: the interval
    must cover it in 95 % of them (a 90 % interval would cover ~90 %; the standard error here is 0.7 points)."""
    import numpy as np

    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(1000):
        wins = rng.binomial(1, share, size=120)
        credits = [[1, 0, 0] if w else [0, 1, 0] for w in wins] + [[0, 0, 1]] * 80  # c's wins tie a and b
        (ab, _, _) = analyse_interleaved(["a", "b", "c"], credits, bootstrap=400, seed=trial)
        covered += ab.low <= share <= ab.high
    assert 0.93 <= covered / 1000 <= 0.975


def test_the_sign_test_on_a_worked_example():
    """30 wins and 18 losses: the two-sided exact binomial p-value is 0.1114 (sum of C(48,k)/2^48 for k <= 18 and
    k >= 30); the share is 0.625 with Wilson's 95 % interval [0.484, 0.748]."""
    (pref,) = analyse_interleaved(["a", "b"], [[1, 0]] * 30 + [[0, 1]] * 18)
    assert pref.p_value == pytest.approx(0.1114, abs=5e-4)
    assert (pref.share, round(pref.low, 3), round(pref.high, 3)) == (0.625, 0.484, 0.748)
