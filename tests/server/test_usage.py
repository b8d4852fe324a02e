"""Usage and budgets of the service's clients: a real local Cohere server behind a priced model, the Cohere SDK
and plain HTTP as the clients, Redis (a real server) shared by two replicas."""

import hashlib

import pytest
from serving import running

pytest.importorskip("fastapi", reason="the server extra is not installed")
cohere = pytest.importorskip("cohere", reason="the cohere extra is not installed")
httpx = pytest.importorskip("httpx", reason="the server extra is not installed")

from rankrelay import ConfigError  # noqa: E402
from rankrelay.rerankers import load_settings  # noqa: E402
from rankrelay.server.app import create_app, create_app_from_settings  # noqa: E402
from rankrelay.testing import API_KEY, FakeRerankAPI, Fault  # noqa: E402

ADMIN_KEY = "admin-key"
DOCS = ["the wing lift and air flow", "boundary layer separation on the wing", "cat and dog"]


def sha(key):
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def upstream(monkeypatch):
    monkeypatch.setenv("CO_API_KEY", API_KEY)
    server = FakeRerankAPI().start()
    yield server
    server.stop()


def settings(tmp_path, upstream, budget="{ usd = 0.01 }", state=None, chain=False, extra="", after=""):
    """A priced Cohere model (the list price: $2 per 1,000 searches), a local one, and two clients."""
    cohere_model = f'{{ spec = "cohere:rerank-v3.5", base_url = "{upstream.url}" }}'
    path = tmp_path / "rankrelay.toml"
    path.write_text(f"""
{extra}
[service]
api_keys = ["{ADMIN_KEY}"]
{f'state = "{state}"' if state else ""}

[service.models]
cohere = {f'[{cohere_model}, "identity"]' if chain else cohere_model}
local = "identity"

[service.clients.search]
key_sha256 = "{sha("search-key")}"
budget = {budget}

[service.clients.batch]
key_sha256 = "{sha("batch-key")}"
{after}
""")
    return load_settings(str(path))


def rerank(url, key, model="cohere", documents=DOCS):
    return httpx.post(f"{url}/v2/rerank", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "query": "wing lift", "documents": documents})


def usage(url, key, **params):
    return httpx.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {key}"}, params=params)


def test_a_client_with_a_one_cent_budget_gets_exactly_five_searches_then_a_429_naming_it(tmp_path, upstream):
    with running(create_app_from_settings(settings(tmp_path, upstream))) as (url, _):
        client = cohere.ClientV2(api_key="search-key", base_url=url)
        for _ in range(5):
            client.rerank(model="cohere", query="wing lift", documents=DOCS)
        with pytest.raises(cohere.errors.TooManyRequestsError):  # no retry: the SDK would wait out Retry-After
            client.rerank(model="cohere", query="wing lift", documents=DOCS, request_options={"max_retries": 0})
        refused = rerank(url, "search-key")
        local = rerank(url, "search-key", model="local")
        other = rerank(url, "batch-key")
        report = usage(url, ADMIN_KEY).json()
    assert upstream.count("/v2/rerank") == 6  # the client's five, and the other client's one
    assert refused.status_code == 429 and refused.json()["message"] == (
        "client 'search' is over its budget of $0.01 a day ($0.01 spent; this request could cost $0.002)")
    assert 1 <= int(refused.headers["retry-after"]) <= 86_400  # until the UTC day turns
    assert local.status_code == 200 and other.status_code == 200  # an unpriced model, another client
    rows = {(r["client"], r["model"]): r for r in report["rows"]}
    assert rows["search", "cohere"] == {"client": "search", "model": "cohere", "deployment": "", "requests": 5,
                                        "documents": 15, "billed_units": {"search_units": 5.0}, "cost_usd": 0.01}
    assert rows["search", "local"]["requests"] == 1 and rows["search", "local"]["cost_usd"] == 0
    assert rows["batch", "cohere"]["requests"] == 1 and rows["batch", "cohere"]["cost_usd"] == 0.002
    assert report["budgets"] == {"search": {"usd": 0.01, "per": "day", "spent_usd": 0.01}}


def test_an_experiments_arms_are_each_counted_and_a_spent_budget_leaves_the_unpriced_arm_answering(tmp_path,
                                                                                                    upstream):
    store = tmp_path / "experiments.db"
    configured = settings(tmp_path, upstream, budget="{ usd = 0.002 }",
                          after='[service.experiments.ab]\narms = ["cohere", "local"]')
    configured.service.experiment_store = str(store)
    with running(create_app_from_settings(configured)) as (url, _):
        both = rerank(url, "search-key", model="ab")
        alone = rerank(url, "search-key", model="ab")
        report = usage(url, ADMIN_KEY).json()
    assert both.status_code == 200 and alone.status_code == 200
    assert upstream.count("/v2/rerank") == 1  # the second impression's priced arm was over the budget: not sent
    rows = {(r["client"], r["model"]): (r["requests"], r["cost_usd"]) for r in report["rows"]}
    assert rows == {("search", "cohere"): (1, 0.002), ("search", "local"): (2, 0.0)}
    assert report["budgets"]["search"]["spent_usd"] == 0.002


