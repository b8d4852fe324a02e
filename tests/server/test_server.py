"""The service on a real socket, driven by the official cohere SDK and httpx."""

import asyncio
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from numerics import assert_ranking_follows
from polling import until, until_async
from serving import running

pytest.importorskip("fastapi", reason="the server extra is not installed")

from rankrelay import load_reranker  # noqa: E402
from rankrelay.rerankers.base import BaseReranker, Scored  # noqa: E402
from rankrelay.scoring import sigmoid  # noqa: E402
from rankrelay.server.app import Limits, create_app  # noqa: E402
from rankrelay.testing import wait_until_ready  # noqa: E402

KEY = "service-key"
DOCS = ["the wing lift and air flow", "paris is the capital of france", "python sort is stable",
        "boundary layer separation on the wing", "cat and dog"]


class Slow(BaseReranker):
    """Scores by length after ``seconds`` of thought."""

    name = "slow"

    def __init__(self, seconds=1.0):
        super().__init__()
        self.seconds = seconds

    def _score_batch(self, queries, documents):
        time.sleep(self.seconds)
        return [Scored([float(len(d.text)) for d in docs]) for docs in documents], {}


class Gated(BaseReranker):
    """Scores by length once the test sets ``release``; ``busy`` is set when a batch reaches the model, ``seen``
    lists the queries it got. The test decides when the model answers: no race with the machine's speed."""

    name = "gated"

    def __init__(self):
        super().__init__()
        self.busy, self.release, self.seen = threading.Event(), threading.Event(), []

    def _score_batch(self, queries, documents):
        self.seen.extend(queries)
        self.busy.set()
        self.release.wait(30)
        return [Scored([float(len(d.text)) for d in docs]) for docs in documents], {}


def refuses_connections(url):
    try:
        httpx.get(f"{url}/health", timeout=1)
    except httpx.TransportError:
        return True
    return False


@pytest.fixture(scope="module")
def service(tiny_ce_path):
    app = create_app({"tiny": f"cross-encoder:{tiny_ce_path}", "ref": "identity"}, api_keys=[KEY],
                     limits=Limits(max_documents=20, max_document_chars=500, max_query_chars=100,
                                   max_body_bytes=20_000, max_wait_ms=20))
    with running(app) as (url, _):
        yield url, app


def test_cohere_sdk_gets_the_library_ranking(service, tiny_ce_path):
    import cohere

    url, _ = service
    client = cohere.ClientV2(api_key=KEY, base_url=url)
    res = client.rerank(model="tiny", query="why does a wing stall", documents=DOCS, top_n=3)
    expected = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu").rerank("why does a wing stall", DOCS)
    scores = {r.index: r.score for r in expected}
    assert_ranking_follows([r.index for r in res.results], [scores[i] for i in range(len(DOCS))])
    # Cohere's contract: a per-document score in [0, 1], here the sigmoid of the cross-encoder's logit
    assert [r.relevance_score for r in res.results] == pytest.approx([sigmoid(r.score) for r in expected[:3]])
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

    def batch_histogram():
        text = httpx.get(f"{url}/metrics").text
        values = dict(line.rsplit(" ", 1) for line in text.splitlines()
                      if line.startswith(("rankrelay_batch_requests_sum", "rankrelay_batch_requests_count")))
        return (float(values.get('rankrelay_batch_requests_sum{model="tiny"}', 0)),
                float(values.get('rankrelay_batch_requests_count{model="tiny"}', 0)))

    sum_before, count_before = batch_histogram()
    replies = asyncio.run(main())
    for (q, d), reply in zip(requests, replies):
        assert reply.status_code == 200
        scores = {r.index: r.score for r in local.rerank(q, d)}
        assert_ranking_follows([r["index"] for r in reply.json()["results"]], [scores[i] for i in range(len(d))])
    total, calls = (a - b for a, b in zip(batch_histogram(), (sum_before, count_before)))
    assert total == 50 and calls < 50  # each request counted once; requests shared forward passes
    metrics = httpx.get(f"{url}/metrics").text
    assert 'rankrelay_requests_total{endpoint="/v2/rerank",model="tiny",status="200"}' in metrics
    assert 'rankrelay_batch_requests_count{model="tiny"}' in metrics


