"""runtime='auto': candidates by CPU and installed packages, the choice on measured (fake-clock) costs, the stored
choice reused only for the same model, CPU and versions; and the whole path on a tiny model."""

import json
import logging
import sys
import threading

import numpy as np
import pytest

from rankrelay import ConfigError, Settings, load_reranker
from rankrelay.devices import cpu_signature, has_bf16_units, has_int8_units
from rankrelay.rerankers.local.auto_runtime import (
    MARGIN,
    Trial,
    candidates,
    choose_runtime,
    known_choice,
    pick,
    speedup,
)
from rankrelay.rerankers.local.model import LocalModelReranker
from rankrelay.testing import FakeClock

AVX2 = {"model": "AMD EPYC", "machine": "x86_64", "flags": ["avx2"]}
VNNI = {"model": "AMD EPYC", "machine": "x86_64", "flags": ["avx2", "avx512_vnni"]}  # int8 candidates too
BF16 = {"model": "AMD EPYC 9R14", "machine": "x86_64", "flags": ["avx2", "avx512_bf16", "avx512_vnni", "avx512f"]}
REFERENCE = np.arange(40, dtype=float).reshape(2, 20)  # the sample's scores on torch fp32


def test_the_cpu_signature_keeps_the_model_and_the_flags_that_decide_speed():
    info = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16\n" \
           "processor\t: 1\nmodel name\t: other\n"
    cpu = cpu_signature(info)
    assert cpu["model"] == "AMD EPYC 9R14" and cpu["flags"] == ["avx2", "avx512_bf16", "avx512_vnni", "avx512f"]
    assert has_bf16_units(cpu) and not has_bf16_units(cpu_signature("flags : avx2 avx512_vnni\n"))
    assert has_int8_units(cpu) and has_int8_units(cpu_signature("flags : amx_int8\n"))
    assert not has_int8_units(cpu_signature("flags : avx2 avx512f avx512_bf16\n")) and not has_int8_units({})
    assert cpu_signature("")["flags"] == []


