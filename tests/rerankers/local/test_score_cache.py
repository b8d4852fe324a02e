"""The score cache: repeated pairs skip the model; identities never mix; bounded; shared across processes."""

import sqlite3
import struct
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
from numerics import assert_scores_close

from rankrelay import load_reranker
from rankrelay.errors import ConfigError
from rankrelay.rerankers.local.score_cache import DiskScoreCache, open_score_cache, score_key

QUERY = "why does a wing stall"
DOCS = ["the wing lift and air flow", "paris is the capital of france", "boundary layer separation on the wing",
        "python sort is stable", "angle of attack and pressure"]


def count_passes(rr) -> list[int]:
    """Number of pairs in each forward pass from now on."""
    calls: list[int] = []
    preprocess = rr.encoder.preprocess
    rr.encoder.preprocess = lambda inputs, **kw: (calls.append(len(inputs)), preprocess(inputs, **kw))[1]
    return calls


def test_repeated_query_skips_the_model_and_reports_hits(tiny_ce_path):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    first = rr.rerank(QUERY, DOCS)
    assert first.info["score_cache"] == {"hits": 0, "misses": len(DOCS)}
    passes = count_passes(rr)
    again = rr.rerank(QUERY, DOCS + ["cat and dog"])
    assert sum(passes) == 1  # only the new document went through the model
    assert again.info["score_cache"] == {"hits": len(DOCS), "misses": 1}
    assert {r.index: r.score for r in again if r.index < len(DOCS)} == {r.index: r.score for r in first}


def test_cache_off_scores_every_time(tiny_ce_path):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache="off")
    rr.rerank(QUERY, DOCS)
    passes = count_passes(rr)
    res = rr.rerank(QUERY, DOCS)
    assert sum(passes) == len(DOCS) and "score_cache" not in res.info


def test_keys_never_mix_fields_or_identities():
    assert score_key("m", "ab", "c") != score_key("m", "a", "bc")
    assert score_key("m", "q", "p") != score_key("m2", "q", "p")
    assert len(score_key("m", "q", "p")) == 16


def test_another_window_or_runtime_never_reads_old_scores(tiny_ce_path, tmp_path):
    store = str(tmp_path / "scores")
    full = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache=store)
    long_doc = " ".join(["wing"] * 60)
    full.rerank(QUERY, [long_doc, *DOCS], )
    short = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache=store, max_length=32,
                          long_documents="truncate")
    res = short.rerank(QUERY, [long_doc, *DOCS])
    assert res.info["score_cache"]["hits"] == 0
    same = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache=store)
    assert same.rerank(QUERY, DOCS).info["score_cache"] == {"hits": len(DOCS), "misses": 0}


def test_memory_cache_is_bounded(tiny_ce_path):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache_size=3)
    rr.rerank(QUERY, DOCS)
    assert len(rr.score_cache) == 3
    assert rr.rerank(QUERY, DOCS[-3:]).info["score_cache"]["hits"] == 3  # the most recent stay


def test_disk_cache_is_bounded_in_bytes_and_evicts_the_least_recently_read(tmp_path):
    cache = DiskScoreCache(tmp_path / "small", max_bytes=200_000)
    kept, others = score_key("m", "q", "kept"), [score_key("m", "q", f"old{i}") for i in range(5)]
    cache.put_many({kept: -1.0} | {k: 0.0 for k in others})
    for start in range(0, 20_000, 1000):
        cache.get_many([kept])  # read often: the oldest stored, but never the least recently used
        cache.put_many({score_key("m", "q", str(i)): float(i) for i in range(start, start + 1000)})
    assert cache.volume() < 1_000_000 and len(cache) < 20_000
    assert cache.get_many([score_key("m", "q", "19999")]) == {score_key("m", "q", "19999"): 19999.0}
    assert cache.get_many([kept, *others]) == {kept: -1.0}


