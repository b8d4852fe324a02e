"""The service's doors and error contract, replayed as an independent probe found them (#25): auth with empty
keys, lone surrogates, kept-alive connections after a 500, FastAPI's own statuses, TEI under a budget."""

import json
import socket

import httpx
import pytest
from serving import running

pytest.importorskip("fastapi", reason="the server extra is not installed")

from rankrelay.config import Settings  # noqa: E402
from rankrelay.errors import ConfigError  # noqa: E402
from rankrelay.rerankers.base import SingleQuery  # noqa: E402
from rankrelay.server.app import Limits, create_app, create_app_from_settings  # noqa: E402

KEY = "service-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DOCS = ["the wing lift and air flow", "paris is the capital of france", "boundary layer separation on the wing"]
SURROGATE = '"\\ud800"'  # a lone UTF-16 surrogate, as JSON text


@pytest.mark.parametrize("keys", [[""], ["   "], ["real-key", ""]])
def test_an_empty_or_blank_api_key_is_a_config_error_at_start_up(keys):
    with pytest.raises(ConfigError, match="empty or blank"):
        create_app({"m": "identity"}, api_keys=keys)


def test_empty_keys_from_toml_or_environment_refuse_to_start(tmp_path, monkeypatch):
    toml = tmp_path / "rankrelay.toml"
    toml.write_text('[service]\napi_keys = [""]\nmodels = {m = "identity"}\n')
    with pytest.raises(ConfigError, match="empty or blank"):
        create_app_from_settings(Settings.from_file(toml))
    monkeypatch.setenv("RANKRELAY_SERVICE__API_KEYS", '[""]')
    with pytest.raises(ConfigError, match="empty or blank"):
        create_app_from_settings(Settings(), {"m": "identity"})


def test_cli_serve_with_an_unset_key_variable_does_not_start(tmp_path):
    from typer.testing import CliRunner

    from rankrelay.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", "m=identity", "--api-key", ""])
    assert result.exit_code != 0 and "empty or blank" in result.output


@pytest.fixture(scope="module")
def service(tiny_ce_path, tiny_bi_path):
    class Broken(SingleQuery):
        """A user's reranker with a bug of its own."""

        name = "broken"

        def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
            raise ZeroDivisionError("a bug in the user's reranker")

        async def arerank_batch(self, requests, top_n=None, *, budget_ms=None):
            raise ZeroDivisionError("a bug in the user's reranker")

    app = create_app({"ce": f"cross-encoder:{tiny_ce_path}", "bi": f"bi-encoder:{tiny_bi_path}", "ref": "identity",
                      "broken": Broken()},
                     api_keys=[KEY, "clé-ünïcode-key"], limits=Limits(max_documents=20, max_body_bytes=50_000))

    @app.get("/test-only/crash")
    async def crash():  # a route with a bug: what an unexpected error in the service looks like
        raise RuntimeError("boom")

    with running(app) as (url, _):
        yield url


def test_a_request_without_credentials_is_refused(service):
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer  x"},
                    {"Authorization": "Basic " + KEY}):
        r = httpx.post(f"{service}/v2/rerank", headers=headers, json={"query": "q", "documents": DOCS})
        assert r.status_code == 401 and "message" in r.json(), headers


def test_a_non_ascii_key_matches_the_utf8_bytes_a_client_sends(service):
    headers = [(b"Authorization", "Bearer clé-ünïcode-key".encode())]
    r = httpx.post(f"{service}/v2/rerank", headers=headers, json={"model": "ref", "query": "q", "documents": DOCS})
    assert r.status_code == 200


def _post(url, path, body_text):
    return httpx.post(url + path, headers={**AUTH, "Content-Type": "application/json"}, content=body_text.encode())


@pytest.mark.parametrize("model", ["ce", "bi", "ref"])
@pytest.mark.parametrize("where", ["query", "document", "document-object"])
def test_a_lone_surrogate_is_a_client_error_naming_the_field(service, model, where):
    docs = ['"a"', '"b"']
    query = '"q"'
    if where == "query":
        query = SURROGATE
    elif where == "document":
        docs[1] = SURROGATE
    else:
        docs[1] = '{"text": ' + SURROGATE + "}"
    body = f'{{"model": "{model}", "query": {query}, "documents": [{", ".join(docs)}], "return_documents": true}}'
    r = _post(service, "/v2/rerank", body)
    assert r.status_code in (400, 422), r.text
    message = r.json()["message"]
    assert "surrogate" in message and ("query" in message if where == "query" else "documents.1" in message)


