"""Google's Vertex AI Ranking API through google-cloud-discoveryengine against a real local server that speaks its
wire format and checks each request's token (the JWT the SDK signs with the service account's key)."""

import asyncio

import pytest

pytest.importorskip("google.cloud.discoveryengine_v1", reason="the vertex extra is not installed")

from rankrelay import (  # noqa: E402
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
from rankrelay.testing import Fault, relevance  # noqa: E402
from rankrelay.testing.vertex_api import FakeVertexAPI, google_error  # noqa: E402

QUERY = "boundary layer separation"
TEXTS = ["wing lift at low speed", "boundary layer flow", "separation of the boundary layer", "cooking pasta"]
CONFIG = "/v1/projects/demo/locations/global/rankingConfigs/default_ranking_config:rank"


def expected(texts=TEXTS):
    return sorted(range(len(texts)), key=lambda i: (-relevance(QUERY, texts[i]), i))


@pytest.fixture
def google(monkeypatch, tmp_path):
    """Application Default Credentials with nothing in them but what a test sets (no gcloud folder, no metadata
    server, no project in the environment)."""
    for name in ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # (nothing listens: not on Google Cloud)
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    return monkeypatch


@pytest.fixture
def vertex(google, tmp_path):
    api = FakeVertexAPI().start()
    google.setenv("GOOGLE_APPLICATION_CREDENTIALS", api.service_account_file(tmp_path))
    yield api
    api.stop()


def rr(api, spec="vertex", **options):
    options.setdefault("timeout", 2.0)
    return load_reranker(spec, project="demo", endpoint_url=api.url, **options)


def test_rerank_sends_the_documents_as_records_to_the_ranking_config_and_reads_each_score(vertex):
    docs = [*TEXTS[:3], Document(TEXTS[3], id="last", metadata={"m": 1})]
    res = rr(vertex).rerank(QUERY, docs)
    assert res.indices == expected() and res.backend == "vertex"
    assert next(r for r in res if r.id == "last").metadata == {"m": 1}
    (req,) = vertex.requests
    assert req["path"].split("?")[0] == CONFIG and req["headers"]["authorization"].startswith("Bearer ey")
    assert req["body"] == {"model": "semantic-ranker-default@latest", "query": QUERY, "topN": 4,
                           "records": [{"id": str(i), "content": t} for i, t in enumerate(TEXTS)],
                           "ignoreRecordDetailsInResponse": True}
    top = res.results[0]
    assert top.score == pytest.approx(relevance(QUERY, TEXTS[top.index]) / (1 + relevance(QUERY, TEXTS[top.index])))
    assert res.info["billed_units"] == {"queries": 1} and res.info["relevance"] == "unit"


@pytest.mark.parametrize("variable", ["GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT"])
def test_a_model_location_and_config_go_as_given_and_the_project_may_come_from_the_environment(vertex, google,
                                                                                               variable):
    google.setenv(variable, "from-env")
    reranker = load_reranker("vertex:semantic-ranker-fast@latest", location="eu", ranking_config="mine",
                             endpoint_url=vertex.url)
    reranker.rerank(QUERY, TEXTS)
    (req,) = vertex.requests
    assert req["path"].split("?")[0] == "/v1/projects/from-env/locations/eu/rankingConfigs/mine:rank"
    assert req["body"]["model"] == "semantic-ranker-fast@latest"
    assert reranker.describe() | {"project": "from-env", "location": "eu", "endpoint_url": vertex.url} == \
        reranker.describe()


def test_a_long_list_goes_200_records_a_request_and_is_billed_a_query_per_100(vertex):
    texts = [f"{TEXTS[i % 4]} {i}" for i in range(250)]
    res = rr(vertex).rerank(QUERY, texts)
    assert len(res) == 250 and sorted(res.indices) == list(range(250))
    sent = sorted((r["body"]["records"] for r in vertex.requests), key=len)  # (the chunks go concurrently)
    assert [len(records) for records in sent] == [50, 200]
    assert [[r["id"] for r in records][:2] for records in sent] == [["0", "1"]] * 2  # ids within each request
    assert res.info["billed_units"] == {"queries": 3}  # 200 records: two queries; 50: one


def test_missing_credentials_are_an_authentication_error_before_any_request(vertex, google, tmp_path):
    google.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(AuthenticationError) as err:
        rr(vertex, max_attempts=3).rerank(QUERY, TEXTS)
    assert str(err.value).startswith("vertex: no Google credentials (") and str(err.value).endswith(
        "): set GOOGLE_APPLICATION_CREDENTIALS or run 'gcloud auth application-default login'")
    assert (err.value.backend, err.value.retryable, vertex.count()) == ("vertex", False, 0)


def test_a_token_the_server_does_not_know_is_a_401_authentication_error(vertex, google, tmp_path):
    other = FakeVertexAPI()  # another service account's key, never started
    google.setenv("GOOGLE_APPLICATION_CREDENTIALS", other.service_account_file(tmp_path))
    with pytest.raises(AuthenticationError, match=r"^vertex: HTTP 401: Request had invalid authentication"):
        rr(vertex, max_attempts=3).rerank(QUERY, TEXTS)
    assert vertex.count() == 3  # google-auth signs again and retries a 401 twice (its rule); rankrelay adds none


def test_a_rate_limit_keeps_its_retry_after_and_is_retried_by_the_one_policy(vertex):
    vertex.faults = [google_error(429, "Quota exceeded", {"Retry-After": "0"})]
    assert rr(vertex, max_attempts=2).rerank(QUERY, TEXTS).indices == expected()
    assert vertex.count() == 2  # the SDK's own retries are off: the two are ours
    vertex.faults = [google_error(429, "Quota exceeded", {"Retry-After": "7"})]
    with pytest.raises(RateLimitError) as err:
        rr(vertex, max_attempts=1).rerank(QUERY, TEXTS)
    assert str(err.value) == "vertex: HTTP 429: Quota exceeded"
    assert (err.value.backend, err.value.status, err.value.retry_after) == ("vertex", 429, 7.0)


def test_server_errors_timeouts_resets_refusals_and_malformed_replies_are_typed(vertex):
    vertex.faults = [google_error(503, "The service is currently unavailable.")]
    assert rr(vertex, max_attempts=2).rerank(QUERY, TEXTS).indices == expected()
    vertex.faults = [google_error(503, "The service is currently unavailable.")]
    with pytest.raises(BackendUnavailableError):
        rr(vertex, max_attempts=1).rerank(QUERY, TEXTS)
    assert vertex.count() == 3  # the SDK's own retries are off: one attempt is one request
    vertex.faults = [google_error(400, "records: at most 200")]
    with pytest.raises(BadRequestError, match=r"^vertex: HTTP 400: records: at most 200$"):
        rr(vertex, max_attempts=3).rerank(QUERY, TEXTS)
    vertex.faults = [Fault("sleep", seconds=1.5)]
    with pytest.raises(BackendTimeoutError) as late:
        rr(vertex, timeout=0.5, max_attempts=1).rerank(QUERY, TEXTS)
    assert (str(late.value), late.value.backend) == ("vertex: no reply in time (ReadTimeout)", "vertex")
    vertex.faults = [Fault("reset")]
    with pytest.raises(BackendUnavailableError, match=r"^vertex: ConnectionError: ") as reset:
        rr(vertex, max_attempts=1).rerank(QUERY, TEXTS)
    assert reset.value.backend == "vertex"
    vertex.faults = [Fault("malformed")]
    with pytest.raises(BadResponseError) as bad:
        rr(vertex, max_attempts=1).rerank(QUERY, TEXTS)
    assert bad.value.backend == "vertex"
    vertex.faults = [Fault("status", 200, body={"records": [{"id": "9", "score": 0.5}]})]
    with pytest.raises(BadResponseError, match="index 9 for 4 documents"):
        rr(vertex, max_attempts=1).rerank(QUERY, TEXTS)
    vertex.faults = [Fault("status", 200, body={"records": [{"id": "doc-a", "score": 0.5}]})]
    with pytest.raises(BadResponseError, match=r"^vertex: unreadable reply \(ValueError"):
        rr(vertex, max_attempts=1).rerank(QUERY, TEXTS)


@pytest.mark.parametrize(("body", "status"), [({"detail": "Bad Gateway"}, 502), ({"error": {"message": 7}}, 500)])
def test_an_error_reply_not_in_google_s_shape_keeps_the_sdk_s_words(vertex, body, status):
    vertex.faults = [Fault("status", status, body=body)]
    with pytest.raises(BackendUnavailableError) as err:
        rr(vertex, max_attempts=1).rerank(QUERY, TEXTS)
    assert str(err.value).startswith(f"vertex: HTTP {status}: POST {vertex.url}/v1/projects/demo/")


def test_async_calls_and_close(vertex):
    rr(vertex).close()  # never used: nothing to close
    reranker = rr(vertex, timeout=0.5, max_attempts=1)
    res = asyncio.run(reranker.arerank(QUERY, TEXTS, top_n=2))
    assert res.indices == expected()[:2]
    vertex.faults = [Fault("sleep", seconds=1.5)]
    with pytest.raises(BackendTimeoutError):
        asyncio.run(reranker.arerank(QUERY, TEXTS))
    reranker.close()
    assert reranker.rerank(QUERY, TEXTS).indices == expected()  # a closed reranker opens a new client


def test_without_a_project_or_the_sdk_it_says_what_is_missing(google, monkeypatch):
    import sys

    from rankrelay.errors import MissingDependencyError

    with pytest.raises(ConfigError, match=r"^vertex needs a Google Cloud project: project='my-project', or "
                                          r"GOOGLE_CLOUD_PROJECT$"):
        load_reranker("vertex")
    monkeypatch.setitem(sys.modules, "google.cloud.discoveryengine_v1", None)
    with pytest.raises(MissingDependencyError, match=r"^the Vertex AI backend needs the optional package 'google-"
                                                     r"cloud-discoveryengine': pip install 'rankrelay\[vertex\]'$"):
        load_reranker("vertex", project="demo").rerank(QUERY, TEXTS)
