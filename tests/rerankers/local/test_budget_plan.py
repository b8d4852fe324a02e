"""Latency budgets on an injected clock and a cost model: every forward pass takes a known time per token,
so how much of the list a budget reranks is exact, not a property of the machine running the test."""

import math

import pytest

from rankrelay import load_reranker
from rankrelay.rerankers import base
from rankrelay.rerankers.local import budget
from rankrelay.testing import FakeClock

QUERY = "why does a wing stall"
DOCS = [f"wing {i} " + " ".join(["lift", "flow", "stall", "angle", "air"][: 1 + i % 5]) for i in range(20)]


_LOADED: dict = {}


class CostModel:
    """A reranker whose forward pass advances a fake clock by ``ms_per_token`` for every token it reads."""

    def __init__(self, monkeypatch, path, ms_per_token=1.0, ms_per_call=0.0, **options):
        self.clock = FakeClock(start=0.0)
        for module in (base, budget):
            monkeypatch.setattr(module, "monotonic", self.clock)
            monkeypatch.setattr(module, "perf_counter", self.clock)
        options = {"device": "cpu", "batch_size": 1, "score_cache": "off", **options}
        key = (path, tuple(sorted(options.items())))
        if key not in _LOADED:  # one load per kind (this module's tests run often, under mutation testing too)
            _LOADED[key] = load_reranker(f"cross-encoder:{path}", **options)
            _LOADED[key].warm_up()
            _LOADED[key]._plain = (_LOADED[key]._forward, _LOADED[key]._score_locked)
        self.rr = _LOADED[key]
        self.rr._tokens_per_s = None
        if self.rr.score_cache is not None:
            self.rr.score_cache.clear()
        self.ms_per_token = ms_per_token
        self.tokens: list[int] = []  # tokens read by each forward pass
        self.chunks: list[int] = []  # documents in each scoring call the budget planned
        forward, score = self.rr._plain

        def costed(features):
            tokens = int(features["attention_mask"].sum())
            self.tokens.append(tokens)
            self.clock.sleep(tokens * self.ms_per_token / 1000.0)
            return forward(features)

        def counted(queries, documents):
            self.chunks.append(sum(len(d) for d in documents))
            self.clock.sleep(ms_per_call / 1000.0)  # overhead a call pays even when every pair is cached
            return score(queries, documents)

        self.rr._forward, self.rr._score_locked = costed, counted

    def costs(self, docs=DOCS):
        return self.rr._pair_costs(QUERY, list(docs))


@pytest.fixture
def model(monkeypatch, tiny_ce_path):
    return CostModel(monkeypatch, tiny_ce_path)


LONG = " ".join(["the boundary layer separation on the wing at a high angle of attack"] * 12)


def test_planned_cost_of_a_pair_is_the_tokens_the_model_reads(model):
    docs = [*DOCS, LONG]  # the long one is split into passages, each a full window
    res = model.rr.rerank(QUERY, docs)
    assert res[[r.index for r in res].index(len(DOCS))].passage is not None  # it was split
    # a passage ends at a word start, so a window may read a little less than planned: never more
    assert sum(model.tokens) <= sum(model.costs(docs))
    assert sorted(model.tokens)[: len(DOCS)] == sorted(model.costs(DOCS))  # (the passes run in length buckets)


def test_truncated_documents_stay_marked_under_a_budget(monkeypatch, tiny_ce_path):
    cut = CostModel(monkeypatch, tiny_ce_path, long_documents="truncate")
    res = cut.rr.rerank(QUERY, [LONG, *DOCS[:3]], budget_ms=10_000)
    assert res.info["reranked"] == 4 and [r.truncated for r in res if r.index == 0] == [True]
    assert [r.truncated for r in res if r.index != 0] == [False] * 3


def test_a_budget_reranks_the_longest_head_that_fits_and_not_one_document_more(model):
    model.clock.sleep(7.0)  # timings are differences of the clock, wherever it stands
    res = model.rr.rerank(QUERY, DOCS, budget_ms=150)
    k, costs = res.info["reranked"], model.costs()
    used = sum(costs[:k])  # ms: 1 ms per token
    assert 1 <= k < len(DOCS) and model.tokens[0] == costs[0]  # the first document alone, then the rest
    assert sorted(model.tokens) == sorted(costs[:k])  # the head, each document read once
    assert used <= 150  # the budget was kept
    assert costs[k] > (150 - used) * budget.BUDGET_SAFETY  # the next document was predicted not to fit
    assert model.chunks[0] == 1  # with no measured speed yet, one document first
    assert model.rr._tokens_per_s == pytest.approx(1000.0)  # what the cost model runs at
    assert res.timings["model"] == pytest.approx(used) and res.timings["total"] == pytest.approx(used)
    assert res.info["budget_left_ms"] == 150.0
    assert sorted(res.indices[:k]) == list(range(k)) and res.indices[k:] == list(range(k, len(DOCS)))
    assert {r.stage for r in res[:k]} == {"cross-encoder"} and {r.stage for r in res[k:]} == {"first-stage"}
    assert all(math.isnan(r.score) for r in res[k:]) and not any(math.isnan(r.score) for r in res[:k])


