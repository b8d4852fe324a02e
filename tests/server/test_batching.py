"""The service's dynamic batcher on a plain-Python model: requests that share a forming batch each get their own
``top_n``, in their own order, and a failing batch finds the request at fault."""

import asyncio
import threading

from polling import until_async

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
    await until_async(lambda: model.calls, "the model was called")
    asks = [("q1", 1), ("q2", 3), ("q3", None), ("q4", 1), ("q5", 2)]
    tasks = [asyncio.create_task(batcher.submit(q, DOCS, n)) for q, n in asks]
    await queued(batcher, len(asks))
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


# -- what mutation testing found unchecked (tests/mutation/run.py --only batching) ---------------------------
async def held(model, batcher):
    """Start a request that holds the model (its first call waits for the gate); returns its task."""
    task = asyncio.create_task(batcher.submit("hold", ["x"], None))
    await until_async(lambda: model.calls, "the model was called")
    return task


async def queued(batcher, n):
    await until_async(lambda: batcher.depth >= n, f"{n} requests waiting")


async def test_a_batch_is_packed_up_to_max_batch_docs_and_a_larger_request_goes_alone():
    model = Gated()
    sizes = []
    batcher = DynamicBatcher(model, max_batch_docs=4, on_batch=sizes.append)
    hold = await held(model, batcher)
    asks = [("a", ["1", "2"]), ("b", ["1", "2"]), ("c", ["1", "2", "3", "4", "5"]), ("d", ["1"])]
    tasks = [asyncio.create_task(batcher.submit(q, docs, None)) for q, docs in asks]
    await queued(batcher, 4)
    assert batcher.describe() == {"max_batch_docs": 4, "max_wait_ms": 0.0, "queue": 4}
    model.gate.set()
    results = await asyncio.gather(hold, *tasks)
    assert [r.query for r in results] == ["hold", "a", "b", "c", "d"]
    assert [q for q, _ in model.calls] == [["hold"], ["a", "b"], ["c"], ["d"]]  # 2 + 2 docs fill a batch
    assert sizes == [1, 2, 1, 1] and batcher.depth == 0
    await batcher.close()


async def test_a_request_that_finds_the_model_idle_waits_max_wait_for_company():
    model = Gated()
    model.gate.set()
    batcher = DynamicBatcher(model, max_batch_docs=4, max_wait_ms=60_000)  # a minute: company ends the wait
    first = asyncio.create_task(batcher.submit("a", ["1", "2"], None))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(batcher.submit("b", ["1", "2"], None))  # fills the batch: served at once
    await asyncio.wait_for(asyncio.gather(first, second), 30)
    assert [q for q, _ in model.calls] == [["a", "b"]]
    await batcher.close()
    alone = DynamicBatcher(model, max_wait_ms=0)
    await alone.submit("c", ["1"], None)
    assert [q for q, _ in model.calls][-1] == ["c"]
    await alone.close()


async def test_a_full_queue_refuses_and_a_caller_that_left_is_never_computed():
    model = Gated()
    sizes = []
    batcher = DynamicBatcher(model, max_batch_docs=100, max_queue=2, on_batch=sizes.append)
    hold = await held(model, batcher)
    stay = asyncio.create_task(batcher.submit("stay", ["1"], None))
    leave = asyncio.create_task(batcher.submit("leave", ["1"], None))
    await queued(batcher, 2)
    from rankrelay.server.batching import QueueFullError

    try:
        await batcher.submit("third", ["1"], None)
    except QueueFullError as exc:
        assert str(exc) == "2 requests are waiting; try again shortly"
    else:
        raise AssertionError("a third waiting request was accepted past max_queue=2")
    leave.cancel()
    model.gate.set()
    await asyncio.gather(hold, stay)
    assert [q for q, _ in model.calls] == [["hold"], ["stay"]] and sizes == [1, 1]
    await batcher.close()


