"""Length buckets: every pair once, bounded size, little padding, deterministic."""

import random

import pytest

from rankrelay.rerankers.local.buckets import length_buckets


@pytest.mark.parametrize("seed", range(5))
def test_a_partition_longest_first_within_size_and_ratio(seed):
    rng = random.Random(seed)
    lengths = [int(rng.lognormvariate(5, 0.8)) + 1 for _ in range(rng.randint(1, 200))]
    batches = length_buckets(lengths, max_size=16)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(1 <= len(b) <= 16 for b in batches)
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)
    assert all(min(lengths[i] for i in b) >= 0.75 * lengths[b[0]] for b in batches)
    assert length_buckets(lengths, max_size=16) == batches


def test_equal_lengths_fill_whole_batches():
    assert [len(b) for b in length_buckets([50] * 70, max_size=32)] == [32, 32, 6]


def test_the_long_tail_does_not_pad_the_rest():
    lengths = [400] + [100] * 39
    batches = length_buckets(lengths, max_size=32)
    assert batches[0] == [0] and [len(b) for b in batches[1:]] == [32, 7]
    padded = sum(len(b) * lengths[b[0]] for b in batches)
    assert padded == 400 + 39 * 100  # fixed batches of 32 would pad 32 pairs to 400


def test_empty():
    assert length_buckets([], max_size=8) == []
