"""The request bodies the service accepts: Cohere's rerank (v1 and v2), TEI's rerank and ``/search``.

Example:
    >>> from rankrelay.server.schemas import CohereRerankRequest
    >>> CohereRerankRequest(query="q", documents=["a", {"text": "b"}]).texts()
    ['a', 'b']
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict

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


# -- replies: the OpenAPI schema the service answers by (fuzzed with Schemathesis) ------------------
class ErrorBody(BaseModel):
    """Every non-2xx answer: what the Cohere SDK reads."""

    message: str


class CohereDocument(BaseModel):
    text: str


class CohereResult(BaseModel):
    index: int = Field(ge=0)
    relevance_score: float = Field(ge=0, le=1, description="a per-document relevance in [0, 1] (Cohere's contract; "
                                                           "'rank' mode: the rank position)")
    document: CohereDocument | None = None


class CohereApiVersion(BaseModel):
    version: str


class CohereBilled(BaseModel):
    search_units: int


class CohereMeta(BaseModel):
    api_version: CohereApiVersion
    billed_units: CohereBilled


class CohereRerankResponse(BaseModel):
    id: str
    results: list[CohereResult]
    meta: CohereMeta


class TeiRank(BaseModel):
    index: int = Field(ge=0)
    score: float = Field(description="raw_scores: the model's raw score; else its relevance in [0, 1]")
    text: str | None = None


class SearchDocument(BaseModel):
    text: str
    metadata: dict[str, Any]


class SearchHit(BaseModel):
    id: str | int | None
    index: int
    rank: int
    first_rank: int | None
    score: float | None
    relevance_score: float
    document: SearchDocument | None = None


class SearchTimings(BaseModel):
    retrieve_ms: float
    rerank_ms: float
    total_ms: float


class SearchResponse(BaseModel):
    query: str
    results: list[SearchHit]
    served_by: str | None
    retriever: str | None
    num_candidates: int
    fallbacks: list[dict[str, Any]]
    timings: SearchTimings


class ServedModelInfo(BaseModel):
    name: str
    backend: str
    model: str | None
    endpoints: list[str]


class ModelsResponse(BaseModel):
    models: list[ServedModelInfo]


#: the error statuses every authorized route may answer, each with an :class:`ErrorBody`
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": about} for status, about in (
        (400, "invalid input (an empty query, text that is not valid Unicode, a body that is not JSON)"),
        (401, "no valid bearer token"), (404, "no such model, index, experiment or impression"),
        (409, "feedback other than the one already recorded for this impression"), (413, "body over the limit"),
        (415, "body not declared as JSON"), (422, "a request that does not fit the schema or the limits"),
        (429, "too many requests waiting"), (503, "the model failed or did not answer in time"))
}


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: what a user did with an experiment's answer."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
                    description="the answer's id (the impression): printable ASCII, no spaces")
    clicked: list[Annotated[int, Strict()]] = Field(
        max_length=1000, description="clicked positions in the answered list (0 is the top): integers, not strings "
                                     "or booleans")
    dwell: list[Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]] | None = Field(
        None, max_length=1000, description="seconds spent on each clicked result, in clicked's order (finite, >= 0)")
    grade: Annotated[float, Strict(), Field(allow_inf_nan=False)] | None = Field(
        None, description="an explicit judgement of the whole answer, if the app asks")


class FeedbackResponse(BaseModel):
    id: str
    experiment: str
    recorded: bool = Field(description="false when the same feedback was already recorded")
