"""Fallback chains: a real local API first, a tiny local cross-encoder next; the circuit breaker; hedging."""

import logging

import pytest

from rankrelay import (
    AllBackendsFailedError,
    Document,
    EmptyQueryError,
    FallbackReranker,
    Settings,
    load_reranker,
)
from rankrelay.rerankers.compose.fallback import CircuitBreaker
from rankrelay.testing import API_KEY, Fault, relevance

QUERY = "boundary layer separation"
DOCS = ["wing lift", Document("boundary layer separation", id="b", metadata={"k": "v"}), "cooking pasta"]
TEXTS = ["wing lift", "boundary layer separation", "cooking pasta"]


def api_order():
    return sorted(range(3), key=lambda i: (-relevance(QUERY, TEXTS[i]), i))


def cohere_item(url, **options):
    return {"spec": "cohere:rerank-v3.5", "api_key": API_KEY, "base_url": url, "timeout": 1.0, **options}


@pytest.fixture
def local(tiny_ce_path):
    return load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")


def test_api_serves_when_healthy(fake_api, local):
    chain = load_reranker([cohere_item(fake_api.url), local])
    assert isinstance(chain, FallbackReranker)
    res = chain.rerank(QUERY, DOCS)
    assert res.backend == "cohere" and res.indices == api_order() and res.fallbacks == []
    assert res.normalization == "rank" and res[0].normalized_score == 1.0


def test_falls_back_to_the_local_model_with_every_document_intact(refused_url, local):
    chain = FallbackReranker([cohere_item(refused_url, max_attempts=2), local])
    res = chain.rerank(QUERY, DOCS)
    assert res.backend == "cross-encoder"
    assert sorted(res.indices) == [0, 1, 2] and res.indices == local.rerank(QUERY, DOCS).indices
    b = next(r for r in res if r.id == "b")
    assert b.metadata == {"k": "v"} and b.text == TEXTS[1]
    (failure,) = res.fallbacks
    assert failure["backend"] == "cohere:rerank-v3.5" and failure["error"] == "BackendUnavailableError"
    assert failure["ms"] >= 0


def test_auth_errors_fall_back_and_are_logged_as_errors(fake_api, local, caplog):
    chain = FallbackReranker([cohere_item(fake_api.url, api_key="bad-key"), local])
    res = chain.rerank(QUERY, DOCS)
    assert res.backend == "cross-encoder" and res.fallbacks[0]["error"] == "AuthenticationError"
    assert any(r.levelno == logging.ERROR and "AuthenticationError" in r.getMessage() for r in caplog.records)
    assert "bad-key" not in caplog.text


def test_input_errors_do_not_fall_back(fake_api, local):
    chain = FallbackReranker([cohere_item(fake_api.url), local])
    with pytest.raises(EmptyQueryError):
        chain.rerank(" ", DOCS)
    assert fake_api.count() == 0
    assert chain.breakers[0].state == "closed"


def test_circuit_breaker_opens_skips_and_closes_again(fake_api, local):
    now = [0.0]
    chain = FallbackReranker([cohere_item(fake_api.url, max_attempts=1), local],
                             failure_threshold=2, reset_timeout=30, clock=lambda: now[0])
    fake_api.faults = [Fault("status", 503), Fault("status", 503)]
    for _ in range(2):
        assert chain.rerank(QUERY, DOCS).backend == "cross-encoder"
    assert chain.breakers[0].state == "open" and fake_api.count() == 2
    res = chain.rerank(QUERY, DOCS)
    assert res.backend == "cross-encoder" and fake_api.count() == 2  # skipped: no request sent
    assert res.fallbacks == [{"backend": "cohere:rerank-v3.5", "error": "CircuitOpen",
                              "message": "circuit breaker open", "ms": 0.0}]
    now[0] = 29.9
    assert chain.breakers[0].state == "open"
    now[0] = 30.0
    assert chain.breakers[0].state == "half-open"
    res = chain.rerank(QUERY, DOCS)  # the probe goes through, the API has recovered
    assert res.backend == "cohere" and fake_api.count() == 3 and chain.breakers[0].state == "closed"


