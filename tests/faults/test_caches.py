"""Faults of the caches and stored measurements: a disk score cache on a full disk or damaged mid-run,
and stored runtime choices and stage costs that are damaged or absurd. Each is skipped with one warning and a
counter; the answer is served."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest
from faults_helpers import fill

from rankrelay import load_reranker

QUERY = "what lifts a wing"


def docs(n: int, tag: str) -> list[str]:
    return [f"{tag} document {i} about wings and lift" for i in range(n)]


def cached_reranker(path: str, folder) -> object:
    rr = load_reranker(f"cross-encoder:{path}", device="cpu", runtime="torch", score_cache=str(folder))
    rr.warm_up()
    return rr


def test_a_full_disk_under_the_score_cache_serves_every_answer_with_one_warning(tiny_ce_path, tiny_ce, small_disk,
                                                                                caplog):
    rr = cached_reranker(tiny_ce_path, small_disk / "cache")
    rr.rerank(QUERY, docs(4, "before"))
    fill(small_disk)
    with caplog.at_level(logging.WARNING, logger="rankrelay.rerankers.local.score_cache"):
        for round_ in range(30):  # enough new pairs that the cache's database must grow
            res = rr.rerank(QUERY, docs(40, f"round{round_}"))
            expected = tiny_ce.rerank(QUERY, docs(40, f"round{round_}"))
            assert res.indices == expected.indices
    cache = rr.score_cache
    assert cache.failures >= 1
    assert sum("cannot be written" in r.getMessage() for r in caplog.records) == 1
    (small_disk / "ballast").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rankrelay.rerankers.local.score_cache"):
        rr.rerank(QUERY, docs(4, "after"))
    assert any("can be written again" in r.getMessage() for r in caplog.records)


def test_a_score_cache_damaged_mid_run_is_read_as_empty_and_the_answer_served(tiny_ce_path, tiny_ce, tmp_path):
    rr = cached_reranker(tiny_ce_path, tmp_path / "cache")
    rr.rerank(QUERY, docs(4, "before"))
    with sqlite3.connect(tmp_path / "cache" / "cache.db") as db:
        db.execute("DROP TABLE Cache")
    res = rr.rerank(QUERY, docs(4, "before"))
    assert res.indices == tiny_ce.rerank(QUERY, docs(4, "before")).indices and rr.score_cache.failures >= 1


@pytest.mark.parametrize("seconds", [1e308, -1.0, float("nan"), 0.0])
def test_a_stored_runtime_choice_with_absurd_timings_is_measured_again(tmp_path, seconds, caplog):
    from rankrelay.rerankers.local.auto_runtime import RuntimeChoice, Trial, _read

    key = {"candidates": [["torch", "fp32"], ["onnx", "fp32"]], "files": "x"}
    choice = RuntimeChoice("onnx", "fp32", "measured", [Trial("torch", "fp32", 1.0, 1.0, 1.0),
                                                         Trial("onnx", "fp32", seconds, 1.0, 1.0)])
    path = tmp_path / "choice.json"
    path.write_text(json.dumps({"choice": choice.to_dict(), "key": key}))
    with caplog.at_level(logging.WARNING):
        assert _read(path, key) is None
    assert any("outside sane bounds" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("strong", [1e308, 1e-12])
def test_stored_stage_costs_outside_sane_bounds_are_timed_again(tiny_ce_path, tmp_path, strong, caplog):
    from rankrelay.rerankers.compose.keep_store import planned_costs

    cheap = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch", cache_dir=str(tmp_path))
    costs = planned_costs(None, cheap)
    (stored,) = (tmp_path / "runtimes" / "keep").glob("*.json")
    data = json.loads(stored.read_text())
    data["costs"]["strong"] = strong
    stored.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        again = planned_costs(None, cheap)
    assert any("outside sane bounds" in r.getMessage() for r in caplog.records)
    assert again is not None and again.strong != strong and costs is not None
    assert json.loads(stored.read_text())["costs"]["strong"] == again.strong  # the fresh timing replaced it


def test_stage_costs_that_cannot_be_kept_on_a_full_disk_are_used_for_this_process(tiny_ce_path, small_disk, caplog):
    from rankrelay.rerankers.compose.keep_store import planned_costs

    strong = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch", cache_dir=str(small_disk))
    strong.warm_up()
    fill(small_disk)
    with caplog.at_level(logging.WARNING):
        costs = planned_costs(None, strong)
    assert costs is not None and costs.strong > 0
    assert any("could not keep the stage costs" in r.getMessage() for r in caplog.records)


def test_a_score_cache_folder_deleted_mid_run_serves_every_answer(tiny_ce_path, tiny_ce, tmp_path):
    import shutil

    rr = cached_reranker(tiny_ce_path, tmp_path / "cache")
    rr.rerank(QUERY, docs(4, "before"))
    shutil.rmtree(tmp_path / "cache")
    res = rr.rerank(QUERY, docs(6, "after"))
    assert res.indices == tiny_ce.rerank(QUERY, docs(6, "after")).indices
