"""The request bodies the service accepts: Cohere's rerank (v1 and v2), TEI's rerank and ``/search``.

Example:
    >>> from rankrelay.server.schemas import CohereRerankRequest
    >>> CohereRerankRequest(query="q", documents=["a", {"text": "b"}]).texts()
    ['a', 'b']
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from rankrelay.errors import InvalidInputError


class CohereRerankRequest(BaseModel):
    """Cohere's rerank request (v1 and v2)."""

    model: str | None = None
    query: str
    documents: list[str | dict[str, Any]]
    top_n: int | None = Field(None, ge=1)
    max_tokens_per_doc: int | None = Field(None, ge=1)
    return_documents: bool = False
    rank_fields: list[str] | None = None

    def texts(self) -> list[str]:
        """The documents' texts (a document is a string or an object with a ``text`` string)."""
        out = []
        for d in self.documents:
            if isinstance(d, str):
                out.append(d)
            elif isinstance(d.get("text"), str):
                out.append(d["text"])
            else:
                raise InvalidInputError("each document must be a string or an object with a 'text' string")
        return out


class TeiRerankRequest(BaseModel):
    """text-embeddings-inference's rerank request."""

    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = False
    model: str | None = None


class SearchRequest(BaseModel):
    """``POST /search``: first stage over the configured index, then the named model (``rerank=false``: none)."""

    query: str
    model: str | None = None
    top_n: int = Field(10, ge=1)
    retrieve_k: int | None = Field(None, ge=1)
    rerank: bool = True
    return_documents: bool = True
