"""Qdrant in embedded local mode (a folder, no server) against FAISS flat, on the tiny bi-encoder."""

import random
import sys

import pytest
from conftest import WORDS, finishes
from numerics import assert_ranking_follows, assert_scores_close
from test_retrieval import QUERIES
from test_retrieval import corpus as retrieval_corpus

pytest.importorskip("qdrant_client", reason="the qdrant extra is not installed")

from rankrelay import (  # noqa: E402
    BackendUnavailableError,
    ConfigError,
    MissingDependencyError,
    TwoStageSearch,
    load_reranker,  # noqa: E402
)
from rankrelay.errors import EmptyQueryError, InvalidInputError  # noqa: E402
from rankrelay.retrieval import DenseRetriever, open_index  # noqa: E402
from rankrelay.retrieval.qdrant import QdrantRetriever  # noqa: E402


def corpus(n):
    """test_retrieval's corpus, with a list in the metadata (it must come back from the payload as it went)."""
    return [{**d, "metadata": {**d["metadata"], "tags": ["a", "b"]}} for d in retrieval_corpus(n)]


@pytest.fixture(scope="module")
def docs():
    return corpus(200)


@pytest.fixture(scope="module")
def flat(tiny_bi_path, docs):
    return DenseRetriever.build(docs, model=tiny_bi_path, device="cpu")


