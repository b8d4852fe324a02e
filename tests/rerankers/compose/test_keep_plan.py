"""A cascade's keep from a cost target (#26): `balanced` is a fifth of minilm-l6's cost on every CPU, so the strong
tier reorders fewer where the CPU runs it no faster than torch. Costs come from a cost model here, never a
wall clock."""

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rankrelay import PRESETS, ConfigError, load_reranker
from rankrelay.config import PROFILES, Preset
from rankrelay.rerankers import CascadeReranker
from rankrelay.rerankers.base import BaseReranker, Scored
from rankrelay.rerankers.compose.keep_plan import HEADROOM, StageCosts, known_costs, plan_keep, sample_costs
from rankrelay.rerankers.local.auto_runtime import RuntimeChoice, Trial
from rankrelay.testing import FakeClock

#: per-sample seconds read off benchmarks/tiers.py runs (tinybert-l2, minilm-l6 on auto's runtime, minilm-l6 torch)
AVX2_ONLY = StageCosts(cheap=0.065, strong=0.87, reference=0.87)  # nothing beats torch there
AVX512_VNNI = StageCosts(cheap=0.040, strong=0.30, reference=0.87)  # openvino-int8 2.9x
AMX = StageCosts(cheap=0.034, strong=0.266, reference=0.949)  # openvino-bf16 3.57x


@pytest.mark.parametrize(("costs", "keep"), [(AVX2_ONLY, 10), (AVX512_VNNI, 20), (AMX, 20)])
def test_balanced_keeps_20_where_the_strong_tier_is_fast_and_fewer_where_it_is_not(costs, keep):
    profile = PROFILES["balanced"]
    planned = plan_keep(100, costs, share=profile.cost_share, keep=profile.keep, min_keep=profile.min_keep)
    assert planned == keep
    cost = 100 * costs.cheap + planned * costs.strong
    assert cost <= 100 * costs.reference / 5  # the promise: >= 5x faster than minilm-l6 over all on torch fp32


@given(n=st.integers(1, 2000), cheap=st.floats(0, 2), strong=st.floats(0.01, 5), reference=st.floats(0.01, 5),
       share=st.floats(0.01, 1), keep=st.integers(1, 100), floor=st.integers(1, 100))
def test_a_planned_keep_is_the_most_that_fits_between_min_keep_and_keep(n, cheap, strong, reference, share, keep,
                                                                        floor):
    costs, min_keep = StageCosts(cheap, strong, reference), min(floor, keep)
    k = plan_keep(n, costs, share=share, keep=keep, min_keep=min_keep)
    assert min_keep <= k <= keep
    target = n * share * HEADROOM * reference
    fits = n * cheap + k * strong <= target + 1e-6
    assert fits or k == min_keep  # over the target only at the floor
    if k < keep:  # one more would not fit
        assert n * cheap + (k + 1) * strong > target - 1e-6


class Recorder(BaseReranker):
    """Scores by text length and records how many documents each call saw."""

    name = "recorder"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.seen = name, []

    def _score_batch(self, queries, documents):
        self.seen += [len(d) for d in documents]
        return [Scored([float(len(x.text)) for x in docs]) for docs in documents], {}


def test_a_planned_keep_at_small_room_and_at_no_room():
    assert plan_keep(1, StageCosts(0.0, 0.1, 5.0), share=0.2, keep=20, min_keep=1) == 8  # 0.85 s of room
    assert plan_keep(100, StageCosts(2.0, 0.1, 1.0), share=0.2, keep=20, min_keep=3) == 3  # the cheap stage alone
    assert plan_keep(100, StageCosts(0.0, 1.0, 1.0), share=1.0, keep=100, min_keep=1) == 85  # at the headroom


