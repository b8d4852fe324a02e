"""Experiments in the service: interleaved answers through Cohere's own SDK, feedback, the report, failures."""

import asyncio
import logging

import httpx
import pytest
from conftest import raises_exactly
from serving import running

from rankrelay import load_reranker
from rankrelay.errors import ConfigError
from rankrelay.experiments.interleaving import team_draft
from rankrelay.experiments.store import SQLiteStore
from rankrelay.server.app import create_app

KEY = "exp-key"
DOCS = [f"document number {i} about wings and lift" for i in range(8)]
AUTH = {"Authorization": f"Bearer {KEY}"}


def make_app(tmp_path, **overrides):
    models = {"first": "identity", "shuffled": "random", **overrides.pop("models", {})}
    options = {"experiments": {"ab": {"arms": ["first", "shuffled"]}},
               "experiment_store": str(tmp_path / "exp.db"), **overrides}
    return create_app(models, api_keys=[KEY], **options)


@pytest.fixture
def served(tmp_path):
    with running(make_app(tmp_path)) as (url, _):
        yield url, tmp_path / "exp.db"


def test_an_experiment_answers_the_interleaved_list_through_the_cohere_sdk(served):
    import cohere

    url, db = served
    client = cohere.ClientV2(api_key=KEY, base_url=url)
    res = client.rerank(model="ab", query="wing stall", documents=DOCS, top_n=6)
    assert len(res.results) == 6 and len({r.index for r in res.results}) == 6
    scores = [r.relevance_score for r in res.results]
    assert scores == sorted(scores, reverse=True)  # a rank-position relevance: Cohere's clients expect order
    first = [r.index for r in load_reranker("identity").rerank("wing stall", DOCS)]
    shuffled = [r.index for r in load_reranker("random").rerank("wing stall", DOCS)]
    shown = team_draft([first, shuffled], 6, seed=res.id)  # the impression id seeds the draw
    assert [r.index for r in res.results] == shown.order
    kept = SQLiteStore(str(db)).get(res.id)
    assert (kept.experiment, kept.arms, kept.teams, kept.excluded) == ("ab", ["first", "shuffled"], shown.teams, False)
    assert kept.query is None and kept.documents is None  # no text unless store_text


def test_feedback_is_recorded_once_and_bad_feedback_gets_typed_statuses(served):
    url, _ = served
    with httpx.Client(base_url=url, headers=AUTH) as http:
        answer = http.post("/v2/rerank", json={"model": "ab", "query": "lift", "documents": DOCS}).json()
        impression = answer["id"]
        ok = http.post("/v1/feedback", json={"id": impression, "clicked": [0, 2], "dwell": [4.0, 1.5]})
        assert ok.status_code == 200 and ok.json() == {"id": impression, "experiment": "ab", "recorded": True}
        again = http.post("/v1/feedback", json={"id": impression, "clicked": [0, 2], "dwell": [4.0, 1.5]})
        assert again.status_code == 200 and again.json()["recorded"] is False
        assert http.post("/v1/feedback", json={"id": impression, "clicked": [1]}).status_code == 409
        assert http.post("/v1/feedback", json={"id": "never-answered", "clicked": [0]}).status_code == 404
        assert http.post("/v1/feedback", json={"id": impression, "clicked": [8]}).status_code == 400
        assert http.post("/v1/feedback", json={"id": impression, "clicked": "0"}).status_code == 422
        assert http.post("/v1/feedback", json={"id": impression, "clicked": [0], "extra": 1}).status_code == 422
        plain = http.post("/v2/rerank", json={"model": "first", "query": "lift", "documents": DOCS}).json()
        assert http.post("/v1/feedback", json={"id": plain["id"], "clicked": [0]}).status_code == 404
        report = http.get("/v1/experiments/ab").json()
        assert (report["impressions"], report["with_feedback"], report["with_clicks"]) == (1, 1, 1)
        assert report["preferences"][0]["a"] == "first" and report["preferences"][0]["test"] == "sign test"
        assert http.get("/v1/experiments/nope").status_code == 404
    bare = httpx.post(f"{url}/v1/feedback", json={"id": impression, "clicked": [0]})
    assert bare.status_code == 401
    assert httpx.get(f"{url}/v1/experiments/ab").status_code == 401


