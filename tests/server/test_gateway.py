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


def test_a_chains_breaker_one_replica_opens_keeps_every_replica_off_the_failing_backend(tmp_path, upstreams,
                                                                                        monkeypatch, redis_server):
    import httpx

    monkeypatch.setenv("CO_API_KEY", API_KEY)
    upstreams[0].faults = [Fault("status", 500)] * 50  # every attempt fails, retries included
    path = tmp_path / "chain.toml"
    path.write_text(f"""
[service]
api_keys = ["{KEY}"]
state = "{redis_server.url}"

[service.models]
cohere = [{{ spec = "cohere:rerank-v3.5", base_url = "{upstreams[0].url}" }}, "identity"]
""")
    settings = load_settings(str(path))
    with running(create_app_from_settings(settings)) as (one, _), running(create_app_from_settings(settings)) as (
            two, _):
        assert [ask(one) for _ in range(3)] == [[0, 1, 2]] * 3  # three failures: identity answered, the breaker opens
        sent = upstreams[0].count("/v2/rerank")
        assert ask(two) == [0, 1, 2]
        ready = httpx.get(f"{two}/ready").json()
    assert ready["shared_state"] == {"cohere": {"shared": True}}
    assert upstreams[0].count("/v2/rerank") == sent  # the other replica never called the failing API


def test_a_service_without_shared_state_says_nothing_of_it(tmp_path, upstreams, keys):
    import httpx

    with running(create_app_from_settings(config(tmp_path, upstreams))) as (url, _):
        assert "shared_state" not in httpx.get(f"{url}/ready").json()
        assert "rankrelay_shared_state_up{" not in httpx.get(f"{url}/metrics").text


def client_config(tmp_path, state=None, **clients):
    """Two local models and the given clients, as TOML."""
    tables = "".join(f"\n[service.clients.{name}]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items())
                     for name, fields in clients.items())
    path = tmp_path / "clients.toml"
    path.write_text(f"""
[service]
api_keys = ["{KEY}"]
{f'state = "{state}"' if state else ""}
[service.models]
fast = "identity"
shuffled = "random"
{tables}""")
    return load_settings(str(path))


def sha(key):
    import hashlib

    return f'"{hashlib.sha256(key.encode()).hexdigest()}"'


def call(url, key, model="fast", **options):
    import httpx

    return httpx.post(f"{url}/v2/rerank", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "query": "wing lift", "documents": DOCS}, **options)


def test_a_client_sees_only_its_models_and_the_admin_keys_see_every_one(tmp_path, monkeypatch):
    import httpx

    monkeypatch.setenv("SEARCH_KEY_NEW", "search-key-2")
    settings = client_config(tmp_path, search={"key_sha256": sha("search-key-1"), "key_env": '"SEARCH_KEY_NEW"',
                                                "models": '["fast"]'})
    with running(create_app_from_settings(settings)) as (url, _):
        answers = [call(url, key).status_code for key in ("search-key-1", "search-key-2", KEY)]
        refused = call(url, "search-key-1", model="shuffled")
        admin = call(url, KEY, model="shuffled")
        listed = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer search-key-1"}).json()
    assert answers == [200, 200, 200]  # both keys of the client (one being rotated in), and the admin's
    assert refused.status_code == 404 and refused.json()["message"] == (
        "model 'shuffled' is not served here; available: fast")  # as a model that is not served: others unnamed
    assert admin.status_code == 200
    assert [m["name"] for m in listed["models"]] == ["fast"]


def test_a_wrong_key_is_refused_without_naming_any_client(tmp_path):
    settings = client_config(tmp_path, search={"key_sha256": sha("search-key-1")})
    with running(create_app_from_settings(settings)) as (url, _):
        reply = call(url, "search-key-")  # a prefix of a client's key
    assert reply.status_code == 401 and reply.json() == {"message": "invalid api token"}


def test_a_client_over_its_rpm_is_answered_429_with_when_to_retry_and_others_are_not(tmp_path):
    settings = client_config(tmp_path, search={"key_sha256": sha("search-key-1"), "rpm": 2},
                             batch={"key_sha256": sha("batch-key-1")})
    with running(create_app_from_settings(settings)) as (url, _):
        statuses = [call(url, "search-key-1").status_code for _ in range(3)]
        over = call(url, "search-key-1")
        other = call(url, "batch-key-1")
    assert statuses == [200, 200, 429] and over.status_code == 429
    assert over.json()["message"] == "client 'search' is over its 2 requests a minute"
    assert 1 <= int(over.headers["retry-after"]) <= 60 and other.status_code == 200


