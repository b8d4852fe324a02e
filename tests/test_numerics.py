"""The score-comparison policy itself: near ties may swap, clear differences may not."""

import pytest
from numerics import SAME_RUNTIME, assert_ranking_follows, assert_scores_close


def test_scores_within_tolerance_pass_and_beyond_fail():
    assert_scores_close([1.0, -2.00005, 0.0], [1.00005, -2.0, 5e-5])
    with pytest.raises(AssertionError, match="differ"):
        assert_scores_close([1.0], [1.01])


def test_near_ties_may_swap_but_clear_differences_may_not():
    scores = [0.9, 0.9 + SAME_RUNTIME.abs / 2, 0.1]
    assert_ranking_follows([0, 1, 2], scores)  # 0 and 1 are near-tied
    assert_ranking_follows([1, 0, 2], scores)
    with pytest.raises(AssertionError, match="lower-scored"):
        assert_ranking_follows([2, 0, 1], scores)
    with pytest.raises(AssertionError, match="lower-scored"):  # a top k that leaves out a clearly better one
        assert_ranking_follows([0, 2], scores)
    assert_ranking_follows([1], scores)
