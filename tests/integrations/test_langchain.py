"""The LangChain compressor inside a real ContextualCompressionRetriever over an InMemoryVectorStore."""

from __future__ import annotations

import asyncio

import pytest
from frameworks import CORPUS, QUERY, check_ranked, metadata

pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
from langchain_classic.retrievers import ContextualCompressionRetriever  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from rankrelay.errors import InvalidDocumentError  # noqa: E402
from rankrelay.integrations.common import RERANK_KEYS  # noqa: E402
from rankrelay.integrations.langchain import RankRelayRerank  # noqa: E402
from rankrelay.scoring import relevance  # noqa: E402
from rankrelay.testing import API_KEY, Fault  # noqa: E402


class TinyEmbeddings(Embeddings):
    """LangChain embeddings from the tiny bi-encoder built at test time."""

    def __init__(self, model) -> None:
        self.model = model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(texts, show_progress_bar=False).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@pytest.fixture(scope="module")
def base_retriever(tiny_embedder):
    store = InMemoryVectorStore(TinyEmbeddings(tiny_embedder))
    store.add_documents([Document(t, metadata=metadata(i)) for i, t in enumerate(CORPUS)])
    return store.as_retriever(search_kwargs={"k": 8})


def reference(base_retriever, tiny_ce):
    """The vector store's candidates (ids) and the library's own reranking of their texts."""
    candidates = base_retriever.invoke(QUERY)
    return [d.metadata["doc_id"] for d in candidates], tiny_ce.rerank(QUERY, [d.page_content for d in candidates])


def check(docs: list[Document], ids: list[str], ref, *, backend: str, fallbacks: list[str]) -> None:
    got = [d.metadata["doc_id"] for d in docs]
    check_ranked(got, {d.metadata["doc_id"]: d.metadata["rerank_score"] for d in docs}, ids, ref, top=3)
    for rank, d in enumerate(docs, 1):
        i = int(d.metadata["doc_id"][1:])
        assert d.page_content == CORPUS[i]
        assert d.metadata == {**metadata(i), **{k: d.metadata[k] for k in RERANK_KEYS}}
        assert d.metadata["rerank_rank"] == rank
        assert d.metadata["relevance_score"] == pytest.approx(relevance(ref)[rank - 1])
        assert d.metadata["rerank_backend"] == backend and d.metadata["rerank_fallbacks"] == fallbacks


def test_compression_retriever_reranks_the_vector_store_hits(base_retriever, tiny_ce_path, tiny_ce):
    ids, ref = reference(base_retriever, tiny_ce)
    retriever = ContextualCompressionRetriever(
        base_compressor=RankRelayRerank(reranker=f"cross-encoder:{tiny_ce_path}", top_n=3),
        base_retriever=base_retriever)
    check(retriever.invoke(QUERY), ids, ref, backend="cross-encoder", fallbacks=[])


async def test_async_retriever_gets_the_same_ranking(base_retriever, tiny_ce_path, tiny_ce):
    ids, ref = reference(base_retriever, tiny_ce)
    retriever = ContextualCompressionRetriever(
        base_compressor=RankRelayRerank(reranker=f"cross-encoder:{tiny_ce_path}", top_n=3),
        base_retriever=base_retriever)
    check(await retriever.ainvoke(QUERY), ids, ref, backend="cross-encoder", fallbacks=[])


def test_fallback_chain_serves_from_the_local_model_when_the_api_fails(
        base_retriever, failing_chain, fake_api, tiny_ce):
    ids, ref = reference(base_retriever, tiny_ce)
    retriever = ContextualCompressionRetriever(base_compressor=RankRelayRerank(reranker=failing_chain, top_n=3),
                                               base_retriever=base_retriever)
    check(retriever.invoke(QUERY), ids, ref, backend="cross-encoder", fallbacks=["tei"])
    assert fake_api.count() == 1


async def test_async_fallback_chain(base_retriever, failing_chain, fake_api, tiny_ce):
    ids, ref = reference(base_retriever, tiny_ce)
    rerank = RankRelayRerank(reranker=failing_chain, top_n=3)
    docs = await rerank.acompress_documents(await base_retriever.ainvoke(QUERY), QUERY)
    check(list(docs), ids, ref, backend="cross-encoder", fallbacks=["tei"])
    assert fake_api.count() == 1


