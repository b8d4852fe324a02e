"""The base module's helpers, each pinned to its exact contract (what mutation testing found unchecked)."""

import asyncio
import math

import pytest

from rankrelay import ConfigError, Document, EmptyQueryError, InvalidInputError
from rankrelay.rerankers import base
from rankrelay.rerankers.base import (
    BaseReranker,
    Scored,
    accepts_budget,
    budget_kwargs,
    build_result,
    check_budget,
    check_query,
    check_top_n,
    head_then_rest,
    label,
    seconds_left,
    within_budget,
)
from rankrelay.testing import FakeClock

DOCS = [Document("a", id="x", metadata={"m": 0}), Document("b"), Document("c", id=7)]


class Echo(BaseReranker):
    """Scores given in advance per query word count; records what it was asked."""

    name = "echo"

    def __init__(self, scores=(1.0, 3.0, 2.0), passages=None, truncated=None, **kw):
        super().__init__(**kw)
        self.scores, self.passages, self.truncated = list(scores), passages, truncated
        self.asked = []

    def _score_batch(self, queries, documents):
        self.asked.append((queries, [[d.text for d in docs] for docs in documents]))
        return [Scored(self.scores[: len(docs)], self.passages, self.truncated, {"seen": q}) for q, docs in
                zip(queries, documents)], {}


class Plain:
    """A user's reranker with the protocol's four members and no extras."""

    name = "plain"

    def __init__(self):
        self.closed = 0
        self.asked = []

    def rerank(self, query, documents, top_n=None):
        return Echo().rerank(query, documents, top_n)

    async def arerank(self, query, documents, top_n=None, **kwargs):
        self.asked.append((query, list(documents), top_n, kwargs))
        return Echo().rerank(query, documents, top_n)

    def rerank_batch(self, requests, top_n=None):
        return [self.rerank(q, d, top_n) for q, d in requests]

    def close(self):
        self.closed += 1


def test_label_is_name_and_model_or_the_name():
    assert label(Echo()) == "echo" and label(Plain()) == "plain"  # Plain has no model attribute at all
    modelled = Echo()
    modelled.model = "m1"
    assert label(modelled) == "echo:m1"


async def test_module_arerank_batch_uses_the_batch_method_or_arerank_per_request():
    class Batched(Echo):
        async def arerank_batch(self, requests, top_n=None, **kwargs):
            self.batched = (list(requests), top_n, kwargs)
            return await super().arerank_batch(requests, top_n=top_n, **kwargs)

    rr = Batched()
    requests = [("q one", ["a", "b", "c"]), ("q two", ["d"])]
    out = await base.arerank_batch(rr, requests, top_n=2, budget_ms=5000.0)
    assert rr.batched == (requests, 2, {"budget_ms": 5000.0}) and out[0].indices == [1, 2]  # one batch call
    plain = Plain()
    out = await base.arerank_batch(plain, [("q1", ["a", "b"]), ("q2", ["c"])], top_n=1, extra=1)
    assert plain.asked == [("q1", ["a", "b"], 1, {"extra": 1}), ("q2", ["c"], 1, {"extra": 1})]
    assert [r.query for r in out] == ["q1", "q2"] and [len(r) for r in out] == [1, 1]


async def test_module_aclose_prefers_aclose_and_falls_back_to_close():
    plain = Plain()
    await base.aclose(plain)
    assert plain.closed == 1

    class Async(Plain):
        async def aclose(self):
            self.closed += 10

    rr = Async()
    await base.aclose(rr)
    assert rr.closed == 10


def test_check_query_names_each_problem():
    assert check_query("q") == "q"
    with pytest.raises(InvalidInputError, match="^query must be str, got int$"):
        check_query(3)
    with pytest.raises(EmptyQueryError, match="^query is empty or blank$"):
        check_query("  ")
    with pytest.raises(InvalidInputError, match="^the query is not valid text: ") as err:
        check_query("a\ud800b")
    assert type(err.value) is InvalidInputError


def test_check_top_n_message():
    assert check_top_n(None) is None and check_top_n(2) == 2
    with pytest.raises(InvalidInputError, match=r"^top_n \(or None\) must be an int >= 1, got 0$"):
        check_top_n(0)


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, True, "5", 0.5 - 0.5])
def test_check_budget_rejects_what_is_not_a_positive_number(bad):
    with pytest.raises(InvalidInputError, match=f"^budget_ms must be a number > 0 or None, got {bad!r}$"):
        check_budget(bad)


def test_check_budget_accepts_positive_numbers_as_float():
    assert check_budget(None) is None
    assert check_budget(0.5) == 0.5 and check_budget(3) == 3.0 and type(check_budget(3)) is float


