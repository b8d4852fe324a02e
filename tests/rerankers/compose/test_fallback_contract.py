"""The fallback chain's contract on plain-Python backends (fast, exact): the breaker's states, what a failure
records, how results are re-normalized, the race with and without hedging, errors that name the problem."""

import asyncio
import logging
import threading

import pytest
from conftest import finishes
from virtual_time import VirtualTimeLoop

from rankrelay import AllBackendsFailedError, Document, InvalidInputError, load_reranker
from rankrelay.errors import (
    AuthenticationError,
    BackendFailedError,
    BackendUnavailableError,
    ConfigError,
    ModelNotFoundError,
)
from rankrelay.rerankers.base import BaseReranker, Scored
from rankrelay.rerankers.compose.fallback import CircuitBreaker, FallbackReranker, Unavailable, from_spec
from rankrelay.testing import FakeClock

QUERY = "q"
DOCS = ["a", "bb", Document("ccc", id="c", metadata={"k": 1})]


class Backend(BaseReranker):
    """Scores by length (or ``fail`` raises); counts calls; ``gate`` makes it wait for an event first."""

    def __init__(self, name, fail=None, gate=None, normalize="rank"):
        super().__init__(normalize=normalize)
        self.name, self.fail, self.gate, self.calls = name, fail, gate, 0

    def _score_batch(self, queries, documents):
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(30)
        if self.fail is not None:
            raise self.fail
        return [Scored([float(len(d.text)) for d in docs]) for docs in documents], {}


# -- the circuit breaker --------------------------------------------------------------------------

def test_breaker_opens_at_the_threshold_and_probes_once_after_the_timeout():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=10.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.sleep(9.99)
    assert breaker.state == "open"
    clock.sleep(0.01)
    assert breaker.state == "half-open"
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.release()  # the probe was cancelled: the next call may probe
    assert breaker.allow()
    breaker.record_failure()  # a failed probe re-opens at once
    assert breaker.state == "open" and not breaker.allow()
    clock.sleep(10.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"  # a success reset the count


def test_a_failed_probe_reopens_even_below_the_threshold():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=0.0, clock=clock)
    breaker.record_failure()
    assert breaker.state == "half-open"  # a zero timeout: half-open at once
    assert breaker.allow()
    breaker.record_failure()
    assert breaker._opened_at == clock()


@pytest.mark.parametrize("kwargs, message", [
    ({"failure_threshold": 0}, "^failure_threshold must be an int >= 1, got 0$"),
    ({"reset_timeout": -1.0}, r"^reset_timeout must be >= 0, got -1.0$"),
    ({"recheck_s": -0.5}, r"^recheck_s must be >= 0, got -0.5$"),
])
def test_breaker_settings_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CircuitBreaker(**kwargs)


def test_default_breaker_settings():
    breaker = CircuitBreaker()
    assert (breaker.failure_threshold, breaker.reset_timeout, breaker.recheck_s) == (3, 30.0, 1.0)
    chain = FallbackReranker([Backend("x")])
    assert (chain.breakers[0].failure_threshold, chain.breakers[0].reset_timeout) == (3, 30.0)


# -- a chain's construction -------------------------------------------------------------------------

@pytest.mark.parametrize("chain", ["identity", {"spec": "identity"}, []])
def test_a_chain_is_a_non_empty_list(chain):
    with pytest.raises(ConfigError, match="^a fallback chain needs a non-empty list of backends$"):
        FallbackReranker(chain)


def test_chain_normalization_settings():
    with pytest.raises(ConfigError, match="^unknown normalization 'best'"):
        FallbackReranker([Backend("x")], normalize="best")
    with pytest.raises(ConfigError, match="^a chain cannot calibrate scores of different backends; give each backend "
                                          "normalize='calibrated' and the chain normalize='backend'$"):
        FallbackReranker([Backend("x")], normalize="calibrated")
    with pytest.raises(InvalidInputError, match="budget_ms"):
        FallbackReranker([Backend("x")], budget_ms=0)
    assert FallbackReranker([Backend("x")], normalize="backend").normalize == "backend"