async def test_async_compress_does_not_block_the_event_loop(fake_api):
    hold = Fault("hold", seconds=20.0)  # the API answers when the loop lets another coroutine run
    fake_api.faults = [hold]
    rerank = RankRelayRerank(reranker={"spec": f"tei:{fake_api.url}", "api_key": API_KEY}, top_n=2)

    async def release_once_the_request_is_in_flight() -> None:
        while not fake_api.count():
            await asyncio.sleep(0.01)
        hold.release.set()

    task = asyncio.create_task(release_once_the_request_is_in_flight())
    docs = await rerank.acompress_documents([Document("red apple pie"), Document("green pear")], "red apple")
    await task
    assert hold.released is True  # a blocked loop could not have released it: the API would have waited 20 s
    assert [d.page_content for d in docs] == ["red apple pie", "green pear"]


def test_empty_in_empty_out_and_top_n_conventions(tiny_ce_path):
    spec = f"cross-encoder:{tiny_ce_path}"
    assert RankRelayRerank(reranker=spec).compress_documents([], QUERY) == []
    assert RankRelayRerank(reranker=spec).top_n == 3  # LangChain's Cohere compressor default
    docs = [Document(t, metadata=metadata(i)) for i, t in enumerate(CORPUS)]
    assert len(RankRelayRerank(reranker=spec, top_n=None).compress_documents(docs, QUERY)) == len(CORPUS)
    assert len(RankRelayRerank(reranker=spec, top_n=50).compress_documents(docs, QUERY)) == len(CORPUS)
    for bad in (0, -1, "three"):
        with pytest.raises(ValidationError, match="top_n"):
            RankRelayRerank(reranker=spec, top_n=bad)


def test_documents_without_text_are_typed_errors_and_empty_text_is_ranked(tiny_ce_path):
    rerank = RankRelayRerank(reranker=f"cross-encoder:{tiny_ce_path}", top_n=None)
    with pytest.raises(InvalidDocumentError, match="document 1 has int content"):
        rerank.compress_documents([Document("a wing"), Document.model_construct(page_content=5, metadata={})], QUERY)
    with pytest.raises(InvalidDocumentError, match="document 0 has no text"):
        rerank.compress_documents([Document.model_construct(page_content=None, metadata={})], QUERY)
    docs = rerank.compress_documents([Document("", metadata={"doc_id": "empty"}), Document("a wing stall")], QUERY)
    assert sorted(d.metadata.get("doc_id", "") for d in docs) == ["", "empty"]


def test_duplicates_and_unserializable_metadata_come_back_untouched(tiny_ce_path):
    marker = object()
    docs = [Document("the wing stalls", metadata={"doc_id": "a", "obj": marker}),
            Document("paris is a city", metadata={"doc_id": "b"}),
            Document("the wing stalls", metadata={"doc_id": "c"})]
    before = [dict(d.metadata) for d in docs]
    out = RankRelayRerank(reranker=f"cross-encoder:{tiny_ce_path}", top_n=None).compress_documents(docs, QUERY)
    assert sorted(d.metadata["doc_id"] for d in out) == ["a", "b", "c"]
    by_id = {d.metadata["doc_id"]: d for d in out}
    assert by_id["a"].metadata["rerank_score"] == by_id["c"].metadata["rerank_score"]  # same text, same score
    assert by_id["a"].metadata["obj"] is marker
    assert [d.metadata for d in docs] == before  # the caller's documents are not modified


def test_a_reranker_object_is_used_as_is(tiny_ce):
    rerank = RankRelayRerank(reranker=tiny_ce, top_n=1)
    assert rerank.client is tiny_ce
    (best,) = rerank.compress_documents([Document("cats"), Document(CORPUS[7])], QUERY)
    assert best.metadata["rerank_rank"] == 1


def test_a_chain_whose_cohere_key_is_missing_starts_and_serves_from_the_local_model(
        base_retriever, tiny_ce_path, tiny_ce, monkeypatch):
    pytest.importorskip("cohere")
    for name in ("CO_API_KEY", "COHERE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    ids, ref = reference(base_retriever, tiny_ce)
    rerank = RankRelayRerank(reranker=["cohere:rerank-v3.5", f"cross-encoder:{tiny_ce_path}"], top_n=3)
    retriever = ContextualCompressionRetriever(base_compressor=rerank, base_retriever=base_retriever)
    check(retriever.invoke(QUERY), ids, ref, backend="cross-encoder", fallbacks=["cohere:rerank-v3.5"])
