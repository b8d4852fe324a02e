"""The rerank service on Ray Serve: the same FastAPI app, its models in replicas that Ray routes to.

Two deployments. ``models`` (``N`` replicas, or autoscaled) each hold every served model, warmed before
the replica takes traffic, with the service's dynamic batcher packing the requests that reach that
replica; its health check fails when a model is not loaded, and on shutdown it drains its batchers and
closes its clients. ``gateway`` (one replica, no model) is the app of :func:`rankrelay.server.app.create_app`
itself (the same routes, auth, limits, errors and ``/metrics``) whose models are :class:`RemoteModel`:
each call goes to a ``models`` replica through a Ray Serve handle. A replica that dies under a request is
not an error the caller sees: the call is sent again (reranking is idempotent) to a live replica, and
after :data:`ATTEMPTS` tries it is a 503 with Retry-After, never a silent loss or another request's answer.

Example:
    >>> from rankrelay.distributed.serve import parse_autoscale
    >>> parse_autoscale("1,4")
    (1, 4)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from rankrelay.errors import BackendUnavailableError, ConfigError
from rankrelay.rerankers.base import Request, SingleQuery
from rankrelay.results import DocumentLike, RerankResult, to_documents
from rankrelay.server.app import AppPlan

logger = logging.getLogger(__name__)

#: Tries of one call across replicas before it is answered 503.
ATTEMPTS = 3
APP_NAME = "rankrelay"


def parse_autoscale(value: str) -> tuple[int, int]:
    """``MIN,MAX`` replicas (``1 <= MIN <= MAX``)."""
    try:
        low, high = (int(v) for v in value.split(","))
    except ValueError:
        raise ConfigError(f"--autoscale takes MIN,MAX replicas, got {value!r}") from None
    if not 1 <= low <= high:
        raise ConfigError(f"--autoscale needs 1 <= MIN <= MAX, got {value!r}")
    return low, high


def _replica_gone() -> tuple[type[BaseException], ...]:
    from ray import exceptions

    return exceptions.RayActorError, exceptions.ActorUnavailableError


def _raised_in_replica() -> type[BaseException]:
    from ray import exceptions

    return exceptions.RayTaskError


def _original(exc: BaseException) -> BaseException:
    """The exception a replica raised (Ray wraps it with the remote traceback as its message)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class ModelHost:
    """A ``models`` replica: the served models behind the service's own batchers."""

    def __init__(self, plan: AppPlan, threads: int) -> None:
        from rankrelay.distributed import use_threads
        from rankrelay.server.service import Service, load_models

        use_threads(threads)
        self.service = Service(load_models(plan.models, plan.settings, plan.strict), plan.limits,
                               count_usage=False)  # the gateway replica counts each request and its client
        self._starting = asyncio.Lock()  # the health check and the first requests arrive together

    async def _start(self) -> None:
        async with self._starting:
            if not self.service.ready:
                await self.service.start()

    async def describe(self) -> dict[str, tuple[str, str | None]]:
        """name -> (backend name, model) of each served model, once they are loaded."""
        await self._start()
        return {n: (rr.name, getattr(rr, "model", None)) for n, rr in self.service.rerankers.items()}

    async def rerank(self, name: str, query: str, documents: list[Any], top_n: int | None) -> RerankResult:
        await self._start()
        return await self.service.rerank(name, query, documents, top_n)

    async def check_health(self) -> None:
        """Ray Serve's health check: unhealthy until every model is loaded, or when one failed to load."""
        await self._start()
        if not self.service.ready:
            raise RuntimeError("models are not loaded")

    async def __del__(self) -> None:  # Ray Serve calls it when the replica shuts down
        await self.service.stop()


class RemoteModel(SingleQuery):
    """A served model in the ``models`` replicas, as a :class:`~rankrelay.Reranker` for the gateway's app."""

    def __init__(self, handle: Any, served_as: str, backend_labels: Sequence[str] = ()) -> None:
        self.handle = handle
        self.served_as = served_as
        self.name = served_as
        self.model: str | None = None
        self.backend_labels = list(backend_labels)  # what prices and budgets look at (the replicas' backends)

    def warm_up(self) -> None:
        """Wait until a replica has the model loaded; take its backend name and model from there."""
        described = self._call_sync("describe")
        self.name, self.model = described[self.served_as]

    def _call_sync(self, method: str, *args: Any) -> Any:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return getattr(self.handle, method).remote(*args).result()
            except _raised_in_replica() as exc:
                raise _original(exc) from None
            except _replica_gone() as exc:
                self._retrying(attempt, exc)
                time.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    def _retrying(self, attempt: int, exc: BaseException) -> None:
        if attempt == ATTEMPTS:
            raise BackendUnavailableError(f"no replica of {self.served_as!r} answered after {ATTEMPTS} tries "
                                          f"({type(exc).__name__})", backend="ray-serve", retry_after=1.0) from None
        logger.warning("a replica of %s went away (%s); trying another", self.served_as, type(exc).__name__)

    def rerank_batch(self, requests: Sequence[Request], top_n: int | None = None, *,
                     budget_ms: float | None = None) -> list[RerankResult]:
        return [self._call_sync("rerank", self.served_as, q, to_documents(d), top_n) for q, d in requests]

    async def arerank(self, query: str, documents: Sequence[DocumentLike], top_n: int | None = None,
                      **kwargs: Any) -> RerankResult:
        docs = to_documents(documents)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await self.handle.rerank.remote(self.served_as, query, docs, top_n)
            except _raised_in_replica() as exc:
                raise _original(exc) from None
            except _replica_gone() as exc:
                self._retrying(attempt, exc)
                await asyncio.sleep(0.2 * attempt)
        raise AssertionError("unreachable")