def test_a_chain_names_its_backends():
    a, b = Backend("a"), Backend("b")
    chain = FallbackReranker([a, b], failure_threshold=2, reset_timeout=5.0)
    assert chain.model == "a -> b" and repr(chain) == "<FallbackReranker a -> b>"
    assert chain.parts() == [a, b] and chain.parts() is not chain.backends
    assert [(br.failure_threshold, br.reset_timeout) for br in chain.breakers] == [(2, 5.0), (2, 5.0)]
    assert not chain.preloaded


def test_a_backend_that_cannot_be_built_is_unavailable_and_named_without_its_key():
    chain = FallbackReranker([{"spec": "cohere:rerank-v3.5", "api_key": ""}, Backend("b")])
    (first, second) = chain.availability()
    with pytest.raises(AuthenticationError) as err:
        load_reranker({"spec": "cohere:rerank-v3.5", "api_key": ""})
    assert first == {"backend": "cohere:rerank-v3.5", "available": False, "reason": str(err.value)}
    assert second == {"backend": "b", "available": True, "reason": None}
    res = chain.rerank(QUERY, DOCS)
    assert res.backend == "b" and res.fallbacks == [
        {"backend": "cohere:rerank-v3.5", "error": "Unavailable", "message": first["reason"], "ms": 0.0}]
    with pytest.raises(AuthenticationError):
        FallbackReranker([{"spec": "cohere:rerank-v3.5", "api_key": ""}, Backend("b")], strict=True)


def test_unavailable_raises_a_typed_error_on_both_paths():
    gone = Unavailable("m", "no weights")
    with pytest.raises(BackendUnavailableError, match="^m is unavailable: no weights$") as err:
        gone.rerank_batch([(QUERY, DOCS)])
    assert err.value.backend == "m" and err.value.retryable is False
    with pytest.raises(BackendUnavailableError, match="^m is unavailable: no weights$"):
        asyncio.run(gone.arerank_batch([(QUERY, DOCS)]))


class NoWeights(Backend):
    def warm_up(self):
        raise ModelNotFoundError("no weights here")


class Flaky(Backend):
    def warm_up(self):
        raise BackendUnavailableError("not now", backend=self.name)


def test_warm_up_marks_a_backend_without_weights_unavailable_and_logs_other_failures(caplog):
    chain = FallbackReranker([NoWeights("nw"), Flaky("fl"), Backend("ok")])
    with caplog.at_level(logging.WARNING):
        chain.warm_up()
    assert [a["available"] for a in chain.availability()] == [False, True, True]
    assert chain.availability()[0] == {"backend": "nw", "available": False, "reason": "no weights here"}
    assert any("fl cannot warm up: not now" in r.getMessage() for r in caplog.records)
    with pytest.raises(ModelNotFoundError):
        FallbackReranker([NoWeights("nw"), Backend("ok")], strict=True).warm_up()


def test_preload_warms_up_in_the_background():
    chain = FallbackReranker([NoWeights("nw"), Backend("ok")], preload=True)
    assert chain._preload.name == "rankrelay-preload" and chain._preload.daemon  # never holds the process open
    chain._preload.join(30)
    assert chain.preloaded and chain.availability()[0]["available"] is False


# -- serving, failing, re-normalizing ----------------------------------------------------------------

def test_failures_are_recorded_typed_and_timed(caplog):
    boom = Backend("boom", fail=RuntimeError("bad tensor"))  # the base boundary types it
    auth = Backend("auth", fail=AuthenticationError("bad key", backend="auth"))
    chain = FallbackReranker([boom, auth, Backend("ok")])
    with caplog.at_level(logging.WARNING):
        res = chain.rerank(QUERY, DOCS)
    assert res.backend == "ok" and [f["backend"] for f in res.fallbacks] == ["boom", "auth"]
    assert [f["error"] for f in res.fallbacks] == ["BackendFailedError", "AuthenticationError"]
    assert res.fallbacks[0]["message"] == "boom failed: RuntimeError: bad tensor"
    assert res.fallbacks[1]["message"] == "bad key" and all(f["ms"] >= 0.0 for f in res.fallbacks)
    assert res.info["fallbacks"] == res.fallbacks
    levels = {r.getMessage().split(" failed")[0]: r.levelno for r in caplog.records
              if "trying the next" in r.getMessage()}
    assert levels == {"fallback: boom": logging.WARNING, "fallback: auth": logging.ERROR}
    assert chain.breakers[0]._failures == 1 and chain.breakers[2]._failures == 0