def test_a_client_sees_only_its_own_usage_and_the_admin_keys_see_every_clients(tmp_path, upstream):
    with running(create_app_from_settings(settings(tmp_path, upstream))) as (url, _):
        rerank(url, "search-key"), rerank(url, "batch-key"), rerank(url, "batch-key", model="local")
        own = usage(url, "batch-key").json()
        other = usage(url, "batch-key", client="search")
        by_model = usage(url, ADMIN_KEY, model="local").json()
        later = usage(url, ADMIN_KEY, since="2999-01-01T00:00:00Z").json()
        bad = usage(url, ADMIN_KEY, since="yesterday")
    assert [(r["client"], r["model"]) for r in own["rows"]] == [("batch", "cohere"), ("batch", "local")]
    assert "budgets" not in own  # the other client's budget is not its business
    assert other.status_code == 404 and other.json()["message"] == "client 'search' is not known here"
    assert [(r["client"], r["model"]) for r in by_model["rows"]] == [("batch", "local")]
    assert later["rows"] == [] and later["since"] == 32472144000
    assert bad.status_code == 422


def test_a_fallback_answer_costs_nothing_and_the_reservation_is_given_back(tmp_path, upstream):
    upstream.faults += [Fault("status", 500)] * 3  # the Cohere deployment fails: the chain's local model answers
    with running(create_app_from_settings(settings(tmp_path, upstream, chain=True))) as (url, _):
        answered = rerank(url, "search-key")
        report = usage(url, ADMIN_KEY).json()
    assert answered.status_code == 200
    assert report["rows"] == [{"client": "search", "model": "cohere", "deployment": "", "requests": 1,
                               "documents": 3, "billed_units": {}, "cost_usd": 0.0}]
    assert report["budgets"]["search"]["spent_usd"] == 0.0


def test_a_request_that_gets_no_answer_spends_nothing(tmp_path, upstream):
    upstream.faults += [Fault("status", 500)] * 3
    with running(create_app_from_settings(settings(tmp_path, upstream))) as (url, _):
        failed = rerank(url, "search-key")
        report = usage(url, ADMIN_KEY).json()
    assert failed.status_code == 503
    assert report["rows"] == [] and report["budgets"]["search"]["spent_usd"] == 0.0


def test_metrics_count_usage_by_client_model_and_unit(tmp_path, upstream):
    with running(create_app_from_settings(settings(tmp_path, upstream))) as (url, _):
        rerank(url, "search-key"), rerank(url, "search-key")
        metrics = httpx.get(f"{url}/metrics").text
    labels = 'client="search",deployment="",model="cohere"'
    assert f"rankrelay_usage_requests_total{{{labels}}} 2.0" in metrics
    assert f"rankrelay_usage_documents_total{{{labels}}} 6.0" in metrics
    assert f'rankrelay_usage_billed_units_total{{{labels},unit="search_units"}} 2.0' in metrics
    assert f"rankrelay_usage_cost_usd_total{{{labels}}} 0.004" in metrics


def test_a_billed_unit_no_price_names_is_counted_as_other_so_labels_stay_bounded():
    from rankrelay.server.metrics import Metrics

    metrics = Metrics()
    metrics.record_usage("app", "m", "eu", 3, {"search_units": 1.0, "made_up_units": 2.0}, 0.002)
    text = metrics.exposition().decode()
    labels = 'client="app",deployment="eu",model="m"'
    assert f'rankrelay_usage_billed_units_total{{{labels},unit="other"}} 2.0' in text
    assert f'rankrelay_usage_billed_units_total{{{labels},unit="search_units"}} 1.0' in text
    assert "made_up_units" not in text


