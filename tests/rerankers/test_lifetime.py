"""Lifetimes: warm_up() and close() on every reranker, composites pass them on, API rerankers close their
pooled connections (``with`` / ``async with``), and sync hedging needs no event loop of its own."""

import asyncio

import pytest

from rankrelay import FallbackReranker, load_reranker
from rankrelay.rerankers import CascadeReranker
from rankrelay.rerankers.base import BaseReranker, Scored
from rankrelay.rerankers.compose.ab_split import SplitReranker
from rankrelay.rerankers.hosted.cohere import CohereReranker
from rankrelay.testing import API_KEY, Fault

QUERY = "red apple"
DOCS = ["green pear", "red apple pie", "red car"]


class Counting(BaseReranker):
    """Counts lifetime calls; scores by shared words."""

    name = "counting"

    def __init__(self):
        super().__init__()
        self.warmed = self.closed = 0

    def warm_up(self):
        self.warmed += 1

    def close(self):
        self.closed += 1

    def _score_batch(self, queries, documents):
        return [Scored([float(len(set(q.split()) & set(d.text.split()))) for d in docs])
                for q, docs in zip(queries, documents)], {}


@pytest.mark.parametrize("spec", ["tei", "cohere-http"])
def test_with_block_closes_the_http_connections(fake_api, spec):
    with load_reranker(f"{spec}:{fake_api.url}", api_key=API_KEY) as rr:
        assert rr.rerank(QUERY, DOCS).indices[0] == 1
        rr.rerank(QUERY, DOCS)
        assert fake_api.open_connections() == 1  # one pooled keep-alive connection, reused
    assert fake_api.wait_connections(0)


def test_closed_api_reranker_opens_a_new_client_when_used_again(fake_api):
    rr = load_reranker(f"tei:{fake_api.url}", api_key=API_KEY)
    rr.rerank(QUERY, DOCS)
    rr.close()
    assert fake_api.wait_connections(0)
    assert rr.rerank(QUERY, DOCS).indices[0] == 1
    rr.close()


def test_cohere_sdk_uses_our_pool_and_closes_it_sync_and_async(fake_api):
    with CohereReranker(api_key=API_KEY, base_url=fake_api.url) as rr:
        rr.rerank(QUERY, DOCS)
        assert fake_api.open_connections() == 1
    assert fake_api.wait_connections(0)

    async def main():
        async with CohereReranker(api_key=API_KEY, base_url=fake_api.url) as arr:
            await arr.arerank(QUERY, DOCS)
            await arr.arerank(QUERY, DOCS)
            assert fake_api.open_connections() == 1
        # closed on this loop before `async with` returns
        await asyncio.to_thread(fake_api.wait_connections, 0)
        return fake_api.open_connections()

    assert asyncio.run(main()) == 0


def test_sync_close_of_an_async_client_closes_it_on_its_own_loop(fake_api):
    rr = load_reranker(f"tei:{fake_api.url}", api_key=API_KEY)

    async def use_then_close_sync():
        await rr.arerank(QUERY, DOCS)
        rr.close()  # sync close from inside the loop: scheduled on it
        await asyncio.sleep(0.05)

    asyncio.run(use_then_close_sync())
    assert fake_api.wait_connections(0)


def test_composites_pass_warm_up_and_close_to_each_part_once():
    a, b = Counting(), Counting()
    chain = FallbackReranker([a, b])
    cascade = CascadeReranker(a, b, keep=2)
    split = SplitReranker(a, b, share_b=0.5)
    for composite in (chain, cascade, split):
        with composite:
            composite.warm_up()
    assert (a.warmed, a.closed, b.warmed, b.closed) == (3, 3, 3, 3)
    same = SplitReranker(a, a, share_b=0.5)
    same.close()
    assert a.closed == 4  # one object in two arms closes once


def test_async_with_closes_every_part_of_a_chain(fake_api):
    counting = Counting()

    async def main():
        async with FallbackReranker([{"spec": f"tei:{fake_api.url}", "api_key": API_KEY}, counting]) as chain:
            res = await chain.arerank(QUERY, DOCS)
            assert res.backend == "tei"
            assert fake_api.open_connections() == 1
        await asyncio.to_thread(fake_api.wait_connections, 0)

    asyncio.run(main())
    assert counting.closed == 1
    assert fake_api.open_connections() == 0


def test_sync_hedging_works_inside_a_running_event_loop(fake_api):
    """``asyncio.run`` inside a running loop raises; the sync path races on threads instead."""
    hold = Fault("hold", seconds=20.0)
    fake_api.faults = [hold]
    chain = FallbackReranker([{"spec": f"tei:{fake_api.url}", "api_key": API_KEY, "timeout": 30.0},
                              Counting()], hedge_after_ms=50)

    async def called_from_async_code():
        return chain.rerank(QUERY, DOCS)  # a sync call from a coroutine (e.g. a notebook cell)

    res = asyncio.run(called_from_async_code())
    assert res.backend == "counting" and res.indices[0] == 1
    assert hold.released is None  # the API still holds its answer: the hedge answered without waiting for it
    hold.release.set()
    chain.close()


def test_sync_hedging_reuses_one_client(fake_api):
    chain = FallbackReranker([{"spec": f"tei:{fake_api.url}", "api_key": API_KEY}, Counting()],
                             hedge_after_ms=2000)
    for _ in range(4):
        assert chain.rerank(QUERY, DOCS).backend == "tei"
    assert fake_api.count() == 4
    assert fake_api.open_connections() == 1  # not one client (and connection) per call
    chain.close()
    assert fake_api.wait_connections(0)
