"""First-stage retrieval (dense FAISS, BM25, hybrid) and the two-stage search that feeds rerankers.

Example:
    >>> from rankrelay.retrieval import BM25Retriever, TwoStageSearch
    >>> from rankrelay.rerankers.base import BaseReranker, Scored
    >>> class Shortest(BaseReranker):
    ...     name = "shortest"
    ...     def _score_batch(self, queries, documents):
    ...         return [Scored([-len(d.text) for d in docs]) for docs in documents], {}
    >>> search = TwoStageSearch(BM25Retriever.build(["a wing stall", "wing", "pasta"]), Shortest(), top_n=2)
    >>> out = search("wing")
    >>> out.ids, [m["first_rank"] for m in out.movement]
    (['1', '0'], [1, 2])
"""

from rankrelay.retrieval.bm25 import BM25Retriever
from rankrelay.retrieval.corpus import load_corpus, load_qrels, load_queries
from rankrelay.retrieval.dense import INDEX_TYPES, DenseRetriever
from rankrelay.retrieval.hybrid import HybridRetriever, open_index
from rankrelay.retrieval.pipeline import SearchResult, TwoStageSearch

__all__ = [
    "INDEX_TYPES",
    "BM25Retriever",
    "DenseRetriever",
    "HybridRetriever",
    "SearchResult",
    "TwoStageSearch",
    "load_corpus",
    "load_qrels",
    "load_queries",
    "open_index",
]
