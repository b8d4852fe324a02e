"""An LLM reranker served by the service: concurrent clients, the dynamic batcher in front of chat calls, and an
upstream 429 passed on."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serving import running

pytest.importorskip("fastapi", reason="the server extra is not installed")

from rankrelay import load_reranker  # noqa: E402
from rankrelay.server.app import Limits, create_app  # noqa: E402
from rankrelay.testing import API_KEY, Fault  # noqa: E402

KEY = "service-key"
DOCS = ["the wing lift and air flow", "paris is the capital of france", "python sort is stable",
        "boundary layer separation on the wing", "cat and dog"]
QUERIES = ["wing lift", "capital of france", "python sort", "boundary layer", "cat", "dog and cat", "air flow",
           "stable sort"]


def test_each_client_gets_the_llm_ranking_of_its_own_query(fake_chat):
    spec = {"spec": f"llm:fake@{fake_chat.base_url}", "api_key": API_KEY, "max_attempts": 1}
    app = create_app({"llm": spec}, api_keys=[KEY], limits=Limits(max_wait_ms=20))
    expected = {q: load_reranker(**spec).rerank(q, DOCS).indices for q in QUERIES}
    fake_chat.requests.clear()
    with running(app) as (url, _):
        def ask(query):
            reply = httpx.post(f"{url}/v2/rerank", headers={"Authorization": f"Bearer {KEY}"},
                               json={"model": "llm", "query": query, "documents": DOCS}, timeout=30)
            return query, reply.status_code, [r["index"] for r in reply.json().get("results", [])]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, QUERIES))
        assert [(q, status, order) for q, status, order in answers] == [(q, 200, expected[q]) for q in QUERIES]
        assert fake_chat.count() == len(QUERIES)  # one window per query, batched or not

        fake_chat.faults = [Fault("status", 429, headers={"Retry-After": "7"})]
        reply = httpx.post(f"{url}/v2/rerank", headers={"Authorization": f"Bearer {KEY}"},
                           json={"model": "llm", "query": "wing", "documents": DOCS}, timeout=30)
        assert reply.status_code == 503 and reply.headers["Retry-After"] == "7"
