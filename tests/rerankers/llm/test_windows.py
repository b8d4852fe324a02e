"""The sliding-window listwise pass (RankGPT) and the reading of a model's permutation, against an oracle."""

import random

import pytest

from rankrelay import ConfigError
from rankrelay.rerankers.llm.windows import calls_per_pass, parse_permutation, sliding_rerank, windows


def oracle(scores):
    """A 'model' that orders each window perfectly by hidden scores, answering RankGPT-style."""
    def rank_window(chunk):
        best = sorted(range(len(chunk)), key=lambda i: -scores[chunk[i]])
        return " > ".join(f"[{i + 1}]" for i in best)
    return rank_window


@pytest.mark.parametrize("n, window, step, calls", [(100, 20, 10, 9), (20, 20, 10, 1), (5, 20, 10, 1),
                                                    (101, 20, 10, 10), (100, 20, 5, 17), (0, 20, 10, 0)])
def test_windows_cover_the_list_back_to_front(n, window, step, calls):
    spans = windows(n, window, step)
    assert len(spans) == calls and (n == 0 or calls == calls_per_pass(n, window, step))
    if n:
        assert spans[0][1] == n and spans[-1][0] == 0 and all(b - a <= window for a, b in spans)
        assert all(s2[1] - s1[0] <= window and s1[0] - s2[0] <= step for s1, s2 in zip(spans, spans[1:]))


def test_one_pass_over_100_with_window_20_step_10():
    rng = random.Random(0)
    scores = {f"d{i}": rng.random() for i in range(100)}
    items = list(scores)
    rng.shuffle(items)
    asked = []

    def counting(chunk):
        asked.append(len(chunk))
        return oracle(scores)(chunk)

    ranked, stats = sliding_rerank(items, counting, window=20, step=10)
    assert stats["calls"] == len(asked) == 9 and set(asked) == {20}
    assert sorted(ranked) == sorted(items)  # every candidate exactly once
    truth = sorted(items, key=lambda d: -scores[d])
    assert ranked[:10] == truth[:10]  # one pass settles the top window - step, in order
    assert stats == {"calls": 9, "unparsed": 0, "duplicates": 0, "out_of_range": 0, "missing": 0}


def test_answers_that_are_not_permutations_lose_nothing():
    assert parse_permutation("2 > 3 > 1", 3) == ([1, 2, 0], {"duplicates": 0, "out_of_range": 0, "missing": 0})
    order, stats = parse_permutation("[4] > [4] > [0] > [17] > [2]", 5)
    assert order == [3, 1, 0, 2, 4] and stats == {"duplicates": 1, "out_of_range": 2, "missing": 3}
    assert parse_permutation("I cannot rank these.", 3) == ([0, 1, 2], {"duplicates": 0, "out_of_range": 0,
                                                                        "missing": 3})
    items = [f"d{i}" for i in range(30)]
    answers = iter(["garbage", "[2] > [1] > [2]"])
    ranked, stats = sliding_rerank(items, lambda chunk: next(answers), window=20, step=10)
    assert sorted(ranked) == sorted(items) and stats["calls"] == 2 and stats["unparsed"] == 1
    assert ranked[:2] == ["d1", "d0"] and stats["duplicates"] == 1 and stats["missing"] == 20 + 18


@pytest.mark.parametrize("window, step", [(1, 1), (20, 0), (20, 20), (10, 15)])
def test_bad_windows_are_config_errors(window, step):
    with pytest.raises(ConfigError, match="sliding window"):
        windows(50, window, step)