def test_a_cascade_with_a_cost_target_sends_the_strong_stage_only_what_fits():
    cheap, strong = Recorder("cheap"), Recorder("strong")
    reads = []
    cascade = CascadeReranker(cheap, strong, keep=20, cost_share=0.2, min_keep=10,
                              costs=lambda: reads.append(1) or AVX2_ONLY)
    docs = [f"document {'x' * (i % 37)} {i}" for i in range(100)]
    assert cascade.rerank("q", docs[:10]).info["reranked"] == 10 and reads == []  # the floor covers them: no costs
    strong.seen.clear(), cheap.seen.clear()
    res = cascade.rerank("q", docs)
    assert strong.seen == [10] and cheap.seen == [100]
    assert res.info["cascade"]["keep"] == res.info["reranked"] == 10
    assert [r.stage for r in res] == ["strong"] * 10 + ["cheap"] * 90
    assert sorted(res.indices) == list(range(100))  # nothing dropped
    assert cascade.rerank_batch([("q", docs[:12]), ("q", docs[:5])])[1].info["reranked"] == 5
    assert strong.seen[1:] == [10, 5]  # 12 candidates: the floor; 5: all of them
    assert reads == [1]  # the costs are read once
    assert cascade.describe()["cost_share"] == 0.2 and cascade.describe()["min_keep"] == 10


async def test_the_async_path_plans_the_same_keep():
    strong = Recorder("strong")
    cascade = CascadeReranker(Recorder("cheap"), strong, keep=20, cost_share=0.2, min_keep=12, costs=lambda: AVX2_ONLY)
    res = await cascade.arerank("q", [f"d{i}" for i in range(100)])
    assert strong.seen == [12] and res.info["reranked"] == 12  # the floor: the plan gives 9 on this CPU


def test_a_cascade_without_a_cost_target_never_reads_costs():
    strong = Recorder("strong")
    cascade = CascadeReranker(Recorder("cheap"), strong, keep=5, costs=lambda: pytest.fail("costs read"))
    cascade.rerank("q", [f"d{i}" for i in range(50)])
    assert strong.seen == [5] and cascade.min_keep == 5 and "cost_share" not in cascade.describe()


@pytest.mark.parametrize(("keep", "min_keep"), [(25, 12), (3, 1), (2, 1), (1, 1)])
def test_min_keep_defaults_to_half_of_keep(keep, min_keep):
    assert CascadeReranker(Recorder("a"), Recorder("b"), keep=keep, cost_share=0.5).min_keep == min_keep
    assert CascadeReranker(Recorder("a"), Recorder("b"), keep=keep, cost_share=0.5, min_keep=keep).min_keep == keep


