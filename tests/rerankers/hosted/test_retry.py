"""The one retry policy, driven by attempts that raise the real typed errors."""

import asyncio
import time
from email.utils import formatdate

import pytest

from rankrelay import (
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    BadResponseError,
    ConfigError,
    RateLimitError,
)
from rankrelay.rerankers.hosted.retry import RetryPolicy, parse_retry_after, retry_after_from_headers
from rankrelay.testing import FakeClock


def failing(errors, result="ok"):
    calls = []

    def attempt(timeout):
        calls.append(timeout)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return attempt, calls


FAST = dict(backoff_initial=0.01, backoff_max=0.02)


@pytest.mark.parametrize("error", [BackendUnavailableError("503"), RateLimitError("429"), BackendTimeoutError("t")])
def test_retryable_errors_are_retried(error):
    attempt, calls = failing([error, error])
    assert RetryPolicy(max_attempts=3, **FAST).run(attempt) == "ok" and len(calls) == 3


@pytest.mark.parametrize(
    "error", [AuthenticationError("401"), BadRequestError("400"), BadResponseError("bad"),
              BackendUnavailableError("501", retryable=False), ValueError("not ours")]
)
def test_other_errors_are_not(error):
    attempt, calls = failing([error])
    with pytest.raises(type(error)):
        RetryPolicy(max_attempts=5, **FAST).run(attempt)
    assert len(calls) == 1


def test_attempts_are_bounded_and_counted():
    attempt, calls = failing([BackendUnavailableError("x")] * 10)
    with pytest.raises(BackendUnavailableError) as err:
        RetryPolicy(max_attempts=4, **FAST).run(attempt)
    assert len(calls) == 4 and err.value.attempts == 4


def test_each_attempt_gets_the_time_left():
    attempt, calls = failing([BackendTimeoutError("t")])
    RetryPolicy(max_attempts=2, deadline=2.0, timeout=10.0, **FAST).run(attempt)
    assert calls[0] <= 2.0 and calls[1] < calls[0]


def test_retry_after_is_waited_and_bounded_by_the_deadline():
    clock = FakeClock()
    attempt, calls = failing([RateLimitError("429", retry_after=0.3)])
    clock.policy(RetryPolicy(max_attempts=3, deadline=5.0, **FAST)).run(attempt)
    assert clock.waits == [0.3] and calls == [5.0, pytest.approx(4.7)]  # the second attempt has what is left
    clock = FakeClock()
    attempt, calls = failing([RateLimitError("429", retry_after=10.0)])
    with pytest.raises(RateLimitError):
        clock.policy(RetryPolicy(max_attempts=3, deadline=2.0, **FAST)).run(attempt)
    assert clock.waits == [] and len(calls) == 1  # a wait past the deadline ends the retries at once


async def test_async_waits_are_the_same_on_the_injected_clock():
    clock = FakeClock()
    calls = []

    async def attempt(timeout):
        calls.append(timeout)
        if len(calls) < 3:
            raise RateLimitError("429", retry_after=1.5)
        return "ok"

    assert await clock.policy(RetryPolicy(max_attempts=3, deadline=10.0, **FAST)).arun(attempt) == "ok"
    assert clock.waits == [1.5, 1.5] and calls == [10.0, 8.5, 7.0]


def test_backoff_waits_are_full_jitter_below_a_doubling_ceiling():
    clock = FakeClock()
    attempt, calls = failing([BackendUnavailableError("503")] * 4)
    clock.policy(RetryPolicy(max_attempts=5, deadline=100.0, backoff_initial=0.5, backoff_max=1.5)).run(attempt)
    assert len(clock.waits) == 4
    assert all(0 <= w <= c for w, c in zip(clock.waits, [0.5, 1.0, 1.5, 1.5]))


def test_async_policy_matches_sync():
    calls = []

    async def attempt(timeout):
        calls.append(timeout)
        if len(calls) < 3:
            raise BackendUnavailableError("503")
        return "ok"

    assert asyncio.run(RetryPolicy(max_attempts=3, **FAST).arun(attempt)) == "ok" and len(calls) == 3


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    now = time.time()
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert retry_after_from_headers({"Retry-After-Ms": "1500", "Retry-After": "9"}) == 1.5
    assert retry_after_from_headers({"retry-after": "2"}) == 2.0


def test_bad_policy():
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)


# --- what mutation testing found unchecked (tests/mutation/run.py --only retry) ---

def test_backoff_ceilings_double_from_the_initial_value_up_to_the_maximum(monkeypatch):
    import random

    monkeypatch.setattr(random, "uniform", lambda lo, hi: (lo, hi))  # the range each wait is drawn from
    policy = RetryPolicy(backoff_initial=0.5, backoff_max=3.0)
    assert [policy._backoff(n) for n in (1, 2, 3, 4, 5)] == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, 3.0)]
    assert RetryPolicy()._backoff(1) == (0.0, 0.25) and RetryPolicy()._backoff(9) == (0.0, 4.0)  # the defaults


def test_default_policy():
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.deadline, policy.timeout) == (3, 30.0, 30.0)


def test_a_failed_attempt_is_logged_with_its_error_and_wait(caplog):
    clock = FakeClock()
    attempt, _ = failing([RateLimitError("slow down", retry_after=1.25)])
    with caplog.at_level("WARNING"):
        clock.policy(RetryPolicy(max_attempts=2, deadline=10.0)).run(attempt, name="tei")
    assert "tei: attempt 1 failed (RateLimitError: slow down); retrying in 1.25 s" in caplog.messages


