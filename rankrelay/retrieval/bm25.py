"""Lexical retrieval with BM25 (the ``bm25s`` package): exact-term matches a bi-encoder can miss.

Example:
    >>> from rankrelay.retrieval.bm25 import BM25Retriever
    >>> bm25 = BM25Retriever.build(["the wing stalls", "pasta recipes", "wing flaps"])
    >>> bm25.search("wing stalls", k=2).ids
    ['0', '2']
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.errors import InvalidInputError
from rankrelay.results import Document, DocumentLike, RerankResult
from rankrelay.retrieval.base import BaseRetriever, hits_result, read_docs, with_ids, write_docs


def _bm25s() -> Any:
    module = import_optional("bm25s", extra="retrieval", feature="BM25 retrieval")
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG to stderr
    return module


class BM25Retriever(BaseRetriever):
    """BM25 (Lucene variant, k1=1.5, b=0.75) over lower-cased word tokens with English stopwords removed."""

    name = "bm25"
    model = "bm25"

    def __init__(self, bm25: Any, docs: list[Document], stopwords: str | None = "en") -> None:
        self.bm25 = bm25
        self.docs = docs
        self.stopwords = stopwords

    @classmethod
    def build(cls, corpus: Sequence[DocumentLike], *, k1: float = 1.5, b: float = 0.75,
              stopwords: str | None = "en") -> BM25Retriever:
        """Index ``corpus`` (ids default to positions)."""
        bm25s = _bm25s()
        docs = with_ids(corpus)
        if not docs:
            raise InvalidInputError("the corpus is empty: nothing to index")
        model = bm25s.BM25(k1=k1, b=b)
        model.index(bm25s.tokenize([d.text for d in docs], stopwords=stopwords, show_progress=False),
                    show_progress=False)
        return cls(model, docs, stopwords)

    def _search(self, queries: list[str], k: int) -> list[RerankResult]:
        """BM25 matches; documents sharing no term with the query are left out."""
        bm25s = _bm25s()
        start = perf_counter()
        tokens = bm25s.tokenize(queries, stopwords=self.stopwords, show_progress=False)
        ids, scores = self.bm25.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        ms = (perf_counter() - start) * 1000.0 / len(queries)
        out = []
        for query, row_ids, row_scores in zip(queries, ids, scores):
            keep = [(int(i), float(s)) for i, s in zip(row_ids, row_scores) if s > 0]
            out.append(hits_result(query, self.docs, [i for i, _ in keep], [s for _, s in keep],
                                   self.name, self.model, ms))
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.bm25.save(str(folder), show_progress=False)
        write_docs(folder / "docs.jsonl", self.docs)
        (folder / "bm25.json").write_text(json.dumps({"stopwords": self.stopwords, "corpus_size": len(self.docs)}))
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BM25Retriever:
        folder = Path(path)
        if not (folder / "bm25.json").exists():
            raise InvalidInputError(f"{str(folder)!r} holds no BM25 index (no bm25.json)")
        config = json.loads((folder / "bm25.json").read_text())
        return cls(_bm25s().BM25.load(str(folder), show_progress=False), read_docs(folder / "docs.jsonl"),
                   config["stopwords"])
