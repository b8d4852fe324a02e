"""The rerank service: Cohere's ``/v2/rerank`` and ``/v1/rerank``, TEI's ``/rerank``, ``/search``, health and
metrics, assembled from :mod:`~rankrelay.server.routes` (one router per API shape),
:mod:`~rankrelay.server.guards` (body limit, auth, request limits) and :mod:`~rankrelay.server.service`.

Any Cohere client works against it unchanged (``cohere.ClientV2(base_url=..., api_key=...)``).
Local models are fed through :class:`~rankrelay.server.batching.DynamicBatcher`.

Example:
    >>> from rankrelay.server.app import create_app
    >>> from rankrelay.server.routes import paths
    >>> app = create_app({"fast": "identity"}, api_keys=["secret"])
    >>> [p for p in paths() if p.startswith("/v")]
    ['/v1/experiments/{name}', '/v1/feedback', '/v1/models', '/v1/rerank', '/v1/usage', '/v2/rerank']
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr, ValidationError

from rankrelay._optional import import_optional
from rankrelay.config import ExperimentSettings, Limits, Settings
from rankrelay.errors import ConfigError
from rankrelay.experiments.online import Experiment, Experiments, check_experiments
from rankrelay.experiments.store import SQLStore, open_store
from rankrelay.retrieval.base import Retriever

import_optional("fastapi", extra="server", feature="the rerank service")
from fastapi import Depends, FastAPI  # noqa: E402

from rankrelay.rerankers.compose.pool_state import PoolState  # noqa: E402
from rankrelay.server import routes  # noqa: E402
from rankrelay.server.capture import open_captures, split_captures  # noqa: E402
from rankrelay.server.clients import check_budgets, clients_from_settings  # noqa: E402
from rankrelay.server.context import REDACT_QUERY, RequestContext  # noqa: E402
from rankrelay.server.guards import BearerAuth, BodyLimit, Contained, check_api_keys, json_only  # noqa: E402
from rankrelay.server.metrics import RequestMetrics  # noqa: E402
from rankrelay.server.service import Service, load_models  # noqa: E402
from rankrelay.server.usage import LocalUsageStore, Prices, Usage  # noqa: E402

__all__ = ["AppPlan", "Limits", "create_app", "create_app_from_settings", "plan_from_settings"]


def create_app(models: Mapping[str, Any], *, api_keys: Sequence[str | SecretStr] = (),
               allow_unauthenticated: bool = False, limits: Limits | None = None, retriever: Retriever | None = None,
               retrieve_k: int = 100, settings: Settings | None = None, strict: bool = False,
               experiments: Mapping[str, Any] | None = None, experiment_store: str | SQLStore = "experiments.db",
               store_text: bool = False, retention: Mapping[str, Any] | None = None, store_strict: bool = True,
               store_buffer: int = 10_000, measure_at_start: bool = True,
               clients: Mapping[str, Any] | None = None, state: str | None = None,
               prices: Mapping[str, Mapping[str, float]] | None = None) -> FastAPI:
    """Build the FastAPI app.

    Args:
        models: name -> spec, fallback-chain list or Reranker; the first is the default. A spec given as a dict may
            capture its answers for ``rankrelay distill`` (``capture``, ``sample``, ``store_text``:
            :mod:`~rankrelay.server.capture`).
        api_keys: accepted bearer tokens (constant-time compare).
        allow_unauthenticated: serve without keys (must be asked for explicitly).
        limits: request limits and batching knobs.
        retriever: a first stage (e.g. :func:`~rankrelay.retrieval.open_index`) that enables ``POST /search``.
        retrieve_k: default first-stage depth of ``/search``.
        settings: defaults for the models' options (device, batch size, keys, ...).
        strict: a chain's backend without credentials or weights is an error (default: marked unavailable,
            with a warning, and said by ``/ready``).
        experiments: name -> ``{"arms": [...], "method": "team-draft"}`` (or an :class:`ExperimentSettings`): served
            names that interleave served models; impressions and feedback go to ``experiment_store`` (a SQLite
            file, a ``postgresql://`` URL or a store) with ``retention`` (``max_age_s``, ``max_count``). The store
            is opened at start: one that cannot be opened stops the start
            (``store_strict``) or leaves the service answering without it; ``store_buffer`` impressions wait for a
            store that is away.
        measure_at_start: local models on ``runtime="auto"`` that were never measured on this machine are
            measured before ``/ready`` says ready (False: ready at once on torch, measured in the background).
        clients: name -> ``{"key_sha256" or "key_env", "models", "rpm"}`` (:mod:`~rankrelay.server.clients`):
            applications with keys of their own; ``api_keys`` stay an admin client.
        state: a ``redis://`` URL where the clients' rates, usage and budgets are counted together by every
            replica.
        prices: dollars per billed unit by backend pattern (``{"bedrock:*": {"queries": 0.001}}``), before the
            list prices (:mod:`~rankrelay.server.usage`): what ``/v1/usage`` and the clients' budgets count.
    """
    if not models:
        raise ConfigError("the service needs at least one model (--model NAME=SPEC)")
    keys = _plain(api_keys)
    check_api_keys(keys)
    served = [*models, *(experiments or {})]
    known = clients_from_settings(clients or {}, served)
    if not keys and not known and not allow_unauthenticated:
        raise ConfigError("no API keys configured: pass --api-key KEY, or --no-auth to serve without auth")
    if state is not None:
        from rankrelay.rerankers.compose.redis_state import RedisPoolState

        rates: PoolState | None = RedisPoolState(state, namespace="clients")
    else:
        rates = None
    limits = limits or Limits()
    plans = _experiments(experiments or {})
    check_experiments(plans, models)  # before any model loads
    store = experiment_store if isinstance(experiment_store, SQLStore) else (
        lambda: open_store(str(experiment_store), **dict(retention or {})))
    runner = Experiments(plans, store if plans else None, store_text=store_text, buffer=store_buffer)
    store = _usage_store(state)
    usage = Usage(Prices(prices), store)
    models, capture_options = split_captures(models)
    service = Service(load_models(models, settings, strict), limits, retriever, retrieve_k, runner, store_strict,
                      measure_at_start, usage, captures=open_captures(capture_options))
    check_budgets(known, served, service.priced())
    service.budgets = {c.name: c.budget for c in known if c.budget is not None}
    if rates is not None:
        service.shared_parts = {"client_rates": rates, "usage": store}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    logging.getLogger("uvicorn.access").addFilter(REDACT_QUERY)  # a key sent in the query is not logged
    app = FastAPI(title="rankrelay", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    for router in routes.PROTECTED:
        app.include_router(router, dependencies=[Depends(json_only)])
    app.include_router(routes.operations)
    routes.install_error_handlers(app)
    app.add_middleware(Contained)  # innermost: no exception reaches the server (a kept-alive connection lives)
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes, timeout_s=limits.body_timeout_s)
    app.add_middleware(BearerAuth, keys=keys, open_paths=routes.open_paths(), clients=known,
                       state=rates)  # before any body is read
    app.add_middleware(RequestMetrics, metrics=service.metrics, routes=routes.paths())  # counts all
    app.add_middleware(RequestContext)  # outermost: every answer carries X-Request-Id, a trace spans it all
    app.state.service = service
    app.state.rerankers = service.rerankers
    app.state.batchers = service.batchers
    return app


def _usage_store(state: str | None) -> Any:
    """Where usage and budgets are counted: Redis at ``state`` (reached now: a refused password stops the start),
    else this process."""
    if state is None:
        return LocalUsageStore()
    from rankrelay.server.redis_usage import RedisUsageStore

    store = RedisUsageStore(state)
    store.check()
    return store


def _experiments(given: Mapping[str, Any]) -> dict[str, Experiment]:
    plans = {}
    for name, item in given.items():
        try:
            config = item if isinstance(item, ExperimentSettings) else ExperimentSettings.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ConfigError(f"experiment {name!r}: {where}: {first['msg']}") from None
        plans[name] = Experiment(name, list(config.arms), config.method)
    return plans


def _plain(api_keys: Sequence[str | SecretStr]) -> list[str]:
    return [k.get_secret_value() if isinstance(k, SecretStr) else str(k) for k in api_keys]


@dataclass
class AppPlan:
    """What a service serves, resolved from the settings and the command line: the one description the
    single-process app and the Ray Serve deployment (:mod:`rankrelay.distributed.serve`) are built from."""

    models: dict[str, Any]
    api_keys: list[str | SecretStr]
    allow_unauthenticated: bool
    limits: Limits
    index: str | None
    retriever: str
    retrieve_k: int
    settings: Settings
    strict: bool = False
    experiments: dict[str, ExperimentSettings] = field(default_factory=dict)

    def service_options(self) -> dict[str, Any]:
        """``create_app``'s experiment and start-up arguments from ``[service]``."""
        service = self.settings.service
        days, count = service.experiment_max_age_days, service.experiment_max_impressions
        return {"experiments": self.experiments, "experiment_store": service.experiment_store,
                "store_text": service.store_text, "store_strict": service.store_strict,
                "store_buffer": service.store_buffer, "measure_at_start": service.measure_at_start,
                "retention": {"max_age_s": None if days is None else days * 86400, "max_count": count},
                "clients": dict(service.clients),
                "state": None if service.state is None else service.state.get_secret_value(),
                "prices": dict(self.settings.model_prices)}

    def open_retriever(self) -> Retriever | None:
        """The first stage for ``/search`` (None without an index)."""
        if not self.index:
            return None
        from rankrelay.retrieval import open_index

        return open_index(self.index, self.retriever, device=self.settings.device)


def plan_from_settings(settings: Settings, models: Mapping[str, Any] | None = None,
                       api_keys: Sequence[str | SecretStr] = (), **overrides: Any) -> AppPlan:
    """Resolve ``settings.service`` (models, keys, index, limits) and the command line into an :class:`AppPlan`.

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
    if service.state is not None:  # every pool and chain shares its limits and breakers, under its model's name
        chosen = {name: _sharing(spec, service.state.get_secret_value(), name) for name, spec in chosen.items()}
    keys = [*service.api_keys, *api_keys]
    check_api_keys(_plain(keys))  # before any model loads, here and in every Ray replica
    return AppPlan(chosen, keys, service.allow_unauthenticated, service.limits(),
                   service.index, service.retriever, service.retrieve_k, settings, service.strict,
                   dict(service.experiments))


def _sharing(spec: Any, state: str, name: str) -> Any:
    """``spec`` with its pool's or chain's state kept at ``state`` under ``name`` (other specs as they are)."""
    if isinstance(spec, list):
        spec = {"spec": "fallback", "chain": spec}
    if isinstance(spec, dict) and spec.get("spec") in ("pool", "fallback"):
        return {"state": state, "namespace": name, **spec}
    return spec


def create_app_from_settings(settings: Settings, models: Mapping[str, Any] | None = None,
                             api_keys: Sequence[str | SecretStr] = (), **overrides: Any) -> Any:
    """Build the app from ``settings.service`` and the command line (see :func:`plan_from_settings`)."""
    plan = plan_from_settings(settings, models, api_keys, **overrides)
    return create_app(plan.models, api_keys=plan.api_keys, allow_unauthenticated=plan.allow_unauthenticated,
                      limits=plan.limits, retriever=plan.open_retriever(), retrieve_k=plan.retrieve_k,
                      settings=plan.settings, strict=plan.strict, **plan.service_options())