def test_a_call_deadline_overrides_the_policys_and_bounds_every_attempt():
    clock = FakeClock(start=0.0)  # (exact sums)
    # every wait is the server's Retry-After of 1 s (no jitter, whatever the random seed)
    attempt, calls = failing([BackendUnavailableError("503", retry_after=1.0)] * 20)
    with pytest.raises(BackendUnavailableError) as err:
        clock.policy(RetryPolicy(max_attempts=9, deadline=100.0, timeout=50.0)).run(attempt, deadline=3.0)
    assert calls == [3.0, 2.0, 1.0] and err.value.attempts == 3  # each attempt gets what is left of the 3 s
    assert clock.waits == [1.0, 1.0]


def test_an_attempt_with_less_than_the_minimum_left_is_not_started():
    from rankrelay.rerankers.hosted.retry import MIN_ATTEMPT_SECONDS

    clock = FakeClock(start=0.0)  # (exact sums)
    policy = clock.policy(RetryPolicy(deadline=1.0))
    with pytest.raises(BackendTimeoutError, match=r"^api: deadline of 1.00 s ran out$") as err:
        policy._attempt_timeout(clock() + MIN_ATTEMPT_SECONDS - 1e-6, "api")
    assert err.value.retryable is False and err.value.backend == "api"
    assert policy._attempt_timeout(clock() + MIN_ATTEMPT_SECONDS, "api") == MIN_ATTEMPT_SECONDS
    assert policy._attempt_timeout(clock() + 100.0, "api") == 30.0  # the request timeout caps it


def test_a_retry_that_would_leave_too_little_time_is_not_made():
    from rankrelay.rerankers.hosted.retry import MIN_ATTEMPT_SECONDS

    clock = FakeClock(start=0.0)  # (exact sums)
    attempt, calls = failing([RateLimitError("429", retry_after=2.0 - MIN_ATTEMPT_SECONDS)])
    assert clock.policy(RetryPolicy(deadline=2.0)).run(attempt) == "ok"  # exactly the minimum left: made
    clock = FakeClock(start=0.0)
    attempt, calls = failing([RateLimitError("429", retry_after=2.0 - MIN_ATTEMPT_SECONDS + 1e-3)])
    with pytest.raises(RateLimitError):
        clock.policy(RetryPolicy(deadline=2.0)).run(attempt)
    assert len(calls) == 1


async def test_async_attempts_are_counted_on_the_error():
    clock = FakeClock()

    async def attempt(timeout):
        raise BackendUnavailableError("503")

    with pytest.raises(BackendUnavailableError) as err:
        await clock.policy(RetryPolicy(max_attempts=3, **FAST)).arun(attempt, deadline=60.0)
    assert err.value.attempts == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"max_attempts": 0}, "^max_attempts must be >= 1, got 0$"),
    ({"deadline": 0}, "^deadline and timeout must be > 0$"),
    ({"timeout": -1}, "^deadline and timeout must be > 0$"),
    ({"timeout": 0}, "^deadline and timeout must be > 0$"),
])
def test_bad_policies_say_why(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RetryPolicy(**kwargs)
    assert RetryPolicy(max_attempts=1).max_attempts == 1


def test_retry_after_headers_in_every_form():
    assert retry_after_from_headers(None) is None and retry_after_from_headers({}) is None
    assert retry_after_from_headers({"RETRY-AFTER-MS": "250"}) == 0.25
    assert retry_after_from_headers({"retry-after-ms": "-5"}) == 0.0
    assert retry_after_from_headers({"retry-after-ms": "soon", "Retry-After": "3"}) == 3.0  # a bad ms falls back
    assert retry_after_from_headers({"x-other": "1"}) is None
    assert parse_retry_after("-4") == 0.0 and parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 10) == 10.0


def test_an_http_date_is_read_against_the_current_time_by_default(monkeypatch):
    now = 1_700_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)  # the module reads time.time() when no `now` is given
    assert parse_retry_after(formatdate(now + 30, usegmt=True)) == 30.0


def test_exactly_the_minimum_time_left_still_gets_a_retry():
    clock = FakeClock(start=0.0)
    attempt, calls = failing([RateLimitError("429", retry_after=0.0)])
    assert clock.policy(RetryPolicy(deadline=0.05, timeout=0.5)).run(attempt) == "ok" and calls == [0.05, 0.05]


@pytest.mark.parametrize("name, label", [(None, "api"), ("tei", "tei")])
async def test_a_spent_deadline_names_the_backend(name, label):
    clock = FakeClock()

    async def attempt(timeout):
        return "never"

    kwargs = {} if name is None else {"name": name}
    with pytest.raises(BackendTimeoutError, match=f"^{label}: deadline of 0.01 s ran out$"):
        clock.policy(RetryPolicy(deadline=0.01)).run(lambda timeout: "never", **kwargs)
    with pytest.raises(BackendTimeoutError, match=f"^{label}: deadline of 0.01 s ran out$"):
        await clock.policy(RetryPolicy(deadline=0.01)).arun(attempt, **kwargs)


async def test_the_async_log_line_names_the_backend(caplog):
    clock = FakeClock()
    calls = []

    async def attempt(timeout):
        calls.append(timeout)
        if len(calls) == 1:
            raise RateLimitError("slow down", retry_after=0.5)
        return "ok"

    with caplog.at_level("WARNING"):
        assert await clock.policy(RetryPolicy(deadline=10.0)).arun(attempt, name="jina") == "ok"
    assert "jina: attempt 1 failed (RateLimitError: slow down); retrying in 0.50 s" in caplog.messages


def test_a_short_request_timeout_is_a_valid_policy():
    assert RetryPolicy(timeout=0.5, deadline=0.5).timeout == 0.5