def test_replicas_sharing_redis_count_a_clients_requests_together(tmp_path, redis_server):
    settings = client_config(tmp_path, state=redis_server.url, search={"key_sha256": sha("search-key-1"), "rpm": 3})
    with running(create_app_from_settings(settings)) as (one, _), running(create_app_from_settings(settings)) as (
            two, _):
        statuses = [call(url, "search-key-1").status_code for url in (one, two, one, two, one)]
    assert statuses == [200, 200, 200, 429, 429]


@pytest.mark.parametrize(("client", "message"), [
    ({"key_sha256": sha("k"), "models": '["fast", "nope"]'}, r"clients.bad.models: 'nope' not served here; served: "
                                                              r"fast, shuffled$"),
    ({"key_sha256": sha("k"), "models": '["no", "nope"]'}, r"clients.bad.models: 'no', 'nope' not served here"),
    ({"models": '["fast"]'}, r"clients.bad: no key \(key_sha256 or key_env\)"),
    ({"key_sha256": '"abc"'}, r"clients.bad.key_sha256\[0\]: not a hex SHA-256"),
    ({"key_env": '"RANKRELAY_UNSET_KEY"'}, r"clients.bad.key_env: \$RANKRELAY_UNSET_KEY is unset or blank"),
    ({"key_sha256": sha("shared-key")}, r"clients.bad: one of its keys is also client 'good''s: a key names one "
                                        r"client$"),
    ({"key_sha256": sha("k"), "budget": "{ usd = 1 }"}, r"clients.bad.budget: none of its models is priced \(fast, "
                                                        r"shuffled\): a budget counts dollars of priced models"),
    ({"key_sha256": sha("k"), "rpm": 0}, r"service.clients.bad.rpm: Input should be greater than or equal to 1"),
])
def test_a_client_that_cannot_work_stops_the_start_naming_the_field(tmp_path, client, message):
    from rankrelay import ConfigError

    with pytest.raises(ConfigError, match=message):
        create_app_from_settings(client_config(tmp_path, good={"key_sha256": sha("shared-key")}, bad=client))


def test_a_client_cannot_take_the_admin_clients_name(tmp_path):
    from rankrelay import ConfigError

    with pytest.raises(ConfigError, match="clients.admin: the name is the api_keys'"):
        create_app_from_settings(client_config(tmp_path, admin={"key_sha256": sha("k")}))


def test_clients_given_to_create_app_are_checked_as_the_file_s_are():
    from rankrelay import ConfigError
    from rankrelay.server.app import create_app

    with pytest.raises(ConfigError, match=r"^clients.app.rpm: Input should be greater than or equal to 1$"):
        create_app({"fast": "identity"}, clients={"app": {"key_sha256": sha("k").strip('"'), "rpm": 0}})
    with pytest.raises(ConfigError, match=r"^clients.app.key_sha256.1: Input should be a valid string$"):
        create_app({"fast": "identity"}, clients={"app": {"key_sha256": [sha("k").strip('"'), 7]}})
    with pytest.raises(ConfigError, match=r"^clients.app.key: Extra inputs are not permitted$"):
        create_app({"fast": "identity"}, clients={"app": {"key": "plain-key"}})  # a key itself is never taken
    app = create_app({"fast": "identity"}, clients={"app": {"key_sha256": sha("k").strip('"')}})  # no api_keys
    assert app.state.service.pick(None) == "fast"


def test_a_client_key_with_whitespace_around_it_stops_the_start(tmp_path, monkeypatch):
    from rankrelay import ConfigError

    monkeypatch.setenv("PADDED_KEY", " search-key ")
    with pytest.raises(ConfigError, match=r"^clients.bad.key_env: \$PADDED_KEY has leading or trailing whitespace, "
                                          r"which no Authorization header can carry$"):
        create_app_from_settings(client_config(tmp_path, bad={"key_env": '"PADDED_KEY"'}))


def test_a_clients_budget_keeps_its_period():
    from rankrelay.server.clients import clients_from_settings
    from rankrelay.server.usage import Budget

    (app,) = clients_from_settings({"app": {"key_sha256": sha("k").strip('"'), "budget": {"usd": 5, "per": "month"}}},
                                   served=["fast"])
    assert app.budget == Budget(5.0, "month")



def test_serving_the_fallback_chain_by_name_needs_one_in_the_settings(tmp_path):
    from rankrelay import ConfigError
    from rankrelay.server.app import plan_from_settings

    with pytest.raises(ConfigError, match=r"^--model NAME=fallback needs a 'fallback' chain in the settings$"):
        plan_from_settings(client_config(tmp_path), models={"chain": "fallback"})
