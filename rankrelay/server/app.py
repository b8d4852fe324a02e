"""The rerank service: Cohere's ``/v2/rerank`` and ``/v1/rerank``, TEI's ``/rerank``, health and metrics.

Any Cohere client works against it unchanged (``cohere.ClientV2(base_url=..., api_key=...)``).
Local models are fed through :class:`~rankrelay.server.batching.DynamicBatcher`.

Example:
    >>> from rankrelay.server.app import create_app
    >>> app = create_app({"fast": "identity"}, api_keys=["secret"])
    >>> sorted(r.path for r in app.routes if r.path.startswith("/v"))
    ['/v1/models', '/v1/rerank', '/v2/rerank']
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from rankrelay._optional import import_optional
from rankrelay.config import Limits, Settings
from rankrelay.errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    ConfigError,
    InvalidInputError,
    RankRelayError,
)
from rankrelay.rerankers.base import Reranker, check_query
from rankrelay.results import RerankResult
from rankrelay.scoring import normalize
from rankrelay.server.batching import DynamicBatcher, QueueFullError

logger = logging.getLogger(__name__)
fastapi = import_optional("fastapi", extra="server", feature="the rerank service")
prometheus = import_optional("prometheus_client", extra="server", feature="the rerank service",
                             package="prometheus-client")
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402


class CohereRerankRequest(BaseModel):
    """Cohere's rerank request (v1 and v2)."""

    model: str | None = None
    query: str
    documents: list[str | dict[str, Any]]
    top_n: int | None = Field(None, ge=1)
    max_tokens_per_doc: int | None = Field(None, ge=1)
    return_documents: bool = False
    rank_fields: list[str] | None = None


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


#: Paths the service answers (metrics label any other path ``other``).
ROUTES = frozenset({"/v1/rerank", "/v2/rerank", "/rerank", "/search", "/health", "/ready", "/metrics", "/v1/models"})


class BodyLimit:
    """ASGI middleware: a request body (chunked or not) over ``limit`` bytes is answered 413 before the app
    sees it. The bytes actually received are counted, so a missing or false Content-Length does not help;
    the body is read at most to the limit and then handed on unchanged."""

    def __init__(self, app: Any, limit: int, on_reject: Any = None) -> None:
        self.app = app
        self.limit = limit
        self.on_reject = on_reject

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        chunks: list[dict[str, Any]] = []
        size = 0
        while True:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                if self.on_reject is not None:
                    self.on_reject(scope.get("path", ""))
                response = _error(413, f"request body is over the limit of {self.limit} bytes")
                return await response(scope, receive, send)
            if not message.get("more_body", False):
                break

        async def replay() -> Any:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)


class LimitExceededError(InvalidInputError):
    """A request over one of the service's limits (answered with 422)."""


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers=dict(headers or {}))


