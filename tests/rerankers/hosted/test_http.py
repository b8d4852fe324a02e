"""HTTP rerank APIs (TEI, Jina, Voyage, Infinity, mixedbread, Pinecone, Cohere JSON) over httpx against a real
local server."""

import re
import time

import pytest

from rankrelay import (
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    BadResponseError,
    ConfigError,
    Document,
    RateLimitError,
    load_reranker,
)
from rankrelay.rerankers.hosted.http import HttpReranker, parse_http_spec
from rankrelay.testing import API_KEY, Fault, relevance

QUERY = "boundary layer separation"
TEXTS = ["wing lift at low speed", "boundary layer flow", "separation of the boundary layer", "cooking pasta"]
PROVIDERS = {
    "tei": ("/rerank", "texts"),
    "infinity": ("/rerank", "documents"),
    "jina": ("/v1/rerank", "documents"),
    "voyage": ("/v1/rerank", "documents"),
    "cohere-http": ("/v2/rerank", "documents"),
}


def expected(query=QUERY, texts=TEXTS):
    return sorted(range(len(texts)), key=lambda i: (-relevance(query, texts[i]), i))


def http(provider, api, **options):
    model = None if provider == "tei" else "some-model"
    spec = f"{provider}:{model}@{api.url}" if model else f"{provider}:{api.url}"
    options.setdefault("api_key", API_KEY)
    options.setdefault("timeout", 2.0)
    return load_reranker(spec, **options)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_each_provider_speaks_its_wire_format(fake_api, provider):
    docs = [*TEXTS[:3], Document(TEXTS[3], id="last", metadata={"m": 1})]
    res = http(provider, fake_api).rerank(QUERY, docs)
    assert res.indices == expected() and res.backend == provider
    assert next(r for r in res if r.id == "last").metadata == {"m": 1}
    (req,) = fake_api.requests
    path, field = PROVIDERS[provider]
    assert req["path"] == path and req["body"][field] == TEXTS and req["body"]["query"] == QUERY
    assert req["headers"]["Authorization"] == f"Bearer {API_KEY}"
    if provider == "tei":
        assert req["body"]["raw_scores"] is True and "model" not in req["body"]
    elif provider == "voyage":
        assert req["body"]["top_k"] == 4 and req["body"]["model"] == "some-model"
    else:
        assert req["body"]["top_n"] == 4 and req["body"]["model"] == "some-model"
    assert res.info["request_ids"], "the provider's request id is kept"


@pytest.mark.parametrize("provider", ["tei", "jina"])
async def test_async_client(fake_api, provider):
    rr = http(provider, fake_api)
    fake_api.faults = [Fault("status", 502)]
    res = await rr.arerank(QUERY, TEXTS, top_n=2)
    assert res.indices == expected()[:2] and fake_api.count() == 2
    assert [r["body"].get("model") for r in fake_api.requests] == [rr.model] * 2  # the same body as a sync call


def test_retries_and_typed_errors(fake_api):
    rr = http("tei", fake_api, max_attempts=3)
    fake_api.faults = [Fault("status", 503), Fault("status", 429, {"Retry-After": "0"}), Fault("reset")]
    with pytest.raises(BackendUnavailableError):
        rr.rerank(QUERY, TEXTS)
    assert fake_api.count() == 3
    fake_api.faults = [Fault("status", 429, {"Retry-After": "0"})] * 3
    with pytest.raises(RateLimitError):
        rr.rerank(QUERY, TEXTS)
    fake_api.faults = [Fault("status", 401)]
    with pytest.raises(AuthenticationError):
        rr.rerank(QUERY, TEXTS)
    assert fake_api.count() == 7


def test_http_date_retry_after(fake_api):
    from email.utils import formatdate

    fake_api.faults = [Fault("status", 503, {"Retry-After": formatdate(time.time() + 2, usegmt=True)})]
    res = http("jina", fake_api).rerank(QUERY, TEXTS)
    assert res.indices == expected()
    assert fake_api.requests[1]["time"] - fake_api.requests[0]["time"] >= 0.9  # the date has 1 s resolution: 1 to 2 s