def test_graceful_shutdown_finishes_in_flight_requests():
    model = Gated()
    app = create_app({"slow": model}, allow_unauthenticated=True)
    replies = []
    with running(app, timeout_graceful_shutdown=10) as (url, server):
        caller = threading.Thread(target=lambda: replies.append(
            httpx.post(f"{url}/v2/rerank", json={"model": "slow", "query": "q", "documents": ["a", "bbb", "cc"]},
                       timeout=30)))
        caller.start()
        assert model.busy.wait(10)  # the request is in flight
        server.should_exit = True
        # the server is shutting down, the request still unanswered
        until(lambda: refuses_connections(url), "the listener closed")
        model.release.set()
        caller.join(20)
    assert replies and replies[0].status_code == 200
    assert [r["index"] for r in replies[0].json()["results"]] == [1, 2, 0]


def test_a_request_over_its_time_is_answered_503_and_the_service_goes_on():
    import cohere
    from cohere.errors import ServiceUnavailableError

    model = Gated()
    app = create_app({"slow": model, "ref": "identity"}, api_keys=[KEY], limits=Limits(request_timeout=0.3))
    with running(app) as (url, _):
        client = cohere.ClientV2(api_key=KEY, base_url=url)
        with pytest.raises(ServiceUnavailableError) as err:  # the model answers only once the test lets it
            client.rerank(model="slow", query="q", documents=["a", "bb"], request_options={"max_retries": 0})
        model.release.set()
        assert "did not answer within 0.3 s" in str(err.value.body)
        assert [r.index for r in client.rerank(model="ref", query="q", documents=["a", "bb"]).results] == [0, 1]
        metrics = httpx.get(f"{url}/metrics").text
        assert 'rankrelay_requests_total{endpoint="/v2/rerank",model="slow",status="503"} 1.0' in metrics


def test_service_refuses_to_start_without_keys():
    from rankrelay import ConfigError

    with pytest.raises(ConfigError, match="no-auth"):
        create_app({"ref": "identity"})


@pytest.fixture(scope="module")
def configured(tmp_path_factory, tiny_ce_path, tiny_bi_path):
    """A config file with named models (one a fallback chain whose API is down), keys and an index."""
    from rankrelay.retrieval import BM25Retriever, DenseRetriever
    from rankrelay.testing import refused_url

    root = tmp_path_factory.mktemp("configured")
    DenseRetriever.build(DOCS, model=tiny_bi_path, device="cpu").save(root / "idx" / "dense")
    BM25Retriever.build(DOCS).save(root / "idx" / "bm25")
    down = refused_url()
    config = root / "rankrelay.toml"
    config.write_text(f"""
device = "cpu"
fallback = ["tei:{down}", "identity"]

[service]
api_keys = ["config-key"]
index = "{root / 'idx'}"
retrieve_k = 4
max_documents = 50
keep_alive_s = 1

[service.models]
tiny = "cross-encoder:{tiny_ce_path}"
chain = ["tei:{down}", "cross-encoder:{tiny_ce_path}"]
""")
    return config


