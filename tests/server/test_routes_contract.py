"""The routes' contract, called in-process (no server, no model): each field of each reply, the statuses every
typed error maps to, and what a reply says of documents no model scored (what mutation testing found unchecked:
tests/mutation/run.py --only routes). The reranker and the first stage are tables, so every number is known."""

import math

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from rankrelay.errors import (  # noqa: E402
    AuthenticationError,
    BackendTimeoutError,
    BadResponseError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RankRelayError,
    RateLimitError,
    StoreUnavailableError,
)
from rankrelay.rerankers.base import SingleQuery  # noqa: E402
from rankrelay.results import Document, RankedDocument, RerankResult, to_documents  # noqa: E402
from rankrelay.retrieval.base import BaseRetriever  # noqa: E402
from rankrelay.retrieval.pipeline import SearchResult  # noqa: E402
from rankrelay.scoring import sigmoid  # noqa: E402
from rankrelay.server.app import Limits, create_app  # noqa: E402
from rankrelay.server.batching import QueueFullError  # noqa: E402
from rankrelay.server.guards import (  # noqa: E402
    ClientGoneError,
    LimitExceededError,
    UnauthorizedError,
    UnsupportedMediaError,
)
from rankrelay.server.routes import open_paths, paths, search_reply, status_of, tei_scores  # noqa: E402

KEY = "routes-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
#: raw score of a text by its first word (NaN: a latency budget did not reach it); a word not listed scores 0.0
SCORES = {"alpha": 2.0, "beta": -1.0, "gamma": 0.5, "delta": math.nan, "eps": math.nan}
#: what a query starting with "fail:" raises
FAULTS = {"invalid": InvalidInputError("the query says no"), "timeout": BackendTimeoutError("slow", backend="t"),
          "auth": AuthenticationError("upstream says: bad key sk-upstream", backend="t"),
          "limited": RateLimitError("slow down", backend="t", retry_after=2.2),
          "limited-short": RateLimitError("slow down", backend="t", retry_after=0.2),
          "malformed": BadResponseError("half a body", backend="t"), "queue": QueueFullError("full"),
          "bug": ZeroDivisionError("a user's bug"), "stall": TimeoutError("asyncio's own timeout")}


class Table(SingleQuery):
    """Scores from :data:`SCORES`, highest first, unscored (NaN) last in input order; relevance is the sigmoid,
    ``normalized_score`` the rank position (NaN where unscored)."""

    name = "table"
    model = "table-v1"

    def rerank_batch(self, requests, top_n=None, *, budget_ms=None):
        out = []
        for query, documents in requests:
            if query.startswith("fail:"):
                raise FAULTS[query[5:]]
            docs = to_documents(documents)
            scores = [SCORES.get(d.text.split()[0], 0.0) for d in docs]
            scored = sorted((i for i, s in enumerate(scores) if math.isfinite(s)), key=lambda i: (-scores[i], i))
            order = scored + [i for i, s in enumerate(scores) if not math.isfinite(s)]
            by_rank = [1.0 - (r - 1) / len(docs) if math.isfinite(scores[i]) else math.nan
                       for r, i in enumerate(order, start=1)]
            results = [RankedDocument(index=i, text=docs[i].text, score=scores[i], rank=r,
                                      normalized_score=by_rank[r - 1], id=docs[i].id, metadata=docs[i].metadata)
                       for r, i in enumerate(order, start=1)]
            out.append(RerankResult(query, results[:top_n] if top_n else results, "table", self.model,
                                    num_candidates=len(docs), info={"relevance": "sigmoid"}))
        return out

    async def arerank_batch(self, requests, top_n=None, *, budget_ms=None):
        return self.rerank_batch(requests, top_n)


