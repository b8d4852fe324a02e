"""The service's dynamic batcher on a plain-Python model: requests that share a forming batch each get their own
``top_n``, in their own order, and a failing batch finds the request at fault."""

import asyncio
import threading

from rankrelay.errors import InvalidDocumentError
from rankrelay.rerankers.base import BaseReranker, Scored
from rankrelay.server.batching import DynamicBatcher


class Gated(BaseReranker):
    """Scores by length; the first call waits for ``gate`` (so the others queue up behind it)."""

    name = "gated"

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.calls: list[tuple[list[str], int | None]] = []

    def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
        self.calls.append(([q for q, _ in requests], top_n))
        if len(self.calls) == 1:
            self.gate.wait(30)
        return super().rerank_batch(requests, top_n)

    def _score_batch(self, queries, documents):
        return [Scored([float(len(d.text)) for d in docs]) for docs in documents], {}


DOCS = ["a", "bbb", "cc", "dddd", "eeeee"]


async def test_requests_in_one_batch_keep_their_own_top_n():
    model = Gated()
    sizes = []
    batcher = DynamicBatcher(model, max_batch_docs=100, max_wait_ms=0, on_batch=sizes.append)
    first = asyncio.create_task(batcher.submit("warm", DOCS, None))  # holds the model while the rest queue up
    while not model.calls:
        await asyncio.sleep(0.01)
    asks = [("q1", 1), ("q2", 3), ("q3", None), ("q4", 1), ("q5", 2)]
    tasks = [asyncio.create_task(batcher.submit(q, DOCS, n)) for q, n in asks]
    while batcher.depth < len(asks):
        await asyncio.sleep(0.01)
    model.gate.set()
    results = await asyncio.gather(first, *tasks)
    assert [len(r) for r in results[1:]] == [1, 3, 5, 1, 2]
    assert [r.query for r in results[1:]] == ["q1", "q2", "q3", "q4", "q5"]
    assert all(r.indices == [4, 3, 1, 2, 0][: len(r)] for r in results)
    assert sizes == [1, 5]  # one shared batch after the first call
    assert sorted(model.calls[1:], key=str) == sorted([(["q1", "q4"], 1), (["q2"], 3), (["q3"], None),
                                                       (["q5"], 2)], key=str)  # one model call per top_n
    await batcher.close()


async def test_a_failing_batch_is_served_one_by_one_to_find_the_request_at_fault():
    model = Gated()
    model.gate.set()
    batcher = DynamicBatcher(model, max_batch_docs=100, max_wait_ms=50)
    good = asyncio.create_task(batcher.submit("q1", DOCS, None))
    bad = asyncio.create_task(batcher.submit("q2", ["ok", 3], None))
    results = await asyncio.gather(good, bad, return_exceptions=True)
    assert len(results[0]) == 5 and isinstance(results[1], InvalidDocumentError)
    await batcher.close()