def test_a_breaker_one_chain_opens_keeps_every_chain_sharing_its_state_off_the_backend(fake_api):
    from rankrelay.rerankers.compose.pool_state import LocalPoolState

    now, state = [0.0], LocalPoolState()
    first, second = (FallbackReranker([cohere_item(fake_api.url, max_attempts=1), "identity"], failure_threshold=2,
                                      reset_timeout=30, state=state, clock=lambda: now[0]) for _ in range(2))
    fake_api.faults = [Fault("status", 503), Fault("status", 503)]
    assert [first.rerank(QUERY, DOCS).backend for _ in range(2)] == ["identity", "identity"]
    res = second.rerank(QUERY, DOCS)  # its own breaker is closed; the shared state has the backend open
    assert res.backend == "identity" and fake_api.count() == 2 and res.fallbacks[0]["error"] == "CircuitOpen"
    assert second.breakers[0].state == "closed" and state.tripped("cohere:rerank-v3.5", now[0]) == 30.0
    now[0] = 30.0  # the reset timeout has passed: either chain may try it again
    assert second.rerank(QUERY, DOCS).backend == "cohere" and fake_api.count() == 3
    assert second.shared_state() is None  # this process's own state: nothing to report


def test_a_half_open_probe_is_given_back_when_another_breaker_has_the_backend_open():
    from rankrelay.rerankers.compose.pool_state import LocalPoolState

    clock, state = [0.0], LocalPoolState()
    mine = CircuitBreaker(failure_threshold=1, reset_timeout=10, clock=lambda: clock[0], shared=state, key="api")
    theirs = CircuitBreaker(failure_threshold=1, reset_timeout=10, clock=lambda: clock[0], shared=state, key="api")
    assert mine.record_failure() is True and state.tripped("api", 0.0) == 10.0
    clock[0] = 10.0
    theirs.record_failure()  # opened again elsewhere as this one half-opens
    assert mine.state == "half-open" and not mine.allow()
    clock[0] = 20.0
    assert mine.allow() and not mine.allow()  # its probe was given back: one probe, now
    assert CircuitBreaker(failure_threshold=2).record_failure() is False  # one failure of two: still closed


def test_a_breaker_asks_the_shared_state_at_most_every_recheck_s_and_not_while_it_knows_it_open():
    from rankrelay.rerankers.compose.pool_state import LocalPoolState

    class Counted(LocalPoolState):
        asked = 0

        def tripped(self, key, now):
            Counted.asked += 1
            return super().tripped(key, now)

    clock, state = [0.0], Counted()
    mine = CircuitBreaker(failure_threshold=1, reset_timeout=10, clock=lambda: clock[0], shared=state, key="api")
    theirs = CircuitBreaker(failure_threshold=1, reset_timeout=10, clock=lambda: clock[0], shared=state, key="api")
    assert all(mine.allow() for _ in range(50)) and Counted.asked == 1  # one round trip for 50 requests
    clock[0] = 0.5
    theirs.record_failure()  # opened elsewhere: this breaker still goes by its last answer ...
    assert mine.allow() and Counted.asked == 1
    clock[0] = 1.0  # ... for recheck_s at most
    assert not mine.allow() and Counted.asked == 2
    clock[0] = 10.4  # known open until 10.5: not asked again before then
    assert not any(mine.allow() for _ in range(20)) and Counted.asked == 2
    clock[0] = 10.5
    assert mine.allow() and Counted.asked == 3
    every = CircuitBreaker(reset_timeout=10, clock=lambda: clock[0], shared=state, key="api", recheck_s=0)
    assert every.allow() and every.allow() and Counted.asked == 5  # recheck_s=0: asked on every call


def test_half_open_probe_failure_reopens():
    clock = [0.0]
    b = CircuitBreaker(failure_threshold=1, reset_timeout=10, clock=lambda: clock[0])
    b.record_failure()
    assert b.state == "open" and not b.allow()
    clock[0] = 10.0
    assert b.allow() and not b.allow()  # one probe at a time
    b.record_failure()
    assert b.state == "open"
    clock[0] = 20.0
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.allow()


def test_every_backend_failing_raises_with_the_attempts(refused_url):
    chain = FallbackReranker([cohere_item(refused_url, max_attempts=1), f"tei:{refused_url}"])
    with pytest.raises(AllBackendsFailedError) as err:
        chain.rerank(QUERY, DOCS)
    assert [f["backend"] for f in err.value.failures] == ["cohere:rerank-v3.5", "tei"]


async def test_async_fallback(refused_url, local):
    chain = FallbackReranker([cohere_item(refused_url, max_attempts=1), local])
    res = await chain.arerank(QUERY, DOCS, top_n=2)
    assert res.backend == "cross-encoder" and len(res) == 2 and res.fallbacks[0]["error"] == "BackendUnavailableError"


