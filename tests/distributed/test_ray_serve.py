"""The service on Ray Serve, on a local Ray that the test starts (2 CPUs, tiny models): answers as the
single-process service does, and a replica killed under load loses no request and mixes none up."""

import hashlib
import random
import threading
import time

import httpx
import pytest
from conftest import require
from serving import running

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.ray
pytest.importorskip("ray.serve", reason="the ray extra is not installed")
pytest.importorskip("fastapi", reason="the server extra is not installed")

from rankrelay import ConfigError, load_reranker  # noqa: E402
from rankrelay.config import Limits, Settings  # noqa: E402
from rankrelay.distributed.serve import parse_autoscale, run  # noqa: E402
from rankrelay.server.app import AppPlan, create_app  # noqa: E402
from rankrelay.testing import free_port  # noqa: E402

KEY = "ray-key"
WORDS = "the wing stall angle of attack lift flow boundary layer python sort paris france cat dog air".split()
DOCS = ["the wing lift and air flow", "paris is the capital of france", "python sort is stable",
        "boundary layer separation on the wing", "cat and dog"]


@pytest.fixture(scope="module")
def plan(tiny_ce_path):
    budgeted = {"key_sha256": hashlib.sha256(b"budget-key").hexdigest(), "budget": {"usd": 0.003, "per": "total"}}
    return AppPlan({"tiny": f"cross-encoder:{tiny_ce_path}", "ref": "identity"}, [KEY], False,
                   Limits(max_documents=300, max_wait_ms=5, request_timeout=60), None, "hybrid", 100,
                   Settings(device="cpu", model_prices={"identity": {"search_units": 0.001}},
                            service={"clients": {"budgeted": budgeted}}))


@pytest.fixture(scope="module")
def on_ray(plan):
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # a sandbox without the ports or shared memory Ray needs
        require(False, f"Ray cannot start here: {type(exc).__name__}: {exc}")
    from ray import serve

    port = free_port()
    run(plan, port=port, replicas=2, blocking=False)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def single(plan):
    app = create_app(plan.models, api_keys=plan.api_keys, limits=plan.limits, settings=plan.settings)
    with running(app) as (url, _):
        yield url


def test_the_cohere_sdk_gets_what_the_single_process_service_gives(on_ray, single):
    import cohere

    ray_client, one = cohere.ClientV2(api_key=KEY, base_url=on_ray), cohere.ClientV2(api_key=KEY, base_url=single)
    for model in ("tiny", "ref"):
        for query in ("why does a wing stall", "python sorting"):
            a = ray_client.rerank(model=model, query=query, documents=DOCS, top_n=3)
            b = one.rerank(model=model, query=query, documents=DOCS, top_n=3)
            assert [r.index for r in a.results] == [r.index for r in b.results]
            assert [r.relevance_score for r in a.results] == pytest.approx([r.relevance_score for r in b.results])
            assert a.meta.billed_units.search_units == b.meta.billed_units.search_units


