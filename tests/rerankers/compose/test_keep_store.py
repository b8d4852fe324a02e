"""Stage costs kept per machine: read back for exactly the same stages, CPU and runtime versions; timed again when
any of them changes (tests/faults/test_stored_measurements.py has the damaged, absurd and full-disk cases)."""

import json

import pytest

from rankrelay import load_reranker
from rankrelay.rerankers.compose import keep_store
from rankrelay.rerankers.local import auto_runtime


@pytest.fixture
def stages(tiny_ce_path, tiny_ce2_path, tmp_path):
    def make(path):
        rr = load_reranker(f"cross-encoder:{path}", device="cpu", runtime="torch", cache_dir=str(tmp_path))
        rr.warm_up()
        return rr

    return make(tiny_ce2_path), make(tiny_ce_path), tmp_path


def stored(folder):
    return sorted((folder / "runtimes" / "keep").glob("*.json"))


@pytest.mark.parametrize("one_stage", [False, True])
def test_stage_costs_are_timed_once_and_read_back_for_the_same_stages(stages, monkeypatch, one_stage):
    cheap, strong, folder = stages
    cheap = None if one_stage else cheap  # a cascade's first stage may be free (cheap cost 0): read back too
    first = keep_store.planned_costs(cheap, strong)
    assert first is not None and (first.cheap == 0) == one_stage
    timed = []
    monkeypatch.setattr(keep_store, "sample_costs", lambda *a: timed.append(a))
    assert keep_store.planned_costs(cheap, strong) == first and timed == []  # read, not timed
    (path,) = stored(folder)
    data = json.loads(path.read_text())
    assert data["key"]["cheap"] == (None if one_stage else cheap._identity)
    assert data["key"]["strong"] == strong._identity


@pytest.mark.parametrize("change", ["runtime versions", "cpu", "stages"])
def test_stage_costs_are_timed_again_when_the_runtimes_the_cpu_or_the_stages_change(stages, monkeypatch, change):
    cheap, strong, folder = stages
    keep_store.planned_costs(cheap, strong)
    if change == "runtime versions":
        versions = auto_runtime.runtime_versions()
        monkeypatch.setattr(auto_runtime, "runtime_versions", lambda: {**versions, "onnxruntime": "0.0.1"})
    elif change == "cpu":
        import rankrelay.devices

        monkeypatch.setattr(rankrelay.devices, "cpu_signature", lambda: {"model": "another", "flags": []})
    else:
        cheap, strong = strong, cheap
    keep_store.planned_costs(cheap, strong)
    assert len(stored(folder)) == 2  # a second measurement, under its own key


@pytest.mark.parametrize(("part", "absurd"), [("strong", 1e308), ("reference", 1e308), ("reference", -1.0),
                                              ("cheap", 1e308), ("cheap", -2.0)])
def test_each_stored_stage_cost_outside_sane_bounds_is_timed_again(stages, monkeypatch, part, absurd):
    cheap, strong, folder = stages
    first = keep_store.planned_costs(cheap, strong)
    (path,) = stored(folder)
    data = json.loads(path.read_text())
    data["costs"][part] = absurd
    path.write_text(json.dumps(data))
    timed = []
    monkeypatch.setattr(keep_store, "sample_costs", lambda *a: timed.append(a) or first)
    failures = auto_runtime.STORE_FAILURES["read"]
    assert keep_store.planned_costs(cheap, strong) == first and len(timed) == 1
    assert auto_runtime.STORE_FAILURES["read"] == failures + 1