class Gateway:
    """The ``gateway`` replica: the service's FastAPI app over :class:`RemoteModel` models."""

    def __init__(self, models: Any, plan: AppPlan) -> None:
        self.models_handle = models
        self.plan = plan

    def __serve_build_asgi_app__(self) -> Any:
        from rankrelay.rerankers.base import label
        from rankrelay.rerankers.compose.composite import leaves
        from rankrelay.server.app import create_app
        from rankrelay.server.service import load_models

        plan = self.plan
        built = load_models(plan.models, plan.settings, plan.strict)  # for their labels: nothing is loaded here
        remote = {name: RemoteModel(self.models_handle, name, [label(leaf) for leaf in leaves(built[name])])
                  for name in plan.models}
        return create_app(remote, api_keys=plan.api_keys, allow_unauthenticated=plan.allow_unauthenticated,
                          limits=plan.limits, retriever=plan.open_retriever(), retrieve_k=plan.retrieve_k,
                          settings=plan.settings, **plan.service_options())


def build_application(plan: AppPlan, *, replicas: int = 1, autoscale: tuple[int, int] | None = None,
                      cpus_per_replica: float = 1.0, max_ongoing_requests: int = 64,
                      host: type[ModelHost] = ModelHost) -> Any:
    """The Ray Serve application for ``plan`` (``serve.run`` it, or use :func:`run`); ``host`` is the
    ``models`` replicas' class (a subclass may batch differently, as ``benchmarks/scaling.py`` does)."""
    from ray import serve

    if replicas < 1:
        raise ConfigError(f"replicas must be >= 1, got {replicas}")
    scaling: dict[str, Any] = {"num_replicas": replicas} if autoscale is None else {
        "autoscaling_config": {"min_replicas": autoscale[0], "max_replicas": autoscale[1],
                               "target_ongoing_requests": 8}}
    threads = max(1, int(cpus_per_replica))
    models = serve.deployment(
        name="models", ray_actor_options={"num_cpus": cpus_per_replica}, max_ongoing_requests=max_ongoing_requests,
        health_check_period_s=5, health_check_timeout_s=60, graceful_shutdown_wait_loop_s=1,
        graceful_shutdown_timeout_s=30, **scaling)(host)
    gateway = serve.deployment(name="gateway", num_replicas=1, ray_actor_options={"num_cpus": 0},
                               max_ongoing_requests=4 * max_ongoing_requests)(serve.ingress()(Gateway))
    return gateway.bind(models.bind(plan, threads), plan)


def run(plan: AppPlan, *, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1,
        autoscale: tuple[int, int] | None = None, blocking: bool = True) -> Any:
    """Start (or join, with ``RAY_ADDRESS``) Ray, and serve ``plan`` on ``host:port`` through Ray Serve's proxy.

    Example (a served model that needs no weights):
        >>> from rankrelay.config import Settings
        >>> from rankrelay.server.app import plan_from_settings
        >>> plan = plan_from_settings(Settings(), {"ref": "identity"}, ["key"])
        >>> sorted(plan.models)
        ['ref']
    """
    from rankrelay.distributed import start_ray

    ray = start_ray()
    from ray import serve

    cpus = float(ray.cluster_resources().get("CPU", 1))
    count = autoscale[1] if autoscale else replicas
    app = build_application(plan, replicas=replicas, autoscale=autoscale,
                            cpus_per_replica=max(1.0, cpus // max(1, count)))
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    logger.info("serving %s on http://%s:%d through Ray Serve (%s)", ", ".join(plan.models), host, port,
                f"autoscale {autoscale[0]}-{autoscale[1]}" if autoscale else f"{replicas} replica(s)")
    if blocking:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return handle


__all__ = ["ATTEMPTS", "Gateway", "ModelHost", "RemoteModel", "build_application", "parse_autoscale", "run"]