def test_budget_reaches_a_stage_that_takes_one_and_skips_one_that_does_not(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(base, "monotonic", clock)
    assert accepts_budget(Echo()) and not accepts_budget(Plain()) and not accepts_budget(object())
    assert budget_kwargs(Echo()) == {} and seconds_left() is None
    with within_budget(250.0):
        assert seconds_left() == pytest.approx(0.25)
        clock.sleep(0.1)
        assert budget_kwargs(Echo()) == {"budget_ms": pytest.approx(150.0)}
        assert budget_kwargs(Plain()) == {}
        clock.sleep(1.0)  # past the deadline: the smallest positive budget, never zero or negative
        assert budget_kwargs(Echo()) == {"budget_ms": 1e-3}
    assert seconds_left() is None


def test_build_result_keeps_passages_truncation_calibration_and_checks_the_count():
    scored = Scored([1.0, 3.0, 2.0], passages=[(0, 1), None, (2, 3)], truncated=[True, False, True])
    res = build_result("q", DOCS, scored, backend="b", model=None, normalization="calibrated", top_n=None,
                       timings={}, calibration=lambda s: [x / 10 for x in s])
    assert res.indices == [1, 2, 0] and [r.normalized_score for r in res] == [0.3, 0.2, 0.1]
    assert [r.passage for r in res] == [None, (2, 3), (0, 1)] and [r.truncated for r in res] == [False, True, True]
    plain = build_result("q", DOCS, Scored([1.0, 3.0, 2.0]), backend="b", model=None, normalization="rank",
                         top_n=None, timings={})
    assert [r.truncated for r in plain] == [False] * 3 and [r.passage for r in plain] == [None] * 3
    with pytest.raises(RuntimeError, match="^b returned 2 scores for 3 documents$"):
        build_result("q", DOCS, Scored([1.0, 2.0]), backend="b", model=None, normalization="rank", top_n=None,
                      timings={})


def test_head_then_rest_puts_the_models_order_above_the_earlier_one():
    head = Scored([0.2, 0.9], passages=[(0, 1), (1, 2)], truncated=[False, True], info={"from": "model"})
    res = head_then_rest("q", DOCS, [2, 0], head, [1], [5.0], backend="b", model="m", stages=("strong", "cheap"),
                         top_n=None, timings={"total": 1.0}, info={"reranked": 2})
    assert res.indices == [0, 2, 1] and [r.rank for r in res] == [1, 2, 3]
    assert [r.score for r in res] == [0.9, 0.2, 5.0] and [r.stage for r in res] == ["strong", "strong", "cheap"]
    assert [r.passage for r in res] == [(1, 2), (0, 1), None] and [r.truncated for r in res] == [True, False, False]
    assert [r.normalized_score for r in res] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert [r.id for r in res] == ["x", 7, None] and res[0].metadata == {"m": 0} and res[0].text == "a"
    assert (res.backend, res.model, res.normalization, res.num_candidates) == ("b", "m", "rank", 3)
    assert res.info == {"from": "model", "reranked": 2} and res.timings == {"total": 1.0} and res.query == "q"
    cut = head_then_rest("q", DOCS, [2, 0], Scored([0.5, 0.5]), [1], None, backend="b", model=None,
                         stages=("s", "f"), top_n=2, timings={}, info={})
    assert cut.indices == [0, 2] and cut.num_candidates == 3  # ties keep input order; top_n cuts
    rest = head_then_rest("q", DOCS, [0], Scored([1.0]), [2, 1], None, backend="b", model=None,
                          stages=("s", "f"), top_n=None, timings={}, info={})
    assert rest.indices == [0, 2, 1] and math.isnan(rest[1].score) and rest[1].passage is None


def test_result_carries_the_backends_relevance_kind_and_info():
    class Sig(Echo):
        relevance = "sigmoid"

    res = Sig().rerank("q", ["a", "b"])
    assert res.info == {"seen": "q", "relevance": "sigmoid"}
    assert Echo().rerank("q", []).info == {"relevance": "rank"}


def test_batch_results_come_back_in_request_order_with_empty_requests_in_place():
    rr = Echo()
    out = rr.rerank_batch([("q1", ["a", "b"]), ("q2", []), ("q3", ["c", "d", "e"])], top_n=2)
    assert [r.query for r in out] == ["q1", "q2", "q3"] and [len(r) for r in out] == [2, 0, 2]
    assert rr.asked == [(["q1", "q3"], [["a", "b"], ["c", "d", "e"]])]  # one pass, the empty one left out
    assert out[2].indices == [1, 2] and out[2].num_candidates == 3
    assert all(set(r.timings) >= {"model", "total"} for r in out)


async def test_async_batch_matches_a_fresh_sync_call():
    out = await Echo().arerank_batch([("q1", ["a", "b", "c"]), ("q2", [])], top_n=2)
    ref = Echo().rerank_batch([("q1", ["a", "b", "c"]), ("q2", [])], top_n=2)
    assert [(r.query, r.indices, r.scores if hasattr(r, "scores") else [d.score for d in r]) for r in out] == \
        [(r.query, r.indices, [d.score for d in r]) for r in ref]
    assert out[0].info == {"seen": "q1", "relevance": "rank"}


async def test_async_single_query_passes_top_n_and_budget():
    rr = Echo()
    res = await rr.arerank("q", ["a", "b", "c"], top_n=1, budget_ms=10_000)
    assert res.indices == [1]


def test_repr_and_describe_name_the_backend_and_model():
    rr = Echo(normalize="minmax")
    assert repr(rr) == "<Echo echo>" and rr.describe() == {"backend": "echo", "model": None, "normalize": "minmax"}
    rr.model = "m1"
    assert repr(rr) == "<Echo echo model='m1'>"


def test_loading_time_is_not_counted_as_request_latency(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(base, "perf_counter", clock)

    class Slow(Echo):
        def warm_up(self):
            clock.sleep(5.0)

        def _score_batch(self, queries, documents):
            clock.sleep(0.25)
            return super()._score_batch(queries, documents)

    res = Slow().rerank("q", ["a", "b"])
    assert res.timings["total"] == pytest.approx(250.0) and res.timings["model"] == pytest.approx(250.0)


def test_sync_entry_points_pass_top_n_and_budget_through():
    rr = Echo()
    assert rr.rerank("q", ["a", "b", "c"], top_n=2, budget_ms=10_000).indices == [1, 2]
    with rr as same:
        assert same is rr


async def test_async_context_closes_through_aclose():
    closed = []

    class Closing(Echo):
        def close(self):
            closed.append(True)

    async with Closing() as rr:
        assert isinstance(rr, Closing)
    assert closed == [True]
    await asyncio.sleep(0)


class Budgeted(Echo):
    """Fits its work to a deadline (as local models do): records what it was given."""

    def _within_deadline(self, queries, docs, top_n, start):
        self.budgeted = (queries, [[d.text for d in ds] for ds in docs], top_n, seconds_left() is not None,
                         isinstance(start, float))  # the call's start, for its timings
        return [build_result(q, d, Scored([0.0] * len(d)), backend="budgeted", model=None, normalization="rank",
                             top_n=top_n, timings={}) for q, d in zip(queries, docs)]


@pytest.mark.parametrize("call", ["rerank", "arerank", "rerank_batch", "arerank_batch"])
async def test_a_budget_reaches_the_backends_deadline_path_on_every_entry_point(call):
    rr = Budgeted()
    if call.endswith("batch"):
        out = getattr(rr, call)([("q", ["a", "b", "c"])], top_n=2, budget_ms=60_000)
    else:
        out = getattr(rr, call)("q", ["a", "b", "c"], top_n=2, budget_ms=60_000)
    out = await out if asyncio.iscoroutine(out) else out
    res = out[0] if isinstance(out, list) else out
    assert res.backend == "budgeted" and rr.budgeted == (["q"], [["a", "b", "c"]], 2, True, True)
    assert rr.asked == []  # the usual scoring pass did not run
    plain = Budgeted()
    await plain.arerank("q", ["a"]) if call.startswith("a") else plain.rerank("q", ["a"])
    assert not hasattr(plain, "budgeted") and plain.asked  # without a budget, the usual pass


async def test_async_batch_of_empty_requests_and_its_input_checks():
    out = await Echo().arerank_batch([("q1", []), ("q2", [])], top_n=3)
    assert [(r.query, len(r), r.timings["model"]) for r in out] == [("q1", 0, 0.0), ("q2", 0, 0.0)]
    with pytest.raises(InvalidInputError, match="top_n"):
        await Echo().arerank_batch([("q", ["a"])], top_n=0)


def test_an_empty_request_costs_no_model_time():
    assert Echo().rerank("q", []).timings["model"] == 0.0


async def test_async_loading_time_is_not_counted_as_request_latency(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(base, "perf_counter", clock)

    class Slow(Echo):
        def warm_up(self):
            clock.sleep(5.0)

    res = await Slow().arerank("q", ["a", "b"])
    assert res.timings["total"] == pytest.approx(0.0)


def test_calibrated_normalization_needs_a_backend_that_has_a_calibration():
    with pytest.raises(ConfigError, match="^the echo backend has no calibration; normalize='calibrated' is for "
                                          "cross-encoders trained by rankrelay train$"):
        Echo(normalize="calibrated")

    class Calibrated(Echo):
        supports_calibration = True
        calibration = staticmethod(lambda scores: [s / 10 for s in scores])

    res = Calibrated(normalize="calibrated").rerank("q", ["a", "b", "c"])
    assert [r.normalized_score for r in res] == [0.3, 0.2, 0.1] and res.normalization == "calibrated"
    assert Calibrated().rerank("q", ["a", "b"]).normalization == "rank"


def test_head_then_rest_without_truncation_flags_marks_nothing_truncated():
    res = head_then_rest("q", DOCS, [0, 1], Scored([1.0, 2.0]), [2], None, backend="b", model=None,
                         stages=("s", "f"), top_n=None, timings={}, info={})
    assert [r.truncated for r in res] == [False, False, False]