class Words(BaseRetriever):
    """A first stage that scores a document by how many of the query's words it holds."""

    name = "words"

    def __init__(self, docs):
        self.docs = [Document(text, id=f"d{i}", metadata={"n": i}) for i, text in enumerate(docs)]

    def _search(self, queries, k):
        out = []
        for query in queries:
            words = set(query.split())
            scores = [float(len(words & set(d.text.split()))) for d in self.docs]
            order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
            out.append(RerankResult(query, [RankedDocument(index=i, text=self.docs[i].text, score=scores[i], rank=r,
                                                           normalized_score=scores[i], id=self.docs[i].id,
                                                           metadata=self.docs[i].metadata)
                                            for r, i in enumerate(order, start=1)], "words", num_candidates=len(order)))
        return out


CORPUS = ["beta x y", "alpha x", "gamma x y z", "zeta", "delta w"]  # "x y z": first gamma, beta, alpha, zeta


def app(**kw):
    return create_app({"table": Table(), "ref": "identity", "chain": ["cohere", "identity"]}, api_keys=[KEY],
                      limits=kw.pop("limits", Limits(max_documents=5)), **kw)


@pytest.fixture
def client():  # one app per test: mutation testing runs only the tests that built the app under each mutant
    with TestClient(app(retriever=Words(CORPUS), retrieve_k=3), headers=AUTH) as c:
        yield c


@pytest.fixture
def no_index():
    with TestClient(app(), headers=AUTH) as c:
        yield c


DOCS = ["beta", "alpha", "delta", "gamma"]


