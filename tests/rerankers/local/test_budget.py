"""Latency budgets: a local model reranks the head that fits, the rest stays in input order, marked."""

import math
import time

import pytest

from rankrelay import InvalidInputError, load_reranker
from rankrelay.errors import BackendTimeoutError
from rankrelay.rerankers import FallbackReranker
from rankrelay.testing import API_KEY, Fault

QUERY = "why does a wing stall"
DOCS = [f"wing {i} " + " ".join(["lift", "flow", "stall", "angle", "air"][: 1 + i % 5]) for i in range(20)]


def slowed(rr, seconds: float):
    """Make every forward pass of ``rr`` take at least ``seconds`` longer (a bigger model, in effect)."""
    rr.warm_up()
    forward = rr._forward

    def slow(features):
        time.sleep(seconds)
        return forward(features)

    rr._forward = slow
    return rr


def test_budget_too_small_for_one_pair_returns_input_order_marked(tiny_ce_path):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    rr.warm_up()
    res = rr.rerank(QUERY, DOCS, budget_ms=1e-6)
    assert res.indices == list(range(len(DOCS))) and res.info["reranked"] == 0
    assert all(r.stage == "first-stage" and math.isnan(r.score) for r in res)
    assert [r.normalized_score for r in res] == pytest.approx([1 - i / len(DOCS) for i in range(len(DOCS))])


def test_ample_budget_reranks_everything(tiny_ce_path):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache="off")
    full = rr.rerank(QUERY, DOCS)
    res = rr.rerank(QUERY, DOCS, budget_ms=60_000)
    assert res.indices == full.indices and res.info["reranked"] == len(DOCS)
    assert all(r.stage is None for r in res)


def test_tight_budget_reranks_the_longest_head_that_fits(tiny_ce_path):
    rr = slowed(load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", batch_size=1, score_cache="off"), 0.02)
    rr.rerank(QUERY, DOCS[:3])  # a measured speed to plan from
    res = rr.rerank(QUERY, DOCS, budget_ms=150)
    k = res.info["reranked"]
    assert 1 <= k < len(DOCS)  # 20 passes of at least 20 ms each cannot fit in 150 ms: a head, not all
    head = res.indices[:k]
    assert sorted(head) == list(range(k))  # the head of the input list, reordered by the model
    assert [r.score for r in res[:k]] == sorted([r.score for r in res[:k]], reverse=True)
    assert res.indices[k:] == list(range(k, len(DOCS)))
    assert {r.stage for r in res[k:]} == {"first-stage"} and {r.stage for r in res[:k]} == {"cross-encoder"}


def test_cached_pairs_cost_nothing_against_the_budget(tiny_ce_path):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", batch_size=1)
    rr.rerank(QUERY, DOCS[:10])  # the first ten pairs now cached
    rr._tokens_per_s = 1.0  # a measured speed at which no uncached pair fits in the budget (no clock involved)
    # 5 s at 1 token/s x 0.85: 4 tokens, fewer than the query alone; the cached ten cost nothing
    res = rr.rerank(QUERY, DOCS, budget_ms=5_000)
    assert res.info["reranked"] == 10 and res.info["score_cache"] == {"hits": 10, "misses": 0}
    assert [r.stage for r in res].count("first-stage") == 10


async def test_async_budget(tiny_ce_path):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    rr.warm_up()
    res = await rr.arerank(QUERY, DOCS, budget_ms=1e-6)
    assert res.info["reranked"] == 0


@pytest.mark.parametrize("budget", [0, -5, "100", True])
def test_bad_budget_is_refused_before_the_model_loads(tiny_ce_path, budget):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    with pytest.raises(InvalidInputError, match="budget_ms"):
        rr.rerank(QUERY, DOCS, budget_ms=budget)
    assert rr._encoder is None


def test_api_backend_stops_at_the_deadline(fake_api):
    hold = Fault("hold", seconds=30.0)
    fake_api.faults = [hold]
    rr = load_reranker(f"tei:{fake_api.url}", api_key=API_KEY, max_attempts=3, timeout=60.0)
    with pytest.raises(BackendTimeoutError):  # the reply would come after 30 s, with no error, were it ignored
        rr.rerank(QUERY, DOCS, budget_ms=2_000)
    assert hold.released is None and fake_api.count() == 1  # gave up while the API held; no retry
    hold.release.set()


def test_chain_gives_the_local_model_the_time_the_api_left(fake_api, tiny_ce_path):
    local = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache="off")
    local.warm_up()
    chain = FallbackReranker([{"spec": f"tei:{fake_api.url}", "api_key": API_KEY, "max_attempts": 1}, local],
                             budget_ms=600)
    fake_api.faults = [Fault("sleep", seconds=2.0)]
    res = chain.rerank(QUERY, DOCS)  # the API times out at the deadline: the local model has no time left
    assert res.backend == "cross-encoder" and res.info["reranked"] < len(DOCS)
    assert res.fallbacks[0]["error"] == "BackendTimeoutError"
    fake_api.faults = [Fault("status", 503)]
    res = chain.rerank(QUERY, DOCS, budget_ms=5_000)  # a quick failure leaves the local model ample time
    assert res.backend == "cross-encoder" and res.info["reranked"] == len(DOCS)


def test_chain_preloads_its_local_backend_in_the_background(tiny_ce_path, refused_url):
    chain = FallbackReranker([{"spec": f"tei:{refused_url}", "api_key": "k"},
                              {"spec": f"cross-encoder:{tiny_ce_path}", "device": "cpu"}], preload=True)
    chain._preload.join(timeout=60)
    assert chain.preloaded and chain.backends[1]._encoder is not None  # loaded before any call
    res = chain.rerank(QUERY, DOCS)
    assert res.backend == "cross-encoder"


def test_two_stage_search_shows_first_stage_scores_for_the_rest(tiny_ce_path, tiny_bi_path):
    from rankrelay import TwoStageSearch
    from rankrelay.retrieval import DenseRetriever

    docs = [{"id": str(i), "text": t} for i, t in enumerate(DOCS)]
    retriever = DenseRetriever.build(docs, model=tiny_bi_path, device="cpu")
    search = TwoStageSearch(retriever, load_reranker(f"cascade:first-stage>cross-encoder:{tiny_ce_path}@5"),
                            retrieve_k=12, top_n=12)
    res = search(QUERY)
    first = {r.index: r.score for r in res.first_stage}
    tail = [r for r in res if r.stage == "first-stage"]
    assert len(tail) == 7 and all(r.score == first[r.index] for r in tail)
    assert [r.index for r in tail] == [r.index for r in res.first_stage][5:]
