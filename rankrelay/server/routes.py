"""The service's routes, one router per API shape, and the one place errors become HTTP statuses.

- :data:`cohere`: ``POST /v2/rerank`` and ``/v1/rerank`` (any Cohere SDK works unchanged)
- :data:`tei`: ``POST /rerank`` (text-embeddings-inference's shape)
- :data:`search`: ``POST /search`` (the first stage over the configured index, then a served model)
- :data:`experiments`: ``POST /v1/feedback`` and ``GET /v1/experiments/{name}`` (online experiments)
- :data:`usage`: ``GET /v1/usage`` (a client's requests, documents, billed units and dollars)
- :data:`operations`: ``/health``, ``/ready``, ``/metrics`` (open) and ``/v1/models`` (behind the key)

Handlers raise typed errors; :func:`install_error_handlers` maps each to its status.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from rankrelay.errors import (
    AuthenticationError,
    BackendTimeoutError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RankRelayError,
    StoreUnavailableError,
)
from rankrelay.results import RerankResult
from rankrelay.retrieval.pipeline import SearchResult, TwoStageSearch
from rankrelay.scoring import relevance
from rankrelay.server.batching import QueueFullError
from rankrelay.server.clients import ADMIN
from rankrelay.server.guards import (
    CLIENT_KEY,
    ClientGoneError,
    LimitExceededError,
    NotServedError,
    UnauthorizedError,
    UnsupportedMediaError,
    check_limits,
    error_response,
    unless_client_leaves,
)
from rankrelay.server.metrics import MODEL_KEY, prometheus
from rankrelay.server.schemas import (
    ERRORS,
    CohereRerankRequest,
    CohereRerankResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelsResponse,
    SearchRequest,
    SearchResponse,
    TeiRank,
    TeiRerankRequest,
)
from rankrelay.server.service import Service, availability, shared_state, typed
from rankrelay.server.usage import OverBudgetError

logger = logging.getLogger(__name__)


def get_service(request: Request) -> Service:
    """The app's :class:`Service` (a dependency)."""
    return request.app.state.service


Served = Annotated[Service, Depends(get_service)]


def served_model(request: Request, service: Service, name: str | None) -> str:
    """Resolve a requested model name (among those the request's client may call) and label this request's
    metrics with it."""
    client = request.scope.get("state", {}).get(CLIENT_KEY)
    served = service.pick(name, None if client is None else client.models)
    setattr(request.state, MODEL_KEY, served)
    return served


# -- Cohere ----------------------------------------------------------------------------------
cohere = APIRouter(responses=ERRORS)


def impression_headers(response: Response, res: RerankResult) -> None:
    """An experiment's answer: its impression id (``X-Impression-Id``, for TEI's list body) and what became of
    the impression (``X-Impression-Recorded``: recorded, buffered while the store is away, or lost)."""
    if "impression" in res.info:
        response.headers["X-Impression-Id"] = res.info["impression"]
        response.headers["X-Impression-Recorded"] = res.info["impression_recorded"]


