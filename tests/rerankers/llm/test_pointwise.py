"""Pointwise LLM reranking (llm-pointwise:) through the official openai SDK against a real local chat server."""

import asyncio
import logging
import math

import pytest

from rankrelay import load_reranker
from rankrelay.errors import BadResponseError, ConfigError, QueryTooLongError
from rankrelay.rerankers.llm.pointwise import log_odds
from rankrelay.testing import API_KEY, FakeChatAPI, Fault, relevance

QUERY = "apple pie recipe"
DOCS = ["banana bread", "apple pie recipe with cinnamon", "apple tart", "pie crust recipe", "recipe for apple pie",
        "motor oil"]


def pointwise(api, **options):
    return load_reranker(f"llm-pointwise:fake-llm@{api.base_url}", api_key=API_KEY, timeout=2.0, **options)


def oracle(docs):
    return sorted(range(len(docs)), key=lambda i: (-relevance(QUERY, docs[i]), i))


def test_logprobs_judgements_rank_by_log_odds(fake_chat):
    res = pointwise(fake_chat).rerank(QUERY, DOCS)
    assert res.indices == oracle(DOCS)
    assert fake_chat.count() == len(DOCS)
    body = fake_chat.requests[0]["body"]
    assert body["logprobs"] is True and body["max_tokens"] == 1 and body["top_logprobs"] == 5
    assert res.info["judge"] == "logprobs" and res.info["logprobs_fallback"] is False
    assert res.info["unparsed"] == 0
    p = 1 / (1 + math.exp(-2 * (relevance(QUERY, DOCS[4]) - 0.75)))  # what the fake's model believes
    assert res.results[[r.index for r in res.results].index(4)].score == pytest.approx(math.log(p / (1 - p)))


def test_a_server_without_logprobs_falls_back_to_grades_and_says_so(caplog):
    api = FakeChatAPI(logprobs=False).start()
    try:
        rr = pointwise(api, max_concurrency=1)
        with caplog.at_level(logging.WARNING):
            res = rr.rerank(QUERY, DOCS)
        assert res.info["judge"] == "grade" and res.info["logprobs_fallback"] is True
        assert "no log-probabilities" in caplog.text
        assert api.count() == len(DOCS) + 1  # one logprobs request found out; the rest asked for grades
        grades = [len(set(QUERY.split()) & set(d.split())) for d in DOCS]
        assert [r.score for r in res.results] == sorted(grades, reverse=True)
        assert "from 0 to 3" in api.prompts()[-1]
        with pytest.raises(BadResponseError, match="no log-probabilities"):
            pointwise(api, judge="logprobs").rerank(QUERY, DOCS)
    finally:
        api.stop()


def test_unreadable_grades_leave_documents_unscored_and_last(fake_chat):
    fake_chat.answers = ["2", "no idea", "7", "1", "3", "0"]
    res = pointwise(fake_chat, judge="grade", max_concurrency=1).rerank(QUERY, DOCS)
    assert res.info["unparsed"] == 2
    assert res.indices == [4, 0, 3, 5, 1, 2]  # 3, 2, 1, 0, then the unreadable ones in input order
    assert all(math.isnan(r.score) for r in res.results[-2:])
    assert sorted(res.indices) == list(range(6))
    fake_chat.answers = ["?"] * 6
    with pytest.raises(BadResponseError, match="none of the 6 answers"):
        pointwise(fake_chat, judge="grade").rerank(QUERY, DOCS)


def test_log_odds_reads_yes_and_no_variants():
    assert log_odds([(" yes", -0.2), ("Yes", -2.0), ("NO", -3.0)]) == pytest.approx(
        math.log(math.exp(-0.2) + math.exp(-2.0)) + 3.0)
    assert log_odds([("Yes", -0.1), ("Maybe", -4.0)]) == pytest.approx(3.9)  # "No" at most as likely as the floor
    assert math.isnan(log_odds([("Maybe", -0.1)]))


def test_judgements_run_concurrently_within_the_limit(fake_chat):
    fake_chat.faults = [Fault("sleep", seconds=0.2)] * 8
    res = pointwise(fake_chat, max_concurrency=3).rerank(QUERY, DOCS + ["a", "b"])
    assert len(res.results) == 8
    assert 2 <= fake_chat.max_in_flight <= 3


def test_retries_are_exact_and_async_matches_sync(fake_chat):
    fake_chat.faults = [Fault("status", 429, headers={"Retry-After": "0.1"})]
    rr = pointwise(fake_chat, max_concurrency=1)
    sync = rr.rerank(QUERY, DOCS)
    assert fake_chat.count() == len(DOCS) + 1
    assert asyncio.run(rr.arerank(QUERY, DOCS)).indices == sync.indices


def test_usage_is_priced_and_documents_are_cut(fake_chat):
    long = "apple " + "filler " * 400 + "TAIL"
    res = pointwise(fake_chat, max_doc_tokens=10, prices={"prompt_tokens": 2e-6}).rerank(QUERY, ["pie", long])
    assert {r.index: r.truncated for r in res.results} == {0: False, 1: True}
    assert all("TAIL" not in p for p in fake_chat.prompts())
    assert res.info["cost_usd"] == pytest.approx(res.info["billed_units"]["prompt_tokens"] * 2e-6)
    assert API_KEY not in str([r["body"] for r in fake_chat.requests])


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"judge": "maybe"}, ConfigError, "judge must be"),
    ({"context_window": 100}, ConfigError, "cannot hold one document"),
    ({"grade_prompt": "{query} {passage}"}, ConfigError, "uses passage"),
    ({"max_grade": 0}, ConfigError, "max_grade"),
    ({"grade_prompt": f"{{query}} {API_KEY} {{text}}"}, ConfigError, "never carry keys"),
])
def test_bad_configuration_is_refused(fake_chat, options, error, match):
    with pytest.raises(error, match=match):
        pointwise(fake_chat, **options)


def test_a_query_too_long_for_the_context_is_refused_before_any_call(fake_chat):
    with pytest.raises(QueryTooLongError):
        pointwise(fake_chat, context_window=600).rerank("word " * 1000, DOCS)
    assert fake_chat.count() == 0


def test_grades_after_a_reasoning_block(fake_chat):
    fake_chat.answers = ["<think>it mentions apple pie, so 3? or 1</think> 2", "<think>hmm"]
    res = pointwise(fake_chat, judge="grade", max_tokens=300, max_concurrency=1).rerank(QUERY, DOCS[:2])
    assert [(r.index, r.score) for r in res.results][0] == (0, 2.0) and math.isnan(res.results[1].score)
    assert fake_chat.requests[0]["body"]["max_tokens"] == 300
