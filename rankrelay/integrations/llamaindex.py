"""LlamaIndex: :class:`RankRelayRerank`, a node postprocessor (``node_postprocessors=[...]`` of a query engine).

Example:
    >>> from rankrelay.integrations.llamaindex import RankRelayRerank
    >>> from llama_index.core.schema import NodeWithScore, TextNode
    >>> rerank = RankRelayRerank(reranker="random:1", top_n=2)
    >>> nodes = [NodeWithScore(node=TextNode(text=t), score=0.5) for t in ("a", "b", "c")]
    >>> [0.0 <= n.score <= 1.0 for n in rerank.postprocess_nodes(nodes, query_str="query")]
    [True, True]
"""

from __future__ import annotations

from typing import Any

from rankrelay._optional import import_optional

import_optional("llama_index.core", extra="llamaindex", feature="the LlamaIndex integration",
                package="llama-index-core")
from llama_index.core.bridge.pydantic import Field, PrivateAttr  # noqa: E402
from llama_index.core.callbacks import CBEventType, EventPayload  # noqa: E402
from llama_index.core.instrumentation import get_dispatcher  # noqa: E402
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle  # noqa: E402

from rankrelay.errors import InvalidInputError  # noqa: E402
from rankrelay.integrations.common import scored, texts_of  # noqa: E402
from rankrelay.rerankers.base import Reranker, label  # noqa: E402
from rankrelay.rerankers.registry import load_reranker  # noqa: E402
from rankrelay.results import RerankResult  # noqa: E402

dispatcher = get_dispatcher(__name__)


class RankRelayRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes with any rankrelay reranker; keep the best ``top_n``.

    ``NodeWithScore.score`` becomes the per-document relevance in [0, 1], as Cohere's postprocessor gives
    (:func:`rankrelay.scoring.relevance`: a cross-encoder's sigmoid, a hosted API's own score). Nodes are read
    as LlamaIndex's own rerankers read them (content with embed metadata)
    and are passed on, not copied. Like those rerankers, it emits the ``RERANKING`` callback event and the
    ReRank start/end instrumentation events; their model name is the reranker's label (a chain's reads
    ``fallback:tei -> cross-encoder:...``).

    Args:
        reranker: a spec (``"minilm-l6"``), a ``{"spec": ..., **options}`` dict, a list (a fallback chain)
            or a :class:`~rankrelay.Reranker`; built on first use.
        top_n: nodes kept (None: all); LlamaIndex's rerankers default to 2.
        keep_retrieval_score: keep the first stage's score in ``node.metadata["retrieval_score"]``.
    """

    reranker: Any = Field(default="minilm-l6", description="rankrelay spec, chain or Reranker")
    top_n: int | None = Field(default=2, ge=1, description="Top N nodes to return.")
    keep_retrieval_score: bool = Field(default=False, description="Keep the retrieval score in metadata.")
    _built: Reranker | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "RankRelayRerank"

    @property
    def client(self) -> Reranker:
        """The rankrelay reranker (built from the spec the first time it is needed)."""
        if self._built is None:
            self._built = load_reranker(self.reranker)
        return self._built

    def _texts(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> tuple[str, list[str]]:
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n or len(nodes),
                                          model_name=label(self.client)))
        if query_bundle is None:
            raise InvalidInputError("RankRelayRerank needs the query (a query bundle or query_str)")
        return query_bundle.query_str, texts_of(
            nodes, lambda n: n.node.get_content(metadata_mode=MetadataMode.EMBED), "node")

    def _payload(self, nodes: list[NodeWithScore], query: str) -> dict[str, Any]:
        return {EventPayload.NODES: nodes, EventPayload.MODEL_NAME: label(self.client),
                EventPayload.QUERY_STR: query, EventPayload.TOP_K: self.top_n}

    def _postprocess_nodes(self, nodes: list[NodeWithScore],
                           query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        query, texts = self._texts(nodes, query_bundle)
        if not nodes:
            return []
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query)) as event:
            out = self._scored(nodes, self.client.rerank(query, texts, top_n=self.top_n))
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    async def _apostprocess_nodes(self, nodes: list[NodeWithScore],
                                  query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        query, texts = self._texts(nodes, query_bundle)
        if not nodes:
            return []
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query)) as event:
            out = self._scored(nodes, await self.client.arerank(query, texts, top_n=self.top_n))
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    def _scored(self, nodes: list[NodeWithScore], result: RerankResult) -> list[NodeWithScore]:
        out = []
        for r, score in scored(result):  # the relevance in [0, 1], as Cohere's postprocessor gives
            original = nodes[r.index]
            if self.keep_retrieval_score:
                original.node.metadata["retrieval_score"] = original.score
            out.append(NodeWithScore(node=original.node, score=score))
        return out