async def _cohere(request: Request, response: Response, service: Service, body: CohereRerankRequest,
                  version: str) -> dict[str, Any]:
    texts = body.texts()
    name = served_model(request, service, body.model)
    res = await unless_client_leaves(request, service.rerank(name, body.query, texts, body.top_n))
    impression_headers(response, res)
    results = []
    for r, score in zip(res.results, relevance(res, service.limits.relevance)):
        row: dict[str, Any] = {"index": r.index, "relevance_score": score}
        if body.return_documents:
            row["document"] = {"text": texts[r.index]}
        results.append(row)
    return {"id": res.info.get("impression") or str(uuid.uuid4()), "results": results,
            "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}}}


@cohere.post("/v2/rerank", response_model=CohereRerankResponse, response_model_exclude_none=True)
async def rerank_v2(request: Request, response: Response, body: CohereRerankRequest,
                    service: Served) -> dict[str, Any]:
    return await _cohere(request, response, service, body, "2")


@cohere.post("/v1/rerank", response_model=CohereRerankResponse, response_model_exclude_none=True)
async def rerank_v1(request: Request, response: Response, body: CohereRerankRequest,
                    service: Served) -> dict[str, Any]:
    return await _cohere(request, response, service, body, "1")


# -- TEI -------------------------------------------------------------------------------------
tei = APIRouter(responses=ERRORS)


@tei.post("/rerank", response_model=list[TeiRank], response_model_exclude_none=True)
async def rerank_tei(request: Request, response: Response, body: TeiRerankRequest,
                     service: Served) -> list[dict[str, Any]]:
    """TEI's rerank: ``score`` is the model's raw score with ``raw_scores: true``, else its per-document
    relevance in [0, 1] (the sigmoid of a cross-encoder's logit, see :func:`rankrelay.scoring.relevance`).
    Documents a latency budget did not reach come last in input order, scored below every scored one.
    An experiment's answer carries its impression id in the ``X-Impression-Id`` header (TEI's body is a list)."""
    name = served_model(request, service, body.model)
    res = await unless_client_leaves(request, service.rerank(name, body.query, body.texts, None))
    impression_headers(response, res)
    scores = tei_scores(res, body.raw_scores)
    return [{"index": r.index, "score": s, **({"text": r.text} if body.return_text else {})}
            for r, s in zip(res.results, scores)]


def tei_scores(res: RerankResult, raw: bool) -> list[float]:
    """TEI's ``score`` of each result: raw, or the relevance in [0, 1]. TEI's clients read a float, so a document
    no model scored (NaN: past a latency budget) gets the lowest raw score given minus 1, or relevance 0.0."""
    if not raw:
        return relevance(res, "score")
    floor = min((r.score for r in res.results if math.isfinite(r.score)), default=0.0) - 1.0
    return [r.score if math.isfinite(r.score) else floor for r in res.results]


# -- search ----------------------------------------------------------------------------------
search = APIRouter(responses=ERRORS)


@search.post("/search", response_model=SearchResponse)
async def search_index(request: Request, body: SearchRequest, service: Served) -> dict[str, Any]:
    if service.retriever is None:
        raise NotServedError("no index is configured: start the service with --index DIR (or [service] index)")
    retrieve_k = body.retrieve_k or service.retrieve_k
    check_limits(service.limits, body.query)
    if retrieve_k > service.limits.max_documents:
        raise LimitExceededError(f"retrieve_k {retrieve_k} is over the limit of {service.limits.max_documents} "
                                 "documents")
    reranker = service.model(served_model(request, service, body.model)) if body.rerank else None
    two_stage = TwoStageSearch(service.retriever, reranker, retrieve_k=retrieve_k, top_n=body.top_n)
    out = await unless_client_leaves(request, typed(two_stage.asearch(body.query), "search"))
    return search_reply(out, body.return_documents)


def search_reply(out: SearchResult, with_documents: bool) -> dict[str, Any]:
    """``/search``'s JSON: each result with its first-stage rank, who served, and the stage timings."""
    first = out.first_stage
    first_ranks = {r.index: r.rank for r in first.results} if first is not None else {}
    results = []
    for r in out.results:
        row: dict[str, Any] = {"id": r.id, "index": r.index, "rank": r.rank, "first_rank": first_ranks.get(r.index),
                               "score": r.score if math.isfinite(r.score) else None,  # NaN: no model scored it
                               "relevance_score": r.normalized_score if math.isfinite(r.normalized_score) else 0.0}
        if with_documents:
            row["document"] = {"text": r.text, "metadata": r.metadata}
        results.append(row)
    t = out.timings
    return {"query": out.query, "results": results, "served_by": out.served_by,
            "retriever": first.backend if first is not None else None, "num_candidates": out.num_candidates,
            "fallbacks": out.info.get("fallbacks", []),
            "timings": {"retrieve_ms": t["retrieve_ms"], "rerank_ms": t["rerank_ms"], "total_ms": t["total_ms"]}}


# -- experiments -----------------------------------------------------------------------------
experiments = APIRouter(responses=ERRORS)


@experiments.post("/v1/feedback", response_model=FeedbackResponse)
async def feedback(body: FeedbackRequest, service: Served) -> dict[str, Any]:
    """Clicks on an experiment's answer: positions in the answered list; the same feedback again is accepted
    and changes nothing, other feedback for the same impression is a 409."""
    return await service.experiments.feedback(body.id, body.clicked, body.dwell, body.grade)


@experiments.get("/v1/experiments/{name}")
async def experiment_report(name: str, service: Served) -> dict[str, Any]:
    """An experiment's impressions, feedback, and its decision so far (preferences with intervals and p-values)."""
    return await asyncio.to_thread(service.experiments.report, name)


# -- usage -----------------------------------------------------------------------------------
usage = APIRouter(responses={k: v for k, v in ERRORS.items() if k in (401, 404, 422)})


@usage.get("/v1/usage")
async def usage_report(request: Request, service: Served, client: str | None = None, model: str | None = None,
                       since: datetime | None = None) -> dict[str, Any]:
    """Requests, documents, billed units and estimated dollars per client, served model and deployment since
    ``since`` (ISO 8601 or epoch seconds; counted by the hour), with each budget's spend in its period. A client
    sees its own usage only; the admin keys (and a service without keys) see every client's."""
    caller = request.scope.get("state", {}).get(CLIENT_KEY)
    if caller is not None and caller.name != ADMIN:
        if client not in (None, caller.name):
            raise NotFoundError(f"client {client!r} is not known here")
        client = caller.name
    return await asyncio.to_thread(service.usage.report, client, model,
                                   None if since is None else since.timestamp(), service.budgets)


# -- operations ------------------------------------------------------------------------------
operations = APIRouter()
SHARED = {"type": "object", "required": ["shared"],
          "properties": {"shared": {"type": "boolean"}, "problem": {"type": "string"}}}
READY = {"type": "object", "required": ["ready"], "properties": {
    "ready": {"type": "boolean"}, "experiment_store": {"type": "object"},
    "measuring": {"type": "array", "items": {"type": "string"}},
    "unavailable": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "object"}}},
    "shared_state": {"type": "object", "additionalProperties": SHARED},
    "gateway_state": {"type": "object", "additionalProperties": SHARED}}}
