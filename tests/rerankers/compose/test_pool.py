"""A pool of deployments behind one name: two real local Cohere servers driven through the Cohere SDK, a fake
clock (time passes only when the pool waits), rate limits kept client-side, cooldowns on 429, routing, fallback."""

import asyncio

import pytest

from rankrelay import AllBackendsFailedError, ConfigError, Document, EmptyQueryError, RateLimitError, load_reranker
from rankrelay.rerankers import PoolReranker
from rankrelay.rerankers.base import SingleQuery
from rankrelay.rerankers.compose.pool_state import LocalPoolState
from rankrelay.testing import API_KEY, FakeClock, FakeRerankAPI, Fault

QUERY = "boundary layer separation"
DOCS = ["wing lift", Document("boundary layer separation", id="b", metadata={"k": "v"}), "cooking pasta"]


@pytest.fixture
def apis():
    servers = [FakeRerankAPI().start(), FakeRerankAPI().start()]
    yield servers
    for s in servers:
        s.stop()


def cohere(api, name, **options):
    return {"spec": "cohere:rerank-v3.5", "name": name, "api_key": API_KEY, "base_url": api.url, "timeout": 2.0,
            **options}


def pool(deployments, clock, **options):
    return PoolReranker(deployments, clock=clock, sleep=clock.sleep, asleep=clock.asleep, **options)


def served(res):
    return res.info["pool"]["deployment"]


class Timed(SingleQuery):
    """A deployment that takes ``seconds`` of the fake clock to answer (in input order)."""

    name = "timed"

    def __init__(self, clock, seconds):
        self.clock, self.seconds, self.model = clock, seconds, f"{seconds}s"
        self.inner = load_reranker("identity")

    def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
        self.clock.sleep(self.seconds)
        return self.inner.rerank_batch(requests, top_n)


def test_a_deployment_is_never_sent_more_than_its_rpm_in_any_minute(apis):
    clock = FakeClock()
    p = pool([cohere(apis[0], "eu", rpm=3), cohere(apis[1], "us", rpm=2)], clock, fallback="identity",
             max_wait_s=0)
    sent = []
    for _ in range(48):  # one request every 5 s for 4 minutes: 12 a minute, 5 a minute of capacity
        res = p.rerank(QUERY, DOCS)
        sent.append((clock.now, served(res)))
        clock.sleep(5.0)
    for name, rpm in (("eu", 3), ("us", 2)):
        times = [t for t, d in sent if d == name]
        assert max(sum(1 for u in times if t <= u < t + 60) for t in times) == rpm
    assert [s.count("/v2/rerank") for s in apis] == [sum(d == n for _, d in sent) for n in ("eu", "us")]
    assert all(f.kind != "status" for s in apis for f in s.faults)  # nothing provoked: no 429 was ever sent
    assert {d for _, d in sent} == {"eu", "us", None}  # the rest answered by the fallback


def test_the_answer_keeps_every_document_and_says_which_deployment_served(apis):
    p = pool([cohere(apis[0], "eu")], FakeClock())
    res = p.rerank(QUERY, DOCS)
    assert res.backend == "cohere" and served(res) == "eu" and res.indices == [1, 0, 2]
    b = next(r for r in res if r.id == "b")
    assert b.metadata == {"k": "v"} and b.text == "boundary layer separation"
    assert res.info["pool"] == {"routing": "least-busy", "deployment": "eu", "queued_ms": 0.0, "failures": []}