def test_tei_and_search_refuse_a_lone_surrogate(service):
    body = '{"model": "ce", "query": "q", "texts": ["a", ' + SURROGATE + '], "return_text": true}'
    r = _post(service, "/rerank", body)
    assert r.status_code == 422 and "texts.1" in r.json()["message"]
    r = _post(service, "/search", '{"query": ' + SURROGATE + "}")
    assert r.status_code == 422 and "query" in r.json()["message"]


def test_a_500_keeps_the_kept_alive_connection_for_the_next_request(service):
    with httpx.Client(headers=AUTH) as client:
        for _ in range(10):
            crash = client.get(f"{service}/test-only/crash")
            assert crash.status_code == 500 and crash.json() == {"message": "internal error"}
            assert crash.headers.get("connection") != "close"
            ok = client.post(f"{service}/v2/rerank", json={"model": "ref", "query": "q", "documents": DOCS})
            assert ok.status_code == 200


def test_a_foreign_exception_of_a_model_is_a_503_not_a_500(service):
    r = httpx.post(f"{service}/v2/rerank", headers=AUTH, json={"model": "broken", "query": "q", "documents": DOCS})
    assert r.status_code == 503 and r.json()["message"] == "the backend failed (BackendFailedError)"


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/nope", 404), ("GET", "/v2/rerank", 405),
                                                        ("DELETE", "/rerank", 405)])
def test_router_statuses_answer_the_cohere_error_shape(service, method, path, status):
    r = httpx.request(method, service + path, headers=AUTH)
    assert r.status_code == status and set(r.json()) == {"message"}


def test_invalid_utf8_and_deep_json_are_400_with_a_message(service):
    bad = httpx.post(f"{service}/v2/rerank", headers={**AUTH, "Content-Type": "application/json"},
                     content=b'{"query": "\xff\xfe", "documents": ["a"]}')
    assert bad.status_code in (400, 422) and set(bad.json()) == {"message"}
    deep = httpx.post(f"{service}/v2/rerank", headers={**AUTH, "Content-Type": "application/json"},
                      content=b"[" * 20_000 + b"]" * 20_000)
    assert deep.status_code in (400, 422) and set(deep.json()) == {"message"}


def test_a_body_declared_as_not_json_is_415(service):
    r = httpx.post(f"{service}/v2/rerank", headers={**AUTH, "Content-Type": "text/plain"},
                   content=json.dumps({"query": "q", "documents": DOCS}))
    assert r.status_code == 415 and "JSON" in r.json()["message"]


def test_a_client_that_sends_half_a_request_leaves_the_service_up(service):
    host, port = service.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"query\"")
    assert httpx.get(f"{service}/health").status_code == 200


def test_tei_under_a_budget_gives_every_document_a_number(tiny_ce_path):
    app = create_app({"ce": f"cross-encoder:{tiny_ce_path}"}, allow_unauthenticated=True,
                     limits=Limits(budget_ms=0.001))
    docs = [f"document number {i} about wings" for i in range(30)]
    with running(app) as (url, _):
        for raw in (True, False):
            r = httpx.post(f"{url}/rerank", json={"query": "wing", "texts": docs, "raw_scores": raw})
            assert r.status_code == 200
            rows = r.json()
            assert sorted(row["index"] for row in rows) == list(range(30))
            scores = [row["score"] for row in rows]
            assert all(isinstance(s, float) for s in scores)
            assert scores == sorted(scores, reverse=True)  # the unscored ones last, below every scored one
            if not raw:
                assert all(0.0 <= s <= 1.0 for s in scores)


def test_relevance_score_is_per_document_by_default_and_the_rank_position_when_configured(tiny_ce_path):
    from rankrelay import load_reranker
    from rankrelay.scoring import sigmoid

    docs = ["the wing lift", "paris", "wing stall and lift", "cats"]
    expected = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu").rerank("wing stall", docs)
    for mode, want in (("score", [sigmoid(r.score) for r in expected]), ("rank", [1.0, 0.75, 0.5, 0.25])):
        app = create_app({"ce": f"cross-encoder:{tiny_ce_path}"}, allow_unauthenticated=True,
                         limits=Limits(relevance=mode))
        with running(app) as (url, _):
            rows = httpx.post(f"{url}/v2/rerank", json={"query": "wing stall", "documents": docs}).json()["results"]
        assert [r["index"] for r in rows] == expected.indices
        assert [r["relevance_score"] for r in rows] == pytest.approx(want, abs=1e-5)
