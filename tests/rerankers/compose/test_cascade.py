"""Cascades: a cheap stage over all candidates, a strong stage over the best keep, the rest below in cheap order."""

import math

import pytest
from numerics import assert_scores_close

from rankrelay import ConfigError, Document, InvalidInputError, load_reranker
from rankrelay.rerankers import CascadeReranker
from rankrelay.rerankers.base import BaseReranker, Scored

QUERY = "why does a wing stall"
DOCS = ["the wing lift and air flow", "paris is the capital of france", "boundary layer separation on the wing",
        "python sort is stable", "angle of attack and pressure", "cat and dog", "wing stall angle", "berlin"]


class WordOverlap(BaseReranker):
    """A cheap stage that counts shared words, and records what it was asked."""

    name = "overlap"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def _score_batch(self, queries, documents):
        self.seen += [len(d) for d in documents]
        return [Scored([float(len(set(q.split()) & set(x.text.split()))) for x in docs])
                for q, docs in zip(queries, documents)], {}


def test_strong_stage_reorders_only_the_cheap_stages_best(tiny_ce):
    cheap = WordOverlap()
    cascade = CascadeReranker(cheap, tiny_ce, keep=3)
    metadata = {"source": "kb"}
    docs = [*DOCS[:-1], Document(DOCS[-1], id="last", metadata=metadata)]
    res = cascade.rerank(QUERY, docs)
    cheap_order = cheap.rerank(QUERY, docs).indices
    head, rest = cheap_order[:3], cheap_order[3:]
    strong = tiny_ce.rerank(QUERY, [docs[i] for i in head])
    assert res.indices[:3] == [head[i] for i in strong.indices]  # strong order over the cheap head
    assert res.indices[3:] == rest  # the rest keeps the cheap order
    assert sorted(res.indices) == list(range(len(docs)))
    assert [r.stage for r in res] == ["cross-encoder:" + tiny_ce.model] * 3 + ["overlap"] * (len(docs) - 3)
    assert_scores_close([r.score for r in res[:3]], [r.score for r in strong])
    texts = DOCS
    assert [r.score for r in res[3:]] == [float(len(set(QUERY.split()) & set(texts[i].split()))) for i in rest]
    assert [r.normalized_score for r in res] == pytest.approx([1 - i / len(docs) for i in range(len(docs))])
    assert next(r for r in res if r.index == len(docs) - 1).metadata is metadata
    assert res.info["reranked"] == 3 and res.info["cascade"]["keep"] == 3 and res.backend == "cascade"
    assert res.timings["cheap"] >= 0 and res.timings["strong"] > 0
    assert cascade.rerank(QUERY, docs, top_n=2).indices == res.indices[:2]


def test_keep_larger_than_the_list_reranks_everything(tiny_ce):
    res = CascadeReranker(WordOverlap(), tiny_ce, keep=50).rerank(QUERY, DOCS)
    assert res.indices == tiny_ce.rerank(QUERY, DOCS).indices and res.info["reranked"] == len(DOCS)


def test_first_stage_cheap_stage_keeps_input_order_for_the_rest(tiny_ce_path):
    cascade = load_reranker(f"cascade:first-stage>cross-encoder:{tiny_ce_path}@4")
    res = cascade.rerank(QUERY, DOCS)
    assert sorted(res.indices[:4]) == [0, 1, 2, 3] and res.indices[4:] == [4, 5, 6, 7]
    assert all(math.isnan(r.score) for r in res[4:]) and {r.stage for r in res[4:]} == {"first-stage"}
    assert res.to_dict()["results"][5]["score"] is None and res.to_dict()["results"][5]["stage"] == "first-stage"


def test_spec_and_dict_forms(tiny_ce_path, tiny_bi_path):
    spec = load_reranker(f"cascade:bi-encoder:{tiny_bi_path}>cross-encoder:{tiny_ce_path}@5")
    assert isinstance(spec, CascadeReranker) and spec.keep == 5 and spec.cheap.name == "bi-encoder"
    as_dict = load_reranker([{"spec": "cascade", "cheap": f"bi-encoder:{tiny_bi_path}",
                              "strong": {"spec": f"cross-encoder:{tiny_ce_path}", "batch_size": 2}, "keep": 3}])
    inner = as_dict.backends[0]
    assert inner.keep == 3 and inner.strong.batch_size == 2
    default_keep = load_reranker(f"cascade:bi-encoder:{tiny_bi_path}>cross-encoder:{tiny_ce_path}")
    assert default_keep.keep == 30
    res = spec.rerank(QUERY, DOCS)
    assert sorted(res.indices) == list(range(len(DOCS)))


async def test_async_matches_sync(tiny_ce):
    cascade = CascadeReranker(WordOverlap(), tiny_ce, keep=4)
    sync, asyn = cascade.rerank(QUERY, DOCS), await cascade.arerank(QUERY, DOCS)
    assert asyn.indices == sync.indices and [r.stage for r in asyn] == [r.stage for r in sync]


def test_empty_list_is_an_empty_result(tiny_ce):
    assert len(CascadeReranker(WordOverlap(), tiny_ce, keep=2).rerank(QUERY, [])) == 0


