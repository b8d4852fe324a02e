"""The usage ledger on its own: prices by backend pattern, budget periods, reservations and their settlement, in
this process and in Redis (a real server, stopped and started to see the hand-over)."""

import calendar
import logging

import pytest

from rankrelay import ConfigError
from rankrelay.server.usage import Budget, Hold, LocalUsageStore, OverBudgetError, Prices, Usage

NOON = calendar.timegm((2026, 12, 6, 12, 0, 0))
COHERE = "cohere:rerank-v3.5"


def test_prices_match_the_first_pattern_the_users_before_the_list_prices():
    prices = Prices({"cohere:rerank-v3.5": {"search_units": 0.005}, "bedrock:*": {"queries": 0.001}})
    assert prices.of(COHERE) == {"search_units": 0.005}
    assert prices.of("cohere:rerank-v3.0") == {"search_units": 0.002}  # the list price
    assert prices.of("cohere-http:rerank-v3.5") == {"search_units": 0.002}
    assert prices.of("cohere-http:jina-reranker") == {}  # a Cohere-shaped API is not Cohere's price
    assert prices.of("bedrock:amazon.rerank-v1:0") == {"queries": 0.001}
    assert prices.of("identity") == {} and Prices(list_prices=False).of(COHERE) == {}


@pytest.mark.parametrize("documents, units", [(1, 1.0), (100, 1.0), (101, 2.0), (250, 3.0)])
def test_a_search_is_billed_per_started_hundred_documents_when_the_reply_reports_none(documents, units):
    prices = Prices({"bedrock:*": {"queries": 0.001}})
    assert prices.units("bedrock:amazon.rerank-v1:0", {}, documents) == {"queries": units}
    assert prices.cost("bedrock:amazon.rerank-v1:0", {}, documents) == pytest.approx(units * 0.001)
    assert prices.units(COHERE, {"search_units": 1}, documents) == {"search_units": 1}  # reported: taken
    assert prices.cost("identity", {}, documents) == 0


def test_a_billed_unit_without_a_price_costs_nothing_and_costs_round_to_the_micro_dollar():
    prices = Prices({"cohere:*": {"search_units": 0.002}, "tiny:*": {"queries": 4e-7}})
    assert prices.cost(COHERE, {"search_units": 1, "input_tokens": 900}, 3) == pytest.approx(0.002)
    usage = Usage(prices, clock=lambda: 100.0)  # the first hour since 1970: hour 0
    hold = usage.reserve("app", None, ["tiny:m"], 3)
    usage.settle(hold, model="m", deployment="", documents=3, backend="tiny:m", billed={})
    assert usage.report()["rows"][0]["cost_usd"] == 0.0  # $0.0000004: under a micro-dollar
    assert usage.report()["rows"][0]["billed_units"] == {"queries": 1.0}


def test_token_billed_backends_cost_their_tokens_and_reserve_nothing_in_advance():
    prices = Prices({"chat:*": {"prompt_tokens": 1e-6, "completion_tokens": 4e-6}})
    assert prices.estimate("chat:gpt", 100) == {}
    assert prices.cost("chat:gpt", {"prompt_tokens": 1000, "completion_tokens": 10}, 3) == pytest.approx(0.00104)


@pytest.mark.parametrize("given", [{}, {"search_units": -0.1}, {"search_units": "2"}])
def test_a_price_that_is_not_dollars_per_unit_is_refused_naming_the_pattern(given):
    with pytest.raises(ConfigError, match=r"^model_prices.cohere:\*: give dollars \(0 or more\) per billed unit"):
        Prices({"cohere:*": given})


def test_a_free_model_is_priced_at_zero_and_counted_without_cost():
    prices = Prices({"cohere:rerank-free": {"search_units": 0}})
    assert prices.of("cohere:rerank-free") == {"search_units": 0}
    assert prices.cost("cohere:rerank-free", {"search_units": 3}, 10) == 0.0


