"""Dense retrieval in Qdrant: the same bi-encoder and passages as :class:`DenseRetriever`, vectors in a
Qdrant collection instead of a FAISS index in memory.

Embedded local mode by default (a folder on disk, no server: ``path``); a Qdrant server or cluster when
``url`` is given. Each point is one passage vector (cosine distance) whose payload holds its document
(position, id, text, metadata) and span; a search groups hits by document so each scores by its best
passage (MaxP), as the FAISS index does. The collection's metadata records the model, dimension, corpus
size and passage policy, so a collection is never queried with a different model.

Example:
    >>> from rankrelay.retrieval.qdrant import QdrantRetriever
    >>> QdrantRetriever.name, QdrantRetriever.score_normalization
    ('qdrant', 'none')
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.errors import (
    AuthenticationError,
    BackendUnavailableError,
    ConfigError,
    DamagedArtifactError,
    InvalidInputError,
)
from rankrelay.hashing import read_json_file
from rankrelay.hub import canonical_model_id
from rankrelay.rerankers.local.bi_encoder import BiEncoderReranker
from rankrelay.results import Document, DocumentLike, RankedDocument, RerankResult
from rankrelay.retrieval.base import BaseRetriever, with_ids
from rankrelay.scoring import normalize

logger = logging.getLogger(__name__)

#: The file beside an index's other parts that says where its Qdrant collection is.
MANIFEST = "manifest.json"
UPSERT_BATCH = 256


def _qdrant() -> Any:
    return import_optional("qdrant_client", extra="qdrant", feature="Qdrant retrieval", package="qdrant-client")


def _close_at_exit(client: weakref.ref[Any]) -> None:
    """Close an embedded client left open before the interpreter tears down (its own ``__del__`` then fails
    with a traceback as imports are gone)."""
    live = client()
    if live is not None:
        with contextlib.suppress(Exception):
            live.close()


def connect(path: str | os.PathLike[str] | None = None, url: str | None = None, api_key: str | None = None,
            timeout: float = 5.0) -> Any:
    """A Qdrant client: embedded in the folder ``path``, or a server at ``url`` (checked now, so an
    unreachable address fails within ``timeout`` seconds, naming it; the key defaults to ``QDRANT_API_KEY``)."""
    qdrant_client = _qdrant()
    api_key = api_key or os.environ.get("QDRANT_API_KEY") or None
    if (path is None) == (url is None):
        raise ConfigError("Qdrant needs either a folder (path, embedded mode) or a server url, not both")
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        local = qdrant_client.QdrantClient(path=str(path), force_disable_check_same_thread=True)
        atexit.register(_close_at_exit, weakref.ref(local))
        return local
    # its own version check runs in a thread that warns when the server is down or refuses the key: the call
    # below checks the server instead, and says which
    client = qdrant_client.QdrantClient(url=url, api_key=api_key, timeout=max(1, int(timeout)),
                                        check_compatibility=False)
    try:
        client.get_collections()
    except Exception as exc:  # qdrant-client raises its own transport errors (HTTP or gRPC)
        client.close()
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            raise AuthenticationError(f"Qdrant at {url} refused the API key ({status}); pass api_key or set "
                                      "QDRANT_API_KEY", backend="qdrant", status=status) from None
        raise BackendUnavailableError(f"Qdrant at {url} is unreachable: {type(exc).__name__}: {exc}",
                                      backend="qdrant") from None
    return client


class QdrantRetriever(BaseRetriever):
    """Nearest neighbours of the query embedding among document passages in a Qdrant collection.

    Build with :meth:`build`, reopen with :meth:`open`; ``search`` returns a
    :class:`~rankrelay.RerankResult` whose ``index`` is the corpus position, like :class:`DenseRetriever`.
    Documents are read from the hits' payloads, so the corpus need not fit in this process.
    """

    name = "qdrant"
    score_normalization = "none"  # cosine similarities

    def __init__(self, encoder: BiEncoderReranker, client: Any, collection: str, size: int,
                 location: str) -> None:
        self.encoder = encoder
        self.client = client
        self.collection = collection
        self.size = size
        self.location = location
        self._lock = threading.Lock()  # the embedded store is one SQLite file: one writer or reader at a time

    def __len__(self) -> int:
        return self.size

    @property
    def docs(self) -> list[Document]:  # type: ignore[override]
        """Every document, read back from the collection (for small corpora and tests)."""
        found: dict[int, Document] = {}
        offset = None
        while True:
            points, offset = self.client.scroll(self.collection, limit=1024, offset=offset, with_payload=True)
            for p in points:
                found.setdefault(p.payload["position"], _document(p.payload))
            if offset is None:
                return [found[i] for i in sorted(found)]

    @property
    def model(self) -> str:
        return self.encoder.model or ""

    # -- building --------------------------------------------------------------------------
    @classmethod
    def build(cls, corpus: Sequence[DocumentLike], model: str = "all-minilm-l6", *,
              path: str | os.PathLike[str] | None = None, url: str | None = None, api_key: str | None = None,
              collection: str = "rankrelay", device: str = "auto", batch_size: int = 64,
              show_progress: bool = False, long_documents: str = "passages") -> QdrantRetriever:
        """Embed ``corpus`` into a new collection (replacing one of the same name).

        Args:
            corpus: documents (str, Document or dicts); ids default to positions.
            model: bi-encoder id, alias (``all-minilm-l6``) or path.
            path: a folder for embedded mode; or ``url`` of a Qdrant server (with ``api_key``).
            collection: the collection's name.
            long_documents: ``passages`` (several vectors, best one scores) or ``truncate``.
        """
        docs = with_ids(corpus)
        if not docs:
            raise InvalidInputError("the corpus is empty: nothing to index")
        client = connect(path, url, api_key)
        encoder = BiEncoderReranker(model, device=device, batch_size=batch_size, long_documents=long_documents)
        retriever = cls(encoder, client, collection, 0, str(path or url))
        spans, vectors = retriever._embed(docs, show_progress)
        models = _qdrant().models
        if client.collection_exists(collection):
            client.delete_collection(collection)
        client.create_collection(
            collection, vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.COSINE),
            metadata=retriever._metadata(vectors.shape[1], 0))
        retriever._upsert(docs, spans, vectors)
        return retriever

    def add(self, documents: Sequence[DocumentLike], show_progress: bool = False) -> None:
        """Embed and add documents (ids default to their corpus positions)."""
        new = with_ids(documents, start=self.size)
        if new:
            self._upsert(new, *self._embed(new, show_progress))

    def _embed(self, docs: list[Document], show_progress: bool) -> tuple[list[tuple[int, int, int]], Any]:
        """Each passage (document number in ``docs``, start, end) and its vector."""
        texts = [d.text for d in docs]
        plans = self.encoder.plan_passages("query", texts)  # a bi-encoder ignores the query
        spans = [(i, a, b) for i, p in enumerate(plans) for a, b in p.spans]
        return spans, self.encoder.encode([texts[i][a:b] for i, a, b in spans], show_progress)

    def _upsert(self, docs: list[Document], spans: list[tuple[int, int, int]], vectors: Any) -> None:
        start = perf_counter()
        models = _qdrant().models
        with self._lock:
            meta = self.client.get_collection(self.collection).config.metadata or {}
            first = int(meta.get("vectors", 0))
            points = [
                models.PointStruct(id=first + n, vector=vector.tolist(), payload={
                    "position": self.size + i, "id": docs[i].id, "text": docs[i].text, "metadata": docs[i].metadata,
                    "start": a, "end": b})
                for n, ((i, a, b), vector) in enumerate(zip(spans, vectors))
            ]
            for k in range(0, len(points), UPSERT_BATCH):
                self.client.upsert(self.collection, points=points[k:k + UPSERT_BATCH], wait=True)
            self.size += len(docs)
            self.client.update_collection(self.collection,
                                          metadata=self._metadata(vectors.shape[1], first + len(points)))
        logger.info("added %d documents (%d vectors) to Qdrant collection %r in %.1f s", len(docs), len(points),
                    self.collection, perf_counter() - start)

    def _metadata(self, dimension: int, vectors: int) -> dict[str, Any]:
        from rankrelay import __version__

        return {"model": self.model, "dimension": dimension, "corpus_size": self.size, "vectors": vectors,
                "long_documents": self.encoder.long_documents, "rankrelay_version": __version__}

    # -- search ----------------------------------------------------------------------------
    def _search(self, queries: list[str], k: int) -> list[RerankResult]:
        start = perf_counter()
        vectors = self.encoder.encode(queries)
        out = []
        for query, vector in zip(queries, vectors):
            with self._lock:
                groups = self.client.query_points_groups(
                    self.collection, group_by="position", query=vector.tolist(), limit=k, group_size=1,
                    with_payload=True).groups
            hits = [g.hits[0] for g in groups]
            scores = [float(h.score) for h in hits]
            results = [
                RankedDocument(index=h.payload["position"], text=h.payload["text"], score=s, rank=r,
                               normalized_score=n, id=h.payload["id"], metadata=h.payload.get("metadata") or {},
                               passage=_span(h.payload))
                for r, (h, s, n) in enumerate(zip(hits, scores, normalize(scores, "rank")), start=1)
            ]
            out.append(RerankResult(query, results, backend=self.name, model=self.model, normalization="rank",
                                    num_candidates=self.size))
        ms = (perf_counter() - start) * 1000.0 / len(queries)
        for res in out:
            res.timings.update(total=ms, model=ms)
        return out

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the manifest that :meth:`open` reads into the folder ``path`` (in embedded mode the
        collection already lives in its own folder, which may be this one)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {"store": "qdrant", "collection": self.collection, "model": self.model,
                    "corpus_size": self.size}
        if self.location.startswith(("http://", "https://")):
            manifest["url"] = self.location
        else:
            manifest["path"] = os.path.relpath(self.location, folder)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return folder

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, url: str | None = None, api_key: str | None = None,
             collection: str = "rankrelay", model: str | None = None, device: str = "auto",
             batch_size: int = 64) -> QdrantRetriever:
        """Reopen a collection: an embedded folder (``path``, or a folder holding :meth:`save`'s manifest)
        or one on a server (``url``). ``model`` (if given) must be the collection's.

        Raises:
            ConfigError: no such collection, or it was built with another model.
            BackendUnavailableError: the server at ``url`` cannot be reached.
        """
        if path is not None and (Path(path) / MANIFEST).exists():
            manifest = read_json_file(Path(path) / MANIFEST, f"rebuild it with 'rankrelay index CORPUS --out "
                                                             f"{Path(path).parent} --store qdrant'")
            if not isinstance(manifest, dict):
                raise DamagedArtifactError(f"{Path(path) / MANIFEST} is not a Qdrant manifest; rebuild the index")
            collection = manifest.get("collection", collection)
            url = manifest.get("url", url)
            path = None if url else Path(path) / manifest.get("path", ".")
        client = connect(path, url, api_key)
        where = str(path or url)
        if not client.collection_exists(collection):
            client.close()
            raise ConfigError(f"no Qdrant collection {collection!r} at {where} (build one with "
                              "'rankrelay index CORPUS --store qdrant')")
        meta = client.get_collection(collection).config.metadata or {}
        if "model" not in meta:
            client.close()
            raise ConfigError(f"Qdrant collection {collection!r} at {where} was not built by rankrelay "
                              "(its metadata names no model)")
        if model is not None and canonical_model_id(model) != meta["model"]:
            client.close()
            raise ConfigError(f"Qdrant collection {collection!r} was built with {meta['model']!r}; querying it "
                              f"with {canonical_model_id(model)!r} would compare embeddings of different models")
        encoder = BiEncoderReranker(meta["model"], device=device, batch_size=batch_size,
                                    long_documents=meta.get("long_documents", "passages"))
        return cls(encoder, client, collection, int(meta["corpus_size"]), where)

    def close(self) -> None:
        """Close the client (an embedded folder is unlocked for other processes)."""
        self.client.close()


def _document(payload: dict[str, Any]) -> Document:
    return Document(payload["text"], payload["id"], payload.get("metadata") or {})


def _span(payload: dict[str, Any]) -> tuple[int, int] | None:
    a, b = payload["start"], payload["end"]
    return None if a == 0 and b == len(payload["text"]) else (a, b)