class Raw:
    """A user's reranker without the base class: its own exception reaches the chain untyped."""

    name = "raw"

    def rerank_batch(self, requests, top_n=None):
        raise KeyError("oops")

    def rerank(self, query, documents, top_n=None):
        raise KeyError("oops")

    async def arerank(self, query, documents, top_n=None):
        raise KeyError("oops")

    def warm_up(self):
        pass

    def close(self):
        pass


def test_a_users_own_exception_is_typed_at_the_chain():
    res = FallbackReranker([Raw(), Backend("ok")]).rerank(QUERY, DOCS)
    (failure,) = res.fallbacks
    assert failure["error"] == "BackendFailedError" and "raw failed: KeyError" in failure["message"]


@pytest.mark.parametrize("hedge", [None, 50.0])
def test_every_backend_failing_raises_with_each_attempt(hedge):
    chain = FallbackReranker([Backend("a", fail=BackendUnavailableError("down", backend="a")),
                              Backend("b", fail=RuntimeError("x"))], hedge_after_ms=hedge)
    message = (r"^every backend of the chain failed \(a: BackendUnavailableError: down; "
               r"b: BackendFailedError: b failed: RuntimeError: x\)$")
    with pytest.raises(AllBackendsFailedError, match=message) as err:
        chain.rerank(QUERY, DOCS)
    assert [a["backend"] for a in err.value.failures] == ["a", "b"]
    chain.close()


async def test_every_backend_failing_raises_on_the_async_path_too():
    chain = FallbackReranker([Backend("a", fail=RuntimeError("x")), Backend("b", fail=RuntimeError("y"))])
    with pytest.raises(AllBackendsFailedError, match="a: BackendFailedError.*b: BackendFailedError"):
        await chain.arerank(QUERY, DOCS)


def test_an_open_breaker_skips_its_backend_at_no_cost():
    clock = FakeClock()
    a = Backend("a", fail=RuntimeError("x"))
    chain = FallbackReranker([a, Backend("b")], failure_threshold=1, reset_timeout=60.0, clock=clock)
    chain.rerank(QUERY, DOCS)
    res = chain.rerank(QUERY, DOCS)
    assert a.calls == 1 and res.fallbacks == [
        {"backend": "a", "error": "CircuitOpen", "message": "circuit breaker open", "ms": 0.0}]
    clock.sleep(60.0)
    a.fail = None
    assert chain.rerank(QUERY, DOCS).backend == "a" and chain.breakers[0].state == "closed"


@pytest.mark.parametrize("hedge", [None, 50.0])
async def test_input_errors_are_the_callers_not_the_backends(hedge):
    bad = Backend("a", fail=InvalidInputError("document 2 is too long"))
    second = Backend("b")
    chain = FallbackReranker([bad, second], hedge_after_ms=hedge)
    with pytest.raises(InvalidInputError, match="too long"):
        chain.rerank(QUERY, DOCS)
    with pytest.raises(InvalidInputError, match="too long"):
        await chain.arerank(QUERY, DOCS)
    assert second.calls == 0 and chain.breakers[0].state == "closed" and chain.breakers[0].allow()
    chain.close()


@pytest.mark.parametrize("bad", [{"query": " "}, {"documents": ["a", 3]}, {"top_n": 0}])
async def test_bad_input_is_refused_before_any_backend_runs(bad):
    a = Backend("a")
    chain = FallbackReranker([a])
    kwargs = {"query": QUERY, "documents": DOCS, **bad}
    with pytest.raises(InvalidInputError):
        chain.rerank(**kwargs)
    with pytest.raises(InvalidInputError):
        await chain.arerank(**kwargs)
    assert a.calls == 0


