"""The service on a real socket, driven by the official cohere SDK and httpx."""

import asyncio
import socket
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")
import uvicorn  # noqa: E402

from rankrelay import load_reranker  # noqa: E402
from rankrelay.server.app import Limits, create_app  # noqa: E402

KEY = "service-key"
DOCS = ["the wing lift and air flow", "paris is the capital of france", "python sort is stable",
        "boundary layer separation on the wing", "cat and dog"]


@pytest.fixture(scope="module")
def service(tiny_ce_path):
    app = create_app({"tiny": f"cross-encoder:{tiny_ce_path}", "ref": "identity"}, api_keys=[KEY],
                     limits=Limits(max_documents=20, max_document_chars=500, max_query_chars=100,
                                   max_body_bytes=20_000, max_wait_ms=20))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield url, app
    server.should_exit = True
    thread.join(10)


def test_cohere_sdk_gets_the_library_ranking(service, tiny_ce_path):
    import cohere

    url, _ = service
    client = cohere.ClientV2(api_key=KEY, base_url=url)
    res = client.rerank(model="tiny", query="why does a wing stall", documents=DOCS, top_n=3)
    expected = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu").rerank("why does a wing stall", DOCS,
                                                                                     top_n=3)
    assert [r.index for r in res.results] == expected.indices
    assert [r.relevance_score for r in res.results] == pytest.approx([r.normalized_score for r in expected])
    assert res.meta.billed_units.search_units == 1


def test_errors_are_cohere_shaped_and_typed_in_the_sdk(service):
    import cohere
    from cohere.errors import BadRequestError, NotFoundError, UnauthorizedError, UnprocessableEntityError

    url, _ = service
    with pytest.raises(UnauthorizedError):
        cohere.ClientV2(api_key="wrong", base_url=url).rerank(model="tiny", query="q", documents=DOCS)
    client = cohere.ClientV2(api_key=KEY, base_url=url)
    with pytest.raises(NotFoundError) as err:
        client.rerank(model="nope", query="q", documents=DOCS)
    assert "available: tiny, ref" in str(err.value.body)
    with pytest.raises(BadRequestError):
        client.rerank(model="tiny", query="   ", documents=DOCS)
    with pytest.raises(UnprocessableEntityError):
        client.rerank(model="tiny", query="q", documents=["x"] * 21)
    with pytest.raises(UnprocessableEntityError):
        client.rerank(model="tiny", query="q" * 101, documents=DOCS)


def test_body_limit_tei_v1_and_health(service):
    url, _ = service
    headers = {"Authorization": f"Bearer {KEY}"}
    big = httpx.post(f"{url}/v2/rerank", headers=headers,
                     json={"model": "tiny", "query": "q", "documents": ["x" * 400] * 60})
    assert big.status_code == 413 and "over the limit" in big.json()["message"]
    tei = httpx.post(f"{url}/rerank", headers=headers, json={"model": "ref", "query": "q", "texts": DOCS,
                                                             "raw_scores": True, "return_text": True})
    assert tei.status_code == 200 and [r["index"] for r in tei.json()] == [0, 1, 2, 3, 4]
    assert tei.json()[0]["text"] == DOCS[0]
    v1 = httpx.post(f"{url}/v1/rerank", headers=headers, json={"model": "ref", "query": "q",
                                                                "documents": [{"text": d} for d in DOCS],
                                                                "return_documents": True, "top_n": 2})
    assert v1.status_code == 200 and v1.json()["results"][1]["document"]["text"] == DOCS[1]
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{url}/ready").json() == {"ready": True}
    assert [m["name"] for m in httpx.get(f"{url}/v1/models", headers=headers).json()["models"]] == ["tiny", "ref"]


def test_dynamic_batching_never_mixes_requests(service, tiny_ce_path):
    url, app = service
    local = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    requests = [(f"query number {i} about the wing", [DOCS[(i + j) % 5] + f" {i}" for j in range(4)])
                for i in range(50)]

    async def main():
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
            return await asyncio.gather(*(client.post(f"{url}/v2/rerank", json={"model": "tiny", "query": q,
                                                                                 "documents": d})
                                          for q, d in requests))

    before = len(app.state.batchers["tiny"].batches)
    replies = asyncio.run(main())
    for (q, d), reply in zip(requests, replies):
        assert reply.status_code == 200
        assert [r["index"] for r in reply.json()["results"]] == local.rerank(q, d).indices
    sizes = app.state.batchers["tiny"].batches[before:]
    assert sum(sizes) == 50 and max(sizes) > 1  # requests shared forward passes
    metrics = httpx.get(f"{url}/metrics").text
    assert 'rankrelay_requests_total{endpoint="/v2/rerank",model="tiny",status="200"}' in metrics
    assert "rankrelay_batch_requests_count" in metrics


def test_graceful_shutdown_finishes_in_flight_requests():
    from rankrelay.rerankers.base import BaseReranker, Scored

    class Slow(BaseReranker):
        name = "slow"

        def _score_batch(self, queries, documents):
            time.sleep(1.0)
            return [Scored([float(len(d.text)) for d in docs]) for docs in documents], {}

    app = create_app({"slow": Slow()}, allow_unauthenticated=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    replies = []
    caller = threading.Thread(target=lambda: replies.append(
        httpx.post(f"{url}/v2/rerank", json={"model": "slow", "query": "q", "documents": ["a", "bbb", "cc"]},
                   timeout=30)))
    caller.start()
    time.sleep(0.3)  # the request is in flight
    server.should_exit = True
    caller.join(20)
    thread.join(20)
    assert replies and replies[0].status_code == 200
    assert [r["index"] for r in replies[0].json()["results"]] == [1, 2, 0]


def test_service_refuses_to_start_without_keys():
    from rankrelay import ConfigError

    with pytest.raises(ConfigError, match="no-auth"):
        create_app({"ref": "identity"})