def test_candidates_follow_the_cpu_the_device_and_what_is_installed(monkeypatch):
    assert candidates("cpu", AVX2) == [("torch", "fp32"), ("onnx", "fp32"), ("openvino", "fp32")]
    assert candidates("cpu", {**AVX2, "flags": ["avx2", "avx_vnni"]}) == [
        ("torch", "fp32"), ("onnx", "fp32"), ("onnx-int8", "fp32"), ("openvino", "fp32"), ("openvino-int8", "fp32")]
    assert candidates("cpu", {**AVX2, "flags": ["amx_bf16"]}) == [
        ("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("openvino", "fp32"), ("openvino-bf16", "fp32")]
    assert candidates("cpu", BF16) == [("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx-int8", "fp32"),
                                       ("openvino", "fp32"), ("openvino-bf16", "fp32"), ("openvino-int8", "fp32")]
    assert candidates("cuda", BF16) == [("torch", "fp32")]
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert candidates("cpu", AVX2) == [("torch", "fp32")]


@pytest.mark.parametrize(("seconds", "overlap", "chosen"), [
    (0.94, 1.0, "onnx"),  # 6 % faster: chosen
    (0.95, 1.0, "torch"),  # exactly the margin: not enough
    (0.50, 0.89, "torch"),  # fast but disagreeing
    (0.50, 0.90, "onnx"),  # at min_agreement: agrees
])
def test_pick_takes_a_runtime_only_when_it_agrees_and_beats_torch_by_the_margin(seconds, overlap, chosen):
    assert MARGIN == 0.05
    trials = [Trial("torch", "fp32", 1.0, 1.0, 1.0), Trial("onnx", "fp32", seconds, overlap, 0.99),
              Trial("openvino", "fp32", error="ConversionError: boom")]
    runtime, precision, reason = pick(trials, min_agreement=0.9)
    assert (runtime, precision) == (chosen, "fp32")
    if chosen == "onnx":
        assert reason.startswith(f"onnx fp32 took {seconds:.3f} s on the timing passages vs torch fp32's 1.000 s")
    elif overlap < 0.9:
        assert reason == "no other runtime here agrees with torch fp32 on the sample"
    else:
        assert "is 1.05x" in reason


def test_the_fastest_of_several_agreeing_runtimes_wins():
    trials = [Trial("torch", "fp32", 1.0, 1.0, 1.0), Trial("onnx", "fp32", 0.8, 1.0, 1.0),
              Trial("openvino-int8", "fp32", 0.4, 0.95, 0.98), Trial("openvino", "fp32", 0.6, 1.0, 1.0)]
    assert pick(trials, 0.9)[:2] == ("openvino-int8", "fp32")
    assert pick(trials, 0.96)[:2] == ("openvino", "fp32")


class Machine:
    """Fake forward passes with a cost each: scoring the sample advances the fake clock by the cost."""

    def __init__(self, costs, disagree=(), broken=()):
        self.clock = FakeClock(start=0.0)
        self.costs, self.disagree, self.broken = costs, set(disagree), set(broken)
        self.built: list[tuple[str, str]] = []
        self.warm: set = set()

    def forward(self, runtime, precision):
        self.built.append((runtime, precision))
        if runtime in self.broken:
            raise RuntimeError(f"{runtime} cannot convert this model")
        return (runtime, precision)

    def sample(self, fwd):
        cold = fwd not in self.warm  # a first pass pays for warming up: the measurement must not count it
        self.warm.add(fwd)
        self.clock.sleep(self.costs[fwd] + (COLD if cold else 0.0))
        return REFERENCE[:, ::-1] if fwd[0] in self.disagree else REFERENCE

    def choose(self, tmp_path, fingerprint="files-1", cpu=VNNI, min_agreement=0.9, **kw):
        return choose_runtime(label="org/model", fingerprint=fingerprint, device="cpu", cache_dir=tmp_path,
                              min_agreement=min_agreement, forward=self.forward, sample=self.sample, clock=self.clock,
                              cpu=cpu, **kw)


COLD = 2.0  # seconds a runtime's first pass costs more
# seconds a pass over the sample costs (binary fractions: the fake clock's sums are exact)
COSTS = {("torch", "fp32"): 1.0, ("onnx", "fp32"): 0.875, ("onnx-int8", "fp32"): 0.25, ("openvino", "fp32"): 0.75,
         ("openvino-int8", "fp32"): 0.5, ("torch", "bf16"): 0.375, ("openvino-bf16", "fp32"): 0.3125}


def test_the_measured_choice_is_stored_and_read_back_without_measuring(tmp_path, caplog):
    machine = Machine(COSTS, disagree={"onnx-int8"})
    with caplog.at_level(logging.INFO, "rankrelay.rerankers.local.auto_runtime"):
        choice = machine.choose(tmp_path)
    assert (choice.runtime, choice.precision, choice.cached) == ("openvino-int8", "fp32", False)
    assert [(t.runtime, t.seconds) for t in choice.trials] == [
        ("torch", 1.0), ("onnx", 0.875), ("onnx-int8", 0.25), ("openvino", 0.75), ("openvino-int8", 0.5)]
    assert choice.trials[2].top10_overlap == 0.0  # reversed: out, though fastest
    assert choice.seconds == sum(2 * COSTS[p] + COLD for p in machine.built)  # two passes each, the best counts
    assert "runs on openvino-int8 fp32" in caplog.text and "onnx-int8 fp32 disagrees" in caplog.text
    [stored] = (tmp_path / "runtimes" / "auto").glob("model-*.json")
    assert json.loads(stored.read_text())["choice"]["runtime"] == "openvino-int8"

    again = Machine(COSTS)
    reread = again.choose(tmp_path)
    assert again.built == [] and reread.cached and (reread.runtime, reread.reason) == (choice.runtime, choice.reason)
    assert reread.seconds == 0.0  # no model pass: only reading a file


def test_speed_is_timed_on_the_timing_passages_and_agreement_read_on_the_sample(tmp_path):
    """ONNX Runtime fp32 beat torch on short texts and lost on 360-token ones (benchmarks/tiers.py, one CPU): the
    passages a runtime is timed on decide, not the short sample."""
    machine = Machine(COSTS, disagree={"onnx-int8"})
    on_passages = {**COSTS, ("onnx", "fp32"): 1.25, ("openvino", "fp32"): 0.875}  # onnx fast on the sample only
    timed: list = []

    def timing(fwd):
        timed.append(fwd)
        machine.clock.sleep(on_passages[fwd])

    choice = machine.choose(tmp_path, cpu=AVX2, timing=timing)
    assert [(t.runtime, t.seconds) for t in choice.trials] == [("torch", 1.0), ("onnx", 1.25), ("openvino", 0.875)]
    assert (choice.runtime, choice.precision) == ("openvino", "fp32")
    assert timed == [p for p in machine.built for _ in range(2)]  # two timed passes each, after one sample pass
    assert machine.warm == set(machine.built)  # each was warmed (and judged) on the sample first
    assert choice.seconds == sum(COSTS[p] + COLD + 2 * on_passages[p] for p in machine.built)


def test_a_pair_model_times_passages_of_the_lengths_it_reads(tiny_ce_path):
    from rankrelay.rerankers.local.sample import TIMING_LENGTHS, timing_pairs

    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch")
    rr.warm_up()
    seen = []
    rr._timing_scores(rr.encoder, lambda batch: seen.append(batch["input_ids"].shape) or rr._forward(batch))
    query, passages = timing_pairs()
    assert sum(shape[0] for shape in seen) == len(passages) == 8 * len(TIMING_LENGTHS)  # not the 120-pair sample


@pytest.mark.parametrize("change", ["fingerprint", "cpu", "damaged", "another choice"])
def test_a_stored_choice_for_other_files_another_cpu_or_that_is_damaged_is_measured_again(tmp_path, change):
    Machine(COSTS).choose(tmp_path)
    [stored] = (tmp_path / "runtimes" / "auto").glob("*.json")
    kwargs = {"fingerprint": "files-2"} if change == "fingerprint" else {"cpu": BF16} if change == "cpu" else {}
    if change == "damaged":
        stored.write_text('{"choice": ')
    if change == "another choice":  # a hand-edited choice naming a runtime that is not a candidate here
        data = json.loads(stored.read_text())
        data["choice"]["runtime"] = "openvino-bf16"
        stored.write_text(json.dumps(data))
    machine = Machine(COSTS)
    choice = machine.choose(tmp_path, **kwargs)
    assert not choice.cached and machine.built == candidates("cpu", BF16 if change == "cpu" else VNNI)
    assert (choice.runtime, choice.precision) == ("onnx-int8", "fp32")


def test_bf16_is_a_candidate_like_any_other_on_a_cpu_with_bf16_units(tmp_path):
    costs = {**COSTS, ("onnx-int8", "fp32"): 2.0, ("openvino-bf16", "fp32"): 2.0}
    choice = Machine(costs).choose(tmp_path, cpu=BF16)
    assert (choice.runtime, choice.precision) == ("torch", "bf16")


def test_a_candidate_that_fails_is_left_out_with_one_warning_and_the_rest_decide(tmp_path, caplog):
    machine = Machine(COSTS, broken={"onnx-int8", "openvino-int8"})
    with caplog.at_level(logging.WARNING, "rankrelay.rerankers.local.auto_runtime"):
        choice = machine.choose(tmp_path)
    assert (choice.runtime, choice.precision) == ("openvino", "fp32")
    assert [t.error for t in choice.trials if t.error] == [
        "RuntimeError: onnx-int8 cannot convert this model", "RuntimeError: openvino-int8 cannot convert this model"]
    assert len(caplog.records) == 1 and "could not try" in caplog.text


def test_when_torch_itself_cannot_be_measured_the_choice_is_torch_with_one_warning(tmp_path, caplog):
    machine = Machine(COSTS, broken={"torch"})
    with caplog.at_level(logging.WARNING, "rankrelay.rerankers.local.auto_runtime"):
        choice = machine.choose(tmp_path)
    assert (choice.runtime, choice.precision) == ("torch", "fp32") and choice.reason.startswith("not measured")
    assert len(caplog.records) == 1 and not list(tmp_path.rglob("*.json"))  # nothing stored: tried again next time
    late = Machine(COSTS, broken={"torch"})
    late.clock = FakeClock(start=100.0)
    slow = late.forward
    late.forward = lambda *fwd: late.clock.sleep(0.5) or slow(*fwd)  # converting torch took half a second
    choice = late.choose(tmp_path)
    assert (choice.reason, choice.seconds) == ("not measured (RuntimeError: torch cannot convert this model)", 0.5)


def test_only_torch_here_means_torch_without_measuring(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    machine = Machine(COSTS)
    machine.clock = FakeClock(start=100.0)
    choice = machine.choose(tmp_path)
    assert (choice.runtime, choice.precision, choice.reason, choice.seconds, machine.built) == (
        "torch", "fp32", "torch is the only runtime here", 0.0, [])
    on_gpu = choose_runtime(label="org/model", fingerprint="f", device="cuda", cache_dir=tmp_path, min_agreement=0.9,
                            forward=machine.forward, sample=machine.sample, clock=machine.clock, cpu=VNNI)
    assert (on_gpu.runtime, on_gpu.precision, on_gpu.reason) == ("torch", "fp32", "on cuda the runtime is torch")


def test_a_measured_choice_keeps_each_candidate_as_measured_and_what_measuring_cost(tmp_path):
    """What rr.runtime_choice shows: each candidate's best seconds and agreement (torch fp32 is the reference:
    1.0 and 1.0), or why it could not be tried (cut at 200 characters); the reason with the speed-up; the time
    the measurement took. A later read costs nothing and says it was read."""
    class Broken(Machine):
        def forward(self, runtime, precision):
            if runtime == "openvino":
                raise RuntimeError("x" * 500)
            return super().forward(runtime, precision)

    machine = Broken(COSTS, disagree={"onnx-int8"})
    machine.clock = FakeClock(start=100.0)
    choice = machine.choose(tmp_path, cpu=VNNI)
    assert [(t.runtime, t.precision, t.seconds, t.top10_overlap, t.spearman, t.error) for t in choice.trials] == [
        ("torch", "fp32", 1.0, 1.0, 1.0, None), ("onnx", "fp32", 0.875, 1.0, 1.0, None),
        ("onnx-int8", "fp32", 0.25, 0.0, -1.0, None),
        ("openvino", "fp32", None, None, None, "RuntimeError: " + "x" * 200),
        ("openvino-int8", "fp32", 0.5, 1.0, 1.0, None)]
    assert choice.reason == ("openvino-int8 fp32 took 0.500 s on the timing passages vs torch fp32's 1.000 s "
                             "(2.00x), top-10 overlap 1.00")
    assert choice.seconds == sum(2 * COSTS[p] + COLD for p in machine.built)  # from 100 s on the clock
    assert speedup(choice) == 2.0
    again = Machine(COSTS)
    again.clock = FakeClock(start=100.0)
    reread = again.choose(tmp_path, cpu=VNNI)
    assert (reread.cached, reread.seconds, reread.reason) == (True, 0.0, choice.reason)
    assert known_choice("org/model", tmp_path, cpu=VNNI).cached


def test_choices_under_different_keys_are_kept_side_by_side(tmp_path):
    """A choice per key (here: two agreement guards), each read back without measuring."""
    Machine(COSTS).choose(tmp_path, min_agreement=0.9)
    Machine(COSTS).choose(tmp_path, min_agreement=0.99)
    assert len(list((tmp_path / "runtimes" / "auto").glob("*.json"))) == 2
    for guard in (0.9, 0.99):
        machine = Machine(COSTS)
        assert machine.choose(tmp_path, min_agreement=guard).cached and machine.built == []


def test_what_models_shows_is_the_newest_choice_made_on_this_cpu(tmp_path, monkeypatch):
    """known_choice (rankrelay models' "measured here"): the newest stored choice of the model for this CPU; a
    damaged newer file or another CPU's is passed over."""
    import os

    Machine(COSTS).choose(tmp_path, cpu=AVX2, min_agreement=0.9)  # openvino
    Machine({**COSTS, ("onnx", "fp32"): 0.125}).choose(tmp_path, cpu=AVX2, min_agreement=0.99)  # onnx
    Machine(COSTS).choose(tmp_path, cpu=VNNI)  # onnx-int8
    keys = {p: json.loads(p.read_text())["key"] for p in (tmp_path / "runtimes" / "auto").glob("*.json")}
    stored = {(key["min_agreement"], len(key["cpu"]["flags"])): p for p, key in keys.items()}
    loose, strict = stored[(0.9, 1)], stored[(0.99, 1)]
    os.utime(loose, (1_000_000, 1_000_000))
    os.utime(strict, (2_000_000, 2_000_000))
    assert known_choice("org/model", tmp_path, cpu=AVX2).runtime == "onnx"
    os.utime(loose, (3_000_000, 3_000_000))
    assert known_choice("org/model", tmp_path, cpu=AVX2).runtime == "openvino"
    loose.write_text("{damaged")  # the newest cannot be read: the next newest for this CPU
    assert known_choice("org/model", tmp_path, cpu=AVX2).runtime == "onnx"
    monkeypatch.setattr("rankrelay.rerankers.local.auto_runtime.cpu_signature", lambda: VNNI)
    assert known_choice("org/model", tmp_path).runtime == "onnx-int8"  # this machine's CPU, when none is given
    assert known_choice("org/model", tmp_path, cpu=BF16) is None


def test_the_versions_in_a_choices_key_are_those_installed():
    from importlib.metadata import version

    from rankrelay.rerankers.local import auto_runtime

    versions = auto_runtime.runtime_versions()
    assert versions["torch"] == version("torch") and set(versions) == set(auto_runtime._PACKAGES)


def test_a_package_that_is_not_installed_has_no_version(monkeypatch):
    from rankrelay.rerankers.local import auto_runtime

    monkeypatch.setattr(auto_runtime, "_PACKAGES", ("torch", "a-runtime-nobody-installed"))
    assert auto_runtime.runtime_versions()["a-runtime-nobody-installed"] is None


def test_auto_is_the_default_and_fixes_its_own_precision(monkeypatch, tiny_ce_path):
    monkeypatch.delenv("RANKRELAY_RUNTIME")
    assert Settings().runtime == "auto"
    assert load_reranker(f"cross-encoder:{tiny_ce_path}").requested_runtime == "auto"
    with pytest.raises(ConfigError, match="runtime='auto' chooses the precision too"):
        load_reranker(f"cross-encoder:{tiny_ce_path}", runtime="auto", precision="bf16")


@pytest.mark.measures
def test_a_model_never_measured_here_serves_on_torch_at_once_and_switches_once_measured_in_the_background(
        tiny_ce_path, tiny_ce, tmp_path, monkeypatch, caplog):
    """The first use answers on torch while a child process measures; the switch waits for the test's go, so what
    is asserted in between cannot race the measurement. The next load reads the stored choice."""
    runtime_cache = str(tmp_path)  # never measured here (the session's shared cache may hold a choice already)
    from numerics import CROSS_RUNTIME, SAME_RUNTIME, assert_ranking_follows, assert_scores_close

    go, switch = threading.Event(), LocalModelReranker._switch_runtime
    monkeypatch.setattr(LocalModelReranker, "_switch_runtime",
                        lambda self, choice: go.wait(60) and switch(self, choice))
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="auto", cache_dir=runtime_cache)
    query, docs = "why does a wing stall", ["the wing lift and air flow", "paris is the capital of france",
                                            "boundary layer separation on the wing", "angle of attack and pressure"]
    with caplog.at_level(logging.DEBUG):
        first = rr.rerank(query, docs)
        ref = tiny_ce.rerank(query, docs)
        assert (rr.runtime, rr.precision, rr.runtime_choice, rr.measuring) == ("torch", "fp32", None, True)
        assert first.indices == ref.indices  # torch's own answer (same runtime: SAME_RUNTIME's tolerance)
        assert_scores_close([r.score for r in first], [r.score for r in ref], SAME_RUNTIME)
        go.set()
        choice = rr.wait_for_runtime(600)
    assert not rr.measuring and choice is rr.runtime_choice and not choice.cached
    said = [r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("rankrelay")]
    assert any("measures" in r.getMessage() and "background" in r.getMessage() for r in said)
    assert not any(r.levelno >= logging.WARNING for r in said)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the converters' warnings: at DEBUG
    res = rr.rerank(query, docs)
    assert [(t.runtime, t.precision) for t in choice.trials] == candidates("cpu", cpu_signature())
    assert (rr.runtime, rr.precision) == pick(choice.trials, 0.9)[:2] == (choice.runtime, choice.precision)
    assert rr.describe()["runtime"] == rr.runtime and rr.describe()["runtime_choice"] == choice.reason
    assert all(t.error is None and t.seconds > 0 for t in choice.trials)
    ref = tiny_ce.rerank(query, docs)
    assert_ranking_follows(res.indices, [r.score for r in sorted(ref, key=lambda r: r.index)], CROSS_RUNTIME)
    again = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="auto", cache_dir=runtime_cache)
    again.warm_up()
    assert again.runtime_choice.cached and (again.runtime, again.precision) == (rr.runtime, rr.precision)


def test_a_choice_made_under_a_looser_agreement_guard_is_not_reused_under_a_stricter_one(tmp_path):
    """onnx-int8 agrees on 0.9 of the top 10 here: chosen at min_agreement=0.9, out at 0.99 (measured again)."""
    half = REFERENCE.copy()
    half[:, [9, 10]] = half[:, [10, 9]]  # the 10th and 11th best swapped: top-10 overlap 0.9

    class Close(Machine):
        def sample(self, fwd):
            out = super().sample(fwd)
            return half if fwd[0] == "onnx-int8" else out

    loose = Close(COSTS).choose(tmp_path, min_agreement=0.9)
    strict_machine = Close(COSTS)
    strict = strict_machine.choose(tmp_path, min_agreement=0.99)
    assert not strict.cached and strict_machine.built  # measured again: the stored key names 0.9
    assert loose.runtime == "onnx-int8" and strict.runtime != "onnx-int8"


def test_a_runtime_is_timed_by_its_best_pass_not_its_last(tmp_path):
    """A load spike on a runtime's last pass must not count: the best of the passes is kept."""
    class Spiky(Machine):
        passes: dict = {}

        def sample(self, fwd):
            out = super().sample(fwd)
            n = self.passes[fwd] = self.passes.get(fwd, 0) + 1
            if n == 3:
                self.clock.sleep(1.0)  # the third (last) pass of every runtime is slowed
            return out

    choice = Spiky(COSTS).choose(tmp_path, cpu=AVX2, repeats=3)
    assert [(t.runtime, t.seconds) for t in choice.trials] == [("torch", 1.0), ("onnx", 0.875), ("openvino", 0.75)]


def test_a_choice_that_cannot_be_kept_is_used_and_the_warning_says_what_was_not_kept(tmp_path, caplog):
    blocked = tmp_path / "a-file"  # the cache folder is a file: nothing can be written under it
    blocked.write_text("")
    with caplog.at_level(logging.WARNING, "rankrelay.rerankers.local.auto_runtime"):
        choice = Machine(COSTS).choose(blocked)
    assert choice.runtime == "onnx-int8" and not choice.cached
    assert "could not keep the runtime choice in" in caplog.text and "measured again next time" in caplog.text


def test_the_speedup_is_none_unless_both_torch_and_the_chosen_runtime_were_timed():
    from rankrelay.rerankers.local.auto_runtime import RuntimeChoice

    torch_only = Trial("torch", "fp32", 1.0, 1.0, 1.0)
    assert speedup(RuntimeChoice("onnx", "fp32", "r", [torch_only, Trial("onnx", "fp32", 0.5, 1.0, 1.0)])) == 2.0
    assert speedup(RuntimeChoice("onnx", "fp32", "r", [torch_only])) is None
    assert speedup(RuntimeChoice("onnx", "fp32", "r", [Trial("onnx", "fp32", 0.5, 1.0, 1.0)])) is None
    assert speedup(RuntimeChoice("torch", "fp32", "torch is the only runtime here")) is None


def test_stored_timings_are_sane_from_a_tenth_of_a_microsecond_to_an_hour_inclusive():
    from rankrelay.rerankers.local.auto_runtime import SANE_SECONDS, sane_seconds

    low, high = SANE_SECONDS
    assert (low, high) == (1e-7, 3600.0) and sane_seconds(low, high, 1.0) and sane_seconds()
    assert not sane_seconds(low / 2) and not sane_seconds(high * 1.0001) and not sane_seconds("1.0")