def test_tei_clients_get_the_impression_id_in_a_header(served):
    url, db = served
    res = httpx.post(f"{url}/rerank", headers=AUTH, json={"model": "ab", "query": "lift", "texts": DOCS[:4]})
    assert res.status_code == 200 and len(res.json()) == 4
    assert SQLiteStore(str(db)).get(res.headers["X-Impression-Id"]).experiment == "ab"


def test_a_failing_arm_lets_the_other_answer_and_the_impression_is_left_out(tmp_path):
    from rankrelay.testing import refused_url

    app = make_app(tmp_path, models={"down": f"tei:{refused_url()}"},
                   experiments={"ab": {"arms": ["down", "first"]}})
    with running(app) as (url, _), httpx.Client(base_url=url, headers=AUTH) as http:
        answer = http.post("/v2/rerank", json={"model": "ab", "query": "lift", "documents": DOCS[:5]})
        assert answer.status_code == 200
        assert [r["index"] for r in answer.json()["results"]] == [0, 1, 2, 3, 4]  # identity alone
        kept = SQLiteStore(str(tmp_path / "exp.db")).get(answer.json()["id"])
        assert kept.excluded and kept.teams == [1] * 5
        assert http.post("/v1/feedback", json={"id": answer.json()["id"], "clicked": [0]}).status_code == 200
        report = http.get("/v1/experiments/ab").json()
        assert report["excluded"] == 1 and report["with_clicks"] == 0
        assert report["preferences"][0]["wins"] + report["preferences"][0]["losses"] == 0
        assert 'rankrelay_experiment_events_total{experiment="ab",kind="impression",outcome="excluded"} 1.0' \
            in httpx.get(f"{url}/metrics").text


def test_an_unreachable_store_never_fails_an_answer_and_each_answer_says_its_impression_waits(tmp_path):
    from rankrelay.testing import refused_url

    down = refused_url().replace("http://", "postgresql://nobody@")  # nothing listens there
    with running(make_app(tmp_path, experiment_store=down, store_strict=False)) as (url, _), \
            httpx.Client(base_url=url, headers=AUTH) as http:
        for _ in range(2):
            answer = http.post("/v2/rerank", json={"model": "ab", "query": "lift", "documents": DOCS})
            assert answer.status_code == 200 and len(answer.json()["results"]) == len(DOCS)
            assert answer.headers["X-Impression-Recorded"] == "buffered"
        feedback = http.post("/v1/feedback", json={"id": answer.json()["id"], "clicked": [0]})
        assert feedback.status_code == 503 and "not stored yet" in feedback.json()["message"]
        assert feedback.headers["Retry-After"]
        ready = httpx.get(f"{url}/ready").json()["experiment_store"]
        assert (ready["state"], ready["pending"]) == ("unavailable", 2) and "connection" in ready["reason"].lower()
        metrics = httpx.get(f"{url}/metrics").text
        assert 'rankrelay_experiment_events_total{experiment="ab",kind="impression",outcome="buffered"} 2.0' \
            in metrics
        assert "rankrelay_experiment_store_up 0.0" in metrics and "rankrelay_experiment_store_pending 2.0" in metrics


def test_a_store_that_cannot_be_opened_stops_the_start_unless_asked_to_start_degraded(tmp_path):
    from rankrelay.errors import StoreUnavailableError

    app = make_app(tmp_path, experiment_store=str(tmp_path / "no" / "such" / "folder" / "exp.db"))
    with pytest.raises(StoreUnavailableError, match=r"cannot open the experiment store .*store_strict = false"):
        app.state.service.warm_up()