def test_a_long_document_later_in_the_list_does_not_stop_the_short_ones_before_it(model):
    model.rr._tokens_per_s = 1000.0
    docs = [*DOCS[:5], LONG]
    costs = model.costs(docs)
    assert costs[-1] > 100 > sum(costs[:5])
    res = model.rr.rerank(QUERY, docs, budget_ms=100)
    assert model.chunks[0] == 5 and res.info["reranked"] == 5


@pytest.mark.parametrize("budget_ms", [150, 137, 60])
def test_a_measured_speed_plans_whole_chunks(model, budget_ms):
    model.rr._tokens_per_s = 1000.0  # known: no single-document probe
    res = model.rr.rerank(QUERY, DOCS, budget_ms=budget_ms)
    k = res.info["reranked"]
    costs = model.costs()
    first = model.chunks[0]  # the longest prefix predicted to fit in the safe share of the budget
    assert sum(costs[:first]) <= budget_ms * budget.BUDGET_SAFETY < sum(costs[: first + 1])
    assert sum(model.chunks) == k and sum(costs[:k]) <= budget_ms


def test_a_document_that_fills_the_room_exactly_still_fits(model):
    model.rr._tokens_per_s = 1000.0 / budget.BUDGET_SAFETY  # room = the budget in tokens, exactly
    costs = model.costs()
    res = model.rr.rerank(QUERY, DOCS, budget_ms=float(sum(costs[:10])))
    assert model.chunks[0] == 10 and res.info["reranked"] == 10


@pytest.mark.parametrize("spent", [1.0, 0.5])  # the model's loading took longer than, or exactly, the budget
def test_no_time_left_before_the_first_document_means_nothing_is_reranked(model, monkeypatch, spent):
    monkeypatch.setattr(model.rr, "warm_up", lambda: model.clock.sleep(spent))
    res = model.rr.rerank(QUERY, DOCS, budget_ms=500)
    assert res.info["reranked"] == 0 and model.tokens == [] and res.indices == list(range(len(DOCS)))


def test_a_free_forward_pass_measures_no_speed(monkeypatch, tiny_ce_path):
    free = CostModel(monkeypatch, tiny_ce_path, ms_per_token=0.0)
    res = free.rr.rerank(QUERY, DOCS[:4], budget_ms=100)
    assert res.info["reranked"] == 4 and free.rr._tokens_per_s is None


def test_the_speed_estimate_moves_halfway_to_each_new_measurement(monkeypatch, tiny_ce_path):
    slow = CostModel(monkeypatch, tiny_ce_path, ms_per_token=2.0)  # the model runs at 500 tokens/s
    slow.rr._tokens_per_s = 400.0  # estimated slower than it is: each chunk ends early, another follows
    slow.rr.rerank(QUERY, DOCS, budget_ms=400)
    m = len(slow.chunks)
    assert m >= 2 and slow.rr._tokens_per_s == pytest.approx(500.0 + (400.0 - 500.0) * 0.5**m)


def test_an_ample_budget_gives_the_same_result_as_no_budget(model):
    full = model.rr.rerank(QUERY, DOCS)
    res = model.rr.rerank(QUERY, DOCS, budget_ms=10_000, top_n=5)
    assert res.info["reranked"] == len(DOCS) and res.indices == full.indices[:5]
    assert [r.score for r in res] == [r.score for r in full[:5]] and all(r.stage is None for r in res)
    assert res.num_candidates == len(DOCS) and res.info["budget_left_ms"] == 10_000.0
    assert res.timings["model"] == pytest.approx(sum(model.costs())) and res.timings["total"] >= res.timings["model"]