@pytest.fixture(scope="module")
def store(tiny_bi_path, docs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("qdrant")
    retriever = QdrantRetriever.build(docs, model=tiny_bi_path, path=folder, device="cpu")
    yield retriever, folder
    retriever.close()


def test_local_top_k_equals_faiss_flat(store, flat, docs):
    qdrant, _ = store
    assert len(qdrant) == 200 and qdrant.name == "qdrant"
    emb = flat.encoder.encode([d["text"] for d in docs])
    for query in QUERIES:
        exact = (emb @ flat.encoder.encode([query])[0]).tolist()
        got, want = qdrant.search(query, k=10), flat.search(query, k=10)
        assert_ranking_follows(got.indices, exact)
        assert_scores_close([r.score for r in got], [r.score for r in want])
        assert [r.rank for r in got] == list(range(1, 11)) and got.num_candidates == 200
        for r in got:
            assert (r.id, r.text, r.metadata) == (docs[r.index]["id"], docs[r.index]["text"], docs[r.index]["metadata"])


def test_save_open_round_trip_and_the_model_check(docs, tiny_bi_path, tiny_ce_path, tmp_path):
    folder = tmp_path / "index" / "qdrant"
    built = QdrantRetriever.build(docs[:50], model=tiny_bi_path, path=folder, device="cpu")
    before = {q: built.search(q, 5).ids for q in QUERIES}
    built.save(folder)
    built.close()  # an embedded folder is locked while open
    again = QdrantRetriever.open(folder, device="cpu")
    assert len(again) == 50 and {q: again.search(q, 5).ids for q in QUERIES} == before
    again.close()
    for kind in ("dense", "hybrid"):  # what `rankrelay search` and the service's /search open
        opened = open_index(tmp_path / "index", kind, device="cpu")
        assert opened.name == "qdrant" and opened.search(QUERIES[0], 5).ids == before[QUERIES[0]]
        opened.close()
    with pytest.raises(ConfigError, match="was built with"):
        QdrantRetriever.open(folder, model=tiny_ce_path)
    with pytest.raises(ConfigError, match="no Qdrant collection 'other'"):
        QdrantRetriever.open(tmp_path / "empty", collection="other")


def test_incremental_add_equals_building_at_once(tiny_bi_path, docs, flat, tmp_path):
    part = QdrantRetriever.build(docs[:120], model=tiny_bi_path, path=tmp_path / "q", device="cpu")
    part.add(docs[120:])
    assert len(part) == 200 and [d.id for d in part.docs] == [d["id"] for d in docs]
    for q in QUERIES:
        assert part.search(q, 10).ids == flat.search(q, 10).ids
    part.close()


def test_long_documents_score_by_their_best_passage(tiny_bi_path, tmp_path):
    rng = random.Random(1)
    long_doc = " ".join(rng.choice(WORDS) for _ in range(200))  # about 3x the tiny encoder's 64 tokens
    docs = [{"id": "short", "text": "python sort order"}, {"id": "long", "text": long_doc}, {"id": "x", "text": "cat"}]
    dense = DenseRetriever.build(docs, model=tiny_bi_path, device="cpu")
    qdrant = QdrantRetriever.build(docs, model=tiny_bi_path, path=tmp_path / "q", device="cpu")
    for query in ("wing stall angle", "python sort"):
        got, want = qdrant.search(query, 10), dense.search(query, 10)
        assert sorted(got.ids) == ["long", "short", "x"]  # one hit per document, not per passage
        by_id = {r.id: r for r in want}
        assert_scores_close([r.score for r in got], [by_id[r.id].score for r in got])
        assert next(r for r in got if r.id == "long").passage == by_id["long"].passage
    qdrant.close()


def test_two_stage_search(store, tiny_ce_path):
    qdrant, _ = store
    reranker = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    out = TwoStageSearch(qdrant, reranker, retrieve_k=20, top_n=5)("wing stall angle")
    direct = reranker.rerank("wing stall angle", [r.document for r in qdrant.search("wing stall angle", 20)], top_n=5)
    assert out.ids == direct.ids and out.served_by == "cross-encoder"
    assert out.num_candidates == 20


def test_bad_input(store, tiny_bi_path, tmp_path):
    qdrant, _ = store
    with pytest.raises(EmptyQueryError):
        qdrant.search(" ")
    with pytest.raises(InvalidInputError):
        qdrant.search("wing", k=0)
    with pytest.raises(InvalidInputError, match="empty"):
        QdrantRetriever.build([], model=tiny_bi_path, path=tmp_path / "q")
    with pytest.raises(ConfigError, match="either a folder"):
        QdrantRetriever.build(["x"], model=tiny_bi_path)


def test_an_unreachable_server_fails_fast_naming_it(refused_url, tiny_bi_path):
    with pytest.raises(BackendUnavailableError, match=refused_url.replace(".", r"\.")):
        finishes(lambda: QdrantRetriever.open(url=refused_url))


def test_missing_qdrant_client_names_the_extra(monkeypatch, tiny_bi_path, tmp_path):
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    with pytest.raises(MissingDependencyError, match=r"rankrelay\[qdrant\]"):
        QdrantRetriever.build(["x"], model=tiny_bi_path, path=tmp_path / "q")


def test_the_service_searches_a_qdrant_index(docs, tiny_bi_path, tiny_ce_path, tmp_path):
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    import httpx
    from serving import running

    from rankrelay.server.app import create_app

    folder = tmp_path / "index" / "qdrant"
    built = QdrantRetriever.build(docs[:40], model=tiny_bi_path, path=folder, device="cpu")
    built.save(folder)
    built.close()
    retriever = open_index(tmp_path / "index", "dense", device="cpu")  # what `rankrelay serve --index` opens
    reranker = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    expected = TwoStageSearch(retriever, reranker, retrieve_k=10, top_n=3)("wing stall angle")
    app = create_app({"tiny": f"cross-encoder:{tiny_ce_path}"}, allow_unauthenticated=True, retriever=retriever)
    with running(app) as (url, _):
        reply = httpx.post(f"{url}/search", json={"query": "wing stall angle", "retrieve_k": 10, "top_n": 3},
                           timeout=60)
    retriever.close()
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert [r["id"] for r in data["results"]] == expected.ids and data["served_by"] == "cross-encoder"
    assert [r["first_rank"] for r in data["results"]] == [m["first_rank"] for m in expected.movement]
    assert data["num_candidates"] == 10


def test_an_embedded_retriever_left_open_exits_without_a_traceback(tmp_path):
    import subprocess
    import sys

    # the client every QdrantRetriever opens, held in a reference cycle that only the interpreter's last
    # collection frees (where the probe's unclosed retriever was), after imports are gone
    script = ("import gc\nfrom rankrelay.retrieval.qdrant import connect\ngc.disable()\n"
              "class Holder:\n    pass\nholder = Holder()\n"
              f"holder.self, holder.client = holder, connect(path={str(tmp_path / 'q')!r})\n"
              "del holder\nprint('built')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "built" in done.stdout
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


# a key sent over plain http to 127.0.0.1: qdrant-client rightly warns, and the fake server has no TLS
INSECURE = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")


@pytest.fixture
def qdrant_server():
    from rankrelay.testing import FakeQdrantAPI

    api = FakeQdrantAPI().start()
    yield api
    api.stop()


@INSECURE
def test_server_mode_builds_saves_and_reopens_a_collection_that_searches_like_the_embedded_one(
        qdrant_server, store, docs, tiny_bi_path, tmp_path, monkeypatch):
    from rankrelay.testing import API_KEY

    embedded, _ = store
    built = QdrantRetriever.build(docs, model=tiny_bi_path, url=qdrant_server.url, api_key=API_KEY, device="cpu")
    assert len(built) == 200 and built.location == qdrant_server.url
    found = {q: built.search(q, 10) for q in QUERIES}
    for query, got in found.items():
        assert got.ids == embedded.search(query, 10).ids
        assert all((r.text, r.metadata) == (docs[r.index]["text"], docs[r.index]["metadata"]) for r in got)
    folder = built.save(tmp_path / "index" / "qdrant")
    built.close()
    manifest = (folder / "manifest.json").read_text()
    assert qdrant_server.url in manifest and API_KEY not in manifest  # the key never lands in a file
    monkeypatch.setenv("QDRANT_API_KEY", API_KEY)  # reopening takes the key from the environment
    again = open_index(tmp_path / "index", "dense", device="cpu")
    assert again.name == "qdrant" and len(again) == 200
    assert {q: again.search(q, 10).ids for q in QUERIES} == {q: r.ids for q, r in found.items()}
    assert [d.id for d in again.docs] == [d["id"] for d in docs]  # read back page by page (scroll)
    again.close()
    sent = [r for r in qdrant_server.requests if r["path"].startswith("/collections")]
    assert sent and all(r["headers"].get("api-key") == API_KEY for r in sent)


@INSECURE
def test_a_wrong_api_key_is_an_authentication_error_not_an_unreachable_server(qdrant_server, tiny_bi_path,
                                                                                monkeypatch):
    from rankrelay.errors import AuthenticationError

    monkeypatch.delenv("QDRANT_API_KEY", raising=False)
    for key in ("wrong-key", None):
        with pytest.raises(AuthenticationError, match=r"Qdrant at .* refused the API key.*QDRANT_API_KEY"):
            finishes(lambda key=key: QdrantRetriever.open(url=qdrant_server.url, api_key=key))


@INSECURE
def test_server_mode_names_a_missing_collection(qdrant_server):
    from rankrelay.testing import API_KEY

    with pytest.raises(ConfigError, match=f"no Qdrant collection 'absent' at {qdrant_server.url}"):
        QdrantRetriever.open(url=qdrant_server.url, api_key=API_KEY, collection="absent")