models = APIRouter(responses={k: v for k, v in ERRORS.items() if k in (401, 503)})


@operations.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@operations.get("/ready", response_model=None, responses={
    200: {"description": "every served model is loaded", "content": {"application/json": {"schema": READY}}},
    503: {"description": "still loading", "content": {"application/json": {"schema": READY}}}})
async def ready(service: Served) -> dict[str, Any] | JSONResponse:
    """200 once every served model is loaded; ``unavailable`` names a chain's backends that cannot serve
    (no credentials, no weights) and why; ``experiment_store`` says whether the store is up, why not, and how many
    impressions wait for it (reranking goes on without it, so a replica stays in rotation); ``measuring`` names the
    served models whose ``runtime="auto"`` is being measured in the background (they serve on torch meanwhile);
    ``shared_state`` says, per model whose pool shares its limits with other replicas, whether that state answers
    and why not (the pool serves on this replica's counts meanwhile, so it stays in rotation); ``gateway_state``
    the same of the clients' rates and usage when Redis holds them."""
    unavailable = {name: parts for name, rr in service.rerankers.items() if (parts := availability(rr))}
    shared = {name: state for name, rr in service.rerankers.items() if (state := shared_state(rr))}
    store = service.experiments.state()
    measuring = service.measuring()
    body: dict[str, Any] = {"ready": service.ready, **({"unavailable": unavailable} if unavailable else {}),
                            **({"experiment_store": store} if store else {}),
                            **({"measuring": measuring} if measuring else {}),
                            **({"shared_state": shared} if shared else {}),
                            **({"gateway_state": gateway} if (gateway := service.gateway_state()) else {})}
    return body if service.ready else JSONResponse(body, status_code=503)


@operations.get("/metrics", response_class=PlainTextResponse,
                responses={200: {"description": "Prometheus exposition", "content": {"text/plain": {}}}})
