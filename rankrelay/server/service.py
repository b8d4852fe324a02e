"""The service's state: the served models, their batchers, limits and metrics, and the first stage.

:class:`Service` answers one rerank request the way every endpoint needs it (limits, the latency budget
or the batcher, the request timeout, metrics); :class:`ServedModel` wraps that path as a
:class:`~rankrelay.Reranker`, so ``/search`` runs the library's one
:class:`~rankrelay.retrieval.TwoStageSearch` through the same batcher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from rankrelay.config import Limits, Settings
from rankrelay.errors import UNAVAILABLE, RankRelayError, backend_failure
from rankrelay.experiments.online import Experiments
from rankrelay.rerankers.base import BaseReranker, Request, Reranker, SingleQuery, accepts_budget, aclose, label
from rankrelay.rerankers.compose.composite import Composite, leaves
from rankrelay.rerankers.compose.fallback import FallbackReranker
from rankrelay.rerankers.compose.pool import PoolReranker
from rankrelay.rerankers.hosted.api import ApiReranker
from rankrelay.rerankers.registry import load_reranker
from rankrelay.results import Document, DocumentLike, RerankResult, to_documents
from rankrelay.retrieval.base import Retriever
from rankrelay.server.batching import DynamicBatcher
from rankrelay.server.capture import Capture
from rankrelay.server.clients import ANONYMOUS, CURRENT_CLIENT
from rankrelay.server.guards import NotServedError, check_limits
from rankrelay.server.metrics import Metrics
from rankrelay.server.usage import Budget, Usage
from rankrelay.tracing import set_attributes, span

logger = logging.getLogger(__name__)
T = TypeVar("T")


def load_models(models: Mapping[str, Any], settings: Settings | None, strict: bool = False) -> dict[str, Reranker]:
    """name -> reranker; one instance (one copy of the weights) per spec string, inside chains too. A chain's
    backend without credentials, weights or package is marked unavailable and the chain serves from the next
    (``strict``: an error, as for a model served alone)."""
    loaded: dict[str, Reranker] = {}

    def load(spec: Any, in_chain: bool = False) -> Any:
        if isinstance(spec, str):
            if spec not in loaded:
                try:
                    loaded[spec] = load_reranker(spec, settings=settings)
                except UNAVAILABLE:
                    if strict or not in_chain:
                        raise
                    return spec  # the chain marks it unavailable, saying why
            return loaded[spec]
        if isinstance(spec, (list, tuple)):
            spec = [load(item, True) if isinstance(item, str) else item for item in spec]
            return load_reranker(spec, settings=settings, strict=strict)
        return load_reranker(spec, settings=settings)

    return {name: load(spec) for name, spec in models.items()}


def local_models(reranker: Reranker) -> list[Any]:
    """The loaded local models inside ``reranker`` (those whose runtime ``auto`` may still be measuring; a chain's
    backend that could not load is not one)."""
    return [r for r in leaves(reranker) if getattr(r, "loaded", False) and hasattr(r, "wait_for_runtime")]


def availability(reranker: Reranker) -> list[dict[str, Any]]:
    """The backends of a served model that cannot serve (a chain's unavailable ones), with why."""
    parts = reranker.availability() if isinstance(reranker, FallbackReranker) else []
    return [p for p in parts if not p["available"]]


def shared_state(reranker: Reranker) -> dict[str, Any] | None:
    """Whether the state a served model's pools and chains share with other replicas answers (None without one)."""
    todo, states = [reranker], []
    while todo:
        current = todo.pop()
        if isinstance(current, PoolReranker | FallbackReranker) and (state := current.shared_state()) is not None:
            states.append(state)
        if isinstance(current, Composite):
            todo.extend(current.parts())
    if not states:
        return None
    problems = sorted({s["problem"] for s in states if "problem" in s})
    return {"shared": all(s["shared"] for s in states), **({"problem": "; ".join(problems)} if problems else {})}


async def typed(work: Awaitable[T], what: str) -> T:
    """``await work``; an exception that is not rankrelay's (a user's reranker, a retriever) leaves as a
    :class:`~rankrelay.errors.BackendFailedError` (answered 503), never as an unexpected 500."""
    try:
        return await work
    except (RankRelayError, TimeoutError):
        raise
    except Exception as exc:
        logger.warning("%s failed: %s: %s", what, type(exc).__name__, exc)
        raise backend_failure(what, exc) from exc


class Service:
    """Served models (the first is the default), limits, metrics and an optional first stage."""

    def __init__(self, rerankers: Mapping[str, Reranker], limits: Limits, retriever: Retriever | None = None,
                 retrieve_k: int = 100, experiments: Experiments | None = None, store_strict: bool = True,
                 measure_at_start: bool = True, usage: Usage | None = None, count_usage: bool = True,
                 captures: Mapping[str, Capture] | None = None) -> None:
        self.rerankers = dict(rerankers)
        self.captures = dict(captures or {})  # served name -> its sampled answers' file (off by default)
        self.usage = usage if usage is not None else Usage()
        self.count_usage = count_usage  # off where another service counts (Ray's model replicas: the gateway does)
        self.budgets: dict[str, Budget] = {}  # the clients' with one, by name (set by the app)
        self._backends: dict[str, list[str]] = {}
        self.shared_parts: dict[str, Any] = {}  # the clients' rates and usage when Redis holds them (set by the app)
        self.store_strict = store_strict
        self.measure_at_start = measure_at_start
        self._maintenance: asyncio.Task[None] | None = None
        self.experiments = experiments or Experiments({}, None)
        self.experiments.on_event = self._count_event
        self.limits = limits
        self.metrics = Metrics()
        self.usage.on_settle = self.metrics.record_usage
        self.retriever = retriever
        self.retrieve_k = retrieve_k
        self.ready = False
        self.batchers = {  # local models share forward passes; an API call is its own batch already
            name: DynamicBatcher(rr, limits.max_batch_docs, limits.max_wait_ms, limits.max_queue,
                                 self.metrics.batch.labels(name).observe)
            for name, rr in self.rerankers.items()
            if limits.batching and isinstance(rr, BaseReranker) and not isinstance(rr, ApiReranker)
        }

    def pick(self, name: str | None, allowed: Collection[str] | None = None) -> str:
        """The served name for ``name`` (None: the default, the first ``allowed`` when given);
        :class:`NotServedError` when there is none, or when it is not ``allowed`` (a client's models: any other is
        answered as a model that is not served, naming only the client's)."""
        names = [n for n in (*self.rerankers, *self.experiments.experiments) if allowed is None or n in allowed]
        if name is None and names:
            return names[0]
        if name not in names:
            raise NotServedError(f"model {name!r} is not served here; available: {', '.join(names)}")
        return name

    async def rerank(self, name: str, query: str, documents: Sequence[DocumentLike],
                     top_n: int | None) -> RerankResult:
        """One request to the served model ``name``: within the limits, the latency budget (or through the
        batcher) and the request timeout; its fallbacks, cache hits and budget cuts are counted."""
        docs = to_documents(documents)
        check_limits(self.limits, query, [d.text for d in docs])
        with span("rankrelay.rerank", model=name, documents=len(docs)) as current:
            if name in self.experiments:  # every arm takes the path below; the merged list is answered
                res = await self.experiments.answer(name, query, docs, top_n, self._served)
            else:
                res = await self._served(name, query, docs, top_n)
            set_attributes(current, served_by=res.backend, impression=res.info.get("impression"))
        capture = self.captures.get(name)
        if capture is not None:
            capture.offer(query, res)  # a queue's put: a thread writes it
        return res

    def _count_event(self, experiment: str, kind: str, outcome: str) -> None:
        self.metrics.experiments.labels(experiment, kind, outcome).inc()

    async def _served(self, name: str, query: str, docs: Sequence[Document], top_n: int | None) -> RerankResult:
        """One call of the served model ``name`` (an experiment's arm too), counted under the request's client,
        its budget reserved first (:mod:`~rankrelay.server.usage`)."""
        if not self.count_usage:
            return await self._answer(name, query, docs, top_n)
        client = CURRENT_CLIENT.get()
        hold = self.usage.reserve(ANONYMOUS if client is None else client.name,
                                  None if client is None else client.budget, self.backends(name), len(docs))
        try:
            res = await self._answer(name, query, docs, top_n)
        except BaseException:
            self.usage.release(hold)
            raise
        self.usage.settle(hold, model=name, deployment=(res.info.get("pool") or {}).get("deployment") or "",
                          documents=len(docs), backend=res.backend_label,
                          billed=res.info.get("billed_units") or {})
        return res

    def backends(self, name: str) -> list[str]:
        """The ``name:model`` of every backend inside the served model ``name`` (a model served from elsewhere, as
        on Ray Serve, names them as ``backend_labels``)."""
        if name not in self._backends:  # the served models do not change while the service runs
            rr = self.rerankers[name]
            given = getattr(rr, "backend_labels", None)
            self._backends[name] = list(given) if given is not None else [label(leaf) for leaf in leaves(rr)]
        return self._backends[name]

    def priced(self) -> list[str]:
        """The served models (and experiments) one of whose backends has a price."""
        names = [n for n in self.rerankers if self.usage.priced(self.backends(n))]
        return names + [n for n, e in self.experiments.experiments.items() if any(a in names for a in e.arms)]

    async def _answer(self, name: str, query: str, docs: Sequence[Document], top_n: int | None) -> RerankResult:
        rr = self.rerankers[name]
        budget = self.limits.budget_ms
        batcher = self.batchers.get(name)
        if budget is not None and accepts_budget(rr):  # each request has its own deadline: not packed
            work = rr.arerank(query, docs, top_n, budget_ms=budget)  # type: ignore[call-arg]
        elif batcher is not None:
            self.metrics.queue.labels(name).set(batcher.depth)
            work = batcher.submit(query, docs, top_n)
        else:
            work = rr.arerank(query, docs, top_n)
        res = await typed(asyncio.wait_for(work, self.limits.request_timeout), label(rr))
        self.metrics.record_result(name, res, len(docs))
        return res

    def model(self, name: str) -> ServedModel:
        """The served model ``name`` as a :class:`~rankrelay.Reranker` (for :class:`TwoStageSearch`)."""
        return ServedModel(self, name)

    def warm_up(self) -> None:
        """Open the experiment store and load every served model now (what :meth:`start` does; the CLI calls it
        before the server starts, so a store or model that cannot be opened is one line, not a traceback)."""
        self.experiments.open(self.store_strict)
        for rr in {id(r): r for r in self.rerankers.values()}.values():
            self._load(rr)

    def _load(self, rr: Reranker) -> None:
        """Load ``rr``; with ``measure_at_start``, wait until ``runtime="auto"`` has chosen its models' runtimes."""
        rr.warm_up()
        if self.measure_at_start:
            for model in local_models(rr):
                model.wait_for_runtime()

    async def start(self) -> None:
        """Open the experiment store and load every served model (``/ready`` says so only after this); keep the
        store's buffer written beside the requests."""
        await asyncio.to_thread(self.experiments.open, self.store_strict)
        self._maintenance = asyncio.create_task(self.experiments.maintain())
        for name, rr in self.rerankers.items():
            await asyncio.to_thread(self._load, rr)
            logger.info("model %s ready (%s)", name, label(rr))
        self.ready = True

    def gateway_state(self) -> dict[str, dict[str, Any]]:
        """Whether the Redis that holds the clients' rates and usage answers (each part: ``shared``, and while it
        does not, the ``problem``; the service then counts in this process)."""
        return {name: part.health() for name, part in self.shared_parts.items()}

    def measuring(self) -> list[str]:
        """The served names whose local models ``runtime="auto"`` is measuring now (they serve on torch)."""
        return [name for name, rr in self.rerankers.items() if any(m.measuring for m in local_models(rr))]

    async def stop(self) -> None:
        """Stop the batchers, then close every model's clients."""
        self.ready = False
        for batcher in self.batchers.values():
            await batcher.close()
        if self._maintenance is not None:
            self._maintenance.cancel()
            self._maintenance = None
        await asyncio.to_thread(self.experiments.flush)
        if self.experiments.pending:
            logger.warning("%d buffered impressions could not be stored before the service stopped",
                           self.experiments.pending)
        self.experiments.close()
        for capture in self.captures.values():
            await asyncio.to_thread(capture.close)
        for rr in {id(r): r for r in self.rerankers.values()}.values():
            try:
                await aclose(rr)
            except Exception as exc:  # closing must reach every model
                logger.warning("closing %s failed: %s: %s", label(rr), type(exc).__name__, exc)

    def queue_depths(self) -> dict[str, int]:
        return {name: b.depth for name, b in self.batchers.items()}


class ServedModel(SingleQuery):
    """A served model as a Reranker: async calls take the service's path (limits, batcher, timeout, metrics);
    sync calls go to the model directly. Its lifetime is the service's, so warm_up and close do nothing."""

    def __init__(self, service: Service, name: str) -> None:
        self.service = service
        self.served_as = name
        self.reranker = service.rerankers[name]
        self.name = self.reranker.name
        self.model = getattr(self.reranker, "model", None)

    def rerank_batch(self, requests: Sequence[Request], top_n: int | None = None, *,
                     budget_ms: float | None = None) -> list[RerankResult]:
        return self.reranker.rerank_batch(requests, top_n)

    async def arerank_batch(self, requests: Sequence[Request], top_n: int | None = None, *,
                            budget_ms: float | None = None) -> list[RerankResult]:
        return list(await asyncio.gather(*(self.service.rerank(self.served_as, q, d, top_n) for q, d in requests)))