def test_timeout_and_bad_reply(fake_api):
    fake_api.faults = [Fault("sleep", seconds=2.0)]
    with pytest.raises(BackendTimeoutError):
        http("infinity", fake_api, timeout=0.3, max_attempts=1).rerank(QUERY, TEXTS)
    fake_api.faults = [Fault("malformed")]
    with pytest.raises(BadResponseError):
        http("voyage", fake_api).rerank(QUERY, TEXTS)
    fake_api.faults = [Fault("indices", indices="missing")]
    with pytest.raises(BadResponseError, match="unscored"):
        http("cohere-http", fake_api).rerank(QUERY, TEXTS)


@pytest.mark.parametrize(
    "rest, expected_pair",
    [
        ("http://h:8080", (None, "http://h:8080")),
        ("jina-reranker-v2-base-multilingual", ("jina-reranker-v2-base-multilingual", None)),
        ("m@https://x.y", ("m", "https://x.y")),
        ("m@https://gw.example/rerank@v2", ("m", "https://gw.example/rerank@v2")),  # the first @ ends the model
        (None, (None, None)),
    ],
)
def test_spec_forms(rest, expected_pair):
    assert parse_http_spec(rest) == expected_pair


def test_configuration_errors():
    with pytest.raises(ConfigError, match="needs a base URL"):
        load_reranker("tei")
    with pytest.raises(ConfigError, match="needs a model"):
        load_reranker("voyage:https://api.voyageai.com")
    assert load_reranker("jina:m").endpoint == "https://api.jina.ai/v1/rerank"


def test_cohere_key_from_settings_is_not_sent_to_other_providers(fake_api, monkeypatch):
    monkeypatch.setenv("RANKRELAY_COHERE_API_KEY", "cohere-only-secret")
    rr = load_reranker(f"jina:m@{fake_api.url}")
    with pytest.raises(AuthenticationError):
        rr.rerank(QUERY, TEXTS)
    assert "cohere-only-secret" not in str(fake_api.requests[0]["headers"])