ZSCORE = [(4 - 2.5) / 1.118033988749895, (3 - 2.5) / 1.118033988749895]


@pytest.mark.parametrize("normalize, expected", [
    ("rank", [1.0, 0.75]),  # rank over all 4 candidates, not over the 2 returned
    ("minmax", [1.0, 0.0]),  # over the scores the backend returned
    ("backend", ZSCORE),  # the backend's own normalization, kept
])
def test_the_chain_renormalizes_what_a_backend_returns(normalize, expected):
    backend = Backend("b", normalize="zscore")
    res = FallbackReranker([backend], normalize=normalize).rerank(QUERY, ["a", "bbb", "cc", "dddd"], top_n=2)
    assert res.indices == [3, 1] and res.num_candidates == 4
    assert res.normalization == ("zscore" if normalize == "backend" else normalize)
    assert [r.normalized_score for r in res] == pytest.approx(expected)


def test_a_backend_already_normalized_as_the_chain_asks_is_left_alone():
    res = FallbackReranker([Backend("b", normalize="minmax")], normalize="minmax").rerank(
        QUERY, ["a", "bbb", "cc", "dddd"], top_n=2)
    assert [r.normalized_score for r in res] == pytest.approx([1.0, 2 / 3])  # min-max over all 4, as it came


@pytest.fixture
def frozen(monkeypatch):
    """The deadline clock stopped: a budget reaches a backend exactly as given (no time passes meanwhile)."""
    from rankrelay.rerankers import base

    clock = FakeClock(start=0.0)  # (at zero, deadline - now is the budget exactly)
    monkeypatch.setattr(base, "monotonic", clock)
    return clock


def test_a_call_budget_wins_over_the_chains_default(frozen):
    seen = []

    class Budgeted(Backend):
        def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
            seen.append(budget_ms)
            return super().rerank_batch(requests, top_n)

    chain = FallbackReranker([Budgeted("x")], budget_ms=400.0)
    chain.rerank(QUERY, DOCS)
    chain.rerank(QUERY, DOCS, budget_ms=40.0)
    assert seen[:2] == [400.0, 40.0]
    assert FallbackReranker([Budgeted("x")]).rerank(QUERY, DOCS) and seen[2] is None


# -- hedging --------------------------------------------------------------------------------------------

def test_sync_hedging_races_the_next_backend_and_frees_the_slow_ones_probe():
    gate = threading.Event()
    slow, fast = Backend("slow", gate=gate), Backend("fast")
    chain = FallbackReranker([slow, fast], hedge_after_ms=10)
    res = chain.rerank(QUERY, DOCS)
    assert res.backend == "fast" and res.fallbacks == [] and fast.calls == 1
    gate.set()
    chain.close()


async def test_async_hedging_races_the_next_backend():
    gate = threading.Event()
    slow, fast = Backend("slow", gate=gate), Backend("fast")
    chain = FallbackReranker([slow, fast], hedge_after_ms=10)
    res = await chain.arerank(QUERY, DOCS)
    assert res.backend == "fast" and fast.calls == 1 and chain.breakers[0].allow()
    gate.set()


class AsyncBackend(Backend):
    """Answers on the event loop itself (no worker thread), after ``delay`` seconds of loop time; ``None``: never."""

    def __init__(self, name, delay=0.0):
        super().__init__(name)
        self.delay = delay

    async def arerank_batch(self, requests, top_n=None, *, budget_ms=None):
        if self.delay is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay)
        return self.rerank_batch(requests, top_n)


