"""The LlamaIndex postprocessor inside a real query engine over a VectorStoreIndex."""

from __future__ import annotations

import pytest
from frameworks import CORPUS, QUERY, check_ranked, metadata

pytest.importorskip("llama_index.core", reason="the llamaindex extra is not installed")
from llama_index.core import VectorStoreIndex  # noqa: E402
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler  # noqa: E402
from llama_index.core.embeddings import BaseEmbedding  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.core.response_synthesizers.no_text import NoText  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from rankrelay import load_reranker  # noqa: E402
from rankrelay.errors import InvalidInputError  # noqa: E402
from rankrelay.integrations.llamaindex import RankRelayRerank  # noqa: E402
from rankrelay.scoring import relevance  # noqa: E402


class TinyEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from the tiny bi-encoder built at test time."""

    model: object = None

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.model.encode([text], show_progress_bar=False)[0].tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


@pytest.fixture(scope="module")
def retriever(tiny_embedder):
    nodes = [TextNode(text=t, id_=f"d{i}", metadata=metadata(i)) for i, t in enumerate(CORPUS)]
    index = VectorStoreIndex(nodes, embed_model=TinyEmbedding(model=tiny_embedder))
    return index.as_retriever(similarity_top_k=8)


def engine(retriever, postprocessor, callback_manager=None) -> RetrieverQueryEngine:
    """A query engine that retrieves, reranks and synthesizes nothing (no LLM is needed)."""
    return RetrieverQueryEngine(retriever=retriever, response_synthesizer=NoText(llm=MockLLM()),
                                node_postprocessors=[postprocessor], callback_manager=callback_manager)


def reference(retriever, tiny_ce):
    """The index's candidates (ids) and the library's own reranking of their texts as LlamaIndex reads them."""
    candidates = retriever.retrieve(QUERY)
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in candidates]
    return [n.node.node_id for n in candidates], tiny_ce.rerank(QUERY, texts)


def check(nodes: list[NodeWithScore], ids, ref) -> None:
    check_ranked([n.node.node_id for n in nodes], None, ids, ref, top=2)  # a node keeps only the normalized score
    assert [n.score for n in nodes] == pytest.approx(relevance(ref)[:2])
    for n in nodes:
        i = int(n.node.node_id[1:])
        assert n.node.text == CORPUS[i] and n.node.metadata == metadata(i)


def test_query_engine_reranks_the_retrieved_nodes(retriever, tiny_ce_path, tiny_ce):
    ids, ref = reference(retriever, tiny_ce)
    rerank = RankRelayRerank(reranker=f"cross-encoder:{tiny_ce_path}")
    assert rerank.top_n == 2  # LlamaIndex's rerankers' default
    check(engine(retriever, rerank).query(QUERY).source_nodes, ids, ref)


async def test_async_query_engine(retriever, tiny_ce_path, tiny_ce):
    ids, ref = reference(retriever, tiny_ce)
    response = await engine(retriever, RankRelayRerank(reranker=f"cross-encoder:{tiny_ce_path}")).aquery(QUERY)
    check(response.source_nodes, ids, ref)


def test_fallback_chain_in_the_query_engine(retriever, failing_chain, fake_api, tiny_ce):
    ids, ref = reference(retriever, tiny_ce)
    debug = LlamaDebugHandler()
    rerank = RankRelayRerank(reranker=failing_chain)
    check(engine(retriever, rerank, CallbackManager([debug])).query(QUERY).source_nodes, ids, ref)
    assert fake_api.count() == 1
    ((start, end),) = debug.get_event_pairs(CBEventType.RERANKING)
    assert start.payload["model_name"].startswith("fallback:tei") and len(end.payload["nodes"]) == 2


async def test_async_fallback_chain(retriever, failing_chain, fake_api, tiny_ce):
    ids, ref = reference(retriever, tiny_ce)
    check((await engine(retriever, RankRelayRerank(reranker=failing_chain)).aquery(QUERY)).source_nodes, ids, ref)
    assert fake_api.count() == 1


def test_empty_in_empty_out_top_n_and_the_query(tiny_ce_path):
    rerank = RankRelayRerank(reranker=f"cross-encoder:{tiny_ce_path}", top_n=None)
    assert rerank.postprocess_nodes([], query_str=QUERY) == []
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.1) for t in CORPUS]
    assert len(rerank.postprocess_nodes(nodes, query_str=QUERY)) == len(CORPUS)
    with pytest.raises(InvalidInputError) as err:
        rerank.postprocess_nodes(nodes)
    assert str(err.value) == "RankRelayRerank needs the query (a query bundle or query_str)"
    assert RankRelayRerank.class_name() == "RankRelayRerank"  # the name LlamaIndex serializes it under
    for bad in (0, -2):
        with pytest.raises(ValidationError, match="top_n"):
            RankRelayRerank(reranker="identity", top_n=bad)


def test_keep_retrieval_score_empty_text_and_duplicates(tiny_ce_path):
    marker = object()
    nodes = [NodeWithScore(node=TextNode(text="the wing stalls", id_="a", metadata={"obj": marker}), score=0.9),
             NodeWithScore(node=TextNode(text="", id_="b"), score=0.8),
             NodeWithScore(node=TextNode(text="the wing stalls", id_="c"), score=0.7)]
    # what the reranker sees is each node's content with its embedded metadata (so a's text is not c's)
    from llama_index.core.schema import MetadataMode

    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    rerank = RankRelayRerank(reranker=f"cross-encoder:{tiny_ce_path}", top_n=None, keep_retrieval_score=True)
    out = rerank.postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    assert sorted(n.node.node_id for n in out) == ["a", "b", "c"]  # the empty node is ranked, not dropped
    assert {n.node.node_id: n.node.metadata["retrieval_score"] for n in out} == {"a": 0.9, "b": 0.8, "c": 0.7}
    assert out[[n.node.node_id for n in out].index("a")].node.metadata["obj"] is marker
    direct = load_reranker(f"cross-encoder:{tiny_ce_path}").rerank(QUERY, texts)
    assert [n.node.node_id for n in out] == ["abc"[i] for i in direct.indices]  # the reranker's own order