def test_mixedbread_speaks_its_wire_format(fake_api):
    res = http("mixedbread", fake_api).rerank(QUERY, TEXTS)
    assert res.indices == expected() and res.backend == "mixedbread"
    (req,) = fake_api.requests
    assert req["path"] == "/v1/reranking" and req["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert req["body"] == {"model": "some-model", "query": QUERY, "input": TEXTS, "top_k": 4, "return_input": False}
    assert res.info["billed_units"] == {"tokens": 10}
    assert load_reranker("mixedbread").model == "mixedbread-ai/mxbai-rerank-large-v2"


def test_pinecone_speaks_its_wire_format_and_takes_100_documents_a_request(fake_api):
    res = http("pinecone", fake_api).rerank(QUERY, TEXTS)
    assert res.indices == expected() and res.backend == "pinecone"
    (req,) = fake_api.requests
    assert req["path"] == "/rerank" and "Authorization" not in req["headers"]
    assert req["headers"]["Api-Key"] == API_KEY and req["headers"]["X-Pinecone-Api-Version"] == "2025-10"
    assert req["body"] == {"model": "some-model", "query": QUERY, "documents": [{"text": t} for t in TEXTS],
                           "top_n": 4, "return_documents": False}
    assert res.info["billed_units"] == {"rerank_units": 1}
    many = [f"doc {i} boundary" if i % 7 else f"doc {i} boundary layer separation" for i in range(150)]
    fake_api.requests.clear()
    res = http("pinecone", fake_api).rerank(QUERY, many)
    assert [len(r["body"]["documents"]) for r in sorted(fake_api.requests, key=lambda r: -len(r["body"]["documents"]))
            ] == [100, 50]
    assert sorted(res.indices) == list(range(150)) and res.info["billed_units"] == {"rerank_units": 2}
    assert set(res.indices[:22]) == {i for i in range(150) if i % 7 == 0}
    with pytest.raises(AuthenticationError, match="401"):
        http("pinecone", fake_api, api_key="wrong").rerank(QUERY, TEXTS)
    assert load_reranker("pinecone").endpoint == "https://api.pinecone.io/rerank"


# -- NVIDIA NIM and vLLM: self-hosted rerank servers -------------------------------------------------------------
def test_nim_asks_with_query_text_and_passages_never_truncating_and_reads_logits(fake_api):
    rr = http("nim", fake_api)
    res = rr.rerank(QUERY, TEXTS)
    assert res.indices == expected() and res.backend == "nim"
    (req,) = fake_api.requests
    assert req["path"] == "/v1/ranking" and req["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert req["body"] == {"model": "some-model", "query": {"text": QUERY}, "passages": [{"text": t} for t in TEXTS],
                           "truncate": "NONE"}  # an over-long passage is the server's error, never a silent cut
    top = res.results[0]
    assert top.score == pytest.approx(relevance(QUERY, TEXTS[top.index]))  # the logit, as answered
    assert rr.relevance == "sigmoid"  # logits: a probability by the sigmoid


def test_vllm_rerank_speaks_cohere_s_shape_and_bills_its_tokens(fake_api):
    res = http("vllm", fake_api).rerank(QUERY, TEXTS)
    assert res.indices == expected() and res.backend == "vllm"
    (req,) = fake_api.requests
    assert req["path"] == "/v1/rerank"
    assert req["body"] == {"query": QUERY, "documents": TEXTS, "top_n": 4, "model": "some-model"}
    assert res.info["request_ids"] and res.info["billed_units"] == {"tokens": 10}


def test_vllm_score_reads_one_score_per_pair_in_input_order(fake_api):
    res = http("vllm-score", fake_api).rerank(QUERY, TEXTS)
    assert res.indices == expected() and res.backend == "vllm-score"
    (req,) = fake_api.requests
    assert req["path"] == "/score" and req["body"] == {"model": "some-model", "text_1": QUERY, "text_2": TEXTS}
    assert [r.score for r in sorted(res, key=lambda r: r.index)] == [relevance(QUERY, t) for t in TEXTS]


@pytest.mark.parametrize("provider", ["nim", "vllm", "vllm-score"])
def test_self_hosted_servers_retry_a_429_and_name_a_malformed_reply(fake_api, provider):
    fake_api.faults = [Fault("status", 429, {"Retry-After": "0"})]
    assert http(provider, fake_api, max_attempts=2).rerank(QUERY, TEXTS).indices == expected()
    assert fake_api.count() == 2
    fake_api.faults = [Fault("malformed")]
    with pytest.raises(BadResponseError, match=f"^{provider}: malformed reply"):
        http(provider, fake_api, max_attempts=1).rerank(QUERY, TEXTS)


@pytest.mark.parametrize(("provider", "example"), [
    ("nim", "nim:nvidia/llama-3.2-nv-rerankqa-1b-v2@http://127.0.0.1:8000"),
    ("vllm", "vllm:BAAI/bge-reranker-v2-m3@http://127.0.0.1:8000")])
def test_a_self_hosted_server_without_a_model_or_url_is_refused_with_an_example(provider, example):
    with pytest.raises(ConfigError, match=f"^{provider} needs a model, e.g. '{re.escape(example)}'$"):
        load_reranker(f"{provider}:http://127.0.0.1:8000")
    with pytest.raises(ConfigError, match=f"^{provider} needs a base URL"):
        load_reranker(f"{provider}:some-model")


@pytest.mark.parametrize(("provider", "kind"), [("jina", "unit"), ("vllm", "unit"), ("nim", "sigmoid"),
                                                 ("tei", "sigmoid")])
def test_the_service_s_relevance_score_is_the_provider_s_own_scale(fake_api, provider, kind):
    from rankrelay.scoring import relevance as relevance_score
    from rankrelay.scoring import sigmoid

    res = http(provider, fake_api).rerank(QUERY, TEXTS)
    own = [min(1.0, max(0.0, r.score)) if kind == "unit" else sigmoid(r.score) for r in res]
    assert relevance_score(res) == pytest.approx(own)
    assert relevance_score(res) != pytest.approx(relevance_score(res, "rank"))  # not the rank position


def test_cohere_s_json_bills_the_search_units_it_reports(fake_api):
    res = http("cohere-http", fake_api).rerank(QUERY, TEXTS)
    assert res.info["billed_units"] == {"search_units": 1}


@pytest.mark.parametrize(("body", "message"), [
    ({"data": [{"index": 0, "relevance_score": 0.5}]}, "no 'results' list in the reply"),
    ([{"index": 0, "relevance_score": 0.5}], "no 'results' list in the reply"),  # a list where an object belongs
    ({"results": [1, 2, 3, 4]}, "reply has index None"),  # rows that are not objects
])
def test_a_reply_of_the_wrong_shape_is_a_bad_response_saying_what_is_wrong(fake_api, body, message):
    fake_api.faults = [Fault("status", 200, body=body)]
    with pytest.raises(BadResponseError, match=re.escape(message)):
        http("jina", fake_api, max_attempts=1).rerank(QUERY, TEXTS)


def test_errors_carry_the_backend_and_the_provider_s_request_id(fake_api):
    rr = http("jina", fake_api, max_attempts=1)
    fake_api.faults = [Fault("status", 400, {"x-request-id": "req-refused"})]
    with pytest.raises(BadRequestError) as refused:
        rr.rerank(QUERY, TEXTS)
    fake_api.faults = [Fault("status", 200, {"x-request-id": "req-garbled"}, body={"oops": True})]
    with pytest.raises(BadResponseError) as garbled:
        rr.rerank(QUERY, TEXTS)
    assert [(e.value.backend, e.value.request_id) for e in (refused, garbled)] == [
        ("jina", "req-refused"), ("jina", "req-garbled")]
    assert str(refused.value).startswith("jina: HTTP 400")


def test_without_a_request_id_header_the_reply_s_own_id_is_kept(fake_api):
    body = {"id": "reply-7", "results": [{"index": i, "relevance_score": 1.0 - i / 10} for i in range(4)]}
    fake_api.faults = [Fault("status", 200, {"x-request-id": None}, body=body)]
    res = http("cohere-http", fake_api).rerank(QUERY, TEXTS)
    assert res.info["request_ids"] == ["reply-7"] and res.indices == [0, 1, 2, 3]


@pytest.mark.parametrize("status", [300, 301, 302])
def test_a_redirect_is_an_error_naming_its_status_never_read_as_scores(fake_api, status):
    body = {"results": [{"index": i, "relevance_score": 0.5} for i in range(4)]}  # what a proxy's page could hold
    fake_api.faults = [Fault("status", status, {"Location": "https://login.example/"}, body=body)]
    with pytest.raises(BadRequestError, match=f"HTTP {status}"):
        http("jina", fake_api, max_attempts=1).rerank(QUERY, TEXTS)


def test_unknown_provider_names_the_known_ones():
    with pytest.raises(ConfigError) as err:
        HttpReranker("nope")
    assert str(err.value).startswith("unknown HTTP provider 'nope'; choose one of cohere-http, tei, jina, voyage, ")


@pytest.mark.parametrize(("url", "endpoint"), [
    ("http://h:8080", "http://h:8080/rerank"),
    ("http://h:8080/", "http://h:8080/rerank"),
    ("https://gw.example/teams/SEARCH-X/", "https://gw.example/teams/SEARCH-X/rerank"),
])
def test_a_base_url_s_trailing_slash_is_dropped_and_nothing_else(url, endpoint):
    assert load_reranker(f"tei:{url}").endpoint == endpoint


def test_the_key_comes_from_the_provider_s_variable_and_without_one_the_public_api_is_unavailable(
        fake_api, monkeypatch):
    for name in ("JINA_API_KEY", "CO_API_KEY", "COHERE_API_KEY", "RANKRELAY_COHERE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert load_reranker("cohere-http:rerank-v3.5").unavailable_reason() == (
        "no cohere-http API key: set CO_API_KEY or COHERE_API_KEY")
    assert load_reranker("jina:m", api_key="given").unavailable_reason() is None
    assert load_reranker(f"jina:m@{fake_api.url}").unavailable_reason() is None  # a server of one's own may be open
    monkeypatch.setenv("JINA_API_KEY", API_KEY)
    assert load_reranker("jina:m").unavailable_reason() is None
    assert load_reranker(f"jina:m@{fake_api.url}").rerank(QUERY, TEXTS).indices == expected()
    assert fake_api.requests[0]["headers"]["Authorization"] == f"Bearer {API_KEY}"


async def test_an_async_call_s_deadline_bounds_its_request(fake_api):
    hold = Fault("hold", seconds=3.0)
    fake_api.faults = [hold]
    rr = http("jina", fake_api, timeout=30.0, max_attempts=1, deadline=0.3)
    try:
        with pytest.raises(BackendTimeoutError):
            await rr.arerank(QUERY, TEXTS)
        assert hold.released is None, "the request gave up while the server still held it"
    finally:
        hold.release.set()


def test_a_server_that_accepts_no_connection_is_given_up_on_at_the_connect_timeout(unaccepting):
    rr = load_reranker(f"jina:m@http://127.0.0.1:{unaccepting}", api_key=API_KEY, timeout=30.0, connect_timeout=0.3,
                       max_attempts=1)
    with pytest.raises(BackendUnavailableError, match="ConnectTimeout"):
        rr.rerank(QUERY, TEXTS)