def test_same_auth_limits_and_errors(on_ray, single):
    cases = [({}, {"model": "ref", "query": "q", "documents": ["a"]}),
             ({"Authorization": f"Bearer {KEY}"}, {"model": "nope", "query": "q", "documents": ["a"]}),
             ({"Authorization": f"Bearer {KEY}"}, {"model": "ref", "query": " ", "documents": ["a"]}),
             ({"Authorization": f"Bearer {KEY}"}, {"model": "ref", "query": "q", "documents": ["a"] * 301}),
             ({"Authorization": f"Bearer {KEY}"}, {"model": "ref", "query": "q", "documents": []})]
    for headers, body in cases:
        a = httpx.post(f"{on_ray}/v2/rerank", json=body, headers=headers, timeout=30)
        b = httpx.post(f"{single}/v2/rerank", json=body, headers=headers, timeout=30)
        same = [{k: v for k, v in r.json().items() if k != "id"} for r in (a, b)]  # ids are per response
        assert a.status_code == b.status_code and same[0] == same[1]
    assert httpx.get(f"{on_ray}/ready", timeout=30).json() == {"ready": True}
    metrics = httpx.get(f"{on_ray}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).text
    assert 'rankrelay_requests_total{endpoint="/v2/rerank",model="",status="404"} 1.0' in metrics


def test_a_replica_killed_under_load_loses_nothing_and_mixes_nothing(on_ray, tiny_ce_path):
    from ray import serve

    reference = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    sent: list[tuple[str, list[str]]] = []
    answers: list[tuple[int, httpx.Response | BaseException]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 4.0

    def client(seed: int) -> None:  # requests back to back for 4 s: some are in flight when the replica dies
        rng = random.Random(seed)
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < stop_at:
                query = " ".join(rng.choices(WORDS, k=3))
                docs = [" ".join(rng.choices(WORDS, k=rng.randint(3, 12))) + f" {seed}-{k}" for k in range(200)]
                with lock:
                    sent.append((query, docs))
                    i = len(sent) - 1
                try:
                    reply: httpx.Response | BaseException = http.post(
                        f"{on_ray}/v2/rerank", json={"model": "tiny", "query": query, "documents": docs},
                        headers={"Authorization": f"Bearer {KEY}"})
                except BaseException as exc:  # a lost request shows up here
                    reply = exc
                with lock:
                    answers.append((i, reply))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    victim = next(n for n in ray.util.list_named_actors(all_namespaces=True)
                  if "SERVE_REPLICA" in n["name"] and "models" in n["name"])
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    for t in threads:
        t.join(180)
    assert len(answers) == len(sent) > 16 and not [a for _, a in answers if isinstance(a, BaseException)]
    statuses = [a.status_code for _, a in answers]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= len(sent) // 2, statuses
    for i, answer in answers:
        if answer.status_code != 200:
            assert answer.headers.get("retry-after")
            continue
        query, docs = sent[i]  # each answer is its own request's ranking
        want = {r.index: r.score for r in reference.rerank(query, docs).results}
        got = [r["index"] for r in answer.json()["results"]]
        assert sorted(got) == list(range(len(docs)))
        assert all(want[a] >= want[b] - 1e-3 for a, b in zip(got, got[1:]))
    deadline = time.monotonic() + 90  # the killed replica is replaced
    while time.monotonic() < deadline:
        status = serve.status().applications["rankrelay"].deployments["models"]
        if status.replica_states.get("RUNNING", 0) == 2 and status.status == "HEALTHY":
            break
        time.sleep(1)
    else:
        pytest.fail(f"the models deployment did not get back to 2 running replicas: {status}")


def test_autoscale_option():
    assert parse_autoscale("2,5") == (2, 5)
    for bad in ("5,2", "0,3", "three", "1"):
        with pytest.raises(ConfigError, match="--autoscale"):
            parse_autoscale(bad)


class Gone:
    """A Ray Serve handle whose replicas are all gone: every call raises Ray's ActorDiedError."""

    def __init__(self, then=None):
        self.calls, self.then = 0, then
        self.rerank = self

    def remote(self, *args):
        self.calls += 1
        if self.then is not None and self.calls == 2:
            return self.then(*args)
        raise ray.exceptions.ActorDiedError()


def test_the_gateway_tries_another_replica_then_answers_503():
    import asyncio

    from rankrelay import BackendUnavailableError
    from rankrelay.distributed import serve as ray_serve

    model = ray_serve.RemoteModel(Gone(), "tiny")
    with pytest.raises(BackendUnavailableError, match=r"no replica of 'tiny' answered after 3 tries") as err:
        asyncio.run(model.arerank("q", ["a"]))
    assert model.handle.calls == ray_serve.ATTEMPTS and err.value.retry_after == 1.0

    async def answer(name, query, docs, top_n):
        return load_reranker("identity").rerank(query, docs, top_n=top_n)

    model = ray_serve.RemoteModel(Gone(then=lambda *a: answer(*a)), "ref")
    assert asyncio.run(model.arerank("q", ["a", "b"])).indices == [0, 1] and model.handle.calls == 2


def test_a_clients_budget_and_usage_hold_on_ray_as_in_one_process(on_ray):
    statuses = [httpx.post(f"{on_ray}/v2/rerank", json={"model": "ref", "query": "q", "documents": ["a", "b"]},
                           headers={"Authorization": "Bearer budget-key"}, timeout=30).status_code for _ in range(4)]
    usage = httpx.get(f"{on_ray}/v1/usage", params={"client": "budgeted"}, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=30).json()
    assert statuses == [200, 200, 200, 429]  # $0.001 a search (the identity model priced here), $0.003 in total
    assert usage["rows"] == [{"client": "budgeted", "model": "ref", "deployment": "", "requests": 3, "documents": 6,
                              "billed_units": {"search_units": 3.0}, "cost_usd": 0.003}]
    assert usage["budgets"] == {"budgeted": {"usd": 0.003, "per": "total", "spent_usd": 0.003}}

