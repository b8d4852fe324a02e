"""Faults of the stored measurements (runtime='auto''s choices, a cascade's stage costs): damaged or absurd
timings, a full disk, the folder deleted between loads, two writers at once. Each is measured again or kept for
this process only, with one warning and a counter."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from faults_helpers import fill

from rankrelay import load_reranker
from rankrelay.rerankers.local.auto_runtime import STORE_FAILURES, keep_measurement


@pytest.mark.parametrize("seconds", [1e308, -1.0, float("nan"), 0.0])
def test_a_stored_runtime_choice_with_absurd_timings_is_measured_again(tmp_path, seconds, caplog):
    from rankrelay.rerankers.local.auto_runtime import RuntimeChoice, Trial, _read

    key = {"candidates": [["torch", "fp32"], ["onnx", "fp32"]], "files": "x"}
    choice = RuntimeChoice("onnx", "fp32", "measured", [Trial("torch", "fp32", 1.0, 1.0, 1.0),
                                                         Trial("onnx", "fp32", seconds, 1.0, 1.0)])
    path = tmp_path / "choice.json"
    path.write_text(json.dumps({"choice": choice.to_dict(), "key": key}))
    failures = STORE_FAILURES["read"]
    with caplog.at_level(logging.WARNING, "rankrelay.rerankers.local.auto_runtime"):
        assert _read(path, key) is None
        assert any("outside sane bounds" in r.getMessage() for r in caplog.records)
        assert STORE_FAILURES["read"] == failures + 1  # counted once
        path.write_text('{"choice": ')  # cut short
        assert _read(path, key) is None and STORE_FAILURES["read"] == failures + 2
        assert any("is unreadable" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("strong", [1e308, 1e-12])
def test_stored_stage_costs_outside_sane_bounds_are_timed_again(tiny_ce_path, tmp_path, strong, caplog):
    from rankrelay.rerankers.compose.keep_store import planned_costs

    cheap = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch", cache_dir=str(tmp_path))
    costs = planned_costs(None, cheap)
    (stored,) = (tmp_path / "runtimes" / "keep").glob("*.json")
    data = json.loads(stored.read_text())
    data["costs"]["strong"] = strong
    stored.write_text(json.dumps(data))
    failures = STORE_FAILURES["read"]
    with caplog.at_level(logging.WARNING):
        again = planned_costs(None, cheap)
    assert any("outside sane bounds" in r.getMessage() for r in caplog.records)
    assert STORE_FAILURES["read"] == failures + 1  # one failure, counted once
    assert again is not None and again.strong != strong and costs is not None
    assert json.loads(stored.read_text())["costs"]["strong"] == again.strong  # the fresh timing replaced it


def test_stage_costs_that_cannot_be_kept_on_a_full_disk_are_used_for_this_process(tiny_ce_path, small_disk, caplog):
    from rankrelay.rerankers.compose.keep_store import planned_costs

    strong = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch", cache_dir=str(small_disk))
    strong.warm_up()
    fill(small_disk)
    failures = STORE_FAILURES["write"]
    with caplog.at_level(logging.WARNING):
        costs = planned_costs(None, strong)
    assert costs is not None and costs.strong > 0
    assert any("could not keep the stage costs" in r.getMessage() for r in caplog.records)
    assert STORE_FAILURES["write"] == failures + 1


@pytest.mark.parametrize("damage", ["{not json", '{"key": 1}', '{"key": null, "costs": {}}', ""])
def test_damaged_stage_costs_are_timed_again_and_counted_once(tiny_ce_path, tmp_path, damage, caplog):
    from rankrelay.rerankers.compose.keep_store import planned_costs

    strong = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch", cache_dir=str(tmp_path))
    first = planned_costs(None, strong)
    (stored,) = (tmp_path / "runtimes" / "keep").glob("*.json")
    stored.write_text(damage)
    failures = STORE_FAILURES["read"]
    with caplog.at_level(logging.WARNING):
        again = planned_costs(None, strong)
    assert first is not None and again is not None and again.strong > 0
    key_changed = damage.startswith('{"key"')  # a readable file for other stages: not a failure, timed again
    assert STORE_FAILURES["read"] == failures + (0 if key_changed else 1)
    assert any("unreadable" in r.getMessage() for r in caplog.records) != key_changed
    assert json.loads(stored.read_text())["costs"]["strong"] == again.strong




def test_two_writers_of_one_stored_measurement_leave_one_whole_file(tmp_path):
    path = tmp_path / "runtimes" / "auto" / "choice.json"
    payloads = [{"writer": w, "pad": "x" * 50_000} for w in range(2)]

    def write(data):
        for _ in range(20):
            keep_measurement(path, data, "a test measurement")

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert json.loads(path.read_text()) in payloads  # one writer's whole file, never a mix
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left


def test_stored_measurements_deleted_between_loads_are_measured_again(tiny_ce_path, tmp_path):
    from rankrelay.rerankers.compose.keep_store import planned_costs

    strong = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch", cache_dir=str(tmp_path))
    assert planned_costs(None, strong) is not None
    import shutil

    shutil.rmtree(tmp_path / "runtimes")
    assert planned_costs(None, strong) is not None and list((tmp_path / "runtimes" / "keep").glob("*.json"))