def test_usage_prices_at_the_list_prices_by_default_and_tells_its_listener_what_each_answer_cost():
    heard = []
    usage = Usage(clock=lambda: NOON, on_settle=lambda *args: heard.append(args))
    assert usage.prices.of(COHERE) == {"search_units": 0.002}
    hold = usage.reserve("app", Budget(usd=1.0, per="day"), [COHERE], 150)
    usage.settle(hold, model="cohere", deployment="eu", documents=150, backend=COHERE, billed={})
    assert heard == [("app", "cohere", "eu", 150, {"search_units": 2.0}, pytest.approx(0.004))]


@pytest.mark.parametrize("per, at, period, left", [
    ("day", NOON, "2026-12-06", 12 * 3600), ("month", NOON, "2026-12", 25 * 86_400 + 12 * 3600),
    ("total", NOON, "total", None),
    ("day", calendar.timegm((2025, 3, 15, 18, 0, 0)), "2025-03-15", 6 * 3600),
    ("month", calendar.timegm((2025, 3, 15, 18, 0, 0)), "2025-03", 16 * 86_400 + 6 * 3600)])
def test_a_budgets_period_and_the_seconds_until_the_next_one(per, at, period, left):
    assert Budget(1.0, per).period(at) == (period, left)  # December's next month is the next year's January


def test_a_reservation_covers_the_most_a_request_can_cost_and_is_settled_at_what_it_did():
    usage = Usage(Prices(), clock=lambda: NOON)
    budget = Budget(0.01)
    hold = usage.reserve("app", budget, ["identity", COHERE], documents=150)  # a chain: its priced backend counts
    assert hold == Hold("app", "app|day|2026-12-06", 4000) and usage.spent("app", budget) == 0.004
    usage.settle(hold, model="m", deployment="eu", documents=150, backend="identity", billed={})  # the fallback
    assert usage.spent("app", budget) == 0.0
    hold = usage.reserve("app", budget, [COHERE], documents=3)
    usage.release(hold)  # no answer
    assert usage.spent("app", budget) == 0.0
    assert usage.reserve("app", None, [COHERE], 3) == Hold("app", None, 0)  # no budget: nothing reserved
    assert usage.reserve("app", budget, ["identity"], 3) == Hold("app", None, 0)  # unpriced
    usage.settle(Hold("app", None, 0), model="m", deployment="", documents=3, backend=COHERE, billed={})
    usage.release(Hold("app", None, 0))
    usage.release(Hold("app", "app|day|token-billed", 0))  # nothing was reserved: nothing to give back
    assert usage.store.spend_items() == [("app|day|2026-12-06", 0)]  # no budget: no spend kept under any key


def test_a_request_that_would_pass_the_budget_is_refused_and_reserves_nothing():
    usage = Usage(Prices(), clock=lambda: NOON)
    budget = Budget(0.005, "total")
    usage.reserve("app", budget, [COHERE], documents=200)  # $0.004
    with pytest.raises(OverBudgetError) as refused:
        usage.reserve("app", budget, [COHERE], documents=1)
    assert str(refused.value) == ("client 'app' is over its budget of $0.005 in total ($0.004 spent; this request "
                                  "could cost $0.002)")
    assert refused.value.retry_after is None and usage.spent("app", budget) == 0.004
    assert usage.reserve("other", budget, [COHERE], documents=1).micro_usd == 2000  # budgets are per client


