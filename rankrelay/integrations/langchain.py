"""LangChain: :class:`RankRelayRerank`, a document compressor for ``ContextualCompressionRetriever`` or any chain.

Example:
    >>> from rankrelay.integrations.langchain import RankRelayRerank
    >>> from langchain_core.documents import Document
    >>> rerank = RankRelayRerank(reranker="random:1", top_n=2)
    >>> docs = rerank.compress_documents([Document("a"), Document("b"), Document("c")], "query")
    >>> len(docs), sorted(docs[0].metadata)
    (2, ['relevance_score', 'rerank_backend', 'rerank_fallbacks', 'rerank_rank', 'rerank_score'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rankrelay._optional import import_optional

import_optional("langchain_core", extra="langchain", feature="the LangChain integration", package="langchain-core")
from langchain_core.callbacks import Callbacks  # noqa: E402
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from pydantic import ConfigDict, Field, PrivateAttr  # noqa: E402

from rankrelay.integrations.common import rerank_metadata, scored, texts_of  # noqa: E402
from rankrelay.rerankers.base import Reranker  # noqa: E402
from rankrelay.rerankers.registry import load_reranker  # noqa: E402
from rankrelay.results import RerankResult  # noqa: E402


class RankRelayRerank(BaseDocumentCompressor):
    """Rerank retrieved documents with any rankrelay reranker; keep the best ``top_n``.

    Each returned document is a copy whose metadata keeps every original key and gains ``relevance_score``
    (the per-document relevance in [0, 1], as Cohere's compressor gives), ``rerank_score``, ``rerank_rank``,
    ``rerank_backend`` and ``rerank_fallbacks``.

    Args:
        reranker: a spec (``"minilm-l6"``), a ``{"spec": ..., **options}`` dict, a list (a fallback chain)
            or a :class:`~rankrelay.Reranker`; built on first use.
        top_n: documents kept (None: all), as LangChain's Cohere compressor (default 3).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reranker: Any = "minilm-l6"
    top_n: int | None = Field(3, ge=1)
    _built: Reranker | None = PrivateAttr(None)

    @property
    def client(self) -> Reranker:
        """The rankrelay reranker (built from the spec the first time it is needed)."""
        if self._built is None:
            self._built = load_reranker(self.reranker)
        return self._built

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        """The best ``top_n`` of ``documents`` for ``query``, best first (empty in, empty out)."""
        if not documents:
            return []
        texts = texts_of(documents, lambda d: d.page_content, "document")
        return self._annotated(documents, self.client.rerank(query, texts, top_n=self.top_n))

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Callbacks | None = None) -> Sequence[Document]:
        """Async :meth:`compress_documents`: awaits the reranker's ``arerank`` (the event loop is never blocked)."""
        if not documents:
            return []
        texts = texts_of(documents, lambda d: d.page_content, "document")
        return self._annotated(documents, await self.client.arerank(query, texts, top_n=self.top_n))

    @staticmethod
    def _annotated(documents: Sequence[Document], result: RerankResult) -> list[Document]:
        return [documents[r.index].model_copy(update={"metadata": {**documents[r.index].metadata,
                                                                   **rerank_metadata(r, result, score)}})
                for r, score in scored(result)]
