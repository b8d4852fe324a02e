"""Faults of the disk score cache: a full disk, a database damaged mid-run, its folder deleted mid-run, two
writers on one folder. Each is skipped with one warning and a counter; the answer is served."""

from __future__ import annotations

import logging
import sqlite3

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


def test_a_score_cache_folder_deleted_mid_run_serves_every_answer(tiny_ce_path, tiny_ce, tmp_path):
    import shutil

    rr = cached_reranker(tiny_ce_path, tmp_path / "cache")
    rr.rerank(QUERY, docs(4, "before"))
    shutil.rmtree(tmp_path / "cache")
    res = rr.rerank(QUERY, docs(6, "after"))
    assert res.indices == tiny_ce.rerank(QUERY, docs(6, "after")).indices


def test_two_processes_writing_one_score_cache_folder_keep_every_score_readable(tmp_path):
    """Two DiskScoreCache objects on one folder (two workers of a service) write overlapping keys at once."""
    import threading

    from rankrelay.rerankers.local.score_cache import DiskScoreCache

    caches = [DiskScoreCache(tmp_path / "shared"), DiskScoreCache(tmp_path / "shared")]
    keys = [bytes([i % 256, i // 256]) * 8 for i in range(400)]

    def write(cache, offset):
        for start in range(0, len(keys), 20):
            cache.put_many({k: float(keys.index(k)) for k in keys[start:start + 20]})
            cache.get_many(keys[(start + offset) % len(keys):][:20])

    threads = [threading.Thread(target=write, args=(c, n * 200)) for n, c in enumerate(caches)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert caches[0].get_many(keys) == {k: float(i) for i, k in enumerate(keys)} == caches[1].get_many(keys)
    assert caches[0].failures == caches[1].failures == 0