def test_the_report_counts_rows_by_the_hour_filters_them_and_shows_each_budget():
    now = [NOON]
    usage = Usage(Prices(), clock=lambda: now[0])
    seen = []
    usage.on_settle = lambda *row: seen.append(row)
    for client, model, at in (("a", "cohere", NOON - 7200), ("a", "cohere", NOON), ("b", "local", NOON)):
        now[0] = at
        hold = usage.reserve(client, Budget(1.0), [COHERE] if model == "cohere" else ["identity"], 120)
        usage.settle(hold, model=model, deployment="eu" if model == "cohere" else "", documents=120,
                     backend=COHERE if model == "cohere" else "identity", billed={})
    report = usage.report(budgets={"a": Budget(1.0), "b": Budget(2.0, "month")})
    assert report["rows"] == [
        {"client": "a", "model": "cohere", "deployment": "eu", "requests": 2, "documents": 240,
         "billed_units": {"search_units": 4.0}, "cost_usd": 0.008},
        {"client": "b", "model": "local", "deployment": "", "requests": 1, "documents": 120, "billed_units": {},
         "cost_usd": 0.0}]
    assert report["budgets"] == {"a": {"usd": 1.0, "per": "day", "spent_usd": 0.008},
                                 "b": {"usd": 2.0, "per": "month", "spent_usd": 0.0}}
    assert usage.report(since=NOON - 3600)["rows"][0]["requests"] == 1  # the hour two hours ago left out
    assert usage.report(since=NOON - 3600)["since"] == NOON - 3600
    assert [r["client"] for r in usage.report(model="local")["rows"]] == ["b"]
    assert "budgets" not in usage.report(client="b", budgets={"a": Budget(1.0)})
    assert seen[0] == ("a", "cohere", "eu", 120, {"search_units": 2.0}, 0.004)


def test_the_local_store_hands_over_everything_it_counted():
    store = LocalUsageStore()
    store.add(5, ("a", "m", ""), {"requests": 1.0})
    store.add(5, ("a", "m", ""), {"requests": 1.0, "cost_usd": 0.5})
    assert store.reserve("k", 10, limit=15) == 10 and store.reserve("k", 10, limit=15) is None
    store.add_spend("k", -4)
    store.add_spend("fresh", 7)  # a key never reserved
    assert store.spend_items() == [("k", 6), ("fresh", 7)] and store.spent("missing") == 0
    assert store.hour_items() == [(5, ("a", "m", ""), {"requests": 2.0, "cost_usd": 0.5})]
    assert store.rows(6) == {} and store.rows(5) == {("a", "m", ""): {"requests": 2.0, "cost_usd": 0.5}}


def test_the_local_store_keeps_ninety_days_of_hours():
    from rankrelay.server.usage import KEEP_HOURS

    store = LocalUsageStore()
    store.add(10, ("a", "m", ""), {"requests": 1.0})
    store.add(11, ("a", "m", ""), {"requests": 1.0})
    store.add(10 + KEEP_HOURS - 1, ("a", "m", ""), {"requests": 1.0})
    assert [h for h, _, _ in store.hour_items()] == [10, 11, 10 + KEEP_HOURS - 1]  # 90 days: all kept
    store.add(10 + KEEP_HOURS, ("a", "m", ""), {"requests": 1.0})  # a new hour: the one 90 days before goes
    assert [h for h, _, _ in store.hour_items()] == [11, 10 + KEEP_HOURS - 1, 10 + KEEP_HOURS]
    store.add(11 + KEEP_HOURS - 1, ("b", "m", ""), {"requests": 1.0})  # an hour already kept: nothing goes
    assert KEEP_HOURS == 2160 and len(store.hour_items()) == 4


