"""Cohere Rerank through the official SDK against a real local server speaking Cohere's v2 wire format.

Runs with cohere 7.x (make test) and cohere 5.x (make test-cohere5); needs no torch.
"""

import logging

import pytest
from conftest import raises_exactly

from rankrelay import (
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    BadResponseError,
    Document,
    EmptyQueryError,
    RateLimitError,
    load_reranker,
)
from rankrelay.testing import API_KEY, FakeClock, Fault, relevance

pytest.importorskip("cohere", reason="the cohere extra is not installed")

QUERY = "boundary layer separation"
DOCS = [
    "wing lift at low speed",
    "boundary layer flow",
    Document("separation of the boundary layer near the trailing edge", id="sep", metadata={"page": 3}),
    "cooking pasta",
    "layer cake",
]
TEXTS = [d if isinstance(d, str) else d.text for d in DOCS]


def expected_order(query=QUERY, texts=TEXTS):
    scores = [relevance(query, t) for t in texts]
    return sorted(range(len(texts)), key=lambda i: (-scores[i], i))


def cohere(api, **options):
    options.setdefault("api_key", API_KEY)
    options.setdefault("timeout", 2.0)
    return load_reranker("cohere:rerank-v3.5", base_url=api.url, **options)


def test_reranks_in_the_servers_order_and_keeps_documents(fake_api):
    res = cohere(fake_api).rerank(QUERY, DOCS)
    assert res.indices == expected_order() != list(range(len(DOCS)))
    assert res.backend == "cohere" and res.model == "rerank-v3.5"
    sep = next(r for r in res if r.id == "sep")
    assert sep.metadata == {"page": 3} and sep.text == TEXTS[2]
    assert [r.score for r in res] == pytest.approx(sorted((relevance(QUERY, t) for t in TEXTS), reverse=True))
    assert res.info["billed_units"] == {"search_units": 1} and len(res.info["request_ids"]) == 1
    (request,) = fake_api.requests
    assert request["path"] == "/v2/rerank"
    assert request["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert request["body"]["top_n"] == len(DOCS)  # asks for all, cuts locally
    assert request["body"]["model"] == "rerank-v3.5" and request["body"]["query"] == QUERY


def test_top_n_is_cut_locally(fake_api):
    res = cohere(fake_api).rerank(QUERY, DOCS, top_n=2)
    assert res.indices == expected_order()[:2] and res.num_candidates == 5
    assert fake_api.requests[0]["body"]["top_n"] == 5


def test_max_tokens_per_doc_is_sent(fake_api):
    cohere(fake_api, max_tokens_per_doc=512).rerank(QUERY, DOCS)
    assert fake_api.requests[0]["body"]["max_tokens_per_doc"] == 512


def test_429_retry_after_is_honoured(fake_api):
    fake_api.faults = [Fault("status", 429, {"Retry-After": "1"})]
    rr, clock = cohere(fake_api), FakeClock()
    rr.policy = clock.policy(rr.policy)
    res = rr.rerank(QUERY, DOCS)
    assert res.indices == expected_order()
    assert fake_api.count() == 2 and clock.waits == [1.0]  # the server's wait, no more, no less


def test_5xx_retried_exactly_up_to_max_attempts_and_no_sdk_retries(fake_api):
    fake_api.faults = [Fault("status", 500), Fault("status", 503), Fault("status", 502)]
    with pytest.raises(BackendUnavailableError) as err:
        cohere(fake_api, max_attempts=2).rerank(QUERY, DOCS)
    assert fake_api.count() == 2  # the SDK's own retries would have made more
    assert err.value.status == 503 and err.value.attempts == 2 and "injected 503" in str(err.value)
    fake_api.faults = [Fault("status", 500), Fault("status", 503)]
    assert cohere(fake_api, max_attempts=3).rerank(QUERY, DOCS).indices == expected_order()
    assert fake_api.count() == 2 + 3


@pytest.mark.parametrize(
    "status, error",
    [(400, BadRequestError), (404, BadRequestError), (422, BadRequestError), (403, AuthenticationError)],
)
def test_client_errors_are_never_retried(fake_api, status, error):
    fake_api.faults = [Fault("status", status, body={"message": f"provider says {status}"})]
    with pytest.raises(error, match=f"provider says {status}"):
        cohere(fake_api).rerank(QUERY, DOCS)
    assert fake_api.count() == 1


def test_bad_key_is_an_authentication_error_and_never_logged(fake_api, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthenticationError, match="invalid api token"):
        cohere(fake_api, api_key="wrong-secret-key").rerank(QUERY, DOCS)
    assert fake_api.count() == 1
    assert "wrong-secret-key" not in caplog.text


def test_missing_key_fails_at_construction(fake_api, monkeypatch):
    for name in ("CO_API_KEY", "COHERE_API_KEY", "RANKRELAY_COHERE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with raises_exactly(AuthenticationError, "no Cohere API key: set RANKRELAY_COHERE_API_KEY (or CO_API_KEY), or "
                                             "pass api_key= in Python"):  # the command line's remedy first
        load_reranker("cohere:rerank-v3.5", base_url=fake_api.url)
    monkeypatch.setenv("CO_API_KEY", API_KEY)
    assert load_reranker("cohere:rerank-v3.5", base_url=fake_api.url).rerank(QUERY, DOCS).indices == expected_order()
    monkeypatch.delenv("CO_API_KEY")
    monkeypatch.setenv("RANKRELAY_COHERE_API_KEY", API_KEY)  # through Settings, a SecretStr
    assert load_reranker("cohere:rerank-v3.5", base_url=fake_api.url).rerank(QUERY, DOCS).indices == expected_order()


def test_slow_replies_time_out_and_the_deadline_holds(fake_api):
    fake_api.faults = [Fault("sleep", seconds=3.0)] * 5
    rr = cohere(fake_api, timeout=0.5, max_attempts=5, deadline=1.2)
    given = []  # the read timeout each attempt was given: what bounds its time, whatever the machine's speed
    call = rr._call
    rr._call = lambda query, texts, timeout: (given.append(timeout), call(query, texts, timeout))[1]
    with pytest.raises(BackendTimeoutError):
        rr.rerank(QUERY, DOCS)
    assert 2 <= len(given) <= 3 and fake_api.count() == len(given)
    assert all(t <= 0.5 for t in given) and sum(given) <= 1.2 + 1e-9  # the deadline bounds every attempt


def test_retry_after_beyond_the_deadline_gives_up_at_once(fake_api):
    fake_api.faults = [Fault("status", 429, {"Retry-After": "30"})]
    rr, clock = cohere(fake_api, deadline=5.0), FakeClock()
    rr.policy = clock.policy(rr.policy)
    with pytest.raises(RateLimitError) as err:
        rr.rerank(QUERY, DOCS)
    assert clock.waits == [] and fake_api.count() == 1 and err.value.retry_after == 30


def test_connection_reset_is_retried(fake_api):
    fake_api.faults = [Fault("reset")]
    assert cohere(fake_api).rerank(QUERY, DOCS).indices == expected_order()
    assert fake_api.count() == 2


def test_connection_refused_is_unavailable(refused_url):
    rr = load_reranker("cohere:rerank-v3.5", base_url=refused_url, api_key="k", max_attempts=2)
    with pytest.raises(BackendUnavailableError) as err:
        rr.rerank(QUERY, DOCS)
    assert err.value.attempts == 2


@pytest.mark.parametrize("fault", [Fault("malformed"), Fault("indices", indices="duplicate"),
                                   Fault("indices", indices="out_of_range"), Fault("indices", indices="missing")])
def test_malformed_replies_are_errors_not_data(fake_api, fault):
    fake_api.faults = [fault]
    with pytest.raises(BadResponseError):
        cohere(fake_api).rerank(QUERY, DOCS)
    assert fake_api.count() == 1


def test_large_lists_are_chunked_and_merged(fake_api):
    texts = [f"doc {i} " + ("boundary layer " * (i % 3)) + "x " * i for i in range(11)]
    res = cohere(fake_api, chunk_size=4, max_concurrency=2).rerank(QUERY, texts)
    assert fake_api.count() == 3
    assert sorted(len(r["body"]["documents"]) for r in fake_api.requests) == [3, 4, 4]
    assert res.indices == expected_order(texts=texts)
    assert res.info["billed_units"] == {"search_units": 3} and res.info["requests"] == 3


def test_input_errors_send_nothing(fake_api):
    with pytest.raises(EmptyQueryError):
        cohere(fake_api).rerank("  ", DOCS)
    assert cohere(fake_api).rerank(QUERY, []).results == []
    assert fake_api.count() == 0


async def test_async_client_with_retries(fake_api):
    rr = cohere(fake_api)
    fake_api.faults = [Fault("status", 503)]
    res = await rr.arerank(QUERY, DOCS, top_n=3)
    assert res.indices == expected_order()[:3] and fake_api.count() == 2
    batch = await rr.arerank_batch([(QUERY, DOCS), ("cooking", TEXTS)])
    assert batch[1].indices == expected_order("cooking")


def test_rerank_batch(fake_api):
    batch = cohere(fake_api).rerank_batch([(QUERY, DOCS), ("layer cake", TEXTS)])
    assert [b.indices for b in batch] == [expected_order(), expected_order("layer cake")]


def test_a_latency_budget_that_ran_out_sends_nothing_and_is_not_worth_retrying(fake_api):
    import time

    from rankrelay.rerankers.base import within_budget

    rr = cohere(fake_api)
    with within_budget(1.0), pytest.raises(BackendTimeoutError, match="latency budget ran out") as err:
        time.sleep(0.01)  # the budget is spent before the call: nothing is sent
        rr.rerank(QUERY, DOCS)
    assert err.value.retryable is False and err.value.backend == "cohere" and fake_api.count() == 0


def test_describe_names_the_api_address(fake_api):
    assert cohere(fake_api).describe()["base_url"] == fake_api.url