def test_disk_cache_is_shared_across_processes(tiny_ce_path, tmp_path):
    store = str(tmp_path / "shared")
    script = textwrap.dedent(f"""
        from rankrelay import load_reranker
        rr = load_reranker("cross-encoder:{tiny_ce_path}", device="cpu", score_cache={store!r})
        res = rr.rerank({QUERY!r}, {DOCS!r})
        print(res.info["score_cache"]["misses"])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == str(len(DOCS))
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache=store)
    rr.warm_up()
    passes = count_passes(rr)
    res = rr.rerank(QUERY, DOCS)
    assert passes == [] and res.info["score_cache"] == {"hits": len(DOCS), "misses": 0}
    fresh = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache="off").rerank(QUERY, DOCS)
    assert_scores_close([r.score for r in res], [r.score for r in fresh])
    assert open_score_cache(store) is rr.score_cache  # one store object per directory in a process


def test_concurrent_calls_share_the_cache_correctly(tiny_ce_path):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    plain = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache="off")
    requests = [(f"{QUERY} {i % 4}", DOCS[i % 3:]) for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda r: rr.rerank(*r), requests))
    for (q, d), res in zip(requests, results):
        expected = {r.index: r.score for r in plain.rerank(q, d)}
        assert_scores_close([r.score for r in res], [expected[r.index] for r in res])
    hits = sum(r.info["score_cache"]["hits"] for r in results)
    assert hits >= sum(len(d) for _, d in requests) - sum(len(DOCS[i:]) for i in range(3)) * 4


@pytest.mark.parametrize("backend", ["bi-encoder"])
def test_bi_encoder_scores_are_cached_too(tiny_bi_path, backend):
    rr = load_reranker(f"{backend}:{tiny_bi_path}", device="cpu")
    rr.rerank(QUERY, DOCS)
    assert rr.rerank(QUERY, DOCS).info["score_cache"] == {"hits": len(DOCS), "misses": 0}


# -- trust (#25): nothing unpickled, tampered rows ignored and counted -----------------------------
class _Marker:
    """Unpickling this creates a file: what a crafted row in a shared cache would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def _rows(folder):
    import sqlite3

    return sqlite3.connect(folder / "cache.db")


def test_a_pickled_row_in_the_shared_cache_is_never_unpickled(tiny_ce_path, tmp_path):
    import pickle

    folder = tmp_path / "cache"
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache=str(folder))
    fresh = [r.score for r in rr.rerank(QUERY, DOCS)]
    marker = tmp_path / "pwned"
    with _rows(folder) as db:  # mode 4 is diskcache's pickle mode
        db.execute("UPDATE Cache SET mode = 4, value = ?", (pickle.dumps(_Marker(str(marker))),))
    again = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache=str(folder))
    res = again.rerank(QUERY, DOCS)
    assert not marker.exists()
    assert res.info["score_cache"]["hits"] == 0
    assert_scores_close([r.score for r in res], fresh)
    assert open_score_cache(str(folder)).rejected == len(DOCS)


@pytest.mark.parametrize("tampered", [1e308, b"\x00" * 16, "text"])
def test_a_value_written_over_a_score_is_ignored_and_scored_again(tiny_ce_path, tmp_path, tampered):
    folder = tmp_path / "cache"
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache=str(folder))
    fresh = [r.score for r in rr.rerank(QUERY, DOCS)]
    with _rows(folder) as db:
        db.execute("UPDATE Cache SET value = ?", (tampered,))
    res = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache=str(folder)).rerank(QUERY, DOCS)
    assert res.info["score_cache"]["hits"] == 0 and max(abs(r.score) for r in res) < 1e6
    assert_scores_close([r.score for r in res], fresh)


def test_a_score_moved_to_another_key_is_not_served(tmp_path):
    cache = DiskScoreCache(tmp_path / "c")
    a, b = score_key("m", "q", "a"), score_key("m", "q", "b")
    cache.put_many({a: 1.0, b: 2.0})
    with _rows(tmp_path / "c") as db:
        value = db.execute("SELECT value FROM Cache WHERE key = ?", (a,)).fetchone()[0]
        db.execute("UPDATE Cache SET value = ? WHERE key = ?", (value, b))
    assert cache.get_many([a, b]) == {a: 1.0}


def test_a_damaged_or_misplaced_cache_is_a_one_line_config_error(tmp_path):
    from rankrelay.errors import ConfigError

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        DiskScoreCache(tmp_path / "file")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cache.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="delete the folder"):
        DiskScoreCache(tmp_path / "bad")


# --- what mutation testing found unchecked (tests/mutation/run.py --only score_cache) ---

