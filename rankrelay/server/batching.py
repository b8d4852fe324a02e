"""Dynamic batching: concurrent requests for one local model share forward passes.

While the model is busy, new requests wait in a queue; when it is free, everything waiting (up to
``max_batch_docs`` documents) goes to the model together through ``rerank_batch`` in a worker
thread. A request that finds the model idle starts at once (``max_wait_ms=0``, the default), or
waits up to ``max_wait_ms`` for company. Each request gets back exactly its own result.

Example:
    >>> import asyncio
    >>> from rankrelay import load_reranker
    >>> async def main():
    ...     batcher = DynamicBatcher(load_reranker("identity"), max_wait_ms=5)
    ...     results = await asyncio.gather(*(batcher.submit(f"q{i}", ["a", "b"], None) for i in range(3)))
    ...     await batcher.close()
    ...     return [r.query for r in results]
    >>> asyncio.run(main())
    ['q0', 'q1', 'q2']
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rankrelay.errors import RankRelayError
from rankrelay.rerankers.base import Reranker
from rankrelay.results import DocumentLike, RerankResult
from rankrelay.tracing import set_attributes, span

logger = logging.getLogger(__name__)


class QueueFullError(RankRelayError):
    """More requests are waiting than the server accepts; try again shortly."""


@dataclass(slots=True)
class _Job:
    query: str
    documents: Sequence[DocumentLike]
    top_n: int | None
    future: asyncio.Future[RerankResult] = field(repr=False)


class DynamicBatcher:
    """Pack concurrent requests into shared ``rerank_batch`` calls.

    Args:
        reranker: the model to feed.
        max_batch_docs: documents per shared call (a single larger request goes alone).
        max_wait_ms: how long the first waiting request may wait for company.
        max_queue: waiting requests beyond this are refused with :class:`QueueFullError`.
        on_batch: called once per shared model call with the number of requests in it (metrics).

    A request whose caller stopped waiting (a timeout, a client that went away: its future is
    cancelled) is dropped before the model runs: it takes no place in a forming batch, and a batch (or a
    ``top_n`` group of one) whose callers have all left is not computed. A forward pass already running
    is not interrupted.
    """

    def __init__(self, reranker: Reranker, max_batch_docs: int = 256, max_wait_ms: float = 0.0,
                 max_queue: int = 256, on_batch: Callable[[int], None] | None = None) -> None:
        self.reranker = reranker
        self.max_batch_docs = max_batch_docs
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Requests waiting now."""
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, query: str, documents: Sequence[DocumentLike], top_n: int | None) -> RerankResult:
        """Queue one request and wait for its own result."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run())
        if self._queue.qsize() >= self.max_queue:
            raise QueueFullError(f"{self._queue.qsize()} requests are waiting; try again shortly")
        future: asyncio.Future[RerankResult] = asyncio.get_running_loop().create_future()
        with span("rankrelay.batch", documents=len(documents)) as current:
            queued = time.perf_counter()
            await self._queue.put(_Job(query, documents, top_n, future))
            res = await future
            model_ms = res.timings.get("model", 0.0)
            set_attributes(current, model_ms=model_ms,
                           queue_ms=max(0.0, (time.perf_counter() - queued) * 1000.0 - model_ms))
        return res

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if first.future.done():  # its caller left while it waited: not computed, takes no place
                continue
            jobs = [first]
            docs = len(first.documents)
            deadline = loop.time() + self.max_wait
            while docs < self.max_batch_docs:
                if not self._queue.empty():  # whatever queued up while the model was busy
                    job = self._queue.get_nowait()
                else:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                if job.future.done():  # a forming batch drops the requests whose callers left
                    continue
                jobs.append(job)
                docs += len(job.documents)
            await self._serve(jobs)

    async def _serve(self, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if not j.future.done()]  # callers that gave up are not computed
        if not jobs:
            return
        if self.on_batch is not None:
            self.on_batch(len(jobs))
        groups: dict[int | None, list[_Job]] = {}
        for job in jobs:  # rerank_batch takes one top_n: group by it
            groups.setdefault(job.top_n, []).append(job)
        for top_n, group in groups.items():
            group = [j for j in group if not j.future.done()]  # callers may leave while another group runs
            if not group:
                continue
            try:
                results = await asyncio.to_thread(
                    self.reranker.rerank_batch, [(j.query, j.documents) for j in group], top_n
                )
            except Exception as exc:  # a failing batch fails each of its requests with its own error
                if len(group) > 1 and isinstance(exc, RankRelayError):
                    for job in group:  # find which request was at fault: serve them one by one
                        await self._serve_one(job)
                    continue
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, res in zip(group, results):
                if not job.future.done():
                    job.future.set_result(res)

    async def _serve_one(self, job: _Job) -> None:
        try:
            res = await asyncio.to_thread(self.reranker.rerank_batch, [(job.query, job.documents)], job.top_n)
        except Exception as exc:
            if not job.future.done():
                job.future.set_exception(exc)
            return
        if not job.future.done():
            job.future.set_result(res[0])

    async def close(self) -> None:
        """Stop the worker (waiting requests are cancelled)."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
            self._worker = None
        while self._queue is not None and not self._queue.empty():
            self._queue.get_nowait().future.cancel()
        self._queue = None

    def describe(self) -> dict[str, Any]:
        return {"max_batch_docs": self.max_batch_docs, "max_wait_ms": self.max_wait * 1000, "queue": self.depth}
