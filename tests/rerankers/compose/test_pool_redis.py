"""Pools in several replicas sharing their rate-limit windows and cooldowns through a real Redis server on
127.0.0.1 (each replica its own client), and what happens when that server goes away and comes back."""

import logging

import pytest

from rankrelay import ConfigError, MissingDependencyError
from rankrelay.rerankers import PoolReranker
from rankrelay.testing import API_KEY, FakeRerankAPI, Fault

QUERY = "boundary layer separation"
DOCS = ["wing lift", "boundary layer separation", "cooking pasta"]


@pytest.fixture
def api():
    server = FakeRerankAPI().start()
    yield server
    server.stop()


def deployment(api, **options):
    return {"spec": "cohere:rerank-v3.5", "name": "eu", "api_key": API_KEY, "base_url": api.url, **options}


def replicas(api, state_of, n=3, **options):
    """``n`` pools, as n replicas of a service would build them, each with the state ``state_of(i)`` gives."""
    return [PoolReranker([deployment(api, **options)], fallback="identity", max_wait_s=0, state=state_of(i))
            for i in range(n)]


def shared(url, namespace="cohere"):
    from rankrelay.rerankers.compose.redis_state import RedisPoolState

    return RedisPoolState(url, namespace=namespace)


def test_replicas_sharing_redis_send_what_one_would(api, redis_server):
    pools = replicas(api, lambda i: shared(redis_server.url), rpm=4)
    answers = [pools[i % 3].rerank(QUERY, DOCS) for i in range(12)]
    assert api.count() == 4  # the deployment's rpm, across the three replicas
    assert sum(r.backend == "cohere" for r in answers) == 4 and sum(r.backend == "identity" for r in answers) == 8
    assert [p.state.used("eu", 0.0) for p in pools] == [4, 4, 4]


