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
from rankrelay.errors import DamagedArtifactError, InvalidInputError
from rankrelay.hashing import folder_checksums, read_json_file, verify_checksums
from rankrelay.results import Document, DocumentLike, RerankResult
from rankrelay.retrieval.base import BaseRetriever, hits_result, read_docs, with_ids, write_docs

logger = logging.getLogger(__name__)
#: the BM25 folder's manifest: settings and the checksum of every other file
MANIFEST = "bm25.json"


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
        tokens = bm25s.tokenize([d.text for d in docs], stopwords=stopwords, show_progress=False)
        if not tokens.vocab:
            raise InvalidInputError(f"the corpus has no word to index ({len(docs)} documents, every word a stopword "
                                    "or punctuation)")
        model = bm25s.BM25(k1=k1, b=b)
        model.index(tokens, show_progress=False)
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
        """Write the index, the documents and ``bm25.json`` (settings and the checksum of every file)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.bm25.save(str(folder), show_progress=False)
        write_docs(folder / "docs.jsonl", self.docs)
        files = folder_checksums(folder, [p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST])
        (folder / MANIFEST).write_text(json.dumps({"stopwords": self.stopwords, "corpus_size": len(self.docs),
                                                   "files": files}, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BM25Retriever:
        """Reopen a saved index, every file verified against its checksum first."""
        folder = Path(path)
        rebuild = f"rebuild the index with 'rankrelay index CORPUS --out {folder.parent}'"
        if not (folder / MANIFEST).exists():
            raise InvalidInputError(f"{str(folder)!r} holds no BM25 index (no {MANIFEST})")
        config = read_json_file(folder / MANIFEST, rebuild)
        if not isinstance(config, dict) or not isinstance(config.get("corpus_size"), int):
            raise DamagedArtifactError(f"{folder / MANIFEST} is not a BM25 manifest; {rebuild}")
        if isinstance(config.get("files"), dict):
            verify_checksums(folder, config["files"], rebuild)
        else:
            logger.warning("%s predates checksums: its files cannot be verified; %s", folder, rebuild)
        try:
            bm25 = _bm25s().BM25.load(str(folder), show_progress=False)
            docs = read_docs(folder / "docs.jsonl")
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise DamagedArtifactError(f"the BM25 index in {folder} cannot be read ({type(exc).__name__}: {exc}); "
                                       f"{rebuild}") from None
        if len(docs) != config["corpus_size"]:
            raise DamagedArtifactError(f"{folder / 'docs.jsonl'} holds {len(docs)} documents, the manifest "
                                       f"{config['corpus_size']}; {rebuild}")
        return cls(bm25, docs, config.get("stopwords"))
