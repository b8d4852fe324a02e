"""The backend boundary (#25): any failure of a backend is typed, so a chain falls back on it; a chain starts
without a backend that lacks credentials or weights; every failure's message reaches the caller; keys never
reach a message, a file or a log line."""

import logging

import pytest

from rankrelay import load_reranker
from rankrelay.errors import (
    AllBackendsFailedError,
    AuthenticationError,
    BackendFailedError,
    BadResponseError,
    ModelNotFoundError,
)
from rankrelay.rerankers.base import BaseReranker, Scored
from rankrelay.rerankers.compose.fallback import FallbackReranker
from rankrelay.testing import API_KEY, Fault

DOCS = [{"text": "the wing lift", "id": "d0", "metadata": {"k": 0}}, {"text": "paris", "id": "d1"},
        {"text": "wing stall and lift", "id": "d2", "metadata": {"k": 2}}]
BAD_META = [{"id": "x", "results": [{"index": i, "relevance_score": 0.5} for i in range(3)], "meta": "oops"},
            {"id": "x", "results": [{"index": i, "relevance_score": 0.5} for i in range(3)],
             "meta": {"billed_units": [1]}},
            {"id": "x", "results": [{"index": i, "relevance_score": 0.5} for i in range(3)], "usage": "x"}]


@pytest.mark.parametrize("body", BAD_META, ids=["meta-str", "billed-list", "usage-str"])
def test_a_reply_with_wrongly_typed_meta_still_serves_its_scores(fake_api, body):
    fake_api.faults = [Fault("status", 200, body=body)]
    res = load_reranker(f"cohere-http:m@{fake_api.url}", api_key=API_KEY, max_attempts=1).rerank("wing", DOCS)
    assert sorted(r.index for r in res) == [0, 1, 2] and res.info["billed_units"] == {}


@pytest.mark.parametrize("body", BAD_META, ids=["meta-str", "billed-list", "usage-str"])
def test_the_cohere_sdk_reading_a_wrongly_typed_reply_is_typed(fake_api, body):
    pytest.importorskip("cohere")
    fake_api.faults = [Fault("status", 200, body=body)]
    rr = load_reranker("cohere:rerank-v3.5", base_url=fake_api.url, api_key=API_KEY, max_attempts=1)
    try:
        res = rr.rerank("wing", DOCS)
    except BadResponseError:
        return  # the SDK refused to parse it: typed, so a chain moves on
    assert sorted(r.index for r in res) == [0, 1, 2]


class Exploding(BaseReranker):
    """A model whose runtime fails with an exception of its own (a tensor shape bug, say)."""

    name = "exploding"

    def _score_batch(self, queries, documents):
        raise AttributeError("'NoneType' object has no attribute 'logits'")


def test_a_foreign_exception_inside_a_backend_is_a_backend_failed_error():
    with pytest.raises(BackendFailedError, match="AttributeError: 'NoneType'"):
        Exploding().rerank("q", DOCS)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_chain_falls_back_on_a_malformed_reply_and_keeps_every_document(fake_api, asynchronous):
    import asyncio

    fake_api.faults = [Fault("status", 200, body={"results": "oops", "meta": "oops"})]
    chain = FallbackReranker([{"spec": f"cohere-http:m@{fake_api.url}", "api_key": API_KEY, "max_attempts": 1},
                              Exploding(), "identity"])
    res = asyncio.run(chain.arerank("wing", DOCS)) if asynchronous else chain.rerank("wing", DOCS)
    assert res.backend == "identity"
    assert [(r.id, r.metadata) for r in res] == [("d0", {"k": 0}), ("d1", {}), ("d2", {"k": 2})]
    assert [f["error"] for f in res.fallbacks] == ["BadResponseError", "BackendFailedError"]


def test_a_hedged_chain_falls_back_on_a_foreign_exception():
    chain = FallbackReranker([Exploding(), "identity"], hedge_after_ms=10_000)
    assert chain.rerank("q", DOCS).backend == "identity"


def test_all_backends_failed_carries_each_backends_message(refused_url):
    chain = FallbackReranker([{"spec": f"tei:{refused_url}", "max_attempts": 1}, Exploding()])
    with pytest.raises(AllBackendsFailedError) as err:
        chain.rerank("q", DOCS)
    message = str(err.value)
    assert "ConnectError" in message and "'NoneType' object has no attribute 'logits'" in message
    assert [f["message"] for f in err.value.failures][1].endswith("'NoneType' object has no attribute 'logits'")


def test_a_chain_starts_without_the_cohere_key_and_serves_from_the_next(monkeypatch, caplog):
    pytest.importorskip("cohere")
    for name in ("CO_API_KEY", "COHERE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with caplog.at_level(logging.WARNING, logger="rankrelay"):
        chain = load_reranker(["cohere:rerank-v3.5", "identity"])
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "no Cohere API key" in warnings[0].getMessage()
    assert [a["available"] for a in chain.availability()] == [False, True]
    res = chain.rerank("q", DOCS)
    assert res.backend == "identity" and res.fallbacks[0]["error"] == "Unavailable"
    with pytest.raises(AuthenticationError):
        load_reranker(["cohere:rerank-v3.5", "identity"], strict=True)


def test_a_chain_whose_local_weights_are_missing_serves_from_the_next(tmp_path):
    chain = load_reranker([f"cross-encoder:{tmp_path / 'no-such-model'}", "identity"])
    chain.warm_up()
    assert [a["available"] for a in chain.availability()] == [False, True]
    assert chain.rerank("q", DOCS).backend == "identity"
    strict = load_reranker([f"cross-encoder:{tmp_path / 'no-such-model'}", "identity"], strict=True)
    with pytest.raises(ModelNotFoundError):
        strict.warm_up()


def test_an_upstream_error_that_echoes_the_key_never_shows_it(fake_api, caplog):
    key = "sk-live-0123456789abcdef"
    fake_api.api_key = key
    fake_api.faults = [Fault("status", 400, body={"message": f"bad request for key {key}"})]
    chain = FallbackReranker([{"spec": f"cohere-http:m@{fake_api.url}", "api_key": key, "max_attempts": 1},
                              "identity"])
    with caplog.at_level(logging.DEBUG):
        res = chain.rerank("q", DOCS)
    assert key not in res.fallbacks[0]["message"] and "***" in res.fallbacks[0]["message"]
    assert not [r for r in caplog.records if key in r.getMessage()]


def test_a_dummy_key_does_not_refuse_every_llm_prompt(fake_chat):
    pytest.importorskip("openai")
    for key in ("k", "x", "none"):
        fake_chat.api_key = key  # a local server that takes any dummy key
        rr = load_reranker(f"llm:m@{fake_chat.url}/v1", api_key=key)
        assert rr.rerank("wing", ["wing lift", "paris"]).results


class _Count(BaseReranker):
    name = "count"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def _score_batch(self, queries, documents):
        self.calls += 1
        return [Scored([float(len(d.text)) for d in docs]) for docs in documents], {}


def test_a_chain_whose_first_backend_is_unavailable_never_calls_it_again(monkeypatch):
    pytest.importorskip("cohere")
    monkeypatch.delenv("CO_API_KEY", raising=False)
    monkeypatch.delenv("COHERE_API_KEY", raising=False)
    counted = _Count()
    chain = FallbackReranker(["cohere:rerank-v3.5", counted], failure_threshold=1)
    for _ in range(3):
        assert chain.rerank("q", DOCS).backend == "count"
    assert counted.calls == 3 and chain.breakers[0].state == "closed"  # skipped, not a failure
