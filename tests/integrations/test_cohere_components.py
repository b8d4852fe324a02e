"""The frameworks' own Cohere components pointed at ``rankrelay serve``: the "no code change" path.

langchain-cohere pins cohere<6, so these run in the cohere 5 environment (``make test-cohere5``), where
LangChain's ``CohereRerank`` and LlamaIndex's ``CohereRerank`` are installed beside rankrelay. The served
model is a hosted-shape backend on a local fake, so no torch is needed there.
"""

from __future__ import annotations

import pytest
from serving import running

pytest.importorskip("fastapi", reason="the server extra is not installed")
pytest.importorskip("langchain_cohere", reason="langchain-cohere (cohere<6) is installed by `make test-cohere5`")
pytest.importorskip("llama_index.postprocessor.cohere_rerank",
                    reason="llama-index-postprocessor-cohere-rerank is installed by `make test-cohere5`")
from langchain_cohere import CohereRerank as LangChainCohereRerank  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from llama_index.postprocessor.cohere_rerank import CohereRerank as LlamaIndexCohereRerank  # noqa: E402

from rankrelay import load_reranker  # noqa: E402
from rankrelay.integrations.langchain import RankRelayRerank  # noqa: E402
from rankrelay.scoring import relevance  # noqa: E402
from rankrelay.server.app import create_app  # noqa: E402
from rankrelay.testing import FakeRerankAPI  # noqa: E402

KEY = "service-key"
QUERY = "red apple pie recipe"
TEXTS = ["green pear", "red apple pie", "a recipe for apple pie", "red car", "pie", "apple pie recipe with red apples"]


@pytest.fixture(scope="module")
def served():
    """``rankrelay serve`` (the real app on a socket) serving TEI on a local fake as ``rerank-v3.5``."""
    upstream = FakeRerankAPI(api_key=None).start()
    spec = f"tei:{upstream.url}"
    with running(create_app({"rerank-v3.5": spec}, api_keys=[KEY])) as (url, _):
        yield url, spec
    upstream.stop()


def test_langchain_cohere_rerank_gets_the_library_ranking(served):
    url, spec = served
    expected = load_reranker(spec).rerank(QUERY, TEXTS, top_n=3)
    cohere = LangChainCohereRerank(cohere_api_key=KEY, base_url=url, model="rerank-v3.5", top_n=3)
    docs = cohere.compress_documents([Document(t, metadata={"i": i}) for i, t in enumerate(TEXTS)], QUERY)
    assert [d.metadata["i"] for d in docs] == expected.indices
    assert [d.metadata["relevance_score"] for d in docs] == pytest.approx(
        relevance(expected))
    ours = RankRelayRerank(reranker=spec, top_n=3).compress_documents(
        [Document(t, metadata={"i": i}) for i, t in enumerate(TEXTS)], QUERY)
    assert [(d.metadata["i"], d.metadata["relevance_score"]) for d in ours] == \
        [(d.metadata["i"], d.metadata["relevance_score"]) for d in docs]


def test_llamaindex_cohere_rerank_gets_the_library_ranking(served):
    url, spec = served
    expected = load_reranker(spec).rerank(QUERY, TEXTS, top_n=2)
    cohere = LlamaIndexCohereRerank(api_key=KEY, base_url=url, model="rerank-v3.5", top_n=2)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(TEXTS)]
    out = cohere.postprocess_nodes(nodes, QueryBundle(QUERY))
    assert [int(n.node.node_id) for n in out] == expected.indices
    assert [n.score for n in out] == pytest.approx(relevance(expected))


def test_an_unknown_model_reaches_the_component_as_cohere_s_error(served):
    url, _ = served
    cohere = LangChainCohereRerank(cohere_api_key=KEY, base_url=url, model="rerank-english-v2.0", top_n=3)
    with pytest.raises(Exception, match="rerank-english-v2.0") as err:
        cohere.compress_documents([Document("red apple")], QUERY)
    assert type(err.value).__name__ == "NotFoundError"
