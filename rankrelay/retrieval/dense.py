"""Dense retrieval: a sentence-transformers bi-encoder and a FAISS index (flat, HNSW or IVF).

Embeddings are unit length and the index is inner product, so scores are cosine similarities.
A document longer than the encoder's window is split into passages (the reranker's windows); each
passage is a vector and a document scores by its best passage (MaxP), whose span the result keeps.
A saved index is a folder: ``index.faiss``, ``docs.jsonl`` (ids, text, metadata), ``passages.json``
(which document and span each vector is) and ``manifest.json`` (model, dimension, index type,
corpus size, rankrelay version, checksum).

Example:
    >>> from rankrelay.retrieval.dense import INDEX_TYPES
    >>> INDEX_TYPES
    ('flat', 'hnsw', 'ivf')
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from rankrelay._optional import import_optional
from rankrelay.errors import ConfigError, DamagedArtifactError, InvalidInputError
from rankrelay.hashing import file_sha256, folder_checksums, read_json_file, verify_checksums
from rankrelay.hub import canonical_model_id
from rankrelay.rerankers.local.bi_encoder import BiEncoderReranker
from rankrelay.results import Document, DocumentLike, RerankResult
from rankrelay.retrieval.base import BaseRetriever, hits_result, read_docs, with_ids, write_docs

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "hnsw", "ivf")
FILES = {"index": "index.faiss", "docs": "docs.jsonl", "passages": "passages.json", "manifest": "manifest.json"}
#: Over-fetch bound when documents have several passages: at most this many vectors per wanted hit.
OVERFETCH = 8


def _faiss() -> Any:
    return import_optional("faiss", extra="retrieval", feature="dense retrieval", package="faiss-cpu")


class DenseRetriever(BaseRetriever):
    """Nearest neighbours of the query embedding among document embeddings.

    Build with :meth:`build`, reopen with :meth:`load`; ``search`` returns a
    :class:`~rankrelay.RerankResult` of the corpus documents (``index`` = corpus position).
    """

    name = "dense"
    score_normalization = "none"  # cosine similarities: comparable across queries as they are

    def __init__(self, encoder: BiEncoderReranker, index: Any, docs: list[Document], index_type: str,
                 passages: list[tuple[int, int, int]] | None = None) -> None:
        self.encoder = encoder
        self.index = index
        self.docs = docs
        self.index_type = index_type
        #: per vector: (document position, start, end) of the passage it embeds
        self.passages: list[tuple[int, int, int]] = passages if passages is not None else [
            (i, 0, len(d.text)) for i, d in enumerate(docs)]

    @property
    def model(self) -> str:
        """The bi-encoder's model id."""
        return self.encoder.model or ""

    # -- building --------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        corpus: Sequence[DocumentLike],
        model: str = "all-minilm-l6",
        index: str = "flat",
        *,
        device: str = "auto",
        batch_size: int = 64,
        show_progress: bool = False,
        hnsw_m: int = 64,
        ef_construction: int = 200,
        ef_search: int = 512,
        nlist: int | None = None,
        nprobe: int | None = None,
        long_documents: str = "passages",
    ) -> DenseRetriever:
        """Embed ``corpus`` and index it.

        Args:
            corpus: documents (str, Document or dicts); ids default to positions.
            model: bi-encoder id, alias (``all-minilm-l6``) or path.
            index: ``flat`` (exact), ``hnsw`` or ``ivf`` (trained on the corpus).
            hnsw_m, ef_construction, ef_search: HNSW graph degree and beam widths (defaults measured
                in benchmarks/retrieval.py: recall@100 0.997 of flat at 7x less search time on 100k vectors).
            nlist, nprobe: IVF lists (default about 4 * sqrt(n)) and lists searched (default nlist / 8).
            long_documents: ``passages`` (a document longer than the encoder's window becomes several
                vectors and scores by its best) or ``truncate`` (one vector of its start, logged).
        """
        if index not in INDEX_TYPES:
            raise ConfigError(f"unknown index type {index!r}; choose one of {', '.join(INDEX_TYPES)}")
        docs = with_ids(corpus)
        if not docs:
            raise InvalidInputError("the corpus is empty: nothing to index")
        encoder = BiEncoderReranker(model, device=device, batch_size=batch_size, long_documents=long_documents)
        retriever = cls(encoder, None, [], index, [])
        start = perf_counter()
        vectors = retriever._embed(docs, 0, show_progress)
        faiss = _faiss()
        dim = vectors.shape[1]
        if index == "flat":
            idx = faiss.IndexFlatIP(dim)
        elif index == "hnsw":
            idx = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = ef_construction
            idx.hnsw.efSearch = ef_search
        else:
            lists = nlist or max(1, min(int(4 * math.sqrt(len(vectors))), len(vectors) // 39 or 1))
            idx = faiss.index_factory(dim, f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT)  # owns its quantizer
            idx.train(vectors)
            idx.nprobe = nprobe or max(1, lists // 8)
        idx.add(vectors)
        retriever.index = idx
        retriever.docs = docs
        logger.info("indexed %d documents (%s, dim %d) in %.1f s", len(docs), index, dim, perf_counter() - start)
        return retriever

    def _embed(self, docs: list[Document], first: int, show_progress: bool = False) -> np.ndarray:
        """Vectors of the passages of ``docs`` (positions from ``first``); records them in ``passages``."""
        texts = [d.text for d in docs]
        plans = self.encoder.plan_passages("query", texts)  # loads the model; a bi-encoder ignores the query
        spans = [(first + i, a, b) for i, p in enumerate(plans) for a, b in p.spans]
        split = sum(p.split for p in plans)
        truncated = sum(p.truncated for p in plans)
        if truncated:
            logger.warning("%d of %d documents are longer than the encoder's %d tokens and are embedded from "
                           "their start (long_documents='truncate')", truncated, len(docs), self.encoder.window)
        if split:
            logger.info("%d of %d documents are longer than the encoder's %d tokens: indexed as %d passages",
                        split, len(docs), self.encoder.window, len(spans) - len(docs) + split)
        vectors = self.encoder.encode([texts[i - first][a:b] for i, a, b in spans], show_progress)
        self.passages.extend(spans)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def add(self, documents: Sequence[DocumentLike], show_progress: bool = False) -> None:
        """Add documents to the index (ids default to their corpus positions)."""
        new = with_ids(documents, start=len(self.docs))
        if new:
            self.index.add(self._embed(new, len(self.docs), show_progress))
            self.docs.extend(new)

    # -- search ----------------------------------------------------------------------------
    @property
    def ef_search(self) -> int | None:
        return self.index.hnsw.efSearch if self.index_type == "hnsw" else None

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if self.index_type != "hnsw":
            raise ConfigError("ef_search applies to an HNSW index")
        self.index.hnsw.efSearch = value

    @property
    def nprobe(self) -> int | None:
        return self.index.nprobe if self.index_type == "ivf" else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.index_type != "ivf":
            raise ConfigError("nprobe applies to an IVF index")
        self.index.nprobe = value

    def _search(self, queries: list[str], k: int) -> list[RerankResult]:
        """One batched encoding and one index call for all queries."""
        start = perf_counter()
        q = self.encoder.encode(queries)
        extra = len(self.passages) - len(self.docs)  # vectors beyond one per document
        fetch = min(len(self.passages), k + min(extra, (OVERFETCH - 1) * k))
        scores, ids = self.index.search(np.ascontiguousarray(q, dtype=np.float32), fetch)
        ms = (perf_counter() - start) * 1000.0 / len(queries)
        out = []
        for query, row_ids, row_scores in zip(queries, ids, scores):
            best: dict[int, tuple[float, tuple[int, int] | None]] = {}
            for vid, score in zip(row_ids.tolist(), row_scores.tolist()):
                if vid < 0:
                    continue
                pos, a, b = self.passages[vid]
                if pos not in best:  # hits come best first: the first passage seen is the best (MaxP)
                    whole = a == 0 and b == len(self.docs[pos].text)
                    best[pos] = (score, None if whole else (a, b))
                    if len(best) == k:
                        break
            positions = list(best)
            res = hits_result(query, self.docs, positions, [best[p][0] for p in positions], self.name,
                              self.model, ms)
            for r in res.results:
                r.passage = best[r.index][1]
            out.append(res)
        return out

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write index, documents and manifest to the folder ``path``."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        _faiss().write_index(self.index, str(folder / FILES["index"]))
        write_docs(folder / FILES["docs"], self.docs)
        (folder / FILES["passages"]).write_text(json.dumps(self.passages))
        from rankrelay import __version__

        manifest = {
            "model": self.model,
            "dimension": self.index.d,
            "index_type": self.index_type,
            "corpus_size": len(self.docs),
            "vectors": len(self.passages),
            "long_documents": self.encoder.long_documents,
            "rankrelay_version": __version__,
            "checksum": file_sha256(folder / FILES["docs"]),
            "files": folder_checksums(folder, [FILES["index"], FILES["docs"], FILES["passages"]]),
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
        }
        (folder / FILES["manifest"]).write_text(json.dumps(manifest, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: str | None = None, *, device: str = "auto",
             batch_size: int = 64) -> DenseRetriever:
        """Reopen a saved index; ``model`` (if given) must match the manifest's."""
        folder = Path(path)
        rebuild = f"rebuild the index with 'rankrelay index CORPUS --out {folder.parent}'"
        try:
            manifest = read_json_file(folder / FILES["manifest"], rebuild)
        except FileNotFoundError:
            raise InvalidInputError(f"{str(folder)!r} holds no dense index (no {FILES['manifest']})") from None
        missing = [k for k in ("model", "dimension", "index_type", "corpus_size", "checksum")
                   if not isinstance(manifest, dict) or k not in manifest]
        if missing:
            raise DamagedArtifactError(f"{folder / FILES['manifest']} lacks {', '.join(missing)}; {rebuild}")
        if model is not None and canonical_model_id(model) != manifest["model"]:
            raise ConfigError(
                f"index {str(folder)!r} was built with {manifest['model']!r}; querying it with "
                f"{canonical_model_id(model)!r} would compare embeddings of different models"
            )
        if isinstance(manifest.get("files"), dict):
            verify_checksums(folder, manifest["files"], rebuild)
        else:
            logger.warning("%s predates checksums of every file: only its documents are verified; %s", folder,
                           rebuild)
        if file_sha256(folder / FILES["docs"]) != manifest["checksum"]:
            raise DamagedArtifactError(f"{folder / FILES['docs']} does not match the manifest's checksum; {rebuild}")
        try:
            docs = read_docs(folder / FILES["docs"])
            passages_file = folder / FILES["passages"]
            passages = (  # indexes saved before passages existed hold one vector per document
                [tuple(p) for p in json.loads(passages_file.read_text())] if passages_file.exists()
                else [(i, 0, len(d.text)) for i, d in enumerate(docs)]
            )
            index = _faiss().read_index(str(folder / FILES["index"]))
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:  # faiss raises RuntimeError
            raise DamagedArtifactError(f"the index in {folder} cannot be read ({type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0] if str(exc) else ''}); {rebuild}") from None
        if index.ntotal != len(passages) or index.d != manifest["dimension"] or len(docs) != manifest["corpus_size"]:
            raise InvalidInputError(
                f"index, passages and documents in {str(folder)!r} disagree "
                f"({index.ntotal} vectors, {len(passages)} passages, {len(docs)} documents)"
            )
        encoder = BiEncoderReranker(manifest["model"], device=device, batch_size=batch_size,
                                    long_documents=manifest.get("long_documents", "passages"))
        retriever = cls(encoder, index, docs, manifest["index_type"], passages)
        if manifest.get("nprobe") and retriever.index_type == "ivf":
            retriever.nprobe = manifest["nprobe"]
        if manifest.get("ef_search") and retriever.index_type == "hnsw":
            retriever.ef_search = manifest["ef_search"]
        return retriever

