import pytest

from rankrelay import ConfigError, Reranker
from rankrelay.rerankers.compose.ab_split import SplitReranker

DOCS = ["a", "b", "c", "d"]


def test_share_and_stability():
    split = SplitReranker("identity", "random:3", share_b=0.2)
    arms = [split.arm(f"user-{i}") for i in range(2000)]
    assert 0.17 < arms.count("b") / len(arms) < 0.23
    again = SplitReranker("identity", "random:3", share_b=0.2)  # a new instance (a restarted process) agrees
    assert arms == [again.arm(f"user-{i}") for i in range(2000)]
    other = SplitReranker("identity", "random:3", 0.2, salt="exp-2")
    other_salt = [other.arm(f"user-{i}") for i in range(2000)]
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


# --- what mutation testing found unchecked (tests/mutation/run.py --only ab_split) ---

class Recorder:
    """A user's reranker: records the budget it was given; ``takes_budget`` says whether it accepts one."""

    def __init__(self, name, takes_budget=True):
        from rankrelay import load_reranker

        self.name, self.inner, self.seen = name, load_reranker("identity"), []
        if not takes_budget:
            self.rerank_batch = self._no_budget

    def rerank(self, query, documents, top_n=None, **kw):
        return self.rerank_batch([(query, documents)], top_n, **kw)[0]

    async def arerank(self, query, documents, top_n=None, **kw):
        return self.rerank(query, documents, top_n, **kw)

    def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
        self.seen.append(("batch", len(requests), top_n, budget_ms))
        return [self._named(r) for r in self.inner.rerank_batch(requests, top_n)]

    async def arerank_batch(self, requests, top_n=None, *, budget_ms=None):
        self.seen.append(("abatch", len(requests), top_n, budget_ms))
        return [self._named(r) for r in self.inner.rerank_batch(requests, top_n)]

    def _no_budget(self, requests, top_n=None):
        self.seen.append(("batch", len(requests), top_n, "none"))
        return [self._named(r) for r in self.inner.rerank_batch(requests, top_n)]

    def _named(self, res):
        res.backend = self.name
        return res

    def warm_up(self):
        pass

    def close(self):
        pass


def _keys_for(split, arm, n):
    keys = [f"user-{i}" for i in range(400) if split.arm(f"user-{i}") == arm]
    return keys[:n]


@pytest.mark.parametrize("call", ["rerank_batch", "arerank_batch"])
async def test_each_arm_gets_one_batch_with_top_n_and_the_budget_if_it_takes_one(call):
    a, b = Recorder("A"), Recorder("B", takes_budget=False)
    split = SplitReranker(a, b, share_b=0.5)
    keys = _keys_for(split, "a", 2) + _keys_for(split, "b", 3)
    requests = [(f"q{i}", DOCS) for i in range(5)]
    out = getattr(split, call)(requests, 2, budget_ms=500.0, keys=keys)
    out = await out if call.startswith("a") else out
    assert [r.backend for r in out] == ["A", "A", "B", "B", "B"] and [len(r) for r in out] == [2] * 5
    assert [r.query for r in out] == [q for q, _ in requests]
    kind = "abatch" if call.startswith("a") else "batch"
    assert a.seen == [(kind, 2, 2, 500.0)]
    assert b.seen == [(kind, 3, 2, None if call.startswith("a") else "none")]  # b takes no budget: given none
    a.seen.clear()
    split.rerank_batch(requests[:2], keys=keys[:2])
    assert a.seen == [("batch", 2, None, None)]


async def test_single_query_calls_pass_top_n_budget_and_key():
    a, b = Recorder("A"), Recorder("B")
    split = SplitReranker(a, b, share_b=0.5)
    key_b = _keys_for(split, "b", 1)[0]
    res = split.rerank("q", DOCS, 3, budget_ms=100.0, key=key_b)
    assert res.backend == "B" and b.seen == [("batch", 1, 3, 100.0)] and res.info["arm"] == "b"
    res = await split.arerank("q", DOCS, 1, budget_ms=50.0, key=key_b)
    assert res.backend == "B" and b.seen[-1] == ("abatch", 1, 1, 50.0)
    query_in_a = next(f"q{i}" for i in range(100) if split.arm(f"q{i}") == "a")  # the key, not the query, decides
    assert (await split.arerank(query_in_a, DOCS, key=key_b)).info["arm"] == "b"
    assert split.rerank(query_in_a, DOCS, key=key_b).info["arm"] == "b"
    query_arm = split.arm("the query itself")
    assert split.rerank("the query itself", DOCS).info["arm"] == query_arm  # no key: the query is the key
    assert (await split.arerank("the query itself", DOCS)).info["arm"] == query_arm


def test_defaults_send_a_tenth_of_keys_to_b_under_the_default_salt():
    from rankrelay.hashing import unit_interval

    split = SplitReranker("identity", "random")
    assert (split.share_b, split.salt) == (0.1, "rankrelay")
    assert all(split.arm(f"k{i}") == ("b" if unit_interval(f"rankrelay\x1fk{i}") < 0.1 else "a") for i in range(200))


def test_results_say_the_experiment_and_the_arms_are_named():
    split = SplitReranker("identity", "random:3", share_b=0.25, salt="exp-7")
    res = split.rerank("q", DOCS, key="k")
    assert res.info["split"] == {"salt": "exp-7", "share_b": 0.25}
    assert split.model == "a=identity b=random share_b=0.25"
    assert [p.name for p in split.parts()] == ["identity", "random"]


def test_the_share_is_a_threshold_on_the_keys_hash():
    from rankrelay.hashing import unit_interval

    split = SplitReranker("identity", "random", share_b=0.3, salt="s")
    for i in range(300):
        assert split.arm(f"k{i}") == ("b" if unit_interval(f"s\x1fk{i}") < 0.3 else "a")


def test_keys_must_match_the_requests():
    split = SplitReranker("identity", "random", share_b=0.5)
    with pytest.raises(ConfigError, match="^got 1 keys for 2 requests$"):
        split.rerank_batch([("q", DOCS), ("r", DOCS)], keys=["k"])


@pytest.mark.parametrize("share", [-0.01, 1.01])
def test_share_outside_zero_one_is_refused_with_its_value(share):
    with pytest.raises(ConfigError, match=rf"^share_b must be in \[0, 1\], got {share}$"):
        SplitReranker("identity", "random", share_b=share)
    assert SplitReranker("identity", "random", share_b=0.0).share_b == 0.0
