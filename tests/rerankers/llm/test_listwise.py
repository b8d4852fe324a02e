"""Listwise LLM reranking (llm:) through the official openai SDK against a real local chat server."""

import asyncio
import re

import pytest

from rankrelay import load_reranker
from rankrelay.errors import (
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadRequestError,
    BadResponseError,
    ConfigError,
    EmptyQueryError,
    QueryTooLongError,
)
from rankrelay.rerankers.llm.listwise import LLMListwiseReranker
from rankrelay.rerankers.llm.windows import calls_per_pass
from rankrelay.testing import API_KEY, FakeChatAPI, FakeClock, Fault, relevance

QUERY = "apple pie recipe"
#: 100 documents whose relevance to QUERY is never tied (shared words, then length)
DOCS = [f"doc{i} " + " ".join(["apple", "pie", "recipe"][: i % 4]) + " filler" * (i // 4) for i in range(100)]


def oracle(query, docs):
    return sorted(range(len(docs)), key=lambda i: (-relevance(query, docs[i]), i))


def llm(api, **options):
    options.setdefault("timeout", 2.0)
    return load_reranker(f"llm:fake-llm@{api.base_url}", api_key=API_KEY, **options)


def passages(prompt):
    return re.findall(r"^\[(\d+)\] (.*)$", prompt, re.M)


def test_100_candidates_window_20_step_10_make_9_calls_and_keep_every_candidate_once(fake_chat):
    res = llm(fake_chat).rerank(QUERY, DOCS)
    assert fake_chat.count() == 9 == calls_per_pass(100, 20, 10) == res.info["calls"]
    assert sorted(res.indices) == list(range(100))
    assert res.indices[:10] == oracle(QUERY, DOCS)[:10]
    prompts = fake_chat.prompts()
    assert [len(passages(p)) for p in prompts] == [20] * 9
    # back to front: the first window holds the last 20 candidates in input order
    assert [text for _, text in passages(prompts[0])] == [" ".join(d.split()) for d in DOCS[80:]]
    assert {k: res.info[k] for k in ("unparsed", "duplicates", "out_of_range", "missing")} == dict.fromkeys(
        ("unparsed", "duplicates", "out_of_range", "missing"), 0)
    assert [r.rank for r in res.results] == list(range(1, 101))
    assert res.results[0].score > res.results[1].score  # raw score: n - position


def test_rerank_keeps_documents_and_metadata():
    api = FakeChatAPI().start()
    try:
        docs = [{"text": "banana bread", "id": "b", "metadata": {"k": 1}},
                {"text": "apple pie recipe", "id": "a", "metadata": {"k": 2, "tags": ["x"]}}, "apple crumble"]
        res = llm(api).rerank(QUERY, docs, top_n=3)
        assert [(r.id, r.index, r.text, r.metadata) for r in res.results] == [
            ("a", 1, "apple pie recipe", {"k": 2, "tags": ["x"]}), (None, 2, "apple crumble", {}),
            ("b", 0, "banana bread", {"k": 1})]
        assert res.num_candidates == 3
    finally:
        api.stop()


@pytest.mark.parametrize(
    ("answer", "order", "counts"),
    [
        ("[3] > [1] > [3] > [9]", [2, 0, 1, 3, 4], {"duplicates": 1, "out_of_range": 1, "missing": 3, "unparsed": 0}),
        ("[2] > [1]", [1, 0, 2, 3, 4], {"duplicates": 0, "out_of_range": 0, "missing": 3, "unparsed": 0}),
        ("5, 4, 3, 2, 1", [4, 3, 2, 1, 0], {"duplicates": 0, "out_of_range": 0, "missing": 0, "unparsed": 0}),
    ],
)
def test_partial_and_repeated_permutations_lose_no_candidate(fake_chat, answer, order, counts):
    fake_chat.answers = [answer]
    res = llm(fake_chat).rerank(QUERY, DOCS[:5])
    assert res.indices == order
    assert {k: res.info[k] for k in counts} == counts
    assert fake_chat.count() == 1


def test_an_unreadable_window_keeps_its_order_and_is_counted(fake_chat):
    fake_chat.answers = ["I cannot rank these passages."]  # the first (back) window
    res = llm(fake_chat).rerank(QUERY, DOCS[:30])
    assert res.info["unparsed"] == 1 and res.info["calls"] == 2
    assert sorted(res.indices) == list(range(30))
    front = oracle(QUERY, DOCS[:20])  # the second window saw candidates 0-19 (the back one kept 20-29 as they were)
    assert res.indices[:10] == front[:10]


def test_every_window_unreadable_is_an_error(fake_chat):
    fake_chat.answers = ["no idea", "sorry"]
    with pytest.raises(BadResponseError, match="none of the 2 answers"):
        llm(fake_chat).rerank(QUERY, DOCS[:30])


def test_429_with_retry_after_is_retried_once(fake_chat):
    fake_chat.faults = [Fault("status", 429, headers={"Retry-After": "0.3"})]
    rr, clock = llm(fake_chat), FakeClock()
    rr.policy = clock.policy(rr.policy)
    res = rr.rerank(QUERY, DOCS[:5])
    assert fake_chat.count() == 2 and res.info["calls"] == 1 and clock.waits == [0.3]


def test_sdk_retries_are_off_and_the_policy_bounds_attempts(fake_chat):
    fake_chat.faults = [Fault("status", 500)] * 5
    with pytest.raises(BackendUnavailableError) as err:
        llm(fake_chat, max_attempts=3).rerank(QUERY, DOCS[:5])
    assert err.value.attempts == 3 and fake_chat.count() == 3
    fake_chat.requests.clear()
    fake_chat.faults = [Fault("status", 500)] * 5
    with pytest.raises(BackendUnavailableError):
        llm(fake_chat, max_attempts=1).rerank(QUERY, DOCS[:5])
    assert fake_chat.count() == 1  # the SDK's own two retries would make it 3


@pytest.mark.parametrize(("fault", "error", "requests"), [
    (Fault("status", 400, body={"error": {"message": "bad model"}}), BadRequestError, 1),
    (Fault("status", 401), AuthenticationError, 1),
    (Fault("malformed"), BadResponseError, 1),
    (Fault("sleep", seconds=1.5), BackendTimeoutError, 2),
])
def test_faults_map_to_typed_errors_with_exact_attempts(fake_chat, fault, error, requests):
    fake_chat.faults = [fault] * 3
    with pytest.raises(error):
        llm(fake_chat, timeout=0.5, max_attempts=2).rerank(QUERY, DOCS[:5])
    assert fake_chat.count() == requests


def test_a_bad_key_is_an_authentication_error(fake_chat):
    with pytest.raises(AuthenticationError, match="401"):
        load_reranker(f"llm:fake@{fake_chat.base_url}", api_key="wrong").rerank(QUERY, DOCS[:3])


@pytest.mark.parametrize(("spec", "options", "match"), [
    ("llm:@http://127.0.0.1:9/v1", {}, "needs a model"),
    ("llm:model@", {}, "empty URL"),
    ("llm:model@ftp://host", {}, "http:// or https://"),
    ("llm:model@http://127.0.0.1:9/v1", {"context_window": 500}, "holds 1 document"),
    ("llm:model@http://127.0.0.1:9/v1", {"window": 1}, "window >= 2"),
    ("llm:model@http://127.0.0.1:9/v1", {"prompt": "rank {passages} for {question}"}, "uses question"),
    ("llm:model@http://127.0.0.1:9/v1", {"chunk_size": 5}, "unknown option"),
])
def test_bad_configuration_is_a_typed_error_before_any_call(spec, options, match):
    with pytest.raises(ConfigError, match=match):
        load_reranker(spec, **options)


def test_the_default_openai_url_needs_a_key():
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        load_reranker("llm:gpt-4o-mini")


def test_bad_input_is_refused_before_any_call(fake_chat):
    rr = llm(fake_chat, context_window=1200)
    with pytest.raises(EmptyQueryError):
        rr.rerank("  ", DOCS[:3])
    with pytest.raises(QueryTooLongError, match="query takes"):
        rr.rerank_batch([(QUERY, DOCS[:3]), ("word " * 2000, DOCS[:3])])
    assert rr.rerank(QUERY, []).results == []
    one = rr.rerank(QUERY, [{"text": "only one", "id": "x"}])  # nothing to order: no call
    assert [r.id for r in one.results] == ["x"] and one.info["calls"] == 0 and rr.calls(1) == 0
    assert fake_chat.count() == 0


def test_a_small_context_shrinks_the_window(fake_chat):
    rr = llm(fake_chat, context_window=1500, max_doc_tokens=100)
    res = rr.rerank(QUERY, DOCS[:40])
    window, step = res.info["window"], res.info["step"]
    assert 2 <= window < 20 and 1 <= step < window
    assert fake_chat.count() == calls_per_pass(40, window, step)
    assert max(len(passages(p)) for p in fake_chat.prompts()) == window
    assert sorted(res.indices) == list(range(40))


def test_long_documents_are_cut_to_the_budget_and_marked(fake_chat):
    long = "apple " + " ".join(f"w{i}" for i in range(400)) + " TAIL"
    res = llm(fake_chat, max_doc_tokens=20).rerank(QUERY, ["pie", long])
    flagged = {r.index: r.truncated for r in res.results}
    assert flagged == {0: False, 1: True} and res.info["truncated"] == 1
    prompt = fake_chat.prompts()[0]
    assert "TAIL" not in prompt and "apple w0" in prompt
    assert res.results[[r.index for r in res.results].index(1)].text == long  # the caller's text is kept


def test_an_exact_tokenizer_counts_the_budget(fake_chat, tiny_ce_path):
    rr = llm(fake_chat, max_doc_tokens=3, tokenizer=tiny_ce_path)  # words of its vocabulary are one token each
    res = rr.rerank(QUERY, ["wing lift", "wing lift flow air"])
    assert {r.index: r.truncated for r in res.results} == {0: False, 1: True}
    with pytest.raises(ConfigError, match="tokenizer"):
        llm(fake_chat, tokenizer="/no/such/tokenizer")


def test_prompts_carry_no_key_and_templates_can_be_replaced(fake_chat):
    rr = llm(fake_chat, system_prompt="", prompt="Query: {query}\n{passages}\nOrder all {num}.")
    rr.rerank(QUERY, DOCS[:4])
    body = fake_chat.requests[0]["body"]
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["messages"][0]["content"].endswith("Order all 4.")
    assert API_KEY not in str(body)
    assert body["temperature"] == 0 and body["model"] == "fake-llm"
    with pytest.raises(ConfigError, match="never carry keys"):
        llm(fake_chat, prompt=f"Query: {{query}} {API_KEY} {{passages}}")


def test_token_usage_is_reported_and_priced(fake_chat):
    prices = {"prompt_tokens": 1e-6, "completion_tokens": 4e-6}
    res = llm(fake_chat, prices=prices).rerank(QUERY, DOCS[:30])
    usage = [r["body"] for r in fake_chat.requests]
    assert len(usage) == 2
    billed = res.info["billed_units"]
    assert billed["prompt_tokens"] > 0 and billed["completion_tokens"] > 0
    assert res.info["cost_usd"] == pytest.approx(billed["prompt_tokens"] * 1e-6 + billed["completion_tokens"] * 4e-6)
    assert len(res.info["request_ids"]) == 2


def test_async_ranks_as_sync_and_batches_run_concurrently(fake_chat):
    rr = llm(fake_chat)
    sync = rr.rerank(QUERY, DOCS[:50]).indices
    assert asyncio.run(rr.arerank(QUERY, DOCS[:50])).indices == sync
    fake_chat.requests.clear()
    fake_chat.faults = [Fault("sleep", seconds=0.3)] * 4
    results = rr.rerank_batch([(QUERY, DOCS[:10]), ("banana", DOCS[:10]), ("pie", DOCS[:10]), ("recipe", DOCS[:10])])
    assert [len(r.results) for r in results] == [10] * 4
    assert fake_chat.max_in_flight >= 2
    assert asyncio.run(rr.arerank_batch([(QUERY, DOCS[:50])]))[0].indices == sync


def test_two_passes_double_the_calls(fake_chat):
    rr = llm(fake_chat, passes=2)
    assert isinstance(rr, LLMListwiseReranker) and rr.calls(100) == 18
    res = rr.rerank(QUERY, DOCS)
    assert fake_chat.count() == 18 == res.info["calls"]
    assert res.indices[:10] == oracle(QUERY, DOCS)[:10]


def test_falls_back_to_a_local_model_when_the_llm_fails(fake_chat, tiny_ce_path):
    fake_chat.faults = [Fault("status", 503)] * 10
    chain = load_reranker([{"spec": f"llm:fake@{fake_chat.base_url}", "api_key": API_KEY, "max_attempts": 2},
                           f"cross-encoder:{tiny_ce_path}"])
    res = chain.rerank(QUERY, DOCS[:5])
    assert res.backend == "cross-encoder" and sorted(res.indices) == list(range(5))
    assert [f["backend"] for f in res.info["fallbacks"]] == ["llm:fake"]
    assert fake_chat.count() == 2
    fake_chat.faults = []
    fake_chat.answers = ["nothing useful"]
    res = chain.rerank(QUERY, DOCS[:5])  # an unreadable answer is a failure the chain moves past, too
    assert res.backend == "cross-encoder"


def test_a_cascade_gives_the_llm_only_the_cheap_stage_best(fake_chat):
    rr = load_reranker(f"cascade:identity>llm:fake@{fake_chat.base_url}?api_key={API_KEY}@30")
    res = rr.rerank(QUERY, DOCS)
    assert [len(passages(p)) for p in fake_chat.prompts()] == [20, 20]  # 30 candidates: 2 windows, not 9
    assert res.indices[:10] == oracle(QUERY, DOCS[:30])[:10] and res.indices[30:] == list(range(30, 100))
    assert res.info["reranked"] == 30


def test_reasoning_blocks_are_not_read_as_the_answer(fake_chat):
    fake_chat.answers = ["<think>[5] looks best, then [4]</think>\n[2] > [1] > [3]", "<think>[5] > [4] and then"]
    rr = llm(fake_chat, max_tokens=600)
    assert rr.rerank(QUERY, DOCS[:5]).indices == [1, 0, 2, 3, 4]
    assert fake_chat.requests[0]["body"]["max_tokens"] == 600
    with pytest.raises(BadResponseError, match="none of the 1 answers"):  # cut off while thinking: no answer
        rr.rerank(QUERY, DOCS[:5])
    with pytest.raises(ConfigError, match="holds 0 document"):  # the answer's room counts against the context
        llm(fake_chat, max_tokens=8000)


def test_the_deadline_bounds_all_attempts(fake_chat):
    fake_chat.faults = [Fault("sleep", seconds=3.0)] * 5
    with pytest.raises(BackendTimeoutError):
        llm(fake_chat, timeout=5.0, deadline=0.6, max_attempts=5).rerank(QUERY, DOCS[:5])
    assert fake_chat.count() == 1  # the first attempt, given 0.6 s and not 5, used up the deadline: no second
