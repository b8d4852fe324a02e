"""One result type for every backend: :class:`Document` in, :class:`RerankResult` out.

Example:
    >>> from rankrelay.results import Document, to_documents
    >>> docs = to_documents(["plain text", {"text": "b", "id": "b", "metadata": {"k": 1}}])
    >>> docs[1]
    Document(text='b', id='b', metadata={'k': 1})
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Union

from rankrelay.errors import InvalidDocumentError, positive_int

DocId = Union[str, int]


@dataclass(slots=True)
class Document:
    """A candidate document: its text, an optional id and free-form metadata."""

    text: str
    id: DocId | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


DocumentLike = Union[str, Document, Mapping[str, Any]]

_DICT_KEYS = frozenset({"text", "id", "_id", "metadata"})


def unencodable(text: str) -> str | None:
    """Why ``text`` is not valid Unicode text (a lone UTF-16 surrogate, which no tokenizer, file or JSON reply
    can carry), or None when it is."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"it holds a lone surrogate {text[exc.start]!r} at position {exc.start}"
    return None


def check_text(text: str, what: str, error: type[Exception] = InvalidDocumentError) -> str:
    """Return ``text`` if it is valid Unicode, else raise ``error`` naming ``what``."""
    why = unencodable(text)
    if why is not None:
        raise error(f"{what} is not valid text: {why}")
    return text


def to_document(item: object, index: int = 0) -> Document:
    """Convert one str / Document / dict into a :class:`Document`, or raise naming ``index``.

    A ``Document`` is returned as is (same object, same metadata dict). A dict needs ``text``;
    ``id`` (or BEIR's ``_id``) and ``metadata`` are optional and any other keys join the metadata.
    """
    if isinstance(item, str):
        return Document(check_text(item, f"document {index}"))
    if isinstance(item, Document):
        if not isinstance(item.text, str):
            raise InvalidDocumentError(
                f"document {index}: text must be str, got {type(item.text).__name__}"
            )
        check_text(item.text, f"document {index}")
        return item
    if isinstance(item, Mapping):
        text = item.get("text")
        if not isinstance(text, str):
            got = "no 'text' key" if "text" not in item else f"'text' is {type(text).__name__}"
            raise InvalidDocumentError(f"document {index}: a dict document needs a str 'text' ({got})")
        check_text(text, f"document {index}")
        doc_id = item.get("id", item.get("_id"))
        metadata = item.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidDocumentError(
                f"document {index}: 'metadata' must be a dict, got {type(metadata).__name__}"
            )
        extra = {k: v for k, v in item.items() if k not in _DICT_KEYS}
        if extra:
            metadata = {**extra, **(metadata or {})}
        return Document(text, doc_id, metadata if metadata is not None else {})
    raise InvalidDocumentError(
        f"document {index}: expected str, Document or dict with 'text', got {type(item).__name__}"
    )


def to_documents(documents: Sequence[DocumentLike]) -> list[Document]:
    """Convert a sequence of document-likes, keeping order and duplicates."""
    if isinstance(documents, (str, bytes, Mapping, Document)):
        raise InvalidDocumentError(
            "documents must be a list of documents, not a single "
            f"{type(documents).__name__}; wrap it in a list"
        )
    return [to_document(item, i) for i, item in enumerate(documents)]


@dataclass(slots=True)
class RankedDocument:
    """One reranked document.

    Attributes:
        index: position of the document in the caller's input list.
        text, id, metadata: the caller's document, untouched.
        score: the backend's raw score (higher is better).
        rank: 1-based position in the ranking.
        normalized_score: ``score`` mapped by the chosen normalization (by default the rank position, to
            compare backends); a per-document relevance in [0, 1] comparable across queries, what the service
            answers as Cohere's ``relevance_score``, is :func:`rankrelay.scoring.relevance`.
        passage: ``(start, end)`` character span of the best-scoring passage when the document was
            split into passages, else ``None``.
        truncated: the model saw only the start of the document.
        components: per-input scores when the result came from fusion.
        stage: which stage placed it when only part of the list went through the model (a cascade's
            cheap or strong stage, or ``first-stage`` for documents a latency budget left in input
            order); ``None`` when every document was scored alike. A document no model scored has a
            NaN ``score`` (``None`` in :meth:`to_dict`).
    """

    index: int
    text: str
    score: float
    rank: int
    normalized_score: float
    id: DocId | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    passage: tuple[int, int] | None = None
    truncated: bool = False
    components: dict[str, float] | None = None
    stage: str | None = None

    @property
    def document(self) -> Document:
        """The input document (same metadata object)."""
        return Document(self.text, self.id, self.metadata)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        out: dict[str, Any] = {
            "index": self.index,
            "id": self.id,
            "rank": self.rank,
            "score": None if math.isnan(self.score) else self.score,
            "normalized_score": self.normalized_score,
            "text": self.text,
            "metadata": self.metadata,
        }
        if self.passage is not None:
            out["passage"] = list(self.passage)
        if self.truncated:
            out["truncated"] = True
        if self.components is not None:
            out["components"] = dict(self.components)
        if self.stage is not None:
            out["stage"] = self.stage
        return out


@dataclass(slots=True)
class RerankResult:
    """The ranking of one query's candidates, best first.

    Attributes:
        query: the query text.
        results: ranked documents, best first (possibly cut by ``top_n``).
        backend: name of the backend that produced the scores.
        model: model id or path, where the backend has one.
        timings: milliseconds; always ``total`` and ``model``.
        normalization: the method that filled ``normalized_score``.
        num_candidates: how many documents came in (before ``top_n``).
        info: backend-specific facts (billed units, request ids, ...).
    """

    query: str
    results: list[RankedDocument]
    backend: str
    model: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    normalization: str = "rank"
    num_candidates: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[RankedDocument]:
        return iter(self.results)

    def __getitem__(self, i: int) -> RankedDocument:
        return self.results[i]

    def top_k(self, k: int) -> RerankResult:
        """A copy holding the best ``k`` results."""
        return replace(self, results=self.results[:positive_int(k, "k")])

    @property
    def backend_label(self) -> str:
        """``backend:model`` of what served this ranking (the backend alone when it has no model)."""
        return self.backend if self.model is None else f"{self.backend}:{self.model}"

    @property
    def fallbacks(self) -> list[dict[str, Any]]:
        """Failed attempts before the backend that served (fallback chains): backend, error, ms."""
        return list(self.info.get("fallbacks", []))

    @property
    def ids(self) -> list[DocId | None]:
        """Document ids in ranked order."""
        return [r.id for r in self.results]

    @property
    def indices(self) -> list[int]:
        """Input indices in ranked order."""
        return [r.index for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``json.dumps(res.to_dict())`` works when metadata is JSON)."""
        return {
            "query": self.query,
            "backend": self.backend,
            "model": self.model,
            "normalization": self.normalization,
            "num_candidates": self.num_candidates,
            "timings": dict(self.timings),
            "info": dict(self.info),
            "results": [r.to_dict() for r in self.results],
        }