@pytest.mark.parametrize(("experiments", "message"), [
    ({"ab": {"arms": ["first", "ghost"]}},
     "experiment 'ab': arms ['ghost'] are not served models (served: first, shuffled, third)"),
    ({"ab": {"arms": ["first"]}}, "experiment 'ab': needs at least two arms, got ['first']"),
    ({"ab": {"arms": ["first", "shuffled"], "method": "coin"}},
     "experiment 'ab': unknown method 'coin'; use team-draft, multileave, split"),
    ({"ab": {"arms": ["first", "shuffled", "third"]}},
     "experiment 'ab': team-draft compares two arms, got 3; use multileave"),
    ({"first": {"arms": ["first", "shuffled"]}},
     "experiment 'first': the name is also a served model's; give the experiment its own name"),
    ({"ab": {"arms": ["first", "shuffled"], "share": 0.5}}, "experiment 'ab': share: Extra inputs are not permitted"),
])
def test_an_experiment_that_cannot_run_stops_the_service_from_starting(tmp_path, experiments, message):
    with raises_exactly(ConfigError, message):
        make_app(tmp_path, models={"third": "identity"}, experiments=experiments)


def test_multileaving_three_arms_and_a_split(tmp_path):
    app = make_app(tmp_path, models={"third": "random:7"},
                   experiments={"three": {"arms": ["first", "shuffled", "third"], "method": "multileave"},
                                "split": {"arms": ["first", "shuffled"], "method": "split"}})
    with running(app) as (url, _), httpx.Client(base_url=url, headers=AUTH) as http:
        store = SQLiteStore(str(tmp_path / "exp.db"))
        three = http.post("/v2/rerank", json={"model": "three", "query": "q", "documents": DOCS}).json()
        assert sorted(store.get(three["id"]).teams[:3]) == [0, 1, 2]  # every arm places one per round
        arms = set()
        for _ in range(20):
            split = http.post("/v2/rerank", json={"model": "split", "query": "q", "documents": DOCS}).json()
            teams = store.get(split["id"]).teams
            assert len(set(teams)) == 1  # a split shows one arm's list
            arms.add(teams[0])
            http.post("/v1/feedback", json={"id": split["id"], "clicked": [0]})
        assert arms == {0, 1}
        report = http.get("/v1/experiments/split").json()
        assert report["method"] == "split" and sum(a["impressions"] for a in report["split"]["arms"]) == 20
        assert len(http.get("/v1/experiments/three").json()["preferences"]) == 3


def test_concurrent_clients_record_every_impression_and_feedback_once(tmp_path):
    """Many clients at once (the full 200 x 10,000 run is benchmarks/experiments.py): no lock error, no loss."""
    with running(make_app(tmp_path)) as (url, _):
        async def client(http, n):
            for _ in range(n):
                answer = (await http.post("/v2/rerank", json={"model": "ab", "query": "q", "documents": DOCS[:4]}))
                assert answer.status_code == 200, answer.text
                fb = await http.post("/v1/feedback", json={"id": answer.json()["id"], "clicked": [0]})
                assert fb.status_code == 200, fb.text

        async def main():
            limits = httpx.Limits(max_connections=40)
            async with httpx.AsyncClient(base_url=url, headers=AUTH, limits=limits, timeout=60) as http:
                await asyncio.gather(*(client(http, 10) for _ in range(40)))

        asyncio.run(main())
    assert SQLiteStore(str(tmp_path / "exp.db")).counts() == {"impressions": 400, "feedback": 400}