class _Metrics:
    def __init__(self) -> None:
        self.registry = prometheus.CollectorRegistry()
        self.requests = prometheus.Counter("rankrelay_requests", "Requests by endpoint, model and status",
                                           ["endpoint", "model", "status"], registry=self.registry)
        self.latency = prometheus.Histogram("rankrelay_request_seconds", "Request latency", ["endpoint"],
                                            registry=self.registry)
        self.batch = prometheus.Histogram("rankrelay_batch_requests", "Requests per shared model call",
                                          buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.queue = prometheus.Gauge("rankrelay_queue_depth", "Requests waiting for a model", ["model"],
                                      registry=self.registry)
        self.fallbacks = prometheus.Counter("rankrelay_fallbacks", "Backends skipped or failed in chains",
                                            ["model", "backend"], registry=self.registry)
        self.score_cache = prometheus.Counter("rankrelay_score_cache", "Score-cache lookups of (query, passage) "
                                              "pairs by result (hit: the model was skipped)", ["model", "result"],
                                              registry=self.registry)
        self.reranked = prometheus.Counter("rankrelay_budget_partial", "Requests whose latency budget left part "
                                           "of the list in first-stage order", ["model"], registry=self.registry)


def create_app(models: Mapping[str, Any], *, api_keys: Sequence[str | SecretStr] = (),
               allow_unauthenticated: bool = False, limits: Limits | None = None, retriever: Any = None,
               retrieve_k: int = 100, settings: Settings | None = None) -> Any:
    """Build the FastAPI app.

    Args:
        models: name -> spec, fallback-chain list or Reranker; the first is the default.
        api_keys: accepted bearer tokens (constant-time compare).
        allow_unauthenticated: serve without keys (must be asked for explicitly).
        limits: request limits and batching knobs.
        retriever: a first stage (e.g. :func:`~rankrelay.retrieval.open_index`) that enables ``POST /search``.
        retrieve_k: default first-stage depth of ``/search``.
        settings: defaults for the models' options (device, batch size, keys, ...).
    """
    from rankrelay.rerankers import load_reranker
    from rankrelay.rerankers.api import ApiReranker
    from rankrelay.rerankers.base import BaseReranker, accepts_budget

    if not models:
        raise ConfigError("the service needs at least one model (--model NAME=SPEC)")
    keys = [k.get_secret_value() if isinstance(k, SecretStr) else str(k) for k in api_keys]
    if not keys and not allow_unauthenticated:
        raise ConfigError("no API keys configured: pass --api-key KEY, or --no-auth to serve without auth")
    limits = limits or Limits()
    loaded: dict[str, Reranker] = {}  # one instance (one copy of the weights) per spec string, chains included

    def load(spec: Any) -> Reranker:
        if isinstance(spec, str):
            if spec not in loaded:
                loaded[spec] = load_reranker(spec, settings=settings)
            return loaded[spec]
        if isinstance(spec, (list, tuple)):
            spec = [load(item) if isinstance(item, str) else item for item in spec]
        return load_reranker(spec, settings=settings)

    rerankers: dict[str, Reranker] = {name: load(spec) for name, spec in models.items()}
    metrics = _Metrics()
    batchers = {
        name: DynamicBatcher(rr, limits.max_batch_docs, limits.max_wait_ms, limits.max_queue, metrics.batch.observe)
        for name, rr in rerankers.items()
        if limits.batching and isinstance(rr, BaseReranker) and not isinstance(rr, ApiReranker)
    }
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: Any):  # noqa: ANN202
        for name, rr in rerankers.items():
            warm = getattr(rr, "warm_up", None)
            if warm is not None:
                await asyncio.to_thread(warm)
            logger.info("model %s ready (%s)", name, getattr(rr, "model", None) or rr.name)
        state["ready"] = True
        yield
        state["ready"] = False
        for batcher in batchers.values():
            await batcher.close()

    app = FastAPI(title="rankrelay", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes,
                       on_reject=lambda path: metrics.requests.labels(route(path), "", "413").inc())

    def route(path: str) -> str:
        """The metrics label of a path: a route of this app, else ``other`` (paths are user input)."""
        return path if path in ROUTES else "other"

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        path = request.url.path
        if path in ("/health", "/ready", "/metrics"):
            return await call_next(request)
        if keys:
            header = request.headers.get("authorization", "")
            token = header[7:] if header.lower().startswith("bearer ") else ""
            if not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
                metrics.requests.labels(route(path), "", "401").inc()
                return _error(401, "invalid api token")
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
            metrics.requests.labels(route(path), "", "413").inc()
            return _error(413, f"request body of {size} bytes is over the limit of {limits.max_body_bytes}")
        return await call_next(request)

    @app.exception_handler(fastapi.exceptions.RequestValidationError)
    async def invalid(request: Request, exc: Any) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(422, f"invalid request: {where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return _error(500, "internal error")

    def pick(name: str | None) -> tuple[str, Reranker]:
        if name is None:
            name = next(iter(rerankers))
        if name not in rerankers:
            raise LookupError(f"model {name!r} is not served here; available: {', '.join(rerankers)}")
        return name, rerankers[name]

    def check(query: str, texts: list[str]) -> None:
        if len(texts) > limits.max_documents:
            raise LimitExceededError(f"{len(texts)} documents is over the limit of {limits.max_documents}")
        if len(query) > limits.max_query_chars:
            raise LimitExceededError(f"the query has {len(query)} characters; the limit is {limits.max_query_chars}")
        for i, t in enumerate(texts):
            if len(t) > limits.max_document_chars:
                raise LimitExceededError(
                    f"document {i} has {len(t)} characters; the limit is {limits.max_document_chars}")

    async def run(endpoint: str, name: str | None, query: str, texts: list[str], top_n: int | None) -> Any:
        start = time.perf_counter()
        model = name or ""
        try:
            model, rr = pick(name)
            check(query, texts)
            batcher = batchers.get(model) if limits.budget_ms is None else None
            if limits.budget_ms is not None and accepts_budget(rr):  # each request has its own deadline
                res = await asyncio.wait_for(rr.arerank(query, texts, top_n, budget_ms=limits.budget_ms),
                                             limits.request_timeout)
            elif batcher is not None:
                metrics.queue.labels(model).set(batcher.depth)
                res = await asyncio.wait_for(batcher.submit(query, texts, top_n), limits.request_timeout)
            else:
                res = await asyncio.wait_for(rr.arerank(query, texts, top_n), limits.request_timeout)
            for failure in res.info.get("fallbacks", []):
                metrics.fallbacks.labels(model, failure["backend"]).inc()
            cache = res.info.get("score_cache") or {}
            for result, key in (("hit", "hits"), ("miss", "misses")):
                if cache.get(key):
                    metrics.score_cache.labels(model, result).inc(cache[key])
            if res.info.get("reranked", len(texts)) < len(texts):
                metrics.reranked.labels(model).inc()
            status, out = 200, res
        except LookupError as exc:
            status, out = 404, _error(404, str(exc))
        except LimitExceededError as exc:
            status, out = 422, _error(422, str(exc))
        except InvalidInputError as exc:
            status, out = 400, _error(400, str(exc))
        except QueueFullError as exc:
            status, out = 429, _error(429, str(exc), {"Retry-After": "1"})
        except (TimeoutError, BackendTimeoutError):
            status, out = 503, _error(503, f"the model did not answer within {limits.request_timeout:g} s")
        except AuthenticationError:
            status, out = 503, _error(503, "the backend rejected its credentials")
        except (BackendError, RankRelayError) as exc:
            logger.warning("%s failed: %s: %s", model, type(exc).__name__, exc)
            retry_after = getattr(exc, "retry_after", None)  # an upstream 429's wait, passed on
            headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
            status, out = 503, _error(503, f"the backend failed ({type(exc).__name__})", headers)
        except Exception:
            logger.exception("%s failed unexpectedly", model)
            status, out = 500, _error(500, "internal error")
        # labels come from configured names only: an unknown model name cannot add a series
        metrics.requests.labels(endpoint, model if model in rerankers else "", str(status)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return out

    def texts_of(documents: list[str | dict[str, Any]]) -> list[str]:
        out = []
        for d in documents:
            if isinstance(d, str):
                out.append(d)
            elif isinstance(d.get("text"), str):
                out.append(d["text"])
            else:
                raise InvalidInputError("each document must be a string or an object with a 'text' string")
        return out

    def cohere_reply(res: RerankResult, texts: list[str], version: str, with_docs: bool) -> dict[str, Any]:
        results = []
        for r in res.results:
            row: dict[str, Any] = {"index": r.index, "relevance_score": r.normalized_score}
            if with_docs:
                row["document"] = {"text": texts[r.index]}
            results.append(row)
        return {"id": str(uuid.uuid4()), "results": results,
                "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}}}

    async def cohere(endpoint: str, body: CohereRerankRequest, version: str) -> Any:
        try:
            texts = texts_of(body.documents)
        except InvalidInputError as exc:
            return _error(400, str(exc))
        out = await run(endpoint, body.model, body.query, texts, body.top_n)
        if isinstance(out, JSONResponse):
            return out
        return cohere_reply(out, texts, version, body.return_documents)

    @app.post("/v2/rerank")
    async def rerank_v2(body: CohereRerankRequest) -> Any:
        return await cohere("/v2/rerank", body, "2")

    @app.post("/v1/rerank")
    async def rerank_v1(body: CohereRerankRequest) -> Any:
        return await cohere("/v1/rerank", body, "1")

    @app.post("/rerank")
    async def rerank_tei(body: TeiRerankRequest) -> Any:
        out = await run("/rerank", body.model, body.query, body.texts, None)
        if isinstance(out, JSONResponse):
            return out
        scores = [r.score for r in out.results] if body.raw_scores else normalize([r.score for r in out.results],
                                                                                  "sigmoid")
        return [{"index": r.index, "score": s, **({"text": r.text} if body.return_text else {})}
                for r, s in zip(out.results, scores)]

    async def first_stage(query: str, k: int) -> RerankResult | JSONResponse:
        try:
            check_query(query)
            if len(query) > limits.max_query_chars:
                raise LimitExceededError(f"the query has {len(query)} characters; the limit is "
                                         f"{limits.max_query_chars}")
            if k > limits.max_documents:
                raise LimitExceededError(f"retrieve_k {k} is over the limit of {limits.max_documents} documents")
            return await asyncio.wait_for(asyncio.to_thread(retriever.search, query, k), limits.request_timeout)
        except LimitExceededError as exc:
            return _error(422, str(exc))
        except InvalidInputError as exc:
            return _error(400, str(exc))
        except (TimeoutError, RankRelayError) as exc:
            logger.warning("first stage failed: %s: %s", type(exc).__name__, exc)
            return _error(503, f"the first stage failed ({type(exc).__name__})")

    @app.post("/search")
    async def search(body: SearchRequest) -> Any:
        if retriever is None:
            return _error(404, "no index is configured: start the service with --index DIR (or [service] index)")
        start = time.perf_counter()
        first = await first_stage(body.query, body.retrieve_k or retrieve_k)
        if isinstance(first, JSONResponse):
            metrics.requests.labels("/search", body.model or "", str(first.status_code)).inc()
            return first
        retrieved = time.perf_counter()
        texts = [r.text for r in first.results]
        fallbacks: list[dict[str, Any]] = []
        if body.rerank and texts:
            out = await run("/search", body.model, body.query, texts, body.top_n)
            if isinstance(out, JSONResponse):
                return out
            served_by, fallbacks = out.backend, out.info.get("fallbacks", [])
            ranked = [(first.results[r.index], r) for r in out.results]
        else:
            metrics.requests.labels("/search", "", "200").inc()
            served_by, ranked = first.backend, [(r, r) for r in first.results[: body.top_n]]
        done = time.perf_counter()
        results = []
        for doc, r in ranked:
            row: dict[str, Any] = {"id": doc.id, "index": doc.index, "rank": r.rank, "first_rank": doc.rank,
                                   "score": r.score, "relevance_score": r.normalized_score}
            if body.return_documents:
                row["document"] = {"text": doc.text, "metadata": doc.metadata}
            results.append(row)
        return {"query": body.query, "results": results, "served_by": served_by, "retriever": first.backend,
                "num_candidates": len(texts), "fallbacks": fallbacks,
                "timings": {"retrieve_ms": (retrieved - start) * 1000.0, "rerank_ms": (done - retrieved) * 1000.0,
                            "total_ms": (done - start) * 1000.0}}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Any:
        return {"ready": True} if state["ready"] else JSONResponse({"ready": False}, status_code=503)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"models": [{"name": n, "backend": rr.name, "model": getattr(rr, "model", None),
                            "endpoints": ["rerank"]} for n, rr in rerankers.items()]}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        for name, batcher in batchers.items():
            metrics.queue.labels(name).set(batcher.depth)
        return Response(prometheus.generate_latest(metrics.registry), media_type=prometheus.CONTENT_TYPE_LATEST)

    app.state.rerankers = rerankers
    app.state.batchers = batchers
    return app


def create_app_from_settings(settings: Settings, models: Mapping[str, Any] | None = None,
                             api_keys: Sequence[str | SecretStr] = (), **overrides: Any) -> Any:
    """Build the app from ``settings.service`` (models, keys, index, limits).

    ``models`` (from ``--model``), when given, are served instead of the configured ones; a spec there may
    name a configured model (or ``fallback``, the settings' chain) to serve that chain under a new name.
    With neither, the settings' fallback chain or backend is served as ``default``. ``overrides``
    replace ``[service]`` fields.
    """
    service = settings.service.model_copy(update=overrides)
    configured: dict[str, Any] = dict(service.models)
    chosen: dict[str, Any] = {}
    for name, spec in (models or {}).items():
        if isinstance(spec, str) and spec in configured:
            spec = configured[spec]
        elif spec == "fallback":
            if not settings.fallback:
                raise ConfigError("--model NAME=fallback needs a 'fallback' chain in the settings")
            spec = list(settings.fallback)
        chosen[name] = spec
    if not chosen:
        chosen = configured or {"default": list(settings.fallback) if settings.fallback else settings.backend}
    retriever = None
    if service.index:
        from rankrelay.retrieval import open_index

        retriever = open_index(service.index, service.retriever, device=settings.device)
    return create_app(chosen, api_keys=[*service.api_keys, *api_keys],
                      allow_unauthenticated=service.allow_unauthenticated, limits=service.limits(),
                      retriever=retriever, retrieve_k=service.retrieve_k, settings=settings)