@pytest.mark.parametrize(("hedge_ms", "fast_delay", "answered_at"), [(250.0, 0.0, 0.25), (1000.0, 0.3, 1.3)])
def test_a_hedged_answer_comes_when_the_raced_backend_answers_not_at_the_next_interval(hedge_ms, fast_delay,
                                                                                        answered_at):
    """On virtual time: the first backend never answers, the next one starts one hedge interval after the call and
    answers ``fast_delay`` later; the caller has it then (not an interval later, and not early)."""
    loop = VirtualTimeLoop()
    chain = FallbackReranker([AsyncBackend("slow", delay=None), AsyncBackend("fast", delay=fast_delay)],
                             hedge_after_ms=hedge_ms)

    async def call():
        res = await chain.arerank(QUERY, DOCS)
        return res, loop.time()

    res, at = loop.run(call())
    assert res.backend == "fast" and res.fallbacks == []
    assert at == pytest.approx(answered_at, abs=1e-9)


async def test_without_hedging_the_async_chain_waits_for_each_backend_in_turn():
    a = Backend("a", fail=RuntimeError("x"))
    b = Backend("b")
    res = await FallbackReranker([a, b]).arerank_batch([(QUERY, DOCS), ("r", ["z"])], 1)
    assert [r.backend for r in res] == ["b", "b"] and [len(r) for r in res] == [1, 1]
    assert [r.fallbacks[0]["backend"] for r in res] == ["a", "a"]


def test_close_stops_the_hedging_threads_and_closes_every_backend():
    closed = []

    class Closing(Backend):
        def close(self):
            closed.append(self.name)

    chain = FallbackReranker([Closing("a"), Closing("b")], hedge_after_ms=10)
    chain.rerank(QUERY, DOCS)
    assert chain._pool is not None
    chain.close()
    assert chain._pool is None and closed == ["a", "b"]


def test_spec_form_errors():
    with pytest.raises(ConfigError, match="^a fallback chain is given as a list of specs, not as 'fallback:...'$"):
        from_spec("identity")
    with pytest.raises(ConfigError, match="^a fallback chain needs a non-empty list of backends$"):
        from_spec(None, chain=[])
    assert from_spec(None, chain=["identity"], failure_threshold=7).breakers[0].failure_threshold == 7


def test_results_keep_documents_and_metadata():
    res = FallbackReranker([Backend("a", fail=RuntimeError("x")), Backend("b")]).rerank(QUERY, DOCS)
    assert res.indices == [2, 1, 0] and res[0].id == "c" and res[0].metadata == {"k": 1} and res[0].text == "ccc"


def test_a_failure_of_a_non_rankrelay_kind_is_typed_once():
    chain = FallbackReranker([Raw()])
    with pytest.raises(AllBackendsFailedError) as err:
        chain.rerank(QUERY, DOCS)
    assert err.value.failures[0]["error"] == BackendFailedError.__name__


# -- what the first mutation run of the chain found unchecked ---------------------------------------------

@pytest.mark.parametrize("path", ["hedged", "async"])
async def test_an_open_breaker_is_skipped_on_the_racing_paths_too(path):
    clock = FakeClock()
    a = Backend("a", fail=RuntimeError("x"))
    chain = FallbackReranker([a, Backend("b")], failure_threshold=1, reset_timeout=60.0, clock=clock,
                             hedge_after_ms=10_000 if path == "hedged" else None)
    chain.rerank(QUERY, DOCS)
    res = chain.rerank(QUERY, DOCS) if path == "hedged" else await chain.arerank(QUERY, DOCS)
    assert a.calls == 1 and res.backend == "b"
    assert res.fallbacks == [{"backend": "a", "error": "CircuitOpen", "message": "circuit breaker open", "ms": 0.0}]
    chain.close()


def test_a_dropped_hedged_probe_frees_its_breaker_when_it_ends():
    clock = FakeClock()
    gate = threading.Event()
    slow = Backend("slow", fail=RuntimeError("x"))
    chain = FallbackReranker([slow, Backend("fast")], failure_threshold=1, reset_timeout=5.0, clock=clock,
                             hedge_after_ms=10)
    chain.rerank(QUERY, DOCS)  # slow fails: its breaker opens
    clock.sleep(5.0)  # half-open: the next call's attempt at slow is the one probe
    slow.fail, slow.gate = None, gate
    assert chain.rerank(QUERY, DOCS).backend == "fast"  # the probe is still running, its answer dropped
    assert not chain.breakers[0].allow()  # still probing
    gate.set()
    chain._pool.shutdown(wait=True)  # the dropped attempt ends
    assert chain.breakers[0].allow()  # and freed the probe