def test_the_report_command_reads_the_store_the_service_wrote(tmp_path):
    import json

    from typer.testing import CliRunner

    from rankrelay.cli import app as cli

    with running(make_app(tmp_path)) as (url, _), httpx.Client(base_url=url, headers=AUTH) as http:
        store = SQLiteStore(str(tmp_path / "exp.db"))
        for n in range(30):
            answer = http.post("/v2/rerank", json={"model": "ab", "query": f"q{n}", "documents": DOCS}).json()
            teams = store.get(answer["id"]).teams
            http.post("/v1/feedback", json={"id": answer["id"], "clicked": [teams.index(0)]})  # users like "first"
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["experiment", "report", str(tmp_path / "exp.db"), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    (pref,) = report["preferences"]
    assert (pref["wins"], pref["losses"], pref["winner"], pref["significant"]) == (30, 0, "first", True)
    page = (out / "experiments.html").read_text()
    assert "Users prefer first over shuffled" in page and "vegaEmbed" in page
    table = CliRunner().invoke(cli, ["experiment", "report", str(tmp_path / "exp.db"), "--name", "ab"])
    assert table.exit_code == 0 and "first (significant)" in table.output
    missing = CliRunner().invoke(cli, ["experiment", "report", str(tmp_path / "exp.db"), "--name", "zz"])
    assert missing.exit_code == 2 and "no experiment 'zz'" in missing.output and "found: ab" in missing.output
    nowhere = CliRunner().invoke(cli, ["experiment", "report", str(tmp_path / "none.db")])
    assert nowhere.exit_code == 2 and "no experiment store at" in nowhere.output


@pytest.mark.parametrize(("body", "field"), [
    ({"clicked": ["1"]}, "clicked.0"), ({"clicked": [True]}, "clicked.0"), ({"clicked": [2.0]}, "clicked.0"),
    ({"clicked": [0], "dwell": [float("nan")]}, "dwell.0"), ({"clicked": [0], "dwell": [-1.0]}, "dwell.0"),
    ({"clicked": [0], "grade": float("inf")}, "grade"), ({"clicked": [0], "grade": True}, "grade"),
    ({"id": "imp\x00ession", "clicked": [0]}, "id"),
])
def test_malformed_feedback_gets_a_4xx_naming_the_field_and_nothing_is_stored(served, body, field):
    import json

    url, db = served
    with httpx.Client(base_url=url, headers=AUTH) as http:
        impression = http.post("/v2/rerank", json={"model": "ab", "query": "lift", "documents": DOCS}).json()["id"]
        payload = {"id": impression, **body}
        res = http.post("/v1/feedback", content=json.dumps(payload, allow_nan=True),
                        headers={"Content-Type": "application/json"})
    assert res.status_code == 422 and f"invalid request: {field}:" in res.json()["message"]
    assert SQLiteStore(str(db)).counts()["feedback"] == 0


def test_the_same_clicks_with_another_dwell_or_grade_are_a_conflict_not_silently_dropped(served):
    url, _ = served
    with httpx.Client(base_url=url, headers=AUTH) as http:
        impression = http.post("/v2/rerank", json={"model": "ab", "query": "lift", "documents": DOCS}).json()["id"]
        assert http.post("/v1/feedback", json={"id": impression, "clicked": [0], "dwell": [3.0]}).status_code == 200
        other_dwell = http.post("/v1/feedback", json={"id": impression, "clicked": [0], "dwell": [9.0]})
        other_grade = http.post("/v1/feedback", json={"id": impression, "clicked": [0], "dwell": [3.0], "grade": 1})
        assert other_dwell.status_code == other_grade.status_code == 409
        assert "dwell [3.0]" in other_dwell.json()["message"]
        same = http.post("/v1/feedback", json={"id": impression, "clicked": [0], "dwell": [3.0]})
        assert same.status_code == 200 and same.json()["recorded"] is False


def test_an_answer_for_an_empty_document_list_takes_its_empty_feedback(served):
    url, _ = served
    with httpx.Client(base_url=url, headers=AUTH) as http:
        answer = http.post("/v2/rerank", json={"model": "ab", "query": "lift", "documents": []})
        assert answer.status_code == 200 and answer.json()["results"] == []
        impression = answer.json()["id"]
        assert http.post("/v1/feedback", json={"id": impression, "clicked": []}).status_code == 200
        assert http.post("/v1/feedback", json={"id": impression, "clicked": [0]}).status_code == 400


def test_feedback_to_a_service_without_experiments_is_404_not_a_retry_forever_503(tmp_path):
    app = create_app({"first": "identity"}, api_keys=[KEY])
    with running(app) as (url, _):
        res = httpx.post(f"{url}/v1/feedback", headers=AUTH, json={"id": "abc", "clicked": [0]})
    assert res.status_code == 404 and "runs no experiments" in res.json()["message"]
    assert "Retry-After" not in res.headers


def test_a_key_sent_in_the_query_string_is_not_written_to_the_access_log(served, caplog):
    url, _ = served
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        res = httpx.post(f"{url}/v2/rerank?api_key=sk-live-secret-123&x=1", json={"query": "q", "documents": ["a"]})
    assert res.status_code == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("/v2/rerank?api_key=***&x=1" in line for line in lines)
    assert not any("sk-live-secret-123" in line for line in lines)
