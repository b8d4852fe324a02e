"""The request bodies the service accepts: Cohere's rerank (v1 and v2), TEI's rerank and ``/search``.

Example:
    >>> from rankrelay.server.schemas import CohereRerankRequest
    >>> CohereRerankRequest(query="q", documents=["a", {"text": "b"}]).texts()
    ['a', 'b']
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from rankrelay.errors import InvalidDocumentError
from rankrelay.results import check_text, unencodable


def _valid_text(value: str) -> str:
    why = unencodable(value)
    if why is not None:
        raise ValueError(f"not valid text: {why}")
    return value


#: a string that is valid Unicode (a lone surrogate in the JSON is a 422 naming the field)
Text = Annotated[str, AfterValidator(_valid_text)]


class CohereRerankRequest(BaseModel):
    """Cohere's rerank request (v1 and v2)."""

    model: Text | None = None
    query: Text
    documents: list[Text | dict[str, Any]]
    top_n: int | None = Field(None, ge=1)
    max_tokens_per_doc: int | None = Field(None, ge=1)
    return_documents: bool = False
    rank_fields: list[Text] | None = None

    def texts(self) -> list[str]:
        """The documents' texts (a document is a string or an object with a ``text`` string)."""
        out = []
        for d in self.documents:
            if isinstance(d, str):
                out.append(d)
            elif isinstance(d.get("text"), str):
                out.append(check_text(d["text"], f"documents.{len(out)}.text"))
            else:
                raise InvalidDocumentError(f"documents.{len(out)}: each document must be a string or an object "
                                           "with a 'text' string")
        return out


class TeiRerankRequest(BaseModel):
    """text-embeddings-inference's rerank request."""

    query: Text
    texts: list[Text]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = False
    model: Text | None = None


class SearchRequest(BaseModel):
    """``POST /search``: first stage over the configured index, then the named model (``rerank=false``: none)."""

    query: Text
    model: Text | None = None
    top_n: int = Field(10, ge=1)
    retrieve_k: int | None = Field(None, ge=1)
    rerank: bool = True
    return_documents: bool = True