def test_a_429_cools_the_deployment_down_for_its_retry_after_and_the_request_goes_to_the_next(apis):
    clock = FakeClock()
    apis[0].faults = [Fault("status", 429, headers={"Retry-After": "7"})]
    p = pool([cohere(apis[0], "eu"), cohere(apis[1], "us")], clock, routing="round-robin")
    res = p.rerank(QUERY, DOCS)
    assert served(res) == "us" and res.indices == [1, 0, 2]
    (failure,) = res.info["pool"]["failures"]
    assert failure["deployment"] == "eu" and failure["error"] == "RateLimitError"
    assert apis[0].count() == 1  # one attempt: the pool, not the SDK's retries, moves on
    assert [served(p.rerank(QUERY, DOCS)) for _ in range(3)] == ["us"] * 3  # eu cools down
    clock.sleep(7.0)
    assert "eu" in [served(p.rerank(QUERY, DOCS)) for _ in range(2)]
    assert apis[0].count() == 2


def test_a_429_without_retry_after_cools_down_for_cooldown_s(apis):
    clock = FakeClock()
    apis[0].faults = [Fault("status", 429)]
    p = pool([cohere(apis[0], "eu")], clock, cooldown_s=12.0, max_wait_s=30.0)
    res = p.rerank(QUERY, DOCS)
    assert served(res) == "eu" and clock.waits == [12.0] and res.info["pool"]["queued_ms"] == 12000.0
    assert apis[0].count() == 2


def test_a_request_waits_for_the_first_free_slot_then_is_served(apis):
    clock = FakeClock()
    p = pool([cohere(apis[0], "eu", rpm=1)], clock, max_wait_s=90.0)
    p.rerank(QUERY, DOCS)
    clock.sleep(20.0)
    res = p.rerank(QUERY, DOCS)
    assert served(res) == "eu" and clock.waits == [20.0, 40.0] and res.info["pool"]["queued_ms"] == 40000.0


def test_a_request_that_cannot_wait_long_enough_falls_back_or_is_refused_with_when_to_retry(apis):
    clock = FakeClock()
    p = pool([cohere(apis[0], "eu", rpm=1)], clock, max_wait_s=90.0, fallback="identity")
    p.rerank(QUERY, DOCS)
    res = p.rerank(QUERY, DOCS, budget_ms=30_000)  # the slot frees in 60 s; the budget is 30 s
    assert res.backend == "identity" and served(res) is None and clock.waits == []
    assert "every deployment is at the rate limit" in res.info["pool"]["fell_back"]
    strict = pool([cohere(apis[1], "us", rpm=1)], clock, max_wait_s=10.0)
    strict.rerank(QUERY, DOCS)
    with pytest.raises(RateLimitError, match="a slot frees in 60 s") as err:
        strict.rerank(QUERY, DOCS)
    assert err.value.retry_after == 60.0 and err.value.backend == "pool" and not err.value.retryable
    assert apis[1].count() == 1


def test_failing_deployments_are_passed_over_then_every_failure_is_reported(apis):
    clock = FakeClock()
    apis[0].faults = [Fault("status", 503) for _ in range(10)]
    p = pool([cohere(apis[0], "eu"), cohere(apis[1], "us")], clock, routing="round-robin")
    res = p.rerank(QUERY, DOCS)
    assert served(res) == "us" and res.info["pool"]["failures"][0]["error"] == "BackendUnavailableError"
    apis[1].faults = [Fault("status", 503) for _ in range(10)]
    every = r"no deployment answered: us \(BackendUnavailableError\), eu \(BackendUnavailableError\)$"
    with pytest.raises(AllBackendsFailedError, match=every) as err:
        p.rerank(QUERY, DOCS)
    assert [f["deployment"] for f in err.value.failures] == ["us", "eu"]


def test_a_deployment_whose_breaker_opened_is_not_sent_requests(apis):
    clock = FakeClock()
    apis[0].faults = [Fault("status", 503) for _ in range(10)]
    p = pool([cohere(apis[0], "eu"), cohere(apis[1], "us")], clock, routing="round-robin")
    for _ in range(6):
        p.rerank(QUERY, DOCS)
    assert apis[0].count() == 3 and p.describe()[0]["breaker"] == "open"  # 3 failures open it
    clock.sleep(31.0)  # past its reset timeout: one probe
    p.rerank(QUERY, DOCS)
    p.rerank(QUERY, DOCS)
    assert apis[0].count() == 4


