"""Prometheus metrics of the service, and the ASGI middleware that counts every request once.

Labels come only from what the service configured (its routes, its model names), never from user
input, so the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from time import perf_counter
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.results import RerankResult

prometheus = import_optional("prometheus_client", extra="server", feature="the rerank service",
                             package="prometheus-client")

#: the request-scope state key under which a handler names the served model it used
MODEL_KEY = "rankrelay_model"
#: the billed units counted under their own name (any other a provider reports is ``other``: labels stay bounded)
KNOWN_UNITS = ("search_units", "queries", "input_tokens", "output_tokens", "prompt_tokens", "completion_tokens")


class Metrics:
    """The service's collectors, in their own registry."""

    def __init__(self) -> None:
        self.registry = prometheus.CollectorRegistry()
        self.requests = prometheus.Counter("rankrelay_requests", "Requests by endpoint, model and status",
                                           ["endpoint", "model", "status"], registry=self.registry)
        self.latency = prometheus.Histogram("rankrelay_request_seconds", "Request latency", ["endpoint"],
                                            registry=self.registry)
        self.batch = prometheus.Histogram("rankrelay_batch_requests", "Requests per shared model call", ["model"],
                                          buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.queue = prometheus.Gauge("rankrelay_queue_depth", "Requests waiting for a model", ["model"],
                                      registry=self.registry)
        self.fallbacks = prometheus.Counter("rankrelay_fallbacks", "Backends skipped or failed in chains",
                                            ["model", "backend"], registry=self.registry)
        self.score_cache = prometheus.Counter("rankrelay_score_cache", "Score-cache lookups of (query, passage) "
                                              "pairs by result (hit: the model was skipped)", ["model", "result"],
                                              registry=self.registry)
        self.experiments = prometheus.Counter(
            "rankrelay_experiment_events", "Experiment impressions and feedback by outcome (recorded, excluded: an "
            "arm failed, buffered: held until the store is back, lost: the buffer was full or the row could not be "
            "stored, repeated: the same feedback again)",
            ["experiment", "kind", "outcome"], registry=self.registry)
        self.store_up = prometheus.Gauge("rankrelay_experiment_store_up", "1 while the experiment store answers, "
                                         "0 while it is away", registry=self.registry)
        self.store_pending = prometheus.Gauge("rankrelay_experiment_store_pending", "Impressions waiting in memory "
                                              "for the experiment store", registry=self.registry)
        self.shared_state_up = prometheus.Gauge("rankrelay_shared_state_up", "1 while the state a model's pools "
                                                "share with other replicas (Redis) answers, 0 while each replica "
                                                "counts alone", ["model"], registry=self.registry)
        self.gateway_state_up = prometheus.Gauge("rankrelay_gateway_state_up", "1 while the Redis that holds the "
                                                 "clients' rates or usage answers, 0 while this replica counts alone",
                                                 ["part"], registry=self.registry)
        self.reranked = prometheus.Counter("rankrelay_budget_partial", "Requests whose latency budget left part "
                                           "of the list in first-stage order", ["model"], registry=self.registry)

        usage = ["client", "model", "deployment"]  # configured names only: bounded
        self.usage_requests = prometheus.Counter("rankrelay_usage_requests", "Answered requests by client, served "
                                                 "model and deployment", usage, registry=self.registry)
        self.usage_documents = prometheus.Counter("rankrelay_usage_documents", "Documents reranked by client, "
                                                  "served model and deployment", usage, registry=self.registry)
        self.usage_units = prometheus.Counter("rankrelay_usage_billed_units", "Units the providers billed (search "
                                              "units, queries, tokens)", [*usage, "unit"], registry=self.registry)
        self.usage_cost = prometheus.Counter("rankrelay_usage_cost_usd", "Estimated dollars at the configured "
                                             "prices", usage, registry=self.registry)

    def record_usage(self, client: str, model: str, deployment: str, documents: int,
                     units: Mapping[str, float], cost: float) -> None:
        """An answered request's usage (see :mod:`~rankrelay.server.usage`); a unit no price names is ``other``."""
        self.usage_requests.labels(client, model, deployment).inc()
        self.usage_documents.labels(client, model, deployment).inc(documents)
        for unit, n in units.items():
            self.usage_units.labels(client, model, deployment, unit if unit in KNOWN_UNITS else "other").inc(n)
        self.usage_cost.labels(client, model, deployment).inc(cost)

    def record_result(self, model: str, res: RerankResult, num_documents: int) -> None:
        """What a served result says about fallbacks, the score cache and the latency budget."""
        for failure in res.info.get("fallbacks", []):
            self.fallbacks.labels(model, failure["backend"]).inc()
        cache = res.info.get("score_cache") or {}
        for result, key in (("hit", "hits"), ("miss", "misses")):
            if cache.get(key):
                self.score_cache.labels(model, result).inc(cache[key])
        if res.info.get("reranked", num_documents) < num_documents:
            self.reranked.labels(model).inc()

    def exposition(self) -> bytes:
        return prometheus.generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: one count (endpoint, model, status) and one latency per HTTP request, whatever
    answered it (a handler, an error handler, the body limit, the router's 404).

    ``endpoint`` is the path when it is one of ``routes``, else ``other``; ``model`` is what the handler
    stored under :data:`MODEL_KEY` in the request state (a configured name), else empty.
    """

    def __init__(self, app: Any, metrics: Metrics, routes: Collection[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = perf_counter()
        state = scope.setdefault("state", {})
        status = 500  # an exception before any response counts as the 500 it becomes

        async def watch(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            endpoint = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.requests.labels(endpoint, state.get(MODEL_KEY, ""), str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(perf_counter() - start)