async def test_a_foreign_failure_fails_each_request_of_the_batch_without_retrying_them():
    class Broken(Gated):
        def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
            self.calls.append(([q for q, _ in requests], top_n))
            if len(self.calls) == 1:
                self.gate.wait(30)
                return super(Gated, self).rerank_batch(requests, top_n)
            raise RuntimeError("the model's own bug")

    model = Broken()
    batcher = DynamicBatcher(model, max_batch_docs=100)
    hold = await held(model, batcher)
    tasks = [asyncio.create_task(batcher.submit(q, ["1"], None)) for q in ("a", "b")]
    await queued(batcher, 2)
    model.gate.set()
    results = await asyncio.gather(hold, *tasks, return_exceptions=True)
    assert [str(r) for r in results[1:]] == ["the model's own bug"] * 2
    assert [q for q, _ in model.calls] == [["hold"], ["a", "b"]]  # not served one by one
    await batcher.close()


async def test_closing_cancels_the_waiting_requests_and_a_new_request_starts_a_new_worker():
    model = Gated()
    batcher = DynamicBatcher(model)
    hold = await held(model, batcher)
    waiting = asyncio.create_task(batcher.submit("w", ["1"], None))
    await queued(batcher, 1)
    await batcher.close()
    assert batcher.depth == 0 and batcher.describe()["queue"] == 0
    model.gate.set()
    for task in (waiting,):
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("a waiting request was served after close")
    hold.cancel()
    assert (await batcher.submit("again", ["1", "22"], None)).indices == [1, 0]
    await batcher.close()


async def test_defaults_and_what_describe_reports():
    batcher = DynamicBatcher(Gated(), max_wait_ms=5)
    assert batcher.describe() == {"max_batch_docs": 256, "max_wait_ms": 5.0, "queue": 0}
    assert batcher.max_queue == 256
    await batcher.close()  # never used: nothing to stop
    await batcher.close()  # twice: still nothing


async def test_a_request_waits_for_company_arriving_within_max_wait():
    model = Gated()
    model.gate.set()
    batcher = DynamicBatcher(model, max_batch_docs=4, max_wait_ms=900)
    first = asyncio.create_task(batcher.submit("a", ["1", "2"], None))
    await until_async(lambda: batcher._queue is not None and batcher.depth == 0, "the worker took the first request")
    second = asyncio.create_task(batcher.submit("b", ["1", "2"], None))
    await asyncio.gather(first, second)
    assert [q for q, _ in model.calls] == [["a", "b"]]
    await batcher.close()


async def test_callers_that_left_neither_stop_the_worker_nor_split_a_batch():
    model = Gated()
    batcher = DynamicBatcher(model, max_batch_docs=100)
    hold = await held(model, batcher)
    gone = asyncio.create_task(batcher.submit("gone-first", ["1"], None))
    await queued(batcher, 1)
    tasks = [asyncio.create_task(batcher.submit(q, ["1"], None)) for q in ("s1", "gone", "s2")]
    await queued(batcher, 4)
    gone.cancel()
    tasks[1].cancel()
    model.gate.set()
    await asyncio.gather(hold, tasks[0], tasks[2])
    assert [q for q, _ in model.calls] == [["hold"], ["s1", "s2"]]  # one batch, the leavers skipped
    worker = batcher._worker
    await batcher.close()
    assert worker.cancelled()