def test_a_breaker_one_pool_opened_keeps_every_pool_sharing_its_state_off_the_deployment(apis):
    clock, state = FakeClock(), LocalPoolState()
    apis[0].faults = [Fault("status", 503) for _ in range(3)]
    first = pool([cohere(apis[0], "eu")], clock, fallback="identity", state=state, reset_timeout=20.0)
    second = pool([cohere(apis[0], "eu")], clock, fallback="identity", state=state, reset_timeout=20.0)
    assert [first.rerank(QUERY, DOCS).backend for _ in range(3)] == ["identity"] * 3  # its breaker opens
    assert apis[0].count() == 3 and first.describe()[0]["breaker"] == "open"
    res = second.rerank(QUERY, DOCS)  # its own breaker is closed: the shared state keeps it off
    assert res.backend == "identity" and res.info["pool"]["fell_back"] and apis[0].count() == 3
    assert second.describe()[0]["breaker"] == "closed"
    clock.sleep(19.0)
    assert second.rerank(QUERY, DOCS).backend == "identity" and apis[0].count() == 3
    clock.sleep(1.0)  # the reset timeout has passed: the deployment is tried again, from either pool
    assert served(second.rerank(QUERY, DOCS)) == "eu" and apis[0].count() == 4


def test_a_pools_breaker_settings_are_taken_from_its_spec_and_checked_before_any_deployment_loads(apis):
    p = load_reranker({"spec": "pool", "deployments": [cohere(apis[0], "eu")], "failure_threshold": 5,
                       "reset_timeout": 12.5})
    assert (p.deployments[0].breaker.failure_threshold, p.deployments[0].breaker.reset_timeout) == (5, 12.5)
    for bad in ({"failure_threshold": 0}, {"reset_timeout": -1}):
        with pytest.raises(ConfigError, match="failure_threshold|reset_timeout"):
            PoolReranker([{"spec": "cross-encoder:/nowhere/at/all"}], **bad)


def test_when_every_breaker_is_open_the_error_says_so(apis):
    clock = FakeClock()
    apis[0].faults = [Fault("status", 503) for _ in range(10)]
    p = pool([cohere(apis[0], "eu")], clock)
    for _ in range(3):
        with pytest.raises(AllBackendsFailedError, match=r"no deployment answered: eu \(BackendUnavailableError\)$"):
            p.rerank(QUERY, DOCS)
    with pytest.raises(AllBackendsFailedError, match="every deployment's circuit breaker is open: eu$") as err:
        p.rerank(QUERY, DOCS)
    assert err.value.failures == [] and apis[0].count() == 3 and clock.waits == []


def test_a_failed_deployment_and_a_limited_one_are_both_named_with_when_to_retry(apis):
    clock = FakeClock()
    apis[0].faults = [Fault("status", 500), Fault("status", 500)]
    p = pool([cohere(apis[0], "eu"), cohere(apis[1], "us", rpm=1)], clock, routing="round-robin", max_wait_s=5)
    p.rerank(QUERY, DOCS)  # eu fails, us serves
    with pytest.raises(RateLimitError, match=r"^pool: eu \(BackendUnavailableError\) failed, the rest are at the "
                                             r"rate limit or cooling down \(a slot frees in 60 s\)$") as err:
        p.rerank(QUERY, DOCS, budget_ms=1000)
    assert err.value.retry_after == 60.0


def test_a_request_budget_bounds_its_attempts_then_the_fallback_answers(apis):
    hold = Fault("hold", seconds=10.0)
    apis[0].faults = [hold]
    p = pool([cohere(apis[0], "eu", timeout=10.0), cohere(apis[1], "us", timeout=10.0)], FakeClock(),
             routing="round-robin", fallback="identity")
    res = p.rerank(QUERY, DOCS, budget_ms=300)
    hold.release.set()
    assert res.backend == "identity" and [f["error"] for f in res.info["pool"]["failures"]] == ["BackendTimeoutError"]
    assert apis[1].count() == 0  # nothing left of the budget: us is not sent a request it cannot answer in time
    assert served(p.rerank(QUERY, DOCS, budget_ms=5000)) == "us"