def test_a_users_price_table_overrides_the_list_price(tmp_path, upstream):
    extra = '[model_prices]\n"cohere:rerank-v3.5" = { search_units = 0.005 }'
    with running(create_app_from_settings(settings(tmp_path, upstream, extra=extra))) as (url, _):
        statuses = [rerank(url, "search-key").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # $0.005 a search: two fit in a cent


def test_replicas_sharing_redis_keep_one_budget_and_one_ledger(tmp_path, upstream, redis_server):
    config = settings(tmp_path, upstream, state=redis_server.url)
    with running(create_app_from_settings(config)) as (one, _), running(create_app_from_settings(config)) as (two, _):
        statuses = [rerank(url, "search-key").status_code for url in (one, two) * 4]
        reports = [usage(url, ADMIN_KEY).json() for url in (one, two)]
    assert statuses == [200] * 5 + [429] * 3 and upstream.count("/v2/rerank") == 5
    assert reports[0] == reports[1] and reports[0]["rows"][0]["requests"] == 5
    assert reports[0]["budgets"]["search"]["spent_usd"] == 0.01


@pytest.mark.parametrize(("budget", "extra", "message"), [
    ("{ usd = 0 }", "", r"service.clients.search.budget.usd: Input should be greater than 0"),
    ('{ usd = 1, per = "week" }', "", r"service.clients.search.budget.per: 'week' is not one of day, month, total"),
    ("{ usd = 1 }", '[model_prices]\n"cohere:*" = { search_units = -1 }',
     r"model_prices.cohere:\*: give dollars \(0 or more\) per billed unit"),
])
def test_a_budget_or_price_that_cannot_work_stops_the_start_naming_the_field(tmp_path, upstream, budget, extra,
                                                                            message):
    with pytest.raises(ConfigError, match=message):
        create_app_from_settings(settings(tmp_path, upstream, budget=budget, extra=extra))


def test_a_budget_on_a_client_of_unpriced_models_only_stops_the_start():
    with pytest.raises(ConfigError, match=r"^clients.app.budget: none of its models is priced \(fast\): a budget "
                                          r"counts dollars of priced models; price their backends under "
                                          r"model_prices$"):
        create_app({"fast": "identity", "slow": "random"},
                   clients={"app": {"key_sha256": sha("k"), "models": ["fast"], "budget": {"usd": 1}}})
    app = create_app({"fast": "identity"}, prices={"identity": {"search_units": 0.001}},
                     clients={"app": {"key_sha256": sha("k"), "budget": {"usd": 1}}})
    assert app.state.service.priced() == ["fast"]


def test_the_usage_command_reads_the_services_usage_with_the_key_it_is_given(tmp_path, upstream, monkeypatch):
    from typer.testing import CliRunner

    from rankrelay.cli import app

    runner = CliRunner()
    with running(create_app_from_settings(settings(tmp_path, upstream))) as (url, _):
        rerank(url, "search-key"), rerank(url, "search-key", model="local")
        monkeypatch.setenv("RANKRELAY_API_KEY", ADMIN_KEY)
        table = runner.invoke(app, ["usage", "--url", url])
        as_json = runner.invoke(app, ["usage", "--url", url, "--model", "local", "--json"])
        monkeypatch.setenv("RANKRELAY_API_KEY", "batch-key")
        refused = runner.invoke(app, ["usage", "--url", url, "--client", "search"])
    assert table.exit_code == 0, table.output
    assert "│ search │ cohere │ -          │        1 │         3 │ 1 search_units │ 0.0020 │" in table.output
    assert "budget of search: $0.002 of $0.01 this day" in table.output
    assert as_json.exit_code == 0 and [r["model"] for r in __import__("json").loads(as_json.output)["rows"]] == [
        "local"]
    assert refused.exit_code == 2 and f"{url}/v1/usage answered 404: client 'search' is not known here" in " ".join(
        refused.output.split())


def test_ready_and_metrics_say_when_the_redis_holding_rates_and_usage_is_away_and_it_serves_on(
        tmp_path, upstream, redis_server):
    config = settings(tmp_path, upstream, state=redis_server.url)
    with running(create_app_from_settings(config)) as (url, _):
        assert httpx.get(f"{url}/ready").json()["gateway_state"] == {"client_rates": {"shared": True},
                                                                     "usage": {"shared": True}}
        redis_server.stop()
        answered = rerank(url, "search-key")
        ready = httpx.get(f"{url}/ready")
        metrics = httpx.get(f"{url}/metrics").text
        report = usage(url, ADMIN_KEY).json()
    away = f"Redis at redis://127.0.0.1:{redis_server.port}/0 is unreachable: ConnectionError"
    assert answered.status_code == 200 and ready.status_code == 200  # the replica stays in rotation
    assert ready.json()["gateway_state"] == {"client_rates": {"shared": True}, "usage": {"shared": False,
                                                                                        "problem": away}}
    assert 'rankrelay_gateway_state_up{part="usage"} 0.0' in metrics
    assert 'rankrelay_gateway_state_up{part="client_rates"} 1.0' in metrics  # the client has no rate: never asked
    assert report["rows"][0]["requests"] == 1  # counted here meanwhile


def test_a_service_without_redis_says_nothing_of_the_gateways_state(tmp_path, upstream):
    with running(create_app_from_settings(settings(tmp_path, upstream))) as (url, _):
        assert "gateway_state" not in httpx.get(f"{url}/ready").json()
        assert "rankrelay_gateway_state_up{" not in httpx.get(f"{url}/metrics").text


def test_a_service_that_does_not_count_usage_answers_without_a_ledger():
    import asyncio

    from rankrelay import load_reranker
    from rankrelay.server.guards import Limits
    from rankrelay.server.service import Service

    counting = Service({"local": load_reranker("identity")}, Limits())
    quiet = Service({"local": load_reranker("identity")}, Limits(), count_usage=False)
    for service in (counting, quiet):
        assert asyncio.run(service.rerank("local", "wing", DOCS, None)).backend == "identity"
    assert [r["requests"] for r in counting.usage.report()["rows"]] == [1]
    assert quiet.usage.report()["rows"] == []  # Ray's model replicas: the gateway replica counts