def test_redis_keeps_one_ledger_for_two_replicas_and_takes_over_what_one_counted_while_it_was_away(redis_server):
    import redis

    from rankrelay.server.redis_usage import KEEP_S, RedisUsageStore

    clock = [0.0]
    one = RedisUsageStore(redis_server.url, clock=lambda: clock[0])
    two = RedisUsageStore(redis_server.url, clock=lambda: clock[0])
    assert one.check() is None and one.shared
    assert one.reserve("a|day|d", 6000, limit=10_000) == 6000
    assert two.reserve("a|day|d", 6000, limit=10_000) is None  # the other replica's spend counts
    one.add(7, ("a", "m", "eu"), {"requests": 1.0, "units.search_units": 1.0})
    assert two.rows(7) == {("a", "m", "eu"): {"requests": 1.0, "units.search_units": 1.0}}
    redis_server.stop()
    assert two.reserve("a|day|d", 4000, limit=10_000) == 10_000  # on the spend Redis last reported
    assert two.reserve("a|day|d", 1, limit=10_000) is None
    two.add(7, ("a", "m", "eu"), {"requests": 1.0, "documents": 250.0})
    two.add_spend("a|day|d", -1000)  # an answer settled below its reservation, while away
    assert not two.shared and two.problem == (
        f"Redis at redis://127.0.0.1:{redis_server.port}/0 is unreachable: ConnectionError")
    assert two.spent("a|day|d") == 9000 and two.rows(7) == {("a", "m", "eu"): {"requests": 1.0, "documents": 250.0}}
    clock[0] = 1.0  # a try while Redis is still away: the hand-over fails, nothing counted is lost
    assert two.rows(7) == {("a", "m", "eu"): {"requests": 1.0, "documents": 250.0}} and not two.shared
    redis_server.start()
    assert two.rows(7) == {("a", "m", "eu"): {"requests": 1.0, "documents": 250.0}}  # not tried before retry_s
    assert not two.shared
    clock[0] = 2.0
    assert two.rows(7) == {("a", "m", "eu"): {"requests": 1.0, "documents": 250.0}}  # Redis came back empty
    assert two.shared and two.problem is None
    assert one.spent("a|day|d") == 3000 and one.reserve("a|day|d", 7001, limit=10_000) is None  # 4000 - 1000
    assert 0 < redis.Redis.from_url(redis_server.url).ttl(f"rankrelay:usage:service:h:{7}") <= KEEP_S


def test_redis_that_refuses_the_password_stops_the_start_and_the_password_is_never_said(caplog):
    from conftest import RedisServer

    from rankrelay.server.redis_usage import RedisUsageStore

    server = RedisServer(password="right-pw-3")
    caplog.set_level(logging.WARNING, logger="rankrelay.server.redis_usage")
    try:
        with pytest.raises(ConfigError, match=r"^Redis at redis://\*\*\*@127.0.0.1:\d+/0 refused the password "
                                              r"\(AuthenticationError\)$"):
            RedisUsageStore(server.url.replace("right", "wrong")).check()
        assert RedisUsageStore(server.url).check() is None
        server.stop()
        away = RedisUsageStore(server.url)
        assert away.check() == f"Redis at redis://***@127.0.0.1:{server.port}/0 is unreachable: ConnectionError"
        assert not away.shared  # the next call tries again, and counts here while Redis does not answer
    finally:
        server.close()
    assert "pw-3" not in caplog.text and "is unreachable (ConnectionError)" in caplog.text


def test_redis_keeps_a_periods_spend_and_an_hours_usage_ninety_days_and_a_total_budgets_for_good(redis_server):
    import redis

    from rankrelay.server.redis_usage import KEEP_S, RedisUsageStore

    store = RedisUsageStore(redis_server.url, namespace="ns")
    store.reserve("a|b|day|2026-12-06", 10, limit=100)  # a client whose name has a "|" in it
    store.reserve("a|b|total|total", 10, limit=100)
    store.add(7, ("a|b", "m", ""), {"requests": 1.0})
    raw = redis.Redis.from_url(redis_server.url)
    assert KEEP_S == 90 * 86_400
    assert KEEP_S - 5 <= raw.ttl("rankrelay:usage:ns:spend:a|b|day|2026-12-06") <= KEEP_S
    assert raw.ttl("rankrelay:usage:ns:spend:a|b|total|total") == -1  # no expiry
    assert KEEP_S - 5 <= raw.ttl("rankrelay:usage:ns:h:7") <= KEEP_S
    assert raw.zrange("rankrelay:usage:ns:hours", 0, -1, withscores=True) == [(b"7", 7.0)]
    assert store.rows(0) == {("a|b", "m", ""): {"requests": 1.0}}
    store.close()