def test_a_key_hashes_each_field_with_its_length():
    import hashlib

    from rankrelay.rerankers.local.score_cache import score_key

    h = hashlib.blake2b(digest_size=16)
    for part in (b"id", b"q", b"p\xc3\xa9"):
        h.update(len(part).to_bytes(8, "little") + part)
    assert score_key("id", "q", "pé") == h.digest() and len(score_key("a", "b", "c")) == 16
    assert score_key("id", "q", "\ud800") != score_key("id", "q", "?")  # a lone surrogate still makes a key


def test_packed_scores_round_trip_and_anything_else_is_refused():
    from rankrelay.rerankers.local.score_cache import pack_score, unpack_score

    key, other = b"k" * 16, b"o" * 16
    packed = pack_score(key, -2.5)
    assert len(packed) == 16 and packed[:8] == struct.pack("<d", -2.5) and unpack_score(key, packed) == -2.5
    assert unpack_score(other, packed) is None  # moved to another key
    assert unpack_score(key, packed[:15]) is None and unpack_score(key, packed + b"x") is None
    assert unpack_score(key, bytearray(packed)) is None and unpack_score(key, -2.5) is None
    assert unpack_score(key, pack_score(key, float("inf"))) is None
    assert unpack_score(key, pack_score(key, float("nan"))) is None
    assert unpack_score(key, pack_score(key, 0.0)) == 0.0


def test_opening_a_score_cache(tmp_path):
    from rankrelay.lru import LRU
    from rankrelay.rerankers.local.score_cache import DEFAULT_SIZE, DiskScoreCache, open_score_cache

    assert open_score_cache(None) is None and open_score_cache("off") is None
    memory = open_score_cache("memory", size=7)
    assert isinstance(memory, LRU) and memory.max_size == 7
    assert open_score_cache("memory").max_size == DEFAULT_SIZE == 100_000
    own = LRU(3)
    assert open_score_cache(own) is own
    disk = open_score_cache(str(tmp_path / "c"))
    assert isinstance(disk, DiskScoreCache) and disk.directory == str((tmp_path / "c").resolve())
    assert open_score_cache(f"disk:{tmp_path / 'c'}") is disk  # one store per folder in a process
    assert repr(disk) == f"<DiskScoreCache {(tmp_path / 'c').resolve()}>"
    for bad in ("", "  ", 5):
        with pytest.raises(ConfigError, match="^score_cache must be 'memory', 'off', a directory or a ScoreCache"):
            open_score_cache(bad)
    with pytest.raises(ConfigError, match="^score_cache_size must be an int >= 1, got 0$"):
        open_score_cache("memory", size=0)


def test_a_disk_cache_counts_and_logs_rejected_rows_once(tmp_path, caplog):
    from rankrelay.rerankers.local.score_cache import DiskScoreCache

    cache = DiskScoreCache(tmp_path / "d", max_bytes=10**6)
    keys = [bytes([i]) * 16 for i in range(3)]
    cache.put_many({keys[0]: 1.0, keys[1]: 2})
    assert len(cache) == 2 and cache.volume() > 0 and cache.get_many(keys) == {keys[0]: 1.0, keys[1]: 2.0}
    cache._cache.set(keys[2], b"\x00" * 16)  # raw bytes that are not a packed score
    cache._cache.set(keys[0], cache._cache.get(keys[1]))  # a row moved to another key
    with caplog.at_level("WARNING"):
        assert cache.get_many(keys) == {keys[1]: 2.0}
        cache.get_many(keys)
    assert cache.rejected == 4
    assert sum("holds rows that are not scores written by rankrelay" in m for m in caplog.messages) == 1
    with pytest.raises(TypeError, match="^the score cache stores 16-byte packed scores only$"):
        cache._cache.set(keys[0], b"short")
    cache.close()


def test_one_rejected_row_is_logged_at_once_and_a_missing_key_does_not_end_the_lookup(tmp_path, caplog):
    cache = DiskScoreCache(tmp_path / "d")
    missing, good, bad = (bytes([i]) * 16 for i in range(3))
    cache.put_many({good: 1.0})
    cache._cache.set(bad, b"\x01" * 16)
    with caplog.at_level("WARNING"):
        assert cache.get_many([missing, bad, good]) == {good: 1.0}
    assert cache.rejected == 1 and len(caplog.records) == 1