def test_a_deployment_may_keep_its_own_retries(apis):
    apis[0].faults = [Fault("status", 503), Fault("status", 503)]
    p = pool([cohere(apis[0], "eu", max_attempts=3)], FakeClock())
    assert served(p.rerank(QUERY, DOCS)) == "eu" and apis[0].count() == 3


def test_bad_input_is_the_callers_and_counts_against_no_deployment(apis):
    p = pool([cohere(apis[0], "eu")], FakeClock())
    with pytest.raises(EmptyQueryError):
        p.rerank(" ", DOCS)
    assert p.describe()[0]["in_flight"] == 0 and p.describe()[0]["breaker"] == "closed"
    assert len(p.rerank(QUERY, [])) == 0


def test_round_robin_takes_turns_and_usage_prefers_the_most_headroom():
    clock = FakeClock()
    rr = pool([{"spec": "identity", "name": n} for n in "abc"], clock, routing="round-robin")
    assert [served(rr.rerank(QUERY, DOCS)) for _ in range(4)] == ["a", "b", "c", "a"]
    usage = pool([{"spec": "identity", "name": "small", "rpm": 2}, {"spec": "identity", "name": "big", "rpm": 6}],
                 clock, routing="usage")
    assert [served(usage.rerank(QUERY, DOCS)) for _ in range(8)] == (
        ["small", "big", "big", "big", "small", "big", "big", "big"])


def test_latency_routing_measures_each_deployment_then_prefers_the_fastest():
    clock = FakeClock()
    p = pool([{"spec": Timed(clock, 2.0), "name": "slow"}, {"spec": Timed(clock, 0.5), "name": "fast"}], clock,
             routing="latency")
    assert [served(p.rerank(QUERY, DOCS)) for _ in range(4)] == ["slow", "fast", "fast", "fast"]
    assert [d["latency_ms"] for d in p.describe()] == [2000.0, 500.0]


def test_weighted_routing_draws_by_weight_and_is_repeatable_with_a_seed():
    def draws(seed):
        p = pool([{"spec": "identity", "name": "a", "weight": 3}, {"spec": "identity", "name": "b"}], FakeClock(),
                 routing="weighted", seed=seed)
        return [served(p.rerank(QUERY, DOCS)) for _ in range(400)]

    first = draws(7)
    assert first == draws(7) and first != draws(8)
    assert 0.68 <= first.count("a") / 400 <= 0.82


def test_least_busy_sends_to_the_deployment_with_fewest_requests_in_flight(apis):
    async def main():
        clock = FakeClock()
        hold = Fault("hold", seconds=5.0)
        apis[0].faults = [hold]
        p = PoolReranker([cohere(apis[0], "eu", max_concurrency=1), cohere(apis[1], "us")], clock=clock,
                         sleep=clock.sleep)
        first = asyncio.create_task(p.arerank(QUERY, DOCS))
        while apis[0].count() == 0:
            await asyncio.sleep(0.01)
        second, third = await asyncio.gather(p.arerank(QUERY, DOCS), p.arerank(QUERY, DOCS))
        hold.release.set()
        return served(await first), served(second), served(third)

    assert asyncio.run(main()) == ("eu", "us", "us")