async def test_every_top_n_group_is_served_whatever_happened_to_the_one_before():
    class FailsOnBad(Gated):
        def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
            if any(q.startswith("bad") for q, _ in requests) and len(self.calls) > 0:
                self.calls.append(([q for q, _ in requests], top_n))
                if any(q == "bad-foreign" for q, _ in requests):
                    raise RuntimeError("foreign")
                raise InvalidDocumentError("bad document")
            return super().rerank_batch(requests, top_n)

    for failing in ("bad-typed", "bad-foreign"):
        model = FailsOnBad()
        batcher = DynamicBatcher(model, max_batch_docs=100)
        hold = await held(model, batcher)
        left = asyncio.create_task(batcher.submit("left", ["1"], 3))  # its group of one: left, not computed
        bad = asyncio.create_task(batcher.submit(failing, ["1"], 2))
        good = [asyncio.create_task(batcher.submit(f"ok{i}", ["1", "22", "333"], 1)) for i in range(2)]
        await queued(batcher, 4)
        left.cancel()
        model.gate.set()
        results = await asyncio.gather(hold, bad, *good, return_exceptions=True)
        assert isinstance(results[1], (InvalidDocumentError, RuntimeError))
        assert [len(r) for r in results[2:]] == [1, 1] and all(r.indices == [2] for r in results[2:])
        assert [q for q, _ in model.calls if "left" in q] == []
        assert sum(1 for q, _ in model.calls if failing in q) == 1  # a group of one is not tried again alone
        await batcher.close()


async def test_served_one_by_one_each_request_keeps_its_top_n():
    class FailsTogether(Gated):
        def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
            if len(requests) > 1 and len(self.calls) > 0:
                self.calls.append(([q for q, _ in requests], top_n))
                raise InvalidDocumentError("one of these")
            return super().rerank_batch(requests, top_n)

    model = FailsTogether()
    batcher = DynamicBatcher(model, max_batch_docs=100)
    hold = await held(model, batcher)
    tasks = [asyncio.create_task(batcher.submit(q, ["1", "22", "333"], n)) for q, n in (("a", 2), ("b", 2), ("c", 1))]
    await queued(batcher, 3)
    model.gate.set()
    results = await asyncio.gather(hold, *tasks)
    assert [r.indices for r in results[1:]] == [[2, 1], [2, 1], [2]]  # and the next group is still served
    assert model.calls[-3:] == [(["a"], 2), (["b"], 2), (["c"], 1)]
    await batcher.close()


async def test_a_group_whose_callers_left_while_another_ran_is_skipped_and_the_next_still_served():
    class Slow(Gated):
        """Each call after the first waits on its own gate."""

        def __init__(self):
            super().__init__()
            self.gates = {"a": threading.Event()}

        def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
            first_query = requests[0][0]
            if first_query in self.gates:
                self.calls.append(([q for q, _ in requests], top_n))
                self.gates[first_query].wait(30)
                return super(Gated, self).rerank_batch(requests, top_n)
            return super().rerank_batch(requests, top_n)

    model = Slow()
    batcher = DynamicBatcher(model, max_batch_docs=100)
    hold = await held(model, batcher)
    a, b, c = (asyncio.create_task(batcher.submit(q, ["1", "22"], n)) for q, n in (("a", 1), ("b", 2), ("c", 3)))
    await queued(batcher, 3)
    model.gate.set()
    await until_async(lambda: any(q == ["a"] for q, _ in model.calls), "group a is running")
    b.cancel()  # its caller leaves while group a runs
    model.gates["a"].set()
    results = await asyncio.gather(hold, a, c)
    assert [r.query for r in results] == ["hold", "a", "c"]
    assert [q for q, _ in model.calls] == [["hold"], ["a"], ["c"]]  # b's group was not computed
    await batcher.close()
    await batcher.close()  # a second close after use: nothing left to stop


async def test_the_batch_span_says_how_long_a_request_queued_and_how_long_the_model_took(spans):
    spans.clear()
    model = Gated()
    model.gate.set()
    batcher = DynamicBatcher(model, max_batch_docs=100, max_wait_ms=0)
    res = await batcher.submit("q", DOCS, None)
    await batcher.close()
    (batch,) = [s for s in spans.get_finished_spans() if s.name == "rankrelay.batch"]
    attributes = dict(batch.attributes)
    span_ms = (batch.end_time - batch.start_time) / 1e6
    assert attributes["rankrelay.documents"] == len(DOCS)
    assert attributes["rankrelay.model_ms"] == res.timings["model"] > 0
    assert 0 <= attributes["rankrelay.queue_ms"] <= span_ms - attributes["rankrelay.model_ms"] + 1.0