def test_service_from_the_config_file_serves_chains_and_search(configured, tiny_ce_path):
    import cohere

    from rankrelay.rerankers import load_settings
    from rankrelay.retrieval import TwoStageSearch, open_index
    from rankrelay.server.app import create_app_from_settings

    app = create_app_from_settings(load_settings(str(configured)))
    local = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    with running(app) as (url, _):
        client = cohere.ClientV2(api_key="config-key", base_url=url)
        res = client.rerank(model="chain", query="why does a wing stall", documents=DOCS)
        assert [r.index for r in res.results] == local.rerank("why does a wing stall", DOCS).indices
        headers = {"Authorization": "Bearer config-key"}
        assert [m["name"] for m in httpx.get(f"{url}/v1/models", headers=headers).json()["models"]] == ["tiny",
                                                                                                        "chain"]
        found = httpx.post(f"{url}/search", headers=headers, json={"query": "wing stall", "model": "tiny",
                                                                   "top_n": 3})
        assert found.status_code == 200, found.text
        data = found.json()
        expected = TwoStageSearch(open_index(configured.parent / "idx", device="cpu"), local, retrieve_k=4,
                                  top_n=3)("wing stall")
        assert [r["id"] for r in data["results"]] == expected.ids
        assert [r["first_rank"] for r in data["results"]] == [m["first_rank"] for m in expected.movement]
        assert data["results"][0]["document"]["text"] == DOCS[int(expected.ids[0])]
        assert data["served_by"] == "cross-encoder" and data["num_candidates"] == 4
        assert set(data["timings"]) == {"retrieve_ms", "rerank_ms", "total_ms"}
        assert data["timings"]["total_ms"] >= data["timings"]["rerank_ms"] > 0
        first = httpx.post(f"{url}/search", headers=headers, json={"query": "wing stall", "rerank": False}).json()
        assert [r["first_rank"] for r in first["results"]] == [1, 2, 3, 4] and first["served_by"] == "hybrid"
        assert httpx.post(f"{url}/search", headers=headers, json={"query": " "}).status_code == 400
        over = httpx.post(f"{url}/search", headers=headers, json={"query": "wing", "retrieve_k": 51})
        assert over.status_code == 422 and "over the limit of 50" in over.json()["message"]
        assert httpx.post(f"{url}/search", json={"query": "wing"}).status_code == 401
        metrics = httpx.get(f"{url}/metrics").text
        assert 'rankrelay_fallbacks_total{backend="tei",model="chain"} 1.0' in metrics
        assert 'rankrelay_requests_total{endpoint="/search",model="tiny",status="200"} 1.0' in metrics


def test_model_options_pick_configured_chains_and_search_needs_an_index(configured, service):
    from rankrelay import ConfigError
    from rankrelay.rerankers import FallbackReranker, load_settings
    from rankrelay.server.app import create_app_from_settings

    settings = load_settings(str(configured))
    app = create_app_from_settings(settings, {"api": "chain", "safe": "fallback", "ref": "identity"}, ["k2"])
    served = app.state.rerankers
    assert list(served) == ["api", "safe", "ref"]  # --model replaces the configured list
    assert isinstance(served["api"], FallbackReranker) and served["api"].backends[1].name == "cross-encoder"
    shared = create_app_from_settings(settings, {"tiny": "tiny", "chain": "chain"}).state.rerankers
    assert shared["chain"].backends[1] is shared["tiny"]  # one copy of the weights
    assert [b.name for b in served["safe"].backends] == ["tei", "identity"]
    with pytest.raises(ConfigError, match="fallback"):
        create_app_from_settings(settings.model_copy(update={"fallback": []}), {"x": "fallback"})
    url, _ = service
    missing = httpx.post(f"{url}/search", headers={"Authorization": f"Bearer {KEY}"}, json={"query": "wing"})
    assert missing.status_code == 404 and "no index is configured" in missing.json()["message"]