def test_a_row_in_another_mode_is_rejected_even_when_its_bytes_are_a_valid_score(tmp_path):
    from rankrelay.rerankers.local.score_cache import pack_score

    cache = DiskScoreCache(tmp_path / "d")
    key = score_key("m", "q", "p")
    cache.put_many({key: 3.0})
    with _rows(tmp_path / "d") as db:  # the same bytes, marked as a pickle (mode 4): never decoded, not served
        db.execute("UPDATE Cache SET mode = 4, value = ?", (pack_score(key, 3.0),))
    assert cache.get_many([key]) == {} and cache.rejected == 1


def test_the_store_reads_raw_keys_only_and_refuses_to_unpickle_one(tmp_path):
    import diskcache

    from rankrelay.rerankers.local.score_cache import _raw_disk

    disk = _raw_disk(diskcache)(str(tmp_path))
    assert disk.get(b"k" * 16, True) == b"k" * 16
    with pytest.raises(OSError, match="^not a raw key$"):
        disk.get(b"\x80\x04K\x01.", False)  # a pickled key (mode 0): refused, not unpickled


def test_the_byte_bound_counts_the_database_pages_a_score_is_stored_inline(tmp_path):
    cache = DiskScoreCache(tmp_path / "d")
    cache.put_many({bytes([i]) * 16: float(i) for i in range(50)})
    with _rows(tmp_path / "d") as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
    assert cache.volume() == pages  # no per-row size on top: an inline score has no file of its own


def test_what_goes_wrong_with_a_disk_cache_is_named(tmp_path, monkeypatch):
    from rankrelay.errors import MissingDependencyError

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"is a file, not a folder; name a folder \(score_cache=DIR\) or remove "):
        DiskScoreCache(tmp_path / "file")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cache.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match=r"damaged or unreadable \(DatabaseError: .*\); delete the folder and it "
                                          r"is rebuilt$"):
        DiskScoreCache(tmp_path / "bad")
    cache = DiskScoreCache(tmp_path / "dropped")
    with _rows(tmp_path / "dropped") as db:
        db.execute("DROP TABLE Cache")
    assert cache.get_many([b"k" * 16]) == {} and cache.failures == 1  # mid-run: served without it, counted
    monkeypatch.setitem(sys.modules, "diskcache", None)
    with pytest.raises(MissingDependencyError, match=r"^a persistent score cache needs .*rankrelay\[cache\]"):
        DiskScoreCache(tmp_path / "d")


class Breakable:
    """A diskcache stand-in whose reads or writes fail like a full disk while ``broken`` names them."""

    def __init__(self):
        self.rows, self.broken = {}, set()

    def get(self, key):
        if "read" in self.broken:
            raise sqlite3.OperationalError("disk I/O error")
        return self.rows.get(key)

    def set(self, key, value):
        if "write" in self.broken:
            raise sqlite3.OperationalError("database or disk is full")
        self.rows[key] = value


def test_a_disk_cache_that_fails_is_counted_said_once_per_direction_and_said_again_when_it_works(tmp_path, caplog):
    import logging

    cache = DiskScoreCache(tmp_path / "d")
    cache._cache.close()
    cache._cache = inner = Breakable()
    keys = [bytes([i]) * 16 for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="rankrelay.rerankers.local.score_cache"):
        cache.put_many({keys[0]: 1.5})
        inner.broken = {"write"}
        cache.put_many({keys[1]: 2.5})  # one failed write
        assert cache.failures == 1 and cache.get_many(keys) == {keys[0]: 1.5}  # reads still work
        inner.broken = set()
        cache.put_many({keys[1]: 2.5})
        inner.broken = {"read"}
        assert cache.get_many(keys) == {} and cache.get_many(keys) == {} and cache.failures == 3  # two failed reads
        inner.broken = set()
        assert cache.get_many(keys) == {keys[0]: 1.5, keys[1]: 2.5} and cache.failures == 3
        cache.get_many(keys)
        cache.put_many({keys[2]: 3.5})  # working again: nothing more to say
        inner.broken = {"write"}
        cache.put_many({keys[2]: 4.5})  # a second outage is said again
    said = [r.getMessage().split(f"{cache.directory} ")[1] for r in caplog.records]
    assert [s.split(" (")[0] for s in said] == ["cannot be written", "can be written again", "cannot be read",
                                               "can be read again", "cannot be written"]
    assert "OperationalError: database or disk is full" in said[0] and "disk I/O error" in said[2]