def test_without_known_costs_a_cascade_keeps_its_keep(caplog):
    strong = Recorder("strong")
    cascade = CascadeReranker(Recorder("cheap"), strong, keep=20, cost_share=0.2)  # not local models
    with caplog.at_level(logging.INFO, "rankrelay.rerankers.compose.cascade"):
        cascade.rerank("q", [f"d{i}" for i in range(50)])
    assert strong.seen == [20] and cascade.min_keep == 10 and cascade.stage_costs() is None
    assert "the stages' costs are not known (not local models); it keeps 20" in caplog.text
    caplog.clear()
    known = CascadeReranker(Recorder("cheap"), Recorder("strong"), keep=20, cost_share=0.2, costs=lambda: AMX)
    with caplog.at_level(logging.INFO, "rankrelay.rerankers.compose.cascade"):
        known.warm_up()
    assert known.stage_costs() == AMX and "not known" not in caplog.text


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cost_share": 0}, r"a cascade's cost_share must be a number in \(0, 1\], got 0"),
    ({"cost_share": 1.5}, r"a cascade's cost_share must be a number in \(0, 1\], got 1.5"),
    ({"cost_share": True}, r"a cascade's cost_share must be a number in \(0, 1\], got True"),
    ({"cost_share": 0.2, "min_keep": 21}, r"a cascade's min_keep \(21\) is above its keep \(20\)"),
    ({"cost_share": 0.2, "min_keep": 0}, "a cascade's min_keep must be an int >= 1, got 0"),
    ({"min_keep": 5}, r"a cascade's min_keep needs a cost_share \(the target that lowers keep\)"),
])
def test_bad_cost_targets_say_what_is_wrong(kwargs, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        CascadeReranker(Recorder("a"), Recorder("b"), keep=20, **kwargs)


def test_the_edges_of_a_cost_target_are_accepted():
    whole = CascadeReranker(Recorder("a"), Recorder("b"), keep=20, cost_share=1, min_keep=20)
    assert (whole.cost_share, whole.min_keep) == (1, 20)


@pytest.mark.parametrize("costs", [(-0.1, 1.0, 1.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)])
def test_stage_costs_must_be_seconds(costs):
    with pytest.raises(ConfigError, match=r"^stage costs must be positive seconds, got StageCosts\(cheap="):
        StageCosts(*costs)
    assert StageCosts(0.0, 0.5, 0.5).cheap == 0.0


def test_the_balanced_profile_carries_its_cost_target_and_a_given_keep_is_fixed():
    balanced = load_reranker("balanced", device="cpu")
    assert (balanced.keep, balanced.cost_share, balanced.min_keep) == (20, 0.2, 10)
    fixed = load_reranker("balanced", keep=5)
    assert (fixed.keep, fixed.cost_share, fixed.min_keep) == (5, None, 5)
    assert load_reranker("balanced", keep=30, cost_share=0.3).min_keep == 15
    assert load_reranker("balanced", keep=30, cost_share=0.3, min_keep=12).min_keep == 12
    spec = {"spec": "cascade", "cheap": "identity", "strong": "random:1", "keep": 30, "cost_share": 0.3, "min_keep": 7}
    assert (load_reranker(spec).cost_share, load_reranker(spec).min_keep) == (0.3, 7)
    assert load_reranker("best").cost_share is None


def balanced_on_a_clock(tmp_path, cheap_seconds, strong_seconds, clock=None):
    """`balanced` over the tiny models, timing its stages on a clock where a pass costs what is given."""
    rr = load_reranker("balanced", device="cpu", runtime="torch", score_cache="off", cache_dir=str(tmp_path))
    for stage, seconds in ((rr.cheap, cheap_seconds), (rr.strong, strong_seconds)):
        stage.clock = clock or Ticking(seconds)
    return rr


@pytest.fixture
def tiny_tiers(monkeypatch, tiny_ce_path, tiny_ce2_path):
    for tier, path in (("tinybert-l2", tiny_ce_path), ("minilm-l6", tiny_ce2_path)):
        monkeypatch.setitem(PRESETS, tier, Preset(tier, "cross-encoder", path, 512, "sigmoid", "tiny"))


def test_the_balanced_profile_plans_its_keep_from_its_tiers_measured_on_the_sample(tiny_tiers, tmp_path):
    rr = balanced_on_a_clock(tmp_path, 0.05, 1.0)
    rr.warm_up()
    assert rr.stage_costs() == StageCosts(0.05, 1.0, 1.0)  # torch only: the strong tier is its own reference
    docs = [f"wing lift document {i} about air flow and stall" for i in range(100)]
    res = rr.rerank("why does a wing stall", docs)
    assert res.info["reranked"] == 12 == plan_keep(100, StageCosts(0.05, 1.0, 1.0), share=0.2, keep=20, min_keep=10)
    assert sorted(res.indices) == list(range(100))


def test_stage_costs_are_timed_once_per_machine_and_read_back_by_every_process(tiny_tiers, tmp_path, caplog,
                                                                             tiny_ce_path):
    first = balanced_on_a_clock(tmp_path, 0.25, 1.0)
    first.warm_up()
    [stored] = (tmp_path / "runtimes" / "keep").glob("*.json")
    later = balanced_on_a_clock(tmp_path, 0, 0, clock=FakeClock())  # timing now would say 0 s: no plan
    later.warm_up()
    assert later.stage_costs() == first.stage_costs() == StageCosts(0.25, 1.0, 1.0)
    stored.write_text('{"key": ')
    with caplog.at_level(logging.WARNING, "rankrelay.rerankers.compose.keep_store"):
        damaged = balanced_on_a_clock(tmp_path, 0.5, 2.0)
        damaged.warm_up()
    assert damaged.stage_costs() == StageCosts(0.5, 2.0, 2.0) and "unreadable" in caplog.text
    swapped = CascadeReranker(damaged.strong, damaged.cheap, keep=20, cost_share=0.2)  # other stages: timed anew
    swapped.strong.clock, swapped.strong._pass_seconds = Ticking(0.125), None
    assert swapped.stage_costs() == StageCosts(2.0, 0.125, 0.125)
    narrower = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch", max_length=48,
                             cache_dir=str(tmp_path))  # another cheap stage (its window) before the same strong one
    narrower.clock = Ticking(0.0625)
    assert CascadeReranker(narrower, damaged.strong, keep=20, cost_share=0.2).stage_costs() == StageCosts(
        0.0625, 2.0, 2.0)
    assert len(list((tmp_path / "runtimes" / "keep").glob("*.json"))) == 3
    assert CascadeReranker(Recorder("api"), damaged.strong, keep=20, cost_share=0.2).stage_costs() is None