def test_cohere_v2_answers_each_result_with_its_index_and_sigmoid_relevance_highest_first(client):
    body = client.post("/v2/rerank", json={"query": "q", "documents": DOCS}).json()
    assert [r["index"] for r in body["results"]] == [1, 3, 0, 2]
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx([sigmoid(2.0), sigmoid(0.5),
                                                                             sigmoid(-1.0), 0.0])
    assert all("document" not in r for r in body["results"])
    assert body["meta"] == {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
    assert len(body["id"]) == 36 and body["id"] != client.post("/v2/rerank", json={"query": "q",
                                                                                   "documents": DOCS}).json()["id"]


def test_cohere_relevance_in_rank_mode_is_the_rank_position():
    with TestClient(app(limits=Limits(relevance="rank")), headers=AUTH) as c:
        body = c.post("/v2/rerank", json={"query": "q", "documents": DOCS}).json()
    assert [r["relevance_score"] for r in body["results"]] == [1.0, 0.75, 0.5, 0.25]


def test_cohere_v1_says_version_1_and_returns_documents_when_asked(client):
    body = client.post("/v1/rerank", json={"query": "q", "documents": DOCS, "return_documents": True,
                                           "top_n": 2}).json()
    assert body["meta"]["api_version"] == {"version": "1"}
    assert [(r["index"], r["document"]) for r in body["results"]] == [(1, {"text": "alpha"}), (3, {"text": "gamma"})]


def test_cohere_documents_as_objects_come_back_as_their_text(client):
    body = client.post("/v2/rerank", json={"query": "q", "documents": [{"text": "gamma"}, "alpha"],
                                           "return_documents": True}).json()
    assert [r["document"]["text"] for r in body["results"]] == ["alpha", "gamma"]


def test_a_named_model_serves_and_an_unknown_one_is_404_naming_what_is_served(client):
    ref = client.post("/v2/rerank", json={"model": "ref", "query": "q", "documents": DOCS}).json()
    assert [r["index"] for r in ref["results"]] == [0, 1, 2, 3]
    r = client.post("/v2/rerank", json={"model": "nope", "query": "q", "documents": DOCS})
    assert r.status_code == 404 and "'nope'" in r.json()["message"] and "table, ref, chain" in r.json()["message"]


def test_tei_relevance_is_the_sigmoid_and_an_unscored_document_scores_zero_last(client):
    body = client.post("/rerank", json={"query": "q", "texts": DOCS}).json()
    assert [r["index"] for r in body] == [1, 3, 0, 2]
    assert [r["score"] for r in body] == pytest.approx([sigmoid(2.0), sigmoid(0.5), sigmoid(-1.0), 0.0])
    assert all("text" not in r for r in body)


def test_tei_raw_scores_are_the_models_and_an_unscored_document_gets_the_lowest_minus_one(client):
    body = client.post("/rerank", json={"query": "q", "texts": DOCS, "raw_scores": True, "return_text": True}).json()
    assert [(r["index"], r["score"], r["text"]) for r in body] == [(1, 2.0, "alpha"), (3, 0.5, "gamma"),
                                                                   (0, -1.0, "beta"), (2, -2.0, "delta")]


def test_tei_raw_scores_when_no_document_was_scored_are_minus_one(client):
    body = client.post("/rerank", json={"query": "q", "texts": ["delta", "eps"], "raw_scores": True}).json()
    assert [(r["index"], r["score"]) for r in body] == [(0, -1.0), (1, -1.0)]


def test_tei_scores_keeps_finite_raw_scores_as_they_are():
    res = Table().rerank("q", ["eps", "gamma"])
    assert tei_scores(res, raw=True) == [0.5, -0.5]
    assert tei_scores(res, raw=False) == pytest.approx([sigmoid(0.5), 0.0])


def test_search_reranks_the_first_stage_and_says_each_hits_first_rank(client):
    body = client.post("/search", json={"query": "x y z", "top_n": 2}).json()
    # the service's depth 3 retrieves gamma, beta, alpha; the table puts alpha (third) first
    assert [(h["id"], h["index"], h["rank"], h["first_rank"], h["score"]) for h in body["results"]] == [
        ("d1", 1, 1, 3, 2.0), ("d2", 2, 2, 1, 0.5)]
    assert [h["relevance_score"] for h in body["results"]] == [1.0, pytest.approx(2 / 3)]
    assert body["query"] == "x y z" and body["retriever"] == "words" and body["num_candidates"] == 3
    assert body["served_by"] == "table" and body["fallbacks"] == []
    assert set(body["timings"]) == {"retrieve_ms", "rerank_ms", "total_ms"}
    assert body["results"][0]["document"] == {"text": "alpha x", "metadata": {"n": 1}}


def test_search_takes_the_requests_depth_over_the_services(client):
    body = client.post("/search", json={"query": "x y z", "retrieve_k": 4, "return_documents": False}).json()
    assert body["num_candidates"] == 4 and [h["id"] for h in body["results"]] == ["d1", "d2", "d3", "d0"]
    assert all(h["document"] is None for h in body["results"])


def test_search_without_rerank_is_the_first_stage(client):
    body = client.post("/search", json={"query": "x y z", "rerank": False}).json()
    assert [(h["id"], h["rank"], h["first_rank"]) for h in body["results"]] == [("d2", 1, 1), ("d0", 2, 2),
                                                                               ("d1", 3, 3)]
    assert body["served_by"] == "words"


def test_search_says_a_document_no_model_scored_has_no_score_and_relevance_zero(client):
    body = client.post("/search", json={"query": "w", "retrieve_k": 2}).json()
    assert [(h["id"], h["score"], h["relevance_score"]) for h in body["results"]] == [("d0", -1.0, 1.0),
                                                                                     ("d4", None, 0.0)]


def test_search_through_a_chain_says_which_backend_served_and_which_it_skipped(client):
    body = client.post("/search", json={"query": "x y z", "model": "chain"}).json()
    assert body["served_by"] == "identity" and [f["backend"] for f in body["fallbacks"]] == ["cohere"]


def test_a_search_reply_without_a_first_stage_has_no_first_ranks_and_no_retriever():
    res = Table().rerank("q", ["alpha", "delta"])
    out = SearchResult(res.query, res.results, res.backend, timings={"retrieve_ms": 0.0, "rerank_ms": 1.0,
                                                                     "total_ms": 1.0})
    reply = search_reply(out, with_documents=False)
    assert [(h["first_rank"], h["score"]) for h in reply["results"]] == [(None, 2.0), (None, None)]
    assert reply["retriever"] is None and reply["fallbacks"] == [] and "document" not in reply["results"][0]


def test_search_depth_at_the_document_limit_serves_and_one_over_is_422(client):
    assert client.post("/search", json={"query": "x", "retrieve_k": 5}).status_code == 200
    r = client.post("/search", json={"query": "x", "retrieve_k": 6})
    assert r.status_code == 422 and r.json()["message"] == "retrieve_k 6 is over the limit of 5 documents"


def test_search_checks_the_query_against_the_limits(client):
    r = client.post("/search", json={"query": "   "})
    assert r.status_code == 400 and "query" in r.json()["message"]


def test_search_without_an_index_is_404_saying_how_to_configure_one(no_index):
    r = no_index.post("/search", json={"query": "x"})
    assert r.status_code == 404 and "--index DIR" in r.json()["message"]


@pytest.mark.parametrize(("fault", "status", "message", "retry_after"), [
    ("invalid", 400, "the query says no", None),
    ("timeout", 503, "the model did not answer within 60 s", None),
    ("stall", 503, "the model did not answer within 60 s", None),
    ("auth", 503, "the backend rejected its credentials", None),
    ("limited", 503, "the backend failed (RateLimitError)", "3"),
    ("limited-short", 503, "the backend failed (RateLimitError)", "1"),
    ("malformed", 503, "the backend failed (BadResponseError)", None),
    ("queue", 429, "full", "1"),
    ("bug", 503, "the backend failed (BackendFailedError)", None),
])
def test_each_typed_error_is_its_status_with_the_message_a_client_may_see(client, fault, status, message,
                                                                          retry_after):
    r = client.post("/v2/rerank", json={"query": f"fail:{fault}", "documents": DOCS})
    assert (r.status_code, r.json(), r.headers.get("retry-after")) == (status, {"message": message}, retry_after)


class Limited:
    limits = Limits(request_timeout=2.5)


@pytest.mark.parametrize(("error", "expected"), [
    (UnauthorizedError("no key"), (401, "no key", {"WWW-Authenticate": "Bearer"})),
    (UnsupportedMediaError("json only"), (415, "json only", None)),
    (ClientGoneError("gone"), (499, "gone", None)),
    (NotFoundError("no such experiment"), (404, "no such experiment", None)),
    (ConflictError("already running"), (409, "already running", None)),
    (StoreUnavailableError("store down"), (503, "store down", {"Retry-After": "5"})),
    (LimitExceededError("too many"), (422, "too many", None)),
    (InvalidInputError("empty query"), (400, "empty query", None)),
    (QueueFullError("full"), (429, "full", {"Retry-After": "1"})),
    (TimeoutError(), (503, "the model did not answer within 2.5 s", None)),
    (RateLimitError("x", retry_after=0.0), (503, "the backend failed (RateLimitError)", {"Retry-After": "1"})),
    (RateLimitError("x", retry_after=1.0), (503, "the backend failed (RateLimitError)", {"Retry-After": "1"})),
    (RankRelayError("no wait to pass on"), (503, "the backend failed (RankRelayError)", None)),
])
def test_status_of_maps_each_error_the_handlers_see(error, expected):
    assert status_of(error, Limited()) == expected


def test_too_many_documents_is_422_naming_the_limit(client):
    r = client.post("/v2/rerank", json={"query": "q", "documents": ["a"] * 6})
    assert r.status_code == 422 and "6" in r.json()["message"] and "5" in r.json()["message"]


def test_a_body_that_is_not_json_is_400_saying_so(client):
    r = client.post("/v2/rerank", content=b"{nope", headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["message"]) == (
        400, "the body is not valid JSON: Expecting property name enclosed in double quotes")


def test_an_invalid_field_is_422_naming_its_path_without_body(client):
    r = client.post("/rerank", json={"query": "q", "texts": ["a", 5]})
    assert r.status_code == 422 and r.json()["message"].startswith("invalid request: texts.1: ")
    r = client.post("/v2/rerank", json={"query": "q", "documents": ["a"], "top_n": 0})
    assert r.status_code == 422
    assert r.json()["message"] == "invalid request: top_n: Input should be greater than or equal to 1"
    r = client.post("/v2/rerank", json={"documents": ["a"]})
    assert r.json()["message"] == "invalid request: query: Field required"


def test_a_body_declared_as_another_type_is_415(client):
    r = client.post("/v2/rerank", content=b"q", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "JSON" in r.json()["message"]


def test_an_unknown_path_is_404_and_a_wrong_method_is_405_naming_the_allowed_one(client):
    r = client.get("/nowhere")
    assert (r.status_code, r.json()) == (404, {"message": "Not Found"})
    r = client.get("/v2/rerank")
    assert (r.status_code, r.json(), r.headers["allow"]) == (405, {"message": "Method Not Allowed"}, "POST")


def test_an_http_error_a_route_raises_keeps_its_status_and_headers_and_a_non_text_detail_is_not_echoed():
    from fastapi import HTTPException

    service_app = app()

    @service_app.get("/test-only/conflict")
    async def conflict(detail: str = ""):
        raise HTTPException(409, detail=detail or {"internal": "state"}, headers={"X-Conflict": "yes"})

    with TestClient(service_app, headers=AUTH) as c:
        r = c.get("/test-only/conflict")
        assert (r.status_code, r.json(), r.headers["x-conflict"]) == (409, {"message": "invalid request"}, "yes")
        assert c.get("/test-only/conflict", params={"detail": "taken"}).json() == {"message": "taken"}


def test_ready_is_503_until_the_models_load_then_200_naming_a_chains_unavailable_backend():
    service_app = app()
    before = TestClient(service_app).get("/ready")  # no lifespan: the models have not loaded
    assert before.status_code == 503 and before.json()["ready"] is False
    with TestClient(service_app) as c:
        after = c.get("/ready")
    assert after.status_code == 200 and after.json()["ready"] is True
    (part,) = after.json()["unavailable"]["chain"]
    assert part["backend"] == "cohere" and part["available"] is False
    assert set(after.json()["unavailable"]) == {"chain"}


def test_ready_without_an_unavailable_backend_says_only_ready():
    with TestClient(create_app({"ref": "identity"}, allow_unauthenticated=True)) as c:
        assert c.get("/ready").json() == {"ready": True}


def test_metrics_report_each_batched_models_queue_depth_before_any_request():
    with TestClient(app()) as c:
        text = c.get("/metrics").text
    assert 'rankrelay_queue_depth{model="ref"} 0.0' in text
    assert 'model="table"' not in text.split("rankrelay_queue_depth")[-1]


def test_metrics_count_each_request_under_the_model_that_served_it(client):
    client.post("/v2/rerank", json={"model": "ref", "query": "q", "documents": DOCS})
    client.post("/rerank", json={"query": "q", "texts": DOCS})
    text = client.get("/metrics").text
    assert 'rankrelay_requests_total{endpoint="/v2/rerank",model="ref",status="200"} 1.0' in text
    assert 'rankrelay_requests_total{endpoint="/rerank",model="table",status="200"} 1.0' in text


def test_models_lists_each_served_name_with_its_backend_and_model(client):
    assert client.get("/v1/models").json()["models"][:2] == [
        {"name": "table", "backend": "table", "model": "table-v1", "endpoints": ["rerank"]},
        {"name": "ref", "backend": "identity", "model": None, "endpoints": ["rerank"]}]
    assert [m["name"] for m in client.get("/v1/models").json()["models"]] == ["table", "ref", "chain"]


def test_models_and_the_apis_need_the_key_and_operations_do_not(client):
    assert paths(protected=True) == ["/rerank", "/search", "/v1/experiments/{name}", "/v1/feedback", "/v1/models",
                                      "/v1/rerank", "/v1/usage", "/v2/rerank"]
    assert paths() == ["/health", "/metrics", "/ready", "/rerank", "/search", "/v1/experiments/{name}",
                       "/v1/feedback", "/v1/models", "/v1/rerank", "/v1/usage", "/v2/rerank"]
    assert open_paths() == ["/health", "/metrics", "/ready"]
    bare = {"Authorization": ""}
    assert client.get("/v1/models", headers=bare).status_code == 401
    assert client.get("/health", headers=bare).json() == {"status": "ok"}