def scripts_run(url):
    """EVALSHA calls the server has answered (each a round trip of a pool's state)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    finally:
        client.close()


def test_a_send_is_one_round_trip_to_redis_and_a_cooling_deployment_is_not_counted_a_send(api, redis_server):
    from rankrelay.testing import FakeClock

    p = PoolReranker([deployment(api, rpm=100)], fallback="identity", max_wait_s=0, clock=FakeClock(),
                     state=shared(redis_server.url))
    p.rerank(QUERY, DOCS)  # the breaker asks once whether another replica has it open (then once a second)
    before = scripts_run(redis_server.url)
    assert [p.rerank(QUERY, DOCS).backend for _ in range(5)] == ["cohere"] * 5
    assert scripts_run(redis_server.url) - before == 5  # the cooldown and the window in one script a send
    shared(redis_server.url).cool_down("eu", 30.0, 0.0)  # another replica got a 429
    before = scripts_run(redis_server.url)
    assert p.rerank(QUERY, DOCS).backend == "identity"
    assert scripts_run(redis_server.url) - before == 1 and api.count() == 6
    assert p.state.used("eu", 0.0) == 6  # the cooled request took no slot of the window


def test_without_shared_state_each_replica_sends_its_own_rpm(api):
    pools = replicas(api, lambda i: None, rpm=4)
    for i in range(12):
        pools[i % 3].rerank(QUERY, DOCS)
    assert api.count() == 12  # three times the deployment's limit: the overshoot shared state prevents


def test_a_429_one_replica_gets_cools_the_deployment_down_for_all(api, redis_server):
    api.faults = [Fault("status", 429, headers={"Retry-After": "30"})]
    pools = replicas(api, lambda i: shared(redis_server.url))
    assert pools[0].rerank(QUERY, DOCS).backend == "identity"
    assert [p.rerank(QUERY, DOCS).backend for p in pools[1:]] == ["identity", "identity"]
    assert api.count() == 1
    assert 29.0 < pools[2].state.cooling("eu", 0.0) <= 30.0


def test_a_breaker_one_replica_opened_keeps_every_replica_off_the_deployment(api, redis_server):
    api.faults = [Fault("status", 503) for _ in range(3)]
    pools = replicas(api, lambda i: shared(redis_server.url))
    assert [pools[0].rerank(QUERY, DOCS).backend for _ in range(3)] == ["identity"] * 3  # 3 failures open it
    assert [p.rerank(QUERY, DOCS).backend for p in pools] == ["identity"] * 3
    assert api.count() == 3  # none of the replicas sent the failing deployment a fourth request
    assert [p.describe()[0]["breaker"] for p in pools] == ["open", "closed", "closed"]
    assert 29.0 < shared(redis_server.url).tripped("eu", 0.0) <= 30.0


def test_a_breaker_opened_while_redis_was_away_is_handed_over(api, redis_server):
    (pool,) = replicas(api, lambda i: shared(redis_server.url), n=1)
    pool.state.retry_s = 0.0
    redis_server.stop()
    api.faults = [Fault("status", 503) for _ in range(3)]
    assert [pool.rerank(QUERY, DOCS).backend for _ in range(3)] == ["identity"] * 3
    redis_server.start()
    pool.state.used("eu", pool._clock())  # the first call that reaches Redis hands over
    (other,) = replicas(api, lambda i: shared(redis_server.url), n=1)
    assert other.rerank(QUERY, DOCS).backend == "identity" and api.count() == 3


def test_the_window_is_kept_by_the_servers_clock(redis_server):
    state = shared(redis_server.url)
    assert [state.acquire("eu", 2, now) for now in (0.0, 1e6)] == [0.0, 0.0]  # a replica's own clock is not read
    wait = state.acquire("eu", 2, 5.0)
    assert 59.0 < wait <= 60.0 and state.used("eu", 0.0) == 2
    assert shared(redis_server.url, namespace="other").acquire("eu", 2, 0.0) == 0.0  # another pool's "eu"


def test_redis_going_away_leaves_the_pool_serving_on_its_own_counts_then_hands_them_over(api, redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="rankrelay.rerankers.compose.redis_state")
    (pool,) = replicas(api, lambda i: shared(redis_server.url), n=1, rpm=3)
    state = pool.state
    state.retry_s = 0.0  # try Redis again at every call
    assert pool.rerank(QUERY, DOCS).backend == "cohere"
    redis_server.stop()
    assert [pool.rerank(QUERY, DOCS).backend for _ in range(3)] == ["cohere", "cohere", "identity"]  # 3 locally
    assert not state.shared and state.problem == (
        f"Redis at redis://127.0.0.1:{redis_server.port}/0 is unreachable: ConnectionError")
    assert sum("is unreachable" in r.getMessage() for r in caplog.records) == 1  # said once, not per request
    redis_server.start()  # empty, as a restarted Redis is
    assert pool.rerank(QUERY, DOCS).backend == "identity"  # the counts of the outage came back with it
    assert state.shared and state.problem is None and state.used("eu", 0.0) == 3
    assert api.count() == 3
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_a_cooldown_taken_while_redis_was_away_is_handed_over(api, redis_server):
    (pool,) = replicas(api, lambda i: shared(redis_server.url), n=1)
    pool.state.retry_s = 0.0
    redis_server.stop()
    api.faults = [Fault("status", 429, headers={"Retry-After": "20"})]
    assert pool.rerank(QUERY, DOCS).backend == "identity"
    redis_server.start()
    other = shared(redis_server.url)
    pool.state.used("eu", pool._clock())  # the first call that reaches Redis hands over
    assert 19.0 < other.cooling("eu", 0.0) <= 20.0


def test_the_password_of_the_redis_url_is_never_logged(api, caplog):
    from conftest import RedisServer

    server = RedisServer(password="s3cret-pw")
    try:
        (pool,) = replicas(api, lambda i: shared(server.url), n=1)
        assert pool.rerank(QUERY, DOCS).backend == "cohere"
        server.stop()
        pool.rerank(QUERY, DOCS)
    finally:
        server.close()
    assert "s3cret-pw" not in caplog.text and "s3cret-pw" not in pool.state.problem
    assert f"redis://***@127.0.0.1:{server.port}/0" in pool.state.problem


def test_a_wrong_redis_password_is_refused_at_the_check_and_said_while_serving(api):
    from conftest import RedisServer

    server = RedisServer(password="right")
    try:
        (pool,) = replicas(api, lambda i: shared(server.url.replace("right", "wrong")), n=1)
        with pytest.raises(ConfigError, match=r"^Redis at redis://\*\*\*@127.0.0.1:\d+/0 refused the password"):
            pool.state.check()
        assert pool.rerank(QUERY, DOCS).backend == "cohere"  # a password rotated under a running service
        assert pool.state.problem.endswith("refused the password")
        assert shared(server.url).check() is None
        server.stop()
        assert shared(server.url).check() == f"Redis at {shared(server.url).where} is unreachable: ConnectionError"
    finally:
        server.close()


def test_the_redis_client_missing_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingDependencyError, match=r"rankrelay\[redis\]"):
        shared("redis://127.0.0.1:1/0")


def test_the_state_a_pool_reports_shows_shared_counts(api, redis_server, caplog):
    caplog.set_level(logging.INFO)
    a, b = replicas(api, lambda i: shared(redis_server.url), n=2, rpm=10)
    a.rerank(QUERY, DOCS)
    a.rerank(QUERY, DOCS)
    assert b.describe()[0]["used"] == 2


def test_a_pool_given_a_redis_url_shares_its_state_under_its_namespace_and_closes_it(api, redis_server):
    from rankrelay import load_reranker

    def build():
        return load_reranker({"spec": "pool", "deployments": [deployment(api, rpm=1)], "fallback": "identity",
                              "max_wait_s": 0, "state": redis_server.url, "namespace": "cohere"})

    a, b = build(), build()
    assert [a.rerank(QUERY, DOCS).backend, b.rerank(QUERY, DOCS).backend] == ["cohere", "identity"]
    assert shared(redis_server.url, "cohere").used("eu", 0.0) == 1 and shared(redis_server.url, "x").used("eu", 0) == 0
    import redis
    from polling import until

    watcher = redis.Redis.from_url(redis_server.url)
    assert a.state._client is b.state._client  # the process's one client (one connection pool) of this Redis
    used = str(a.state._client.client_id())  # the connection both used, by the server's id
    a.close()  # the server sees the closed socket on its next turn: asked until it has
    until(lambda: used not in {c["id"] for c in watcher.client_list()}, "the closed pool's connection is gone")
    watcher.close()
    # b connects again: the window in Redis (a's send) still keeps it off the deployment, which its own counts would not
    assert b.rerank(QUERY, DOCS).backend == "identity" and b.state.shared and api.count() == 1


def test_warming_up_reaches_redis_refusing_a_wrong_password_and_noting_an_absent_server(api, caplog):
    from conftest import RedisServer

    server = RedisServer(password="pw-right-7")
    try:
        (wrong,) = replicas(api, lambda i: shared(server.url.replace("pw-right-7", "pw-wrong-7")), n=1)
        with pytest.raises(ConfigError, match="refused the password"):
            wrong.warm_up()
        (right,) = replicas(api, lambda i: shared(server.url), n=1, rpm=1)
        right.warm_up()
        assert right.shared_state() == {"shared": True}
        server.stop()
        (late,) = replicas(api, lambda i: shared(server.url), n=1, rpm=1)
        late.warm_up()  # no server at start: the pool starts, serving on this replica's counts
        assert late.shared_state() == {"shared": False, "problem": f"Redis at redis://***@127.0.0.1:{server.port}/0 "
                                                                   "is unreachable: ConnectionError"}
        assert [late.rerank(QUERY, DOCS).backend for _ in range(2)] == ["cohere", "identity"]
    finally:
        server.close()
    assert "pw-right-7" not in caplog.text and "pw-wrong-7" not in caplog.text


def test_the_states_a_process_keeps_in_one_redis_share_one_client_and_outlive_one_closing(redis_server):
    from rankrelay.server.redis_usage import RedisUsageStore

    a, b = shared(redis_server.url), shared(redis_server.url, namespace="other")
    usage = RedisUsageStore(redis_server.url)
    assert a._client is b._client is usage._client  # one connection pool, not one per model, clients and usage
    assert shared(redis_server.url.replace("/0", "/1"))._client is not a._client
    a.close()  # a pool closed while the service runs: the others connect again
    assert b.acquire("eu", 1, 0.0) == 0.0 and b.shared and usage.reserve("k|total|total", 5, limit=10) == 5


def test_redis_away_is_said_once_under_the_owners_logger_and_its_return_after_how_long(redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="rankrelay")
    state = shared(redis_server.url)
    where = f"redis://127.0.0.1:{redis_server.port}/0"
    redis_server.stop()
    assert state.acquire("eu", 3, now=100.0) == 0.0 and not state.shared  # counted here
    assert state.acquire("eu", 3, now=100.5) == 0.0  # away: Redis is not tried again before a second has passed
    redis_server.start()
    assert state.used("eu", 100.9) == 2 and not state.shared  # still before the next try (100 + retry_s)
    assert state.used("eu", 101.0) == 2 and state.shared  # tried at 101 s: back, the two sends handed over
    said = [(r.name, r.getMessage()) for r in caplog.records]
    assert said == [
        ("rankrelay.rerankers.compose.redis_state", f"pool state: Redis at {where} is unreachable (ConnectionError): "
                                                    "serving on this process's own counts until it answers"),
        ("rankrelay.rerankers.compose.redis_state", f"pool state: Redis at {where} answers again after 1.0 s; "
                                                    "1 deployments' counts handed over")]


def test_a_redis_found_away_at_the_start_is_tried_again_by_the_first_call(redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="rankrelay")
    state = shared(redis_server.url)
    redis_server.stop()
    assert state.check().endswith("is unreachable: ConnectionError") and not state.shared
    redis_server.start()
    assert state.acquire("eu", 3, now=5.0) == 0.0 and state.shared and state.problem is None
    assert caplog.records[-1].getMessage().endswith("answers again after 0.0 s; 0 deployments' counts handed over")


def test_a_redis_link_waits_a_quarter_second_for_redis_and_tries_again_each_second(redis_server):
    from rankrelay.redis_link import RedisLink

    link = RedisLink(redis_server.url.replace("/0", "/2"), feature="a test")
    assert link._client.connection_pool.connection_kwargs["socket_timeout"] == 0.25 and link.retry_s == 1.0
    assert link.check() is None and link.health() == {"shared": True}


def test_without_the_redis_package_the_client_names_what_needs_it_and_the_extra(monkeypatch):
    import sys

    from rankrelay.redis_link import client_for

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingDependencyError) as missing:
        client_for("redis://127.0.0.1:6379/0", 0.25)
    assert str(missing.value) == ("state shared through Redis needs the optional package 'redis': "
                                  "pip install 'rankrelay[redis]'")
