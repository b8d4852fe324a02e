"""The analysis that decides: sign test and Wilson interval, bootstrap for multileaving, Welch for a split."""


import numpy as np
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
    assert (pref.share, pref.low, pref.high, pref.p_value, pref.winner, pref.ties) == (0.5, 0.0, 1.0, 1.0, None, 1)
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
    from rankrelay.experiments.analysis import SplitSums, split_from_sums

    with raises_exactly(InvalidInputError, "a comparison needs at least two arms, got 1"):
        analyse_interleaved(["a"], [[1]])
    with raises_exactly(InvalidInputError, "a split test compares two arms, got 3"):
        analyse_split(["a", "b", "c"], [[], [], []])
    with raises_exactly(InvalidInputError, "a split test compares two arms, got 3"):
        analyse_split(["a", "b", "c"], [[], []])  # arms and their impressions must both be two
    with raises_exactly(InvalidInputError, "a split test compares two arms, got 2"):
        analyse_split(["a", "b"], [[], [], []])
    none = SplitSums(0, 0, 0, 0.0, 0.0)
    with raises_exactly(InvalidInputError, "a split test compares two arms, got 3"):
        split_from_sums(["a", "b", "c"], [none, none])
    with raises_exactly(InvalidInputError, "a split test compares two arms, got 2"):
        split_from_sums(["a", "b"], [none])


def test_the_bootstraps_interval_and_p_value_are_the_percentiles_and_tail_of_the_resampled_shares():
    """The percentile bootstrap, written out as the reference: resample the impressions (a multinomial of wins,
    losses, neither), take each resample's share of wins among the decided ones (0.5 when none is decided); the
    interval is their 2.5 and 97.5 percentiles, the p-value twice the share of resamples on the other side of 0.5."""
    from rankrelay.experiments.analysis import BOOTSTRAP, preferences

    n = 60
    pairs = {(0, 1): (20, 12, 3), (0, 2): (9, 15, 0), (1, 2): (14, 14, 2)}  # a wins, a loses, a tie
    prefs = preferences(["a", "b", "c"], pairs, n, seed=7)
    rng = np.random.default_rng(7)
    for pref, (wins, losses, _) in zip(prefs, pairs.values()):
        sampled = rng.multinomial(n, [wins / n, losses / n, 1 - (wins + losses) / n], size=BOOTSTRAP)
        w, decided = sampled[:, 0], sampled[:, 0] + sampled[:, 1]
        shares = np.where(decided > 0, w / np.maximum(decided, 1), 0.5)
        share = wins / (wins + losses)
        other = {1: (shares <= 0.5).mean(), -1: (shares >= 0.5).mean(), 0: 1.0}[int(np.sign(share - 0.5))]
        assert (pref.share, pref.test) == (share, "bootstrap")
        assert (pref.low, pref.high) == tuple(np.quantile(shares, [0.025, 0.975]))
        assert pref.p_value == min(1.0, 2 * other)
    assert prefs[2].p_value == 1.0 and prefs[2].low < 0.5 < prefs[2].high  # a tie of 14 to 14: no preference


def test_a_rare_preference_counts_resamples_without_a_decided_impression_as_no_preference():
    """One win in 60 impressions among three arms: a resample has no decided impression with probability
    (59/60)^60 (0.36) and then shows no preference (0.5); with one or more it shows a's share, 1.0."""
    from rankrelay.experiments.analysis import preferences

    (pref,) = preferences(["a", "b", "c"], {(0, 1): (1, 0, 0)}, 60)[:1]
    assert (pref.share, pref.low, pref.high) == (1.0, 0.5, 1.0)
    assert pref.p_value == pytest.approx(2 * (59 / 60) ** 60, abs=0.05)
    nothing = preferences(["a", "b", "c"], {}, 60)[0]
    assert (nothing.share, nothing.low, nothing.high, nothing.p_value) == (0.5, 0.0, 1.0, 1.0)
    assert (nothing.wins, nothing.losses, nothing.ties) == (0, 0, 0)  # a pair without counts has none
    with raises_exactly(InvalidInputError, "a comparison needs at least two arms, got 1"):
        preferences(["a"], {}, 0)


def test_the_number_of_bootstrap_resamples_is_the_callers():
    credits = [[1, 0, 0]] * 30 + [[0, 1, 0]] * 20 + [[0, 0, 1]] * 5
    few = analyse_interleaved(["a", "b", "c"], credits, bootstrap=300)
    assert few != analyse_interleaved(["a", "b", "c"], credits)  # 2,000 by default
    from rankrelay.experiments.analysis import preferences

    counts = {(0, 1): (30, 20, 0), (0, 2): (30, 5, 0), (1, 2): (20, 5, 0)}
    assert few == preferences(["a", "b", "c"], counts, len(credits), bootstrap=300)


def test_a_split_compares_reciprocal_rank_of_the_first_click_with_welch():
    from scipy.stats import ttest_ind

    a = [[0]] * 20 + [[2, 4]] * 10 + [[]] * 10
    b = [[1]] * 15 + [[5]] * 5 + [[]] * 10  # fewer impressions than a: the test must weigh each arm by its own
    result = analyse_split(["a", "b"], [a, b])
    first, second = result.arms
    assert (first.impressions, first.click_rate, first.clicks) == (40, 0.75, 1.0)
    assert first.reciprocal_rank == pytest.approx((20 + 10 / 3) / 40)
    assert second.reciprocal_rank == pytest.approx((15 / 2 + 5 / 6) / 30)
    reference = ttest_ind([reciprocal_rank(c) for c in a], [reciprocal_rank(c) for c in b], equal_var=False)
    interval = reference.confidence_interval(0.95)  # Welch's interval of the difference, from scipy
    assert result.p_value == pytest.approx(reference.pvalue)
    assert (result.low, result.high) == pytest.approx((interval.low, interval.high))
    assert result.winner == "a" and result.significant
    assert result.to_dict()["arms"][1]["arm"] == "b"
    assert (result.to_dict()["test"], result.to_dict()["significant"]) == ("welch t-test", True)


def test_a_split_of_two_impressions_an_arm_is_already_a_t_test():
    from scipy.stats import ttest_ind

    a, b = [[0], [1]], [[2], [], [0], [3]]
    result = analyse_split(["a", "b"], [a, b])
    reference = ttest_ind([reciprocal_rank(c) for c in a], [reciprocal_rank(c) for c in b], equal_var=False)
    assert result.p_value == pytest.approx(reference.pvalue) and 0 < result.p_value < 1
    interval = reference.confidence_interval(0.95)
    assert (result.low, result.high) == pytest.approx((interval.low, interval.high))


def test_a_split_without_spread_or_with_too_few_impressions_does_not_claim_more_than_it_has():
    level = analyse_split(["a", "b"], [[[0]] * 5, [[0]] * 5])
    assert level.p_value == 1.0 and level.winner is None
    gap = analyse_split(["a", "b"], [[[0]] * 5, [[1]] * 5])
    assert gap.p_value == 0.0 and gap.winner == "a"
    assert gap.low == gap.high == gap.difference == 0.5  # a certain gap: its interval is the gap itself
    few = analyse_split(["a", "b"], [[[0]], [[]] * 3])
    assert few.p_value == 1.0 and few.winner == "a"
    empty = analyse_split(["a", "b"], [[], []])
    assert (empty.arms[0].click_rate, empty.arms[0].clicks, empty.arms[0].reciprocal_rank) == (0.0, 0.0, 0.0)
    assert empty.difference == 0.0 and empty.p_value == 1.0


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