def test_redis_counts_every_amount_added_and_given_back_in_its_namespace(redis_server):
    import redis

    from rankrelay.server.redis_usage import RedisUsageStore

    store = RedisUsageStore(redis_server.url)
    assert store.reserve("a|day|d", 4000, limit=10_000) == 4000
    store.add_spend("a|day|d", -1500)  # the answer cost less than its reservation
    assert store.spent("a|day|d") == 2500 and store.spent("b|day|d") == 0
    store.add(7, ("a", "m", "eu"), {"requests": 1.0, "documents": 150.0, "cost_usd": 0.0025})
    store.add(8, ("a", "m", "eu"), {"requests": 1.0, "documents": 50.0})
    store.add(9, ("b", "m", ""), {"requests": 1.0, "documents": 3.0})
    assert store.rows(0) == {("a", "m", "eu"): {"requests": 2.0, "documents": 200.0, "cost_usd": 0.0025},
                             ("b", "m", ""): {"requests": 1.0, "documents": 3.0}}
    assert store.rows(9) == {("b", "m", ""): {"requests": 1.0, "documents": 3.0}}
    assert sorted(redis.Redis.from_url(redis_server.url).keys("rankrelay:usage:service:*")) == [
        b"rankrelay:usage:service:h:7", b"rankrelay:usage:service:h:8", b"rankrelay:usage:service:h:9",
        b"rankrelay:usage:service:hours", b"rankrelay:usage:service:spend:a|day|d"]
    assert store._client.connection_pool.connection_kwargs["socket_timeout"] == 0.25  # a quarter second, then local
    store.close()


def test_a_replica_away_from_redis_checks_a_budget_against_what_redis_last_said_including_its_own(redis_server):
    from rankrelay.server.redis_usage import RedisUsageStore

    store = RedisUsageStore(redis_server.url)
    assert store.reserve("a|day|d", 6000, limit=10_000) == 6000
    redis_server.stop()
    assert store.reserve("a|day|d", 6000, limit=10_000) is None  # 6000 already in Redis: over
    assert store.reserve("a|day|d", 4000, limit=10_000) == 10_000
    assert store.spent("other|day|d") == 0 and store.spent("a|day|d") == 10_000
    assert store.reserve("new|day|d", 10_000, limit=10_000) == 10_000  # a key Redis never reported: from 0


def test_redis_that_never_answers_or_never_accepts_is_given_up_on_at_the_timeout(unaccepting):
    import socket
    import threading

    from rankrelay.server.redis_usage import RedisUsageStore

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held = []
    threading.Thread(target=lambda: held.append(silent.accept()), daemon=True).start()  # accepts, never answers
    try:
        mute = RedisUsageStore(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout_s=0.2)
        assert mute.reserve("a|day|d", 10, limit=100) == 10  # counted here after the read timeout
        assert mute.problem.endswith("is unreachable: TimeoutError")
        closed = RedisUsageStore(f"redis://127.0.0.1:{unaccepting}/0", timeout_s=0.2)
        assert closed.reserve("a|day|d", 10, limit=100) == 10  # the connect timeout, not the port closing at 3 s
        assert closed.problem.endswith("is unreachable: TimeoutError")
    finally:
        silent.close()


def test_without_the_redis_client_the_store_says_which_extra_to_install(monkeypatch):
    import sys

    from rankrelay import MissingDependencyError
    from rankrelay.server.redis_usage import RedisUsageStore

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingDependencyError) as missing:
        RedisUsageStore("redis://127.0.0.1:6379/0")
    assert str(missing.value) == ("usage shared through Redis needs the optional package 'redis': "
                                  "pip install 'rankrelay[redis]'")