class Ticking:
    """A clock that moves ``step`` seconds between two reads: every timed pass takes ``step``."""

    def __init__(self, step: float) -> None:
        self.step, self.reads = step, 0

    def __call__(self) -> float:
        self.reads += 1
        return (self.reads // 2) * self.step


class Recording:
    """A score cache that records every read and write."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_many(self, keys):
        self.calls.append("get")
        return {}

    def put_many(self, items):
        self.calls.append("put")


def test_stage_costs_time_how_each_stage_reranks_and_add_auto_s_gap_for_torch_fp32(tiny_ce_path):
    a = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch")
    b = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch", score_cache=Recording())
    a.warm_up(), b.warm_up()
    b.runtime_choice = RuntimeChoice("torch", "bf16", "measured", [  # what auto measured of the forward passes
        Trial("torch", "fp32", 0.875, 1.0, 1.0), Trial("torch", "bf16", 0.375, 1.0, 1.0),
        Trial("onnx-int8", "fp32", error="conversion failed")])
    b.precision = "bf16"
    a.clock, b.clock = FakeClock(start=5.0), Ticking(0.25)  # a's clock says a pass took no time: no plan from that
    assert sample_costs(b, a) is None
    a.clock, a._pass_seconds = Ticking(0.125), None
    cache = b.score_cache
    assert sample_costs(a, b) == StageCosts(0.125, 0.25, 0.75)  # torch fp32: 0.5 s more on the same passages
    assert (a.clock.reads, b.clock.reads) == (4, 4)  # each the best of two timed passes (two clock reads a pass)
    assert b.score_cache is cache and cache.calls == []  # timed without the score cache, which is back
    b.clock = Ticking(5.0)
    assert sample_costs(None, b) == StageCosts(0.0, 0.25, 0.75)  # measured once; the first stage is free
    b.runtime_choice.trials = [Trial("torch", "bf16", 0.375, 1.0, 1.0)]  # no torch fp32 measured: its own is the bar
    b._pass_seconds, b.clock = None, Ticking(0.25)
    assert sample_costs(a, b) == StageCosts(0.125, 0.25, 0.25)
    assert sample_costs(Recorder("api"), b) is None and sample_costs(a, Recorder("api")) is None
    a.runtime_choice = RuntimeChoice("torch", "bf16", "m", [Trial("torch", "fp32", 0.5), Trial("torch", "bf16", 0.25)])
    a.precision, a._pass_seconds = "bf16", None
    assert a.pass_seconds() == (0.125, 0.375) and sample_costs(a, b).cheap == 0.125  # the cheap stage as it runs


def test_a_stage_that_cannot_read_the_timing_passages_leaves_the_keep_fixed(tiny_ce_path, caplog):
    strict = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch", long_documents="error")
    cascade = CascadeReranker(None, strict, keep=3, cost_share=0.2, min_keep=2)
    with caplog.at_level(logging.WARNING, "rankrelay.rerankers.compose.keep_plan"):
        cascade.warm_up()
    assert cascade.stage_costs() is None and "DocumentTooLongError" in caplog.text
    res = cascade.rerank("wing", [f"wing {i}" for i in range(6)])
    assert res.info["reranked"] == 3 and sorted(res.indices) == list(range(6))


def test_known_costs_read_two_stored_choices():
    fast = RuntimeChoice("openvino", "fp32", "r", [Trial("torch", "fp32", 0.08), Trial("openvino", "fp32", 0.04)])
    strong = RuntimeChoice("openvino-int8", "fp32", "r", [Trial("torch", "fp32", 0.9),
                                                          Trial("openvino-int8", "fp32", 0.3)])
    assert known_costs(fast, strong) == StageCosts(0.04, 0.3, 0.9)
    alone = RuntimeChoice("onnx", "fp32", "r", [Trial("onnx", "fp32", 0.5)])
    assert known_costs(fast, alone) == StageCosts(0.04, 0.5, 0.5)
    assert known_costs(None, strong) is None
    assert known_costs(fast, RuntimeChoice("torch", "fp32", "torch is the only runtime here")) is None
