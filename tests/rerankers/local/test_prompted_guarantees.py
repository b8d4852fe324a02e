"""The library's guarantees hold for the language-model families as they do for cross-encoders: precision, runtimes
(a clear refusal where an export fails), budgets, cascades, several queries in one batch (the service's batcher),
and the long-context encoders (ModernBERT) score what plain transformers computes."""

from __future__ import annotations

import asyncio

import pytest
from numerics import CROSS_RUNTIME, HALF, assert_ranking_follows, assert_scores_close
from tiny_lms import build_causal_lm, build_modernbert, build_t5

from rankrelay import load_reranker
from rankrelay.errors import ConversionError

QUERY = "why does a wing stall"
DOCS = ["the wing stall angle of attack", "paris is the capital of france",
        "boundary layer separation at a high angle of attack makes the flow leave the wing and lift falls",
        "cat dog", "lift and drag of an aerofoil", "stall"]


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    return str(build_causal_lm(tmp_path_factory.mktemp("q3") / "qwen3", "qwen3"))


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    return str(build_t5(tmp_path_factory.mktemp("t5") / "t5"))


def _by_index(res):
    return [r.score for r in sorted(res, key=lambda r: r.index)]


def test_bf16_weights_score_close_to_fp32(qwen3):
    import torch

    fp32 = load_reranker(f"qwen3-reranker:{qwen3}", device="cpu", runtime="torch")
    bf16 = load_reranker(f"qwen3-reranker:{qwen3}", device="cpu", runtime="torch", precision="bf16")
    res = bf16.rerank(QUERY, DOCS)
    assert next(bf16.encoder.lm.parameters()).dtype == torch.bfloat16
    assert next(fp32.encoder.lm.parameters()).dtype == torch.float32
    assert_scores_close(_by_index(res), _by_index(fp32.rerank(QUERY, DOCS)), HALF)


@pytest.mark.parametrize("kind", ["qwen3", "t5"])
def test_an_export_the_runtime_cannot_convert_is_refused_by_name(request, kind, tmp_path):
    path = request.getfixturevalue(kind)
    family = "qwen3-reranker" if kind == "qwen3" else "monot5"
    rr = load_reranker(f"{family}:{path}", device="cpu", runtime="openvino", cache_dir=str(tmp_path))
    with pytest.raises(ConversionError, match=rf"could not convert '{path}' to the openvino runtime"):
        rr.rerank(QUERY, DOCS)


@pytest.mark.slow
def test_auto_measures_a_seq2seq_family_and_leaves_out_what_cannot_convert(t5, tmp_path):
    rr = load_reranker(f"monot5:{t5}", device="cpu", runtime="auto", cache_dir=str(tmp_path), auto_measure="now")
    res = rr.rerank(QUERY, DOCS)
    trials = {t.runtime: t for t in rr.runtime_choice.trials}
    assert trials["openvino"].error and "ConversionError" in trials["openvino"].error
    assert trials["torch"].error is None and rr.runtime in {t.runtime for t in trials.values() if t.error is None}
    ref = load_reranker(f"monot5:{t5}", device="cpu", runtime="torch").rerank(QUERY, DOCS)
    assert_ranking_follows(res.indices, _by_index(ref), CROSS_RUNTIME)


def test_a_budget_counts_the_template_and_reranks_the_head_that_fits(qwen3, monkeypatch):
    from rankrelay.rerankers import base
    from rankrelay.rerankers.local import budget
    from rankrelay.testing import FakeClock

    clock = FakeClock(start=0.0)  # every forward pass costs 1 ms per token it reads, on an injected clock
    for module in (base, budget):
        monkeypatch.setattr(module, "monotonic", clock)
        monkeypatch.setattr(module, "perf_counter", clock)
    rr = load_reranker(f"qwen3-reranker:{qwen3}", device="cpu", runtime="torch", batch_size=1, score_cache="off")
    rr.warm_up()
    forward, tokens = rr._forward, []

    def costed(features):
        tokens.append(int(features["attention_mask"].sum()))
        clock.sleep(tokens[-1] / 1000.0)
        return forward(features)

    rr._forward = costed
    docs = DOCS * 3
    costs = rr._pair_costs(QUERY, docs)
    assert min(costs) > 150  # the system prompt and the instruction are in every pair's cost
    res = rr.rerank(QUERY, docs, budget_ms=1000)
    k = res.info["reranked"]
    assert 1 <= k < len(docs) and len(tokens) == k and tokens[0] == costs[0]  # the first alone, then the rest
    assert sum(costs[:k]) - 3 * k <= sum(tokens) <= sum(costs[:k])  # planned from the whole prompt, never under
    assert sum(costs[:k]) <= 1000 < sum(costs[:k + 1])
    assert sorted(res.indices[:k]) == list(range(k)) and res.indices[k:] == list(range(k, len(docs)))
    assert {r.stage for r in res[:k]} == {"qwen3-reranker"} and {r.stage for r in res[k:]} == {"first-stage"}


def test_a_cascade_puts_the_language_model_on_the_head(qwen3):
    cascade = load_reranker(f"cascade:first-stage>qwen3-reranker:{qwen3}?runtime=torch@3")
    res = cascade.rerank(QUERY, DOCS)
    alone = load_reranker(f"qwen3-reranker:{qwen3}", device="cpu", runtime="torch").rerank(QUERY, DOCS[:3])
    assert res.indices[:3] == alone.indices and res.indices[3:] == [3, 4, 5]
    assert [r.document.text for r in res] == [DOCS[i] for i in res.indices]


def test_several_queries_in_one_batch_score_as_they_do_alone(qwen3, t5):
    from rankrelay.server.batching import DynamicBatcher

    for spec in (f"qwen3-reranker:{qwen3}", f"monot5:{t5}"):
        rr = load_reranker(spec, device="cpu", runtime="torch", score_cache="off")
        asks = [(QUERY, DOCS), ("capital of france", DOCS[:3]), ("a much longer question about the flow", DOCS[2:])]
        batched = rr.rerank_batch(asks)
        for (q, docs), res in zip(asks, batched, strict=True):
            assert res.query == q
            assert_scores_close(_by_index(res), _by_index(rr.rerank(q, docs)))

        async def served():
            batcher = DynamicBatcher(rr, max_batch_docs=100, max_wait_ms=50)
            return await asyncio.gather(*(batcher.submit(q, docs, None) for q, docs in asks))

        for res, ref in zip(asyncio.run(served()), batched, strict=True):
            assert res.indices == ref.indices
            assert_scores_close(_by_index(res), _by_index(ref))


def test_a_modernbert_reranker_scores_what_transformers_computes(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = str(build_modernbert(tmp_path / "gte"))
    rr = load_reranker(f"cross-encoder:{path}", device="cpu", runtime="torch", score_cache="off")
    tokenizer = AutoTokenizer.from_pretrained(path)  # gte-reranker-modernbert-base's card, with plain transformers
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        inputs = tokenizer([[QUERY, d] for d in DOCS], padding=True, truncation=True, return_tensors="pt")
        card = model(**inputs).logits.view(-1).float().tolist()
    assert_scores_close(_by_index(rr.rerank(QUERY, DOCS)), card)
    assert_scores_close([rr.rerank(QUERY, [d]).results[0].score for d in DOCS], card)
