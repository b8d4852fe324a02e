import pytest

from rankrelay import ConfigError, Reranker
from rankrelay.rerankers.ab_split import SplitReranker

DOCS = ["a", "b", "c", "d"]


def test_share_and_stability():
    split = SplitReranker("identity", "random:3", share_b=0.2)
    arms = [split.arm(f"user-{i}") for i in range(2000)]
    assert 0.17 < arms.count("b") / len(arms) < 0.23
    assert arms == [SplitReranker("identity", "random:3", share_b=0.2).arm(f"user-{i}") for i in range(2000)]
    other_salt = [SplitReranker("identity", "random:3", 0.2, salt="exp-2").arm(f"user-{i}") for i in range(2000)]
    assert other_salt != arms


def test_results_are_labelled_with_the_arm_that_served():
    split = SplitReranker("identity", "random:3", share_b=0.5)
    assert isinstance(split, Reranker)
    for i in range(20):
        key = f"session-{i}"
        res = split.rerank("q", DOCS, key=key)
        assert res.info["arm"] == split.arm(key)
        assert res.backend == ("identity" if res.info["arm"] == "a" else "random")
        if res.backend == "identity":
            assert res.indices == [0, 1, 2, 3]


def test_batch_keeps_request_order_across_arms():
    split = SplitReranker("identity", "random:3", share_b=0.5)
    keys = [f"k{i}" for i in range(10)]
    requests = [(f"query {i}", DOCS) for i in range(10)]
    batch = split.rerank_batch(requests, keys=keys)
    assert [r.query for r in batch] == [q for q, _ in requests]
    assert [r.info["arm"] for r in batch] == [split.arm(k) for k in keys]
    assert {r.info["arm"] for r in batch} == {"a", "b"}


@pytest.mark.parametrize("share, arm", [(0.0, "a"), (1.0, "b")])
def test_extreme_shares(share, arm):
    split = SplitReranker("identity", "random", share_b=share)
    assert {split.arm(f"x{i}") for i in range(100)} == {arm}


def test_bad_share():
    with pytest.raises(ConfigError):
        SplitReranker("identity", "random", share_b=1.5)


@pytest.mark.parametrize(("share_b", "backend"), [(1.0, "random"), (0.0, "identity")])
async def test_the_async_path_serves_the_arm_it_labels(share_b, backend):
    split = SplitReranker("identity", "random:3", share_b=share_b)
    res = (await split.arerank_batch([("q", DOCS), ("another query", DOCS)]))
    assert [r.backend for r in res] == [backend, backend]
    assert [r.info["arm"] for r in res] == ["b" if share_b else "a"] * 2


async def test_async():
    split = SplitReranker("identity", "random:3", share_b=0.5)
    res = await split.arerank("q", DOCS, key="k1")
    assert res.info["arm"] == split.arm("k1")