@pytest.mark.parametrize("spec, fragment", [
    ("cascade:identity", "cascade:<cheap>><strong>"),
    ("cascade:identity>random@0", "keep"),
    ("cascade:identity>first-stage@3", "strong stage"),
    ("cascade:a>b>c@3", "cascade:<cheap>><strong>"),
])
def test_bad_cascades_fail_before_any_model_loads(spec, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_reranker(spec)


def test_stages_must_be_two_objects(tiny_ce):
    with pytest.raises(ConfigError, match="same object"):
        CascadeReranker(tiny_ce, tiny_ce, keep=3)


def test_bad_input_is_checked_before_any_stage_runs():
    cheap = WordOverlap()
    cascade = CascadeReranker(cheap, "random:1", keep=2)
    with pytest.raises(InvalidInputError):
        cascade.rerank("  ", DOCS)
    with pytest.raises(InvalidInputError):
        cascade.rerank(QUERY, ["ok", 3])
    assert cheap.seen == []


def test_a_strong_stage_cut_by_the_budget_is_reported_as_partial(tiny_ce_path):
    strong = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", batch_size=1)
    cascade = CascadeReranker(WordOverlap(), strong, keep=4)
    head = cascade.cheap.rerank(QUERY, DOCS).indices[:4]
    strong.rerank(QUERY, [DOCS[i] for i in head[:2]])  # the strong stage has the first two of its head cached
    strong._tokens_per_s = 1.0  # a set speed at which no uncached pair fits in the budget (no clock involved)
    res = cascade.rerank(QUERY, DOCS, budget_ms=5_000)
    assert res.info["reranked"] == 2
    stages = {r.index: r.stage for r in res}
    assert [stages[i] for i in head] == [cascade.strong_label] * 2 + [cascade.cheap_label] * 2
    assert sorted(res.indices) == list(range(len(DOCS)))


# --- what mutation testing found unchecked (tests/mutation/run.py --only cascade) ---

class Longest(BaseReranker):
    """A strong stage that prefers long documents; records what it was asked and the budget it got."""

    name = "longest"

    def __init__(self, clock=None, seconds=0.0) -> None:
        super().__init__()
        self.asked: list[list[str]] = []
        self.budgets: list[float | None] = []
        self.clock, self.seconds = clock, seconds

    def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
        self.budgets.append(budget_ms)
        return super().rerank_batch(requests, top_n, budget_ms=budget_ms)

    async def arerank_batch(self, requests, top_n=None, *, budget_ms=None):
        self.budgets.append(budget_ms)
        return await super().arerank_batch(requests, top_n, budget_ms=budget_ms)

    def _score_batch(self, queries, documents):
        if self.clock is not None:
            self.clock.sleep(self.seconds)
        self.asked += [[x.text for x in docs] for docs in documents]
        return [Scored([float(len(x.text)) for x in docs], [(0, 1)] * len(docs), [True] * len(docs), {"s": 1})
                for docs in documents], {}


class Timed(WordOverlap):
    def __init__(self, clock, seconds):
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def _score_batch(self, queries, documents):
        self.clock.sleep(self.seconds)
        return super()._score_batch(queries, documents)


@pytest.mark.parametrize("call", ["rerank_batch", "arerank_batch"])
async def test_a_cascade_merges_the_strong_head_above_the_cheap_rest(monkeypatch, call):
    from rankrelay.rerankers.compose import cascade as module
    from rankrelay.testing import FakeClock

    clock = FakeClock()
    monkeypatch.setattr(module, "perf_counter", clock)
    cheap, strong = Timed(clock, 0.02), Longest(clock, 0.5)
    cascade = CascadeReranker(cheap, strong, keep=3)
    docs = [*DOCS[:-1], Document(DOCS[-1], id="last", metadata={"k": 1})]
    out = getattr(cascade, call)([(QUERY, docs), ("paris capital", docs)], 4)
    res = (await out if call.startswith("a") else out)[0]
    cheap_res = WordOverlap().rerank(QUERY, docs)
    head = cheap_res.indices[:3]
    assert strong.asked[0] == [docs[i].text if hasattr(docs[i], "text") else docs[i] for i in head]
    assert res.indices == sorted(head, key=lambda i: -len(DOCS[i]))[:3] + cheap_res.indices[3:4]
    assert [r.stage for r in res] == ["longest"] * 3 + ["overlap"] and len(res) == 4
    assert [r.score for r in res][:3] == [float(len(DOCS[i])) for i in res.indices[:3]]
    assert res[3].score == cheap_res[3].score  # the rest keeps the cheap stage's score
    assert [r.passage for r in res] == [(0, 1)] * 3 + [None] and [r.truncated for r in res] == [True] * 3 + [False]
    assert res.info["cascade"] == {"cheap": "overlap", "strong": "longest", "keep": 3}
    assert res.info["reranked"] == 3 and res.info["s"] == 1 and res.num_candidates == len(docs)
    assert res.timings == {"cheap": pytest.approx(20.0), "strong": pytest.approx(500.0),
                           "model": pytest.approx(520.0), "total": pytest.approx(520.0)}
    assert (res.backend, res.model, res.query) == ("cascade", "overlap > longest @3", QUERY)


@pytest.mark.parametrize("call", ["rerank", "arerank"])
async def test_a_budget_reaches_both_stages_and_what_the_cheap_one_used_is_gone(monkeypatch, call):
    from rankrelay.rerankers import base
    from rankrelay.testing import FakeClock

    clock = FakeClock()
    monkeypatch.setattr(base, "monotonic", clock)

    class TimedBudgeted(Timed):
        def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
            self.budgets = [*getattr(self, "budgets", []), budget_ms]
            return super().rerank_batch(requests, top_n, budget_ms=budget_ms)

        async def arerank_batch(self, requests, top_n=None, *, budget_ms=None):
            return self.rerank_batch(requests, top_n, budget_ms=budget_ms)

    cheap, strong = TimedBudgeted(clock, 0.1), Longest()
    out = getattr(CascadeReranker(cheap, strong, keep=2), call)(QUERY, DOCS, budget_ms=1000)
    await out if call == "arerank" else out
    assert cheap.budgets == [pytest.approx(1000.0)] and strong.budgets == [pytest.approx(900.0)]
    CascadeReranker(WordOverlap(), strong, keep=2).rerank(QUERY, DOCS)
    assert strong.budgets[-1] is None


async def test_first_stage_as_the_cheap_stage_on_the_async_path():
    strong = Longest()
    res = await CascadeReranker("first-stage", strong, keep=2).arerank(QUERY, DOCS)
    assert strong.asked == [DOCS[:2]] and res.indices[2:] == list(range(2, len(DOCS)))
    assert all(math.isnan(r.score) for r in res[2:]) and {r.stage for r in res[2:]} == {"first-stage"}


async def test_top_n_is_checked_on_both_paths():
    cascade = CascadeReranker(WordOverlap(), Longest(), keep=2)
    with pytest.raises(InvalidInputError, match="top_n"):
        cascade.rerank(QUERY, DOCS, top_n=0)
    with pytest.raises(InvalidInputError, match="top_n"):
        await cascade.arerank(QUERY, DOCS, top_n=0)


def test_one_spec_may_name_both_stages():
    cascade = CascadeReranker("random:1", "random:1", keep=2)  # two rerankers built from one spec
    assert cascade.cheap is not cascade.strong and len(cascade.rerank(QUERY, DOCS)) == len(DOCS)
    spec = {"spec": "random:2"}
    assert CascadeReranker(spec, spec, keep=2).cheap is not None


def test_a_cascade_describes_itself():
    cascade = CascadeReranker(None, Longest(), keep=5)
    assert cascade.describe() == {"backend": "cascade", "cheap": "first-stage", "strong": "longest", "keep": 5}
    assert repr(cascade) == "<CascadeReranker first-stage > longest @5>"
    assert [p.name for p in cascade.parts()] == ["longest"]
    two = CascadeReranker(WordOverlap(), Longest(), keep=5)
    assert [p.name for p in two.parts()] == ["overlap", "longest"]


@pytest.mark.parametrize("spec, parts", [
    ("a>b@7", ("a", "b", 7)), ("x@2>y@7", ("x@2", "y", 7)), (" a > b ", ("a", "b", 30)), ("a>b@x", ("a", "b@x", 30)),
    ("a>b@ 12", ("a", "b", 12)),
])
def test_cascade_spec_parsing(spec, parts):
    from rankrelay.rerankers.compose.cascade import parse_cascade

    assert parse_cascade(spec) == parts


@pytest.mark.parametrize("kwargs, message", [
    ({"rest": "a>b"[:1]}, r"^a cascade spec is cascade:<cheap>><strong>@<keep>, got 'cascade:a'$"),
    ({"rest": "identity>random", "cheap": "identity"}, "^give a cascade's stages in its spec or as options, not both$"),
    ({"rest": None, "cheap": "identity"}, r"^a cascade needs a strong stage: cascade:<cheap>><strong>@<keep>$"),
    ({"rest": "identity>first-stage"}, "^a cascade's strong stage must be a reranker, not the first stage$"),
    ({"rest": "identity>random@0"}, r"^a cascade's keep must be an int >= 1, got 0$"),
])
def test_cascade_configuration_errors_say_what_is_wrong(kwargs, message):
    from rankrelay.rerankers.compose.cascade import from_spec

    with pytest.raises(ConfigError, match=message):
        from_spec(**kwargs)


def test_cascade_options_form_and_keep_override():
    from rankrelay.rerankers.compose.cascade import DEFAULT_KEEP, from_spec

    assert from_spec(None, cheap="identity", strong="random:1").keep == DEFAULT_KEEP == 30
    assert from_spec("identity>random@4", keep=9).keep == 9 and from_spec("identity>random@4").keep == 4
    assert from_spec(None, strong="random:1").cheap is None
    same = WordOverlap()
    with pytest.raises(ConfigError, match="^a cascade's cheap and strong stages are the same object; give two"):
        CascadeReranker(same, same)