@contextmanager
def rankrelay_serve(config, cwd, *options):
    """``rankrelay serve --config config *options`` in a subprocess: yields its port and a dict that holds the
    process's output and exit code once it has been stopped with SIGINT."""
    import os
    import signal
    import subprocess
    import sys

    from rankrelay.testing import refused_url

    port = int(refused_url().rsplit(":", 1)[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANKRELAY_")} | {"RANKRELAY_RUNTIME": "torch"}
    proc = subprocess.Popen([sys.executable, "-m", "rankrelay.cli", "serve", "--config", str(config),
                             "--port", str(port), *options],
                            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stopped = {}
    try:
        ready = wait_until_ready(f"http://127.0.0.1:{port}", 90, proc)
        assert ready and proc.poll() is None, proc.stdout.read()
        yield port, stopped
    finally:
        proc.send_signal(signal.SIGINT)
        stopped["output"] = proc.communicate(timeout=30)[0]
        stopped["returncode"] = proc.returncode


def test_rankrelay_serve_with_a_config_file_holds_an_idle_connection_for_keep_alive_s(configured, tmp_path):
    """One served process (starting one costs ~15 s here) for two behaviours of the config file: its keys and
    the command line's both work and neither is logged; and uvicorn's own 5 s default reset a client's request in
    a 10,000-request soak, so [service] keep_alive_s (1 s in the config file here, 75 s by default) is how long
    the server holds an idle kept-alive connection before closing it."""
    import socket

    import cohere

    with rankrelay_serve(configured, tmp_path, "--model", "main=chain", "--api-key", "cli-key") as (port, stopped):
        for key in ("cli-key", "config-key"):  # keys from the command line and from the file
            client = cohere.ClientV2(api_key=key, base_url=f"http://127.0.0.1:{port}")
            res = client.rerank(model="main", query="why does a wing stall", documents=DOCS, top_n=2)
            assert len(res.results) == 2
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while chunk := sock.recv(4096):  # b"" once the server closes; a timeout (10 s) fails the test
                received += chunk
        assert received.startswith(b"HTTP/1.1 200")
    assert stopped["returncode"] == 0, stopped["output"]
    assert "cli-key" not in stopped["output"] and "config-key" not in stopped["output"]


def test_service_budget_and_score_cache_metrics(tiny_ce_path):
    import cohere

    app = create_app({"tiny": f"cross-encoder:{tiny_ce_path}?device=cpu"}, api_keys=[KEY],
                     limits=Limits(budget_ms=0.001))
    with running(app) as (url, _):
        client = cohere.ClientV2(api_key=KEY, base_url=url)
        res = client.rerank(model="tiny", query="why does a wing stall", documents=DOCS)
        assert [r.index for r in res.results] == list(range(len(DOCS)))  # no time: first-stage order
        metrics = httpx.get(f"{url}/metrics").text
        assert 'rankrelay_budget_partial_total{model="tiny"} 1.0' in metrics
    app = create_app({"tiny": f"cross-encoder:{tiny_ce_path}?device=cpu"}, api_keys=[KEY])
    with running(app) as (url, _):
        client = cohere.ClientV2(api_key=KEY, base_url=url)
        for _ in range(2):
            client.rerank(model="tiny", query="why does a wing stall", documents=DOCS)
        metrics = httpx.get(f"{url}/metrics").text
        assert f'rankrelay_score_cache_total{{model="tiny",result="miss"}} {float(len(DOCS))}' in metrics
        assert f'rankrelay_score_cache_total{{model="tiny",result="hit"}} {float(len(DOCS))}' in metrics


async def test_requests_whose_callers_gave_up_are_not_computed():
    from rankrelay.server.batching import DynamicBatcher

    model, sizes = Gated(), []
    batcher = DynamicBatcher(model, on_batch=sizes.append)
    first = asyncio.ensure_future(batcher.submit("first", ["a"], None))
    assert await asyncio.to_thread(model.busy.wait, 10)  # the model is busy with the first request
    with pytest.raises(TimeoutError):  # this caller gives up while its request waits
        await asyncio.wait_for(batcher.submit("gave up", ["b"], None), 0.05)
    third = asyncio.ensure_future(batcher.submit("third", ["c"], None))
    model.release.set()
    assert (await first).query == "first" and (await third).query == "third"
    await batcher.close()
    assert model.seen == ["first", "third"] and sizes == [1, 1]  # the cancelled request never reached the model


def test_upstream_rate_limit_passes_its_retry_after_on(fake_api):
    from rankrelay.testing import API_KEY as UPSTREAM_KEY
    from rankrelay.testing import Fault

    app = create_app({"api": load_reranker(f"tei:{fake_api.url}", api_key=UPSTREAM_KEY, max_attempts=1)},
                     api_keys=[KEY])
    fake_api.faults = [Fault("status", 429, headers={"Retry-After": "7"})]
    with running(app) as (url, _):
        reply = httpx.post(f"{url}/v2/rerank", headers={"Authorization": f"Bearer {KEY}"},
                           json={"query": "wing", "documents": DOCS})
    assert reply.status_code == 503 and reply.headers["retry-after"] == "7"


def test_metric_labels_never_come_from_user_input(service):
    url, _ = service
    httpx.post(f"{url}/secret/path/{time.time()}", headers={"Authorization": "Bearer wrong"}, json={})
    httpx.post(f"{url}/v2/rerank", headers={"Authorization": f"Bearer {KEY}"},
               json={"model": f"no-such-model-{time.time()}", "query": "q", "documents": ["a"]})
    metrics = httpx.get(f"{url}/metrics").text
    assert "/secret/path" not in metrics and "no-such-model" not in metrics
    # an unknown path needs the key like any other (open paths are the listed exception): 401, labelled "other"
    assert 'rankrelay_requests_total{endpoint="other",model="",status="401"}' in metrics
    assert 'rankrelay_requests_total{endpoint="/v2/rerank",model="",status="404"}' in metrics


def test_ready_means_every_served_model_is_loaded(tiny_ce_path):
    from rankrelay.rerankers.compose.ab_split import SplitReranker

    split = SplitReranker(f"cross-encoder:{tiny_ce_path}", "identity", share_b=0.5)
    app = create_app({"ab": split}, allow_unauthenticated=True)
    with running(app) as (url, _):
        assert httpx.get(f"{url}/ready").json() == {"ready": True}
        assert split.arms["a"]._encoder is not None  # warmed before the service said ready


async def test_ready_is_503_until_the_models_are_loaded_and_after_shutdown(tiny_ce_path):
    app = create_app({"ce": f"cross-encoder:{tiny_ce_path}"}, allow_unauthenticated=True)
    service = app.state.service
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rankrelay") as client:
        before = await client.get("/ready")  # the ASGI transport runs no lifespan: nothing is loaded yet
        assert before.status_code == 503 and before.json() == {"ready": False}
        assert service.rerankers["ce"]._encoder is None
        await service.start()
        after = await client.get("/ready")
        assert after.status_code == 200 and after.json() == {"ready": True}
        await service.stop()
        assert (await client.get("/ready")).status_code == 503


@pytest.mark.parametrize("measure_at_start", [True, False])
async def test_ready_waits_for_a_first_runtime_measurement_or_names_it_while_it_runs(tiny_ce_path, tmp_path,
                                                                                  monkeypatch, measure_at_start):
    """runtime='auto' on a model this machine never measured: by default the service is ready once it is measured
    (/ready names it meanwhile); with measure_at_start = false it is ready at once, serving on torch. The
    measurement itself (a child process, tests/rerankers/local/test_background.py) is held on the test's gate."""
    from rankrelay import Settings
    from rankrelay.rerankers.local import background
    from rankrelay.rerankers.local.auto_runtime import RuntimeChoice

    go = threading.Event()
    monkeypatch.setattr(background.Measurement, "_measure",
                        lambda self: go.wait(60) and RuntimeChoice("torch", "fp32", "measured behind the gate"))
    app = create_app({"ce": f"cross-encoder:{tiny_ce_path}"}, allow_unauthenticated=True,
                     settings=Settings(runtime="auto", cache_dir=str(tmp_path)), measure_at_start=measure_at_start)
    service, model = app.state.service, app.state.service.rerankers["ce"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rankrelay") as client:
        starting = asyncio.ensure_future(service.start())
        measuring = await until_async(lambda: model.measuring, "the measurement started")
        if measure_at_start:
            reply = await client.get("/ready")
            assert (reply.status_code, reply.json()) == (503, {"ready": False, "measuring": ["ce"]})
        else:
            await starting
            reply = await client.get("/ready")
            assert (reply.status_code, reply.json()) == (200, {"ready": True, "measuring": ["ce"]})
            assert model.runtime == "torch" and model.runtime_choice is None
        go.set()
        await starting
        await asyncio.to_thread(model.wait_for_runtime, 60)
        reply = await client.get("/ready")
        assert measuring and (reply.status_code, reply.json()) == (200, {"ready": True})
        assert model.runtime_choice.reason == "measured behind the gate"
        await service.stop()


def test_a_chunked_body_over_the_limit_is_refused(service):
    import json

    url, _ = service
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def chunked(payload: bytes):  # a generator body: sent chunked, with no Content-Length
        for i in range(0, len(payload), 1000):
            yield payload[i:i + 1000]

    big = json.dumps({"model": "ref", "query": "q", "documents": ["x" * 400] * 100}).encode()  # ~40 KB > 20 KB
    reply = httpx.post(f"{url}/v2/rerank", headers=headers, content=chunked(big))
    assert reply.status_code == 413 and "over the limit" in reply.json()["message"]
    small = json.dumps({"model": "ref", "query": "q", "documents": ["a", "b"]}).encode()
    reply = httpx.post(f"{url}/v2/rerank", headers=headers, content=chunked(small))
    assert reply.status_code == 200 and [r["index"] for r in reply.json()["results"]] == [0, 1]
    assert 'rankrelay_requests_total{endpoint="/v2/rerank",model="",status="413"}' in httpx.get(f"{url}/metrics").text


def test_a_full_queue_answers_429_with_retry_after():
    model = Gated()
    app = create_app({"slow": model}, allow_unauthenticated=True, limits=Limits(max_queue=1))

    async def main(url):
        async with httpx.AsyncClient(timeout=30) as client:
            def post(i):
                body = {"query": f"q{i}", "documents": ["a"]}
                return asyncio.ensure_future(client.post(f"{url}/v2/rerank", json=body))

            computing = post(0)
            assert await asyncio.to_thread(model.busy.wait, 10)
            waiting = post(1)
            await asyncio.to_thread(until, lambda: app.state.batchers["slow"].depth == 1, "the queue is full")
            refused = await asyncio.gather(*(post(i) for i in range(2, 6)))
            model.release.set()
            return [await computing, await waiting, *refused]

    with running(app) as (url, _):
        replies = asyncio.run(main(url))
    assert [r.status_code for r in replies] == [200, 200, 429, 429, 429, 429]
    refused = replies[2]
    assert refused.headers["retry-after"] == "1" and "waiting" in refused.json()["message"]


def test_timeouts_under_concurrency_answer_every_request_and_skip_abandoned_work():
    model = Gated()  # busy with the first request until every slow caller has had its answer
    app = create_app({"slow": model, "ref": "identity"}, allow_unauthenticated=True,
                     limits=Limits(request_timeout=0.4, max_batch_docs=1))

    async def main(url):
        async with httpx.AsyncClient(timeout=30) as client:
            def slow_call(i):
                return client.post(f"{url}/v2/rerank", json={"model": "slow", "query": f"q{i}", "documents": ["a"]})

            first = asyncio.ensure_future(slow_call(0))
            assert await asyncio.to_thread(model.busy.wait, 10)  # the first reached the model, which holds it
            slow = [first, *(slow_call(i) for i in range(1, 10))]
            fast = [client.post(f"{url}/v2/rerank", json={"model": "ref", "query": f"f{i}", "documents": ["x", "y"]})
                    for i in range(10)]
            replies = await asyncio.gather(*slow, *fast)
            return replies, len(model.seen)

    with running(app) as (url, _):
        replies, started = asyncio.run(main(url))
        model.release.set()  # the model finishes the one request it started; the rest were dropped
        batched = 'rankrelay_batch_requests_count{model="slow"} 1.0'
        until(lambda: batched in httpx.get(f"{url}/metrics").text, "the batch counted in /metrics")
        metrics = httpx.get(f"{url}/metrics").text
    assert [r.status_code for r in replies[:10]] == [503] * 10
    assert all("did not answer within 0.4 s" in r.json()["message"] for r in replies[:10])
    assert [r.status_code for r in replies[10:]] == [200] * 10  # the other model went on meanwhile
    assert all([x["index"] for x in r.json()["results"]] == [0, 1] for r in replies[10:])
    assert started == 1  # answered at the limit, not when the model got to them (it had begun 1 of 10)
    assert model.seen == ["q0"]  # nine callers had gone: their requests never reached the model
    assert 'rankrelay_requests_total{endpoint="/v2/rerank",model="slow",status="503"} 10.0' in metrics
    assert 'rankrelay_requests_total{endpoint="/v2/rerank",model="ref",status="200"} 10.0' in metrics
    assert 'rankrelay_batch_requests_count{model="slow"} 1.0' in metrics


def test_a_request_whose_client_went_away_is_not_computed_and_counts_as_499():
    model = Gated()
    app = create_app({"slow": model}, allow_unauthenticated=True, limits=Limits(max_batch_docs=1))
    left = 'rankrelay_requests_total{endpoint="/v2/rerank",model="slow",status="499"} 1.0'

    async def main(url):
        async with httpx.AsyncClient(timeout=30) as patient, httpx.AsyncClient(timeout=httpx.Timeout(30, read=0.1)) \
                as impatient:
            first = asyncio.ensure_future(patient.post(f"{url}/v2/rerank", json={"query": "first", "documents": ["a"]}))
            assert await asyncio.to_thread(model.busy.wait, 10)  # the model is busy with the first request
            with pytest.raises(httpx.ReadTimeout):  # this caller hangs up while its request waits
                await impatient.post(f"{url}/v2/rerank", json={"query": "gone", "documents": ["b"]})
            # the service noticed (the 499 is counted as the waiting request is dropped) before the model is free
            await asyncio.to_thread(until, lambda: left in httpx.get(f"{url}/metrics").text, "the 499 counted")
            model.release.set()
            return await first

    with running(app) as (url, _):
        assert asyncio.run(main(url)).status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
    assert model.seen == ["first"]  # the request of the caller who left never reached the model
    assert 'rankrelay_requests_total{endpoint="/v2/rerank",model="slow",status="499"} 1.0' in metrics
    assert 'rankrelay_requests_total{endpoint="/v2/rerank",model="slow",status="200"} 1.0' in metrics


async def test_a_forming_batch_drops_callers_who_left_and_a_group_whose_callers_left_is_not_computed():
    from rankrelay.server.batching import DynamicBatcher

    seen, gate = [], threading.Event()

    class HeldOnSome(Slow):
        def _score_batch(self, queries, documents):
            seen.append(list(queries))
            if queries[0] in ("busy", "group one"):
                gate.wait(10)  # the model is busy until the test lets it go
            return super()._score_batch(queries, documents)

    sizes = []
    batcher = DynamicBatcher(HeldOnSome(seconds=0.0), max_batch_docs=4, max_wait_ms=50, on_batch=sizes.append)
    busy = asyncio.ensure_future(batcher.submit("busy", ["a"], None))
    await until_async(lambda: seen, "the model got the first batch")
    kept = [asyncio.ensure_future(batcher.submit("kept 0", ["d"], None))]
    gone = [asyncio.ensure_future(batcher.submit(f"gone {i}", ["b", "c"], None)) for i in range(60)]
    kept.append(asyncio.ensure_future(batcher.submit("kept 1", ["d"], 1)))
    await asyncio.sleep(0.01)
    for task in gone:
        task.cancel()
    gate.set()
    assert (await busy).query == "busy"
    assert [r.query for r in await asyncio.gather(*kept)] == ["kept 0", "kept 1"]
    # the 60 abandoned requests (120 documents) took no place: both kept ones formed one batch of two groups
    assert seen == [["busy"], ["kept 0"], ["kept 1"]] and sizes == [1, 2]

    gate.clear()
    seen.clear()
    first = asyncio.ensure_future(batcher.submit("group one", ["x"], None))
    second = asyncio.ensure_future(batcher.submit("group two", ["y"], 1))  # one batch, two top_n groups
    await until_async(lambda: seen, "the model got the first batch")
    second.cancel()  # its caller leaves while the first group runs
    gate.set()
    assert (await first).query == "group one"
    await batcher.close()
    assert seen == [["group one"]]  # the group whose callers all left was not computed


async def test_a_failed_shared_batch_is_retried_one_request_at_a_time():
    from rankrelay.errors import BackendError
    from rankrelay.server.batching import DynamicBatcher

    calls, gate = [], threading.Event()

    class Poisoned(Slow):
        def _score_batch(self, queries, documents):
            calls.append(list(queries))
            if queries[0] == "busy":
                gate.wait(10)
            if "poison" in queries:
                raise BackendError("the poisoned request breaks any batch it is in")
            return super()._score_batch(queries, documents)

    batcher = DynamicBatcher(Poisoned(seconds=0.0), max_wait_ms=50)
    busy = asyncio.ensure_future(batcher.submit("busy", ["a"], None))
    while not calls:
        await asyncio.sleep(0.01)
    jobs = [asyncio.ensure_future(batcher.submit(q, ["x", "yy"], None)) for q in ("good 1", "poison", "good 2")]
    await asyncio.sleep(0.01)
    gate.set()
    await busy
    done = await asyncio.gather(*jobs, return_exceptions=True)
    await batcher.close()
    assert done[0].query == "good 1" and done[2].query == "good 2" and isinstance(done[1], BackendError)
    assert calls == [["busy"], ["good 1", "poison", "good 2"], ["good 1"], ["poison"], ["good 2"]]


def test_tei_without_raw_scores_answers_the_relevance_not_the_raw_logit(service, tiny_ce_path):
    from rankrelay.scoring import sigmoid

    url, _ = service
    r = httpx.post(f"{url}/rerank", headers={"Authorization": f"Bearer {KEY}"},
                   json={"model": "tiny", "query": "why does a wing stall", "texts": DOCS})
    raw = httpx.post(f"{url}/rerank", headers={"Authorization": f"Bearer {KEY}"},
                     json={"model": "tiny", "query": "why does a wing stall", "texts": DOCS, "raw_scores": True})
    expected = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache="off").rerank(
        "why does a wing stall", DOCS)
    assert [row["index"] for row in r.json()] == [row["index"] for row in raw.json()] == expected.indices
    assert [row["score"] for row in raw.json()] == pytest.approx([x.score for x in expected], abs=1e-4)
    assert [row["score"] for row in r.json()] == pytest.approx([sigmoid(x.score) for x in expected], abs=1e-4)
    assert [row["score"] for row in r.json()] != pytest.approx([row["score"] for row in raw.json()], abs=1e-3)


def test_an_upstream_auth_failure_is_a_503_that_does_not_pass_the_upstream_message_on(fake_api):
    from rankrelay.testing import Fault

    fake_api.faults = [Fault("status", 401, body={"message": "upstream says: your key sk-upstream is revoked"})]
    app = create_app({"api": f"tei:{fake_api.url}?max_attempts=1"}, api_keys=[KEY])
    with running(app) as (url, _):
        r = httpx.post(f"{url}/v2/rerank", headers={"Authorization": f"Bearer {KEY}"},
                       json={"query": "q", "documents": DOCS})
    assert r.status_code == 503 and r.json() == {"message": "the backend rejected its credentials"}
