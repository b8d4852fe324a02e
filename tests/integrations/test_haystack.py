"""The Haystack ranker inside a real pipeline (in-memory store, BM25 retriever), in code and loaded from YAML."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from frameworks import CORPUS, QUERY, check_ranked, metadata

pytest.importorskip("haystack", reason="the haystack extra is not installed")
import haystack  # noqa: E402
from haystack import Document, Pipeline  # noqa: E402
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever  # noqa: E402
from haystack.document_stores.in_memory import InMemoryDocumentStore  # noqa: E402

from rankrelay.errors import ConfigError, InvalidDocumentError  # noqa: E402
from rankrelay.integrations.common import RERANK_KEYS  # noqa: E402
from rankrelay.integrations.haystack import RankRelayRanker  # noqa: E402
from rankrelay.scoring import relevance  # noqa: E402

AsyncPipeline = getattr(haystack, "AsyncPipeline", Pipeline)  # Haystack 3 runs any pipeline with run_async
TRUST = "rankrelay.integrations.haystack"


def load(text: str) -> Pipeline:
    """A pipeline from YAML, trusting this module as a user must (Haystack 3.4+ refuses unlisted modules)."""
    if "allowed_modules" in inspect.signature(Pipeline.loads).parameters:
        return Pipeline.loads(text, allowed_modules=[TRUST])
    return Pipeline.loads(text)


@pytest.fixture(scope="module")
def store():
    store = InMemoryDocumentStore()
    store.write_documents([Document(id=f"d{i}", content=t, meta=metadata(i)) for i, t in enumerate(CORPUS)])
    return store


def pipeline(store, reranker, cls=Pipeline):
    pipe = cls()
    pipe.add_component("retriever", InMemoryBM25Retriever(store, top_k=8))
    pipe.add_component("ranker", RankRelayRanker(reranker=reranker, top_k=3))
    pipe.connect("retriever.documents", "ranker.documents")
    return pipe


def inputs() -> dict:
    return {"retriever": {"query": QUERY}, "ranker": {"query": QUERY}}


def reference(store, tiny_ce):
    """BM25's candidates (ids) and the library's own reranking of their texts."""
    candidates = InMemoryBM25Retriever(store, top_k=8).run(query=QUERY)["documents"]
    return [d.id for d in candidates], tiny_ce.rerank(QUERY, [d.content for d in candidates])


def check(docs: list[Document], ids, ref, *, backend: str, fallbacks: list[str]) -> None:
    check_ranked([d.id for d in docs], {d.id: d.meta["rerank_score"] for d in docs}, ids, ref, top=3)
    for rank, d in enumerate(docs, 1):
        i = int(d.id[1:])
        assert d.content == CORPUS[i] and d.meta == {**metadata(i), **{k: d.meta[k] for k in RERANK_KEYS}}
        assert d.score == d.meta["relevance_score"] == pytest.approx(relevance(ref)[rank - 1])
        assert d.meta["rerank_rank"] == rank
        assert d.meta["rerank_backend"] == backend and d.meta["rerank_fallbacks"] == fallbacks


def test_pipeline_reranks_bm25_hits(store, tiny_ce_path, tiny_ce):
    ids, ref = reference(store, tiny_ce)
    out = pipeline(store, f"cross-encoder:{tiny_ce_path}").run(inputs())
    check(out["ranker"]["documents"], ids, ref, backend="cross-encoder", fallbacks=[])


def test_yaml_pipeline_round_trip(store, tiny_ce_path, tiny_ce):
    ids, ref = reference(store, tiny_ce)
    spec = {"spec": f"cross-encoder:{tiny_ce_path}", "batch_size": 4}
    text = pipeline(store, spec).dumps()
    assert "rankrelay.integrations.haystack.RankRelayRanker" in text and "batch_size: 4" in text
    loaded = load(text)
    ranker = loaded.get_component("ranker")
    assert ranker.reranker == spec and ranker.top_k == 3
    loaded.warm_up()
    assert ranker.client.batch_size == 4
    check(loaded.run(inputs())["ranker"]["documents"], ids, ref, backend="cross-encoder", fallbacks=[])


def test_fallback_chain_serializes_and_serves_from_the_local_model(store, failing_chain, fake_api, tiny_ce):
    ids, ref = reference(store, tiny_ce)
    loaded = load(pipeline(store, failing_chain).dumps())
    assert loaded.get_component("ranker").reranker == failing_chain
    check(loaded.run(inputs())["ranker"]["documents"], ids, ref, backend="cross-encoder", fallbacks=["tei"])
    assert fake_api.count() == 1


async def test_async_pipeline(store, tiny_ce_path, failing_chain, fake_api, tiny_ce):
    ids, ref = reference(store, tiny_ce)
    out = await pipeline(store, f"cross-encoder:{tiny_ce_path}", AsyncPipeline).run_async(inputs())
    check(out["ranker"]["documents"], ids, ref, backend="cross-encoder", fallbacks=[])
    pipe = pipeline(store, failing_chain, AsyncPipeline)
    out = await pipe.run_async(inputs())
    check(out["ranker"]["documents"], ids, ref, backend="cross-encoder", fallbacks=["tei"])
    assert fake_api.count() == 1 and fake_api.open_connections() == 1
    if hasattr(pipe, "close_async"):  # Haystack 3 closes its components: the chain's API client lets go
        await pipe.close_async()
        assert await asyncio.to_thread(fake_api.wait_connections, 0)


def test_empty_in_empty_out_and_top_k_conventions(tiny_ce_path):
    ranker = RankRelayRanker(reranker=f"cross-encoder:{tiny_ce_path}", top_k=None)
    assert ranker.run(query=QUERY, documents=[]) == {"documents": []}
    docs = [Document(content=t) for t in CORPUS]
    assert len(ranker.run(query=QUERY, documents=docs)["documents"]) == len(CORPUS)
    assert len(ranker.run(query=QUERY, documents=docs, top_k=2)["documents"]) == 2
    for bad in (0, -1):
        with pytest.raises(ValueError, match="top_k"):
            RankRelayRanker(reranker="identity", top_k=bad)
        with pytest.raises(ValueError, match="top_k"):
            ranker.run(query=QUERY, documents=docs, top_k=bad)


def test_bad_documents_and_what_comes_back(tiny_ce_path):
    ranker = RankRelayRanker(reranker=f"cross-encoder:{tiny_ce_path}", top_k=None)
    with pytest.raises(InvalidDocumentError, match="document 1 has no text"):
        ranker.run(query=QUERY, documents=[Document(content="a wing"), Document(content=None)])
    odd = Document(content="a wing")
    object.__setattr__(odd, "content", b"a wing")  # a component upstream that put bytes where text goes
    with pytest.raises(InvalidDocumentError, match="document 0 has bytes content"):
        ranker.run(query=QUERY, documents=[odd])
    marker = object()
    docs = [Document(id="a", content="the wing stalls", meta={"obj": marker}), Document(id="b", content=""),
            Document(id="c", content="the wing stalls")]
    out = ranker.run(query=QUERY, documents=docs)["documents"]
    assert sorted(d.id for d in out) == ["a", "b", "c"]  # the empty document is ranked, the duplicate kept
    by_id = {d.id: d for d in out}
    assert by_id["a"].meta["obj"] is marker and by_id["a"].meta["rerank_score"] == by_id["c"].meta["rerank_score"]
    assert docs[0].meta == {"obj": marker} and docs[0].score is None  # the caller's documents are not modified


def test_a_reranker_object_runs_but_does_not_serialize(tiny_ce):
    ranker = RankRelayRanker(reranker=tiny_ce, top_k=1)
    ranker.warm_up()
    assert ranker.client is tiny_ce and len(ranker.run(query=QUERY, documents=[Document(content="x")] * 2)
                                            ["documents"]) == 1
    with pytest.raises(ConfigError, match="serializes a reranker given as a spec"):
        ranker.to_dict()