def test_async_requests_queue_for_a_slot_and_cool_down_like_sync_ones(apis):
    clock = FakeClock()
    apis[0].faults = [Fault("status", 429, headers={"Retry-After": "4"})]
    p = pool([cohere(apis[0], "eu", rpm=5)], clock, max_wait_s=10.0)
    res = asyncio.run(p.arerank(QUERY, DOCS))
    assert served(res) == "eu" and clock.waits == [4.0] and res.info["pool"]["failures"][0]["error"] == (
        "RateLimitError")
    p2 = pool([cohere(apis[1], "us", rpm=1)], clock, max_wait_s=1.0, fallback="identity")
    a, b = asyncio.run(p2.arerank_batch([(QUERY, DOCS), (QUERY, DOCS)]))
    assert {served(a), served(b)} == {"us", None}


def test_the_window_frees_one_slot_per_send_as_the_minute_passes():
    state = LocalPoolState()
    assert [state.acquire("k", 2, t) for t in (0.0, 10.0, 20.0, 59.0)] == [0.0, 0.0, 40.0, 1.0]
    assert state.acquire("k", 2, 60.0) == 0.0 and state.used("k", 60.0) == 2
    state.cool_down("k", 40.0, 60.0)
    state.cool_down("k", 20.0, 70.0)  # never shortened
    assert state.cooling("k", 95.0) == 5.0 and state.cooling("other", 95.0) == 0.0
    sent, cool, _ = state.snapshot(95.0)
    assert [age for age, _ in sent["k"]] == [35.0] and cool == {"k": 5.0}  # the send at 10 s left the window at 70 s
    assert state.acquire("k", None, 95.0) == 5.0 and state.used("k", 95.0) == 1  # cooling: no slot, the end said
    assert state.acquire("k", None, 100.0) == 0.0 and state.used("k", 100.0) == 2


def test_a_deployment_key_comes_from_its_environment_variable(apis, monkeypatch):
    monkeypatch.setenv("CO_KEY_EU", API_KEY)
    item = {"spec": "cohere:rerank-v3.5", "name": "eu", "api_key_env": "CO_KEY_EU", "base_url": apis[0].url}
    p = load_reranker({"spec": "pool", "deployments": [item]})
    assert served(p.rerank(QUERY, DOCS)) == "eu"
    assert API_KEY not in repr(p) and API_KEY not in str(p.describe())
    monkeypatch.delenv("CO_KEY_EU")
    with pytest.raises(ConfigError, match=r"deployments\[0\]\.api_key_env: \$CO_KEY_EU is not set"):
        load_reranker({"spec": "pool", "deployments": [item]})


@pytest.mark.parametrize(("options", "message"), [
    ({"routing": "fastest"}, "routing must be one of least-busy, latency, usage, round-robin, weighted, got 'fastest'"),
    ({"deployments": []}, "a pool needs a non-empty 'deployments' list"),
    ({"deployments": ["identity", "identity"]}, "deployment names must differ"),
    ({"deployments": [{"spec": "identity", "rpm": 0}]}, r"deployments\[0\]\.rpm must be a positive number, got 0"),
    ({"deployments": [{"rpm": 5}]}, r"deployments\[0\]: a deployment needs a 'spec'"),
    ({"deployments": [{"spec": "identity", "max_concurrency": True}]}, r"deployments\[0\]\.max_concurrency"),
    ({"max_wait_s": -1}, "max_wait_s and cooldown_s must be >= 0"),
])
def test_a_pool_that_cannot_work_is_refused_naming_the_field(options, message):
    spec = {"spec": "pool", "deployments": ["identity"], **options}
    with pytest.raises(ConfigError, match=message):
        load_reranker(spec)


def test_a_deployment_that_raises_its_own_exception_is_named_as_a_failed_backend(apis):
    class Broken(SingleQuery):
        name, model = "broken", "b"

        def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
            raise RuntimeError("boom")

    p = pool([{"spec": Broken(), "name": "mine"}], FakeClock())
    with pytest.raises(AllBackendsFailedError, match=r"no deployment answered: mine \(BackendFailedError\)$") as err:
        p.rerank(QUERY, DOCS)
    assert err.value.failures == [{"deployment": "mine", "error": "BackendFailedError",
                                   "message": "mine failed: RuntimeError: boom"}]