async def test_hedging_races_a_slow_primary(fake_api, local):
    local.warm_up()  # the race is between answers: loading (and runtime="auto"'s first measurement) is not in it
    fake_api.faults = [Fault("sleep", seconds=3.0)]
    # margins of a second or more on both sides, so that a loaded machine does not decide the race
    chain = FallbackReranker([cohere_item(fake_api.url, timeout=5.0), local], hedge_after_ms=1000)
    res = await chain.arerank(QUERY, DOCS)
    assert res.backend == "cross-encoder"  # without the hedge the API would answer, after its 3 s
    fast = await chain.arerank(QUERY, DOCS)  # no fault now: the API answers before the hedge
    assert fast.backend == "cohere"


def test_sync_hedging(fake_api, local):
    local.warm_up()
    fake_api.faults = [Fault("sleep", seconds=3.0)]
    chain = FallbackReranker([cohere_item(fake_api.url, timeout=5.0), local], hedge_after_ms=100)
    assert chain.rerank(QUERY, DOCS).backend == "cross-encoder"


def test_chain_from_settings(monkeypatch, tiny_ce_path, refused_url):
    monkeypatch.setenv("RANKRELAY_FALLBACK", f'["tei:{refused_url}", "cross-encoder:{tiny_ce_path}"]')
    monkeypatch.setenv("RANKRELAY_DEVICE", "cpu")
    chain = load_reranker()
    assert isinstance(chain, FallbackReranker) and [b.name for b in chain.backends] == ["tei", "cross-encoder"]
    assert chain.rerank(QUERY, DOCS).backend == "cross-encoder"
    assert Settings().fallback == [f"tei:{refused_url}", f"cross-encoder:{tiny_ce_path}"]


# -- #30: breaks the suite did not see ------------------------------------------------------------
@pytest.mark.parametrize("method", ["rank", "minmax", "sigmoid", "zscore"])
def test_the_chain_renormalizes_what_a_backend_returned(method):
    from rankrelay.scoring import normalize

    backend = load_reranker("identity", normalize="minmax" if method != "minmax" else "sigmoid")
    res = FallbackReranker([backend], normalize=method).rerank(QUERY, DOCS + ["fourth", "fifth"])
    assert res.normalization == method
    expected = normalize([r.score for r in res], method)
    assert [r.normalized_score for r in res] == pytest.approx(expected)
    own = backend.rerank(QUERY, DOCS + ["fourth", "fifth"])
    assert [r.normalized_score for r in res] != pytest.approx([r.normalized_score for r in own])


def test_the_chain_keeps_the_backends_normalization_when_asked():
    backend = load_reranker("identity", normalize="minmax")
    res = FallbackReranker([backend], normalize="backend").rerank(QUERY, DOCS)
    assert res.normalization == "minmax" and [r.normalized_score for r in res] == [1.0, 0.5, 0.0]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_raced_chain_whose_backends_all_fail_raises(refused_url, asynchronous):
    import asyncio

    chain = FallbackReranker([{"spec": f"tei:{refused_url}", "max_attempts": 1},
                              {"spec": f"jina:m@{refused_url}", "api_key": "k", "max_attempts": 1}],
                             hedge_after_ms=1)
    with pytest.raises(AllBackendsFailedError) as err:
        asyncio.run(chain.arerank(QUERY, DOCS)) if asynchronous else chain.rerank(QUERY, DOCS)
    assert sorted(f["backend"].split(":")[0] for f in err.value.failures) == ["jina", "tei"]  # in the order they failed


def test_availability_tells_the_truth_before_anything_is_loaded(monkeypatch, tmp_path, tiny_ce_path):
    """What a chain can serve from, by cheap checks (weights on disk, a key for a public API) before warm_up; the
    same after it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("JINA_API_KEY", raising=False)
    chain = FallbackReranker(["jina:jina-reranker-v2-base-multilingual", "cross-encoder:example-org/absent-model",
                              f"cross-encoder:{tmp_path}/gone", f"cross-encoder:{tiny_ce_path}",
                              "tei:http://127.0.0.1:9"])
    before = chain.availability()
    assert [(a["available"], a["reason"]) for a in before] == [
        (False, "no jina API key: set JINA_API_KEY"),
        (False, "the weights of 'example-org/absent-model' are not on this machine and HF_HUB_OFFLINE is set"),
        (False, f"model directory '{tmp_path}/gone' does not exist"),
        (True, None), (True, None)]  # a self-hosted server needs no key
    assert not chain.backends[3].loaded  # nothing was loaded to say so
    chain.warm_up()
    assert [a["available"] for a in chain.availability()] == [False, False, False, True, True]