@pytest.mark.parametrize("path", ["hedged", "async"])
async def test_top_n_and_the_budget_reach_the_backend_on_the_racing_paths(path, frozen):
    seen = []

    class Budgeted(Backend):
        def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
            seen.append((top_n, budget_ms, threading.current_thread().name.startswith("rankrelay-hedge")))
            return super().rerank_batch(requests, top_n)

        async def arerank_batch(self, requests, top_n=None, *, budget_ms=None):
            seen.append((top_n, budget_ms, False))
            return super().rerank_batch(requests, top_n)

    chain = FallbackReranker([Budgeted("x")], hedge_after_ms=10_000 if path == "hedged" else None)
    call = chain.rerank if path == "hedged" else chain.arerank
    res = call(QUERY, DOCS, 1, budget_ms=300.0)
    res = await res if path == "async" else res
    (top_n, budget_ms, on_hedge_thread) = seen[0]
    assert len(res) == 1 and top_n == 1 and budget_ms == 300.0
    assert on_hedge_thread == (path == "hedged")
    default = FallbackReranker([Budgeted("x")], budget_ms=200.0, hedge_after_ms=10_000 if path == "hedged" else None)
    out = default.rerank(QUERY, DOCS) if path == "hedged" else await default.arerank(QUERY, DOCS)
    assert out and seen[-1][1] == 200.0
    if path == "hedged":
        assert chain._threads()._max_workers == 32
    chain.close()
    default.close()


async def test_top_n_is_checked_before_a_users_backend_is_called():
    plain = Raw()
    plain.rerank_batch = lambda requests, top_n=None: pytest.fail("called")  # type: ignore[method-assign]
    chain = FallbackReranker([plain])
    with pytest.raises(InvalidInputError, match="top_n"):
        await chain.arerank(QUERY, DOCS, top_n=0)
    with pytest.raises(InvalidInputError, match="top_n"):
        chain.rerank(QUERY, DOCS, top_n=0)


def test_a_failure_is_timed_and_logged_with_its_type(monkeypatch, caplog):
    from rankrelay.rerankers.compose import fallback

    clock = FakeClock()
    monkeypatch.setattr(fallback, "perf_counter", clock)

    class Slow(Backend):
        def _score_batch(self, queries, documents):
            clock.sleep(0.25004321)
            raise RuntimeError("bad tensor")

    with caplog.at_level(logging.WARNING):
        res = FallbackReranker([Slow("boom"), Backend("ok")]).rerank(QUERY, DOCS)
    assert res.fallbacks[0]["ms"] == 250.0  # shown to a tenth of a millisecond
    assert "fallback: boom failed after 250 ms (BackendFailedError: boom failed: RuntimeError: bad tensor); " \
           "trying the next backend" in [r.getMessage() for r in caplog.records]


def test_close_does_not_wait_for_a_dropped_attempt():
    gate = threading.Event()
    chain = FallbackReranker([Backend("slow", gate=gate), Backend("fast")], hedge_after_ms=10)
    assert chain.rerank(QUERY, DOCS).backend == "fast"
    finishes(chain.close, within=20)  # a hang guard: it would wait for the gate (30 s) if it waited
    gate.set()


def test_a_hedged_attempt_runs_within_the_callers_deadline(frozen):
    from rankrelay.rerankers.base import seconds_left

    left = []

    class NoBudgetParam(Raw):
        name = "reads-deadline"

        def rerank_batch(self, requests, top_n=None):
            left.append(seconds_left())
            return Backend("x").rerank_batch(requests, top_n)

    chain = FallbackReranker([NoBudgetParam()], hedge_after_ms=10_000, budget_ms=5_000)
    chain.rerank(QUERY, DOCS)
    assert left == [5.0]  # the deadline went along to the thread
    chain.close()
