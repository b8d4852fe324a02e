"""The service as a team's gateway: a model that is a pool of deployments (two real local Cohere servers), configured
in the TOML file, called through the Cohere SDK unchanged."""

import pytest
from serving import running

pytest.importorskip("fastapi", reason="the server extra is not installed")
cohere = pytest.importorskip("cohere", reason="the cohere extra is not installed")

from rankrelay.rerankers import load_settings  # noqa: E402
from rankrelay.server.app import create_app_from_settings  # noqa: E402
from rankrelay.testing import API_KEY, FakeRerankAPI, Fault  # noqa: E402

KEY = "gateway-key"
DOCS = ["the wing lift and air flow", "boundary layer separation on the wing", "cat and dog"]


@pytest.fixture
def upstreams():
    servers = [FakeRerankAPI().start(), FakeRerankAPI().start()]
    yield servers
    for s in servers:
        s.stop()


def config(tmp_path, upstreams, state=None, **pool):
    lines = "\n".join(f"{k} = {v}" for k, v in pool.items())
    path = tmp_path / "rankrelay.toml"
    path.write_text(f"""
[service]
api_keys = ["{KEY}"]
{f'state = "{state}"' if state else ""}

[service.models.cohere]
spec = "pool"
{lines}
deployments = [
  {{ spec = "cohere:rerank-v3.5", name = "eu", base_url = "{upstreams[0].url}", api_key_env = "CO_KEY_EU", rpm = 1 }},
  {{ spec = "cohere:rerank-v3.5", name = "us", base_url = "{upstreams[1].url}", api_key_env = "CO_KEY_US", rpm = 1 }},
]
""")
    return load_settings(str(path))


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("CO_KEY_EU", API_KEY)
    monkeypatch.setenv("CO_KEY_US", API_KEY)


def test_a_pooled_model_spreads_requests_under_each_deployments_rpm_then_falls_back(tmp_path, upstreams, keys):
    settings = config(tmp_path, upstreams, routing='"round-robin"', fallback='["identity"]', max_wait_s=0)
    with running(create_app_from_settings(settings)) as (url, _):
        client = cohere.ClientV2(api_key=KEY, base_url=url)
        orders = [[r.index for r in client.rerank(model="cohere", query="wing boundary layer", documents=DOCS).results]
                  for _ in range(3)]
    assert [s.count("/v2/rerank") for s in upstreams] == [1, 1]  # one each: their rpm; the third, the fallback's
    assert orders[:2] == [[1, 0, 2]] * 2 and orders[2] == [0, 1, 2]  # the fallback (identity) keeps input order


def test_a_pool_with_no_deployment_free_and_no_fallback_answers_503_with_when_to_retry(tmp_path, upstreams, keys):
    upstreams[0].faults = [Fault("status", 429, headers={"Retry-After": "40"})]
    settings = config(tmp_path, upstreams, routing='"round-robin"', max_wait_s=0)
    with running(create_app_from_settings(settings)) as (url, _):
        client = cohere.ClientV2(api_key=KEY, base_url=url)
        first = client.rerank(model="cohere", query="wing boundary layer", documents=DOCS)
        with pytest.raises(cohere.core.ApiError) as err:
            client.rerank(model="cohere", query="wing boundary layer", documents=DOCS,
                          request_options={"max_retries": 0})
    assert [r.index for r in first.results] == [1, 0, 2]  # eu answered 429: us served
    assert err.value.status_code == 503 and 40 <= int(err.value.headers["retry-after"]) <= 60
    assert [s.count("/v2/rerank") for s in upstreams] == [1, 1]


def test_a_pool_whose_deployment_key_is_unset_stops_the_service_from_starting(tmp_path, upstreams, monkeypatch):
    from rankrelay import ConfigError

    monkeypatch.setenv("CO_KEY_EU", API_KEY)
    monkeypatch.delenv("CO_KEY_US", raising=False)
    with pytest.raises(ConfigError, match=r"deployments\[1\]\.api_key_env: \$CO_KEY_US is not set"):
        create_app_from_settings(config(tmp_path, upstreams))


def ask(url):
    client = cohere.ClientV2(api_key=KEY, base_url=url)
    return [r.index for r in client.rerank(model="cohere", query="wing boundary layer", documents=DOCS).results]


def test_two_replicas_sharing_redis_keep_each_deployment_under_its_rpm(tmp_path, upstreams, keys, redis_server):
    settings = config(tmp_path, upstreams, state=redis_server.url, fallback='["identity"]', max_wait_s=0)
    with running(create_app_from_settings(settings)) as (one, _), running(create_app_from_settings(settings)) as (
            two, _):
        orders = [ask(url) for url in (one, two, one, two)]
    assert [s.count("/v2/rerank") for s in upstreams] == [1, 1]  # rpm = 1 each, whichever replica asked
    assert sorted(map(tuple, orders)) == [(0, 1, 2), (0, 1, 2), (1, 0, 2), (1, 0, 2)]


def test_ready_and_metrics_say_when_the_shared_state_is_away_and_the_pool_serves_on(tmp_path, upstreams, keys,
                                                                                   redis_server):
    import httpx

    settings = config(tmp_path, upstreams, state=redis_server.url, fallback='["identity"]', max_wait_s=0)
    with running(create_app_from_settings(settings)) as (url, _):
        assert httpx.get(f"{url}/ready").json()["shared_state"] == {"cohere": {"shared": True}}
        redis_server.stop()
        assert ask(url) == [1, 0, 2]  # served by a deployment on this replica's own counts
        ready = httpx.get(f"{url}/ready")
        metrics = httpx.get(f"{url}/metrics").text
    assert ready.status_code == 200  # the replica stays in rotation
    assert ready.json()["shared_state"] == {"cohere": {"shared": False, "problem": (
        f"Redis at redis://127.0.0.1:{redis_server.port}/0 is unreachable: ConnectionError")}}
    assert 'rankrelay_shared_state_up{model="cohere"} 0.0' in metrics


def test_a_service_without_shared_state_says_nothing_of_it(tmp_path, upstreams, keys):
    import httpx

    with running(create_app_from_settings(config(tmp_path, upstreams))) as (url, _):
        assert "shared_state" not in httpx.get(f"{url}/ready").json()
        assert "rankrelay_shared_state_up{" not in httpx.get(f"{url}/metrics").text