async def metrics(service: Served) -> Response:
    for name, depth in service.queue_depths().items():
        service.metrics.queue.labels(name).set(depth)
    if store := service.experiments.state():
        service.metrics.store_up.set(store["state"] == "up")
        service.metrics.store_pending.set(store["pending"])
    for name, rr in service.rerankers.items():
        if state := shared_state(rr):
            service.metrics.shared_state_up.labels(name).set(state["shared"])
    for part, state in service.gateway_state().items():
        service.metrics.gateway_state_up.labels(part).set(state["shared"])
    return Response(service.metrics.exposition(), media_type=prometheus.CONTENT_TYPE_LATEST)


@models.get("/v1/models", response_model=ModelsResponse)
async def list_models(request: Request, service: Served) -> dict[str, Any]:
    """The served models the caller's client may call."""
    client = request.scope.get("state", {}).get(CLIENT_KEY)
    return {"models": [{"name": n, "backend": rr.name, "model": getattr(rr, "model", None), "endpoints": ["rerank"]}
                       for n, rr in service.rerankers.items() if client is None or client.may_call(n)]}


PROTECTED = (cohere, tei, search, experiments, models, usage)


def paths(protected: bool = False) -> list[str]:
    """Every path the service answers (the metrics label any other ``other``); ``protected``: those behind the
    key, which is all but :func:`open_paths`."""
    routers = PROTECTED if protected else (*PROTECTED, operations)
    return sorted({r.path for router in routers for r in router.routes if isinstance(r, APIRoute)})


def open_paths() -> list[str]:
    """The paths anyone may call without the key: ``/health``, ``/ready`` and ``/metrics``; every other path,
    whether it exists or not, needs it."""
    return sorted(r.path for r in operations.routes if isinstance(r, APIRoute))


# -- errors ----------------------------------------------------------------------------------
def status_of(exc: Exception, service: Service) -> tuple[int, str, dict[str, str] | None]:
    """The HTTP status, message and headers of an error raised while answering a request."""
    if isinstance(exc, UnauthorizedError):
        return 401, str(exc), {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, UnsupportedMediaError):
        return 415, str(exc), None
    if isinstance(exc, ClientGoneError):
        return 499, str(exc), None
    if isinstance(exc, NotFoundError):
        return 404, str(exc), None
    if isinstance(exc, ConflictError):
        return 409, str(exc), None
    if isinstance(exc, StoreUnavailableError):
        return 503, str(exc), {"Retry-After": "5"}
    if isinstance(exc, LimitExceededError):
        return 422, str(exc), None
    if isinstance(exc, InvalidInputError):
        return 400, str(exc), None
    if isinstance(exc, QueueFullError):
        return 429, str(exc), {"Retry-After": "1"}
    if isinstance(exc, OverBudgetError):  # until the budget's period starts again; a total budget: no retry
        wait = exc.retry_after
        return 429, str(exc), None if wait is None else {"Retry-After": str(max(1, math.ceil(wait)))}
    if isinstance(exc, (TimeoutError, BackendTimeoutError)):
        return 503, f"the model did not answer within {service.limits.request_timeout:g} s", None
    if isinstance(exc, AuthenticationError):
        return 503, "the backend rejected its credentials", None
    logger.warning("request failed: %s: %s", type(exc).__name__, exc)
    retry_after = getattr(exc, "retry_after", None)  # an upstream 429's wait, passed on
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return 503, f"the backend failed ({type(exc).__name__})", headers


def install_error_handlers(app: FastAPI) -> None:
    """Map typed errors (and timeouts, invalid bodies, unknown paths and methods) to statuses, each answered
    ``{"message": ...}``; anything else becomes a logged 500 in :class:`~rankrelay.server.guards.Contained`."""

    async def typed(request: Request, exc: Exception) -> JSONResponse:
        status, message, headers = status_of(exc, get_service(request))
        return error_response(status, message, headers)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return error_response(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', 'invalid')}")
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error_response(422, f"invalid request: {where}: {first.get('msg', 'invalid')}")

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = exc.detail if isinstance(exc.detail, str) else "invalid request"
        return error_response(exc.status_code, message, dict(exc.headers or {}))

    app.add_exception_handler(RankRelayError, typed)
    app.add_exception_handler(TimeoutError, typed)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