def test_requests_of_a_batch_share_what_is_left_in_turn(model):
    requests = [(QUERY, DOCS), (QUERY, []), (QUERY, DOCS[:4])]
    first, empty, third = model.rr.rerank_batch(requests, budget_ms=300)
    used = sum(model.costs()[: first.info["reranked"]])
    assert first.info["budget_left_ms"] == 300.0 and used <= 150  # half for the first of two non-empty requests
    assert third.info["budget_left_ms"] == pytest.approx(300.0 - used)  # the rest for the last
    assert third.info["reranked"] == 4 and empty.info["reranked"] == 0 and len(empty) == 0
    assert empty.timings["model"] == 0.0 and "score_cache" not in first.info  # the cache is off


def test_cached_pairs_are_free_and_counted(monkeypatch, tiny_ce_path):
    cached = CostModel(monkeypatch, tiny_ce_path, score_cache="memory")
    cached.rr.rerank(QUERY, DOCS[:5])
    assert cached.costs()[:5] == [0] * 5 and all(c > 0 for c in cached.costs()[5:])
    cached.rr._tokens_per_s = 1000.0
    res = cached.rr.rerank(QUERY, DOCS, budget_ms=50)
    assert res.info["reranked"] >= 5
    assert res.info["score_cache"] == {"hits": 5, "misses": res.info["reranked"] - 5}


def test_the_result_of_a_budgeted_call_names_its_query_backend_and_model(model, monkeypatch):
    calibrate = lambda scores: [0.5] * len(scores)  # noqa: E731
    monkeypatch.setattr(model.rr, "normalize", "calibrated")
    monkeypatch.setattr(model.rr, "calibration", calibrate)
    whole = model.rr.rerank(QUERY, DOCS[:3], budget_ms=10_000)
    part = model.rr.rerank(QUERY, DOCS, budget_ms=60, top_n=15)
    for res in (whole, part):
        assert (res.query, res.backend, res.model) == (QUERY, "cross-encoder", model.rr.model)
    assert [r.normalized_score for r in whole] == [0.5] * 3  # the model's calibration, as without a budget
    assert len(part) == 15 and part.info["reranked"] < 15 and part.num_candidates == len(DOCS)


def test_time_left_is_reported_to_the_microsecond(model):
    res = model.rr.rerank(QUERY, DOCS[:2], budget_ms=100.123456)
    assert res.info["budget_left_ms"] == 100.123


def test_a_request_that_finds_the_deadline_reached_reranks_nothing(model):
    first_cost = model.costs()[0]
    # the probe reads the first document of the first request (first_cost ms): exactly the whole budget
    first, second = model.rr.rerank_batch([(QUERY, DOCS), (QUERY, DOCS)], budget_ms=float(first_cost))
    assert first.info["reranked"] == 1
    assert second.info["reranked"] == 0 and second.info["budget_left_ms"] == 0.0


def test_a_chunk_of_cached_pairs_does_not_change_the_speed_estimate(monkeypatch, tiny_ce_path):
    cached = CostModel(monkeypatch, tiny_ce_path, score_cache="memory", ms_per_call=1.0)
    cached.rr.rerank(QUERY, DOCS[:6])
    cached.rr._tokens_per_s = 1000.0
    res = cached.rr.rerank(QUERY, DOCS[:6], budget_ms=500)
    assert res.info["reranked"] == 6 and cached.rr._tokens_per_s == 1000.0


def test_passages_stay_marked_under_a_budget(model):
    res = model.rr.rerank(QUERY, [LONG, *DOCS[:3]], budget_ms=10_000)
    assert res.info["reranked"] == 4 and [r.passage is not None for r in res if r.index == 0] == [True]


def test_cached_documents_under_a_budget_before_any_speed_is_known(monkeypatch, tiny_ce_path):
    cached = CostModel(monkeypatch, tiny_ce_path, score_cache="memory")
    cached.rr.rerank(QUERY, DOCS[:6])
    cached.rr._tokens_per_s = None  # no speed measured: the cached pairs cost nothing to read again
    res, empty = cached.rr.rerank_batch([(QUERY, DOCS[:6]), (QUERY, [])], budget_ms=5)
    assert res.info["reranked"] == 6 and res.info["score_cache"] == {"hits": 6, "misses": 0}
    assert "score_cache" not in empty.info  # no document, no cache lookup
    assert all(r.stage is None for r in res)


def test_a_budgeted_batch_may_end_with_an_empty_request(model):
    """Regression: the last request's share of the time was divided among no request to come (ZeroDivisionError)."""
    res, empty = model.rr.rerank_batch([(QUERY, DOCS[:3]), (QUERY, [])], budget_ms=1_000)
    assert res.info["reranked"] == 3 and len(empty) == 0 and empty.info["reranked"] == 0
