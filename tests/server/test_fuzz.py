"""Property-based fuzzing of the HTTP API with Schemathesis, from the service's own OpenAPI schema (#25): the real
service on 127.0.0.1, every route, with and without auth; no server error and no answer outside the schema.

Every check runs but ``positive_data_acceptance``: the service refuses some schema-valid requests on purpose
(a blank query, a document object without text, the configured limits), with a 4xx in the error shape."""

import pytest
from hypothesis import HealthCheck, given, settings
from serving import running

pytest.importorskip("fastapi", reason="the server extra is not installed")
schemathesis = pytest.importorskip("schemathesis", reason="the dev extra is not installed")

from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from rankrelay.config import Limits  # noqa: E402
from rankrelay.retrieval.bm25 import BM25Retriever  # noqa: E402
from rankrelay.server.app import create_app  # noqa: E402

KEY = "fuzz-key-0123456789"
CORPUS = [{"id": f"d{i}", "text": t, "metadata": {"n": i}} for i, t in enumerate(
    ["the wing lift and air flow", "paris is the capital of france", "boundary layer separation on the wing",
     "python sort is stable", "cat and dog", "angle of attack and stall"])]
#: examples per route and per app (two apps: with and without auth); the POST routes carry most of them
EXAMPLES = 70


def make_app(keys):
    import tempfile

    pytest.importorskip("bm25s", reason="the retrieval extra is not installed")
    return create_app({"ref": "identity", "rnd": "random:7", "chain": ["random:1", "identity"]},
                      api_keys=keys, allow_unauthenticated=not keys, retriever=BM25Retriever.build(CORPUS),
                      retrieve_k=5, limits=Limits(max_documents=50, max_document_chars=2000, max_query_chars=500,
                                                  max_body_bytes=200_000),
                      experiments={"ab": {"arms": ["ref", "rnd"]}},
                      experiment_store=f"{tempfile.mkdtemp(prefix='rankrelay-fuzz-')}/exp.db")


SCHEMA = schemathesis.openapi.from_dict(make_app(["x-unused-key"]).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@pytest.fixture(scope="module", params=["auth", "no-auth"])
def service(request):
    keys = [KEY] if request.param == "auth" else []
    with running(make_app(keys)) as (url, _):
        yield url, ({"Authorization": f"Bearer {KEY}"} if keys else {})


def test_the_schema_covers_every_route():
    assert sorted(f"{op.method.upper()} {op.path}" for op in OPERATIONS) == [
        "GET /health", "GET /metrics", "GET /ready", "GET /v1/experiments/{name}", "GET /v1/models", "GET /v1/usage",
        "POST /rerank",
        "POST /search", "POST /v1/feedback", "POST /v1/rerank", "POST /v2/rerank"]


def test_no_server_error_and_no_answer_outside_the_schema(service):
    url, headers = service
    sent = {}
    for operation in OPERATIONS:
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case):
            key = f"{case.method} {case.path}"
            sent[key] = sent.get(key, 0) + 1
            served = case.call_and_validate(base_url=url, headers=headers, excluded_checks=[positive_data_acceptance])
            if headers and case.path not in ("/health", "/ready", "/metrics"):  # without credentials: never served
                sent[key] += 1
                response = case.call(base_url=url)
                assert response.status_code == 401 and set(response.json()) == {"message"}
                assert served.status_code != 401

        fuzz()
    assert len(sent) == len(OPERATIONS)
    print(f"schemathesis sent {sum(sent.values())} requests: {sent}")
    # at least 500 requests a run: with and without auth together (the keyed app also checks each without one)
    assert sum(sent.values()) >= (350 if headers else 150), sent
