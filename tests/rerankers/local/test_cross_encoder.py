"""The cross-encoder backend on tiny BERT and XLM-RoBERTa models built at test time."""

import math
import random
import sys

import pytest
import torch
from conftest import MAX_LEN, WORDS
from numerics import assert_ranking_follows, assert_scores_close, expected_order

from rankrelay import (
    ConfigError,
    Document,
    DocumentTooLongError,
    MissingDependencyError,
    ModelLoadError,
    QueryTooLongError,
    load_reranker,
)

QUERY = "why does a wing stall"
DOCS = [
    "the wing lift and air flow",
    "paris is the capital of france",
    "boundary layer separation on the wing",
    "python sort is stable",
    "angle of attack and pressure",
    "cat and dog",
]


def long_text(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def spy_batches(rr) -> list[list]:
    """Record the inputs of every forward pass (each batch is tokenized once, right before its pass)."""
    calls: list[list] = []
    preprocess = rr.encoder.preprocess
    rr.encoder.preprocess = lambda inputs, **kw: (calls.append(list(inputs)), preprocess(inputs, **kw))[1]
    return calls


def test_order_follows_model_scores_not_input_order(tiny_ce, raw_ce):
    res = tiny_ce.rerank(QUERY, DOCS)
    expected_scores = raw_ce([(QUERY, d) for d in DOCS])
    assert expected_order(expected_scores) != list(range(len(DOCS))), "fixture must not already be in score order"
    assert_ranking_follows(res.indices, expected_scores)
    assert_scores_close([r.score for r in res], [expected_scores[i] for i in res.indices])
    assert res.backend == "cross-encoder" and res.model.endswith("tiny-bert-ce0")
    assert res.timings["model"] > 0 and res.timings["total"] >= res.timings["model"]


def test_ids_metadata_top_n_and_duplicates(tiny_ce):
    meta = {"source": "x"}
    docs = [*DOCS, Document(DOCS[0], id="dup", metadata=meta)]
    res = tiny_ce.rerank(QUERY, docs)
    by_index = {r.index: r for r in res}
    assert len(res) == len(docs)
    assert by_index[6].score == pytest.approx(by_index[0].score)
    assert by_index[6].id == "dup" and by_index[6].metadata is meta
    assert tiny_ce.rerank(QUERY, docs, top_n=3).indices == res.indices[:3]


def test_duplicate_pairs_are_scored_once(tiny_ce_path):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    rr.warm_up()
    seen = spy_batches(rr)
    res = rr.rerank_batch([(QUERY, [DOCS[0], DOCS[0], DOCS[1]]), (QUERY, [DOCS[1]])])
    assert sorted(p for call in seen for p in call) == sorted([(QUERY, DOCS[0]), (QUERY, DOCS[1])])
    assert res[0][0].score == res[0][1].score or res[0][1].score == res[0][2].score


def test_mixed_lengths_go_in_length_buckets_without_mixing_up_scores(tiny_ce_path, raw_ce):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", batch_size=4)
    rr.warm_up()
    calls = spy_batches(rr)
    rng = random.Random(3)
    requests = [(f"{QUERY} {q}", [long_text(rng.choice([3, 4, 30, 5, 12]), seed=q * 10 + i) for i in range(6)])
                for q in range(3)]
    results = rr.rerank_batch(requests)
    assert sum(len(c) for c in calls) == 18 and max(len(c) for c in calls) <= 4
    for call in calls:  # no forward pass pads a short pair to a much longer one
        lengths = [len(q) + len(d) for q, d in call]
        assert min(lengths) >= 0.75 * max(lengths)
    for (query, docs), res in zip(requests, results):  # each score is its own pair's, whatever the grouping
        alone = raw_ce([(query, d) for d in docs])
        assert_scores_close([r.score for r in sorted(res, key=lambda r: r.index)], alone)


@pytest.mark.parametrize("method", ["rank", "sigmoid", "minmax", "zscore", "none"])
def test_normalization_keeps_raw_scores(tiny_ce_path, tiny_ce, method):
    res = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", normalize=method).rerank(QUERY, DOCS)
    base = {r.index: r.score for r in tiny_ce.rerank(QUERY, DOCS)}
    assert_scores_close([r.score for r in res], [base[r.index] for r in res])
    norm = [r.normalized_score for r in res]
    scores = [r.score for r in res]
    if method == "sigmoid":
        assert norm == pytest.approx([1 / (1 + math.exp(-s)) for s in scores])
    elif method == "minmax":
        assert norm[0] == 1.0 and norm[-1] == 0.0
    elif method == "rank":
        assert norm == pytest.approx([1 - i / len(DOCS) for i in range(len(DOCS))])
    elif method == "zscore":
        assert sum(norm) == pytest.approx(0.0, abs=1e-6)
    else:
        assert norm == pytest.approx(scores)


def test_long_document_is_scored_by_its_best_passage(tiny_ce, raw_ce):
    doc = long_text(3 * MAX_LEN)
    docs = [DOCS[0], doc, DOCS[2]]
    res = tiny_ce.rerank(QUERY, docs)
    r = next(r for r in res if r.index == 1)
    assert r.passage is not None and not r.truncated
    spans = tiny_ce.plan_passages(QUERY, [doc])[0].spans
    assert len(spans) >= 3
    # windows cover the document, overlap, and each fits the model beside the query
    tok = raw_ce.model.tokenizer
    assert spans[0][0] == 0 and spans[-1][1] == len(doc.rstrip())
    for (_, a1), (b0, _) in zip(spans, spans[1:]):
        assert b0 < a1, "consecutive passages overlap"
    for a, b in spans:
        assert len(tok(QUERY, doc[a:b])["input_ids"]) <= MAX_LEN
    window_scores = raw_ce([(QUERY, doc[a:b]) for a, b in spans])
    assert_scores_close([r.score], [max(window_scores)])
    best = window_scores.index(max(window_scores))
    assert r.passage == spans[best] or abs(window_scores[spans.index(r.passage)] - window_scores[best]) < 1e-4
    # short documents are untouched
    assert all(x.passage is None for x in res if x.index != 1)


def test_truncate_mode_marks_the_document(tiny_ce_path, raw_ce):
    doc = long_text(3 * MAX_LEN, seed=2)
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", long_documents="truncate")
    res = rr.rerank(QUERY, [DOCS[0], doc])
    r = next(r for r in res if r.index == 1)
    assert r.truncated and r.passage is None
    assert_scores_close([r.score], raw_ce([(QUERY, doc)]))
    assert not next(r for r in res if r.index == 0).truncated


def test_error_mode_names_the_document(tiny_ce_path):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", long_documents="error")
    with pytest.raises(DocumentTooLongError) as err:
        rr.rerank(QUERY, [DOCS[0], DOCS[1], long_text(3 * MAX_LEN)])
    assert err.value.index == 2 and err.value.tokens > err.value.limit
    assert "document 2" in str(err.value)


def test_query_too_long_for_the_window(tiny_ce):
    with pytest.raises(QueryTooLongError):
        tiny_ce.rerank(long_text(MAX_LEN), DOCS)


def test_rerank_batch_equals_per_query_rerank(tiny_ce):
    requests = [(QUERY, DOCS), ("python sort order", DOCS[::-1] + [long_text(150, 3)]), ("cat", [])]
    batch = tiny_ce.rerank_batch(requests)
    for (q, docs), res, top in zip(requests, batch, tiny_ce.rerank_batch(requests, top_n=4)):
        assert top.indices == res.indices[:4]
        single = {r.index: r for r in tiny_ce.rerank(q, docs)}
        assert_scores_close([r.score for r in res], [single[r.index].score for r in res])
        assert_ranking_follows(res.indices, [single[i].score for i in range(len(docs))])
        assert {r.index: r.passage for r in res} == {i: r.passage for i, r in single.items()}


async def test_async_matches_sync(tiny_ce):
    res = await tiny_ce.arerank(QUERY, DOCS, top_n=2)
    assert res.indices == tiny_ce.rerank(QUERY, DOCS, top_n=2).indices


async def test_async_scores_equal_an_independent_reference(tiny_ce_path, raw_ce):
    """A fresh model with the score cache off, against sentence-transformers itself: no cache the call under
    test just filled can make a wrong async path look right."""
    fresh = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", score_cache="off")
    batch = await fresh.arerank_batch([(QUERY, DOCS), ("python sort order", DOCS[::-1])])
    for (query, docs), res in zip([(QUERY, DOCS), ("python sort order", DOCS[::-1])], batch):
        reference = raw_ce([(query, d) for d in docs])
        assert_scores_close([r.score for r in res], [reference[r.index] for r in res])
        assert_ranking_follows(res.indices, reference)


def test_two_label_model_scores_logit_difference(tiny_ce2_path):
    from sentence_transformers import CrossEncoder

    rr = load_reranker(f"cross-encoder:{tiny_ce2_path}", device="cpu")
    res = rr.rerank(QUERY, DOCS)
    logits = CrossEncoder(tiny_ce2_path, device="cpu", activation_fn=torch.nn.Identity()).predict(
        [(QUERY, d) for d in DOCS]
    )
    expected = {i: float(logits[i][1] - logits[i][0]) for i in range(len(DOCS))}
    assert_scores_close([r.score for r in res], [expected[r.index] for r in res])


def test_xlm_roberta_cross_encoder(tiny_xlmr_path):
    from sentence_transformers import CrossEncoder

    rr = load_reranker(f"cross-encoder:{tiny_xlmr_path}", device="cpu")
    res = rr.rerank(QUERY, DOCS)
    raw = CrossEncoder(tiny_xlmr_path, device="cpu", activation_fn=torch.nn.Identity())
    scores = [float(s) for s in raw.predict([(QUERY, d) for d in DOCS])]
    assert_ranking_follows(res.indices, scores)
    assert rr.window == MAX_LEN  # 66 positions minus RoBERTa's padding offset
    doc = long_text(3 * MAX_LEN, seed=5)
    (long_res,) = rr.rerank(QUERY, [doc])
    spans = rr.plan_passages(QUERY, [doc])[0].spans
    assert len(spans) >= 3 and long_res.passage in spans
    for a, b in spans:
        assert len(raw.tokenizer(QUERY, doc[a:b])["input_ids"]) <= MAX_LEN
    best = max(float(s) for s in raw.predict([(QUERY, doc[a:b]) for a, b in spans]))
    assert_scores_close([long_res.score], [best])


def test_max_length_option_shrinks_the_window(tiny_ce_path):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", max_length=32)
    assert rr.window == 32
    full = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    doc = long_text(2 * MAX_LEN, seed=4)
    assert len(rr.plan_passages(QUERY, [doc])[0].spans) > len(full.plan_passages(QUERY, [doc])[0].spans)
    assert full.window == MAX_LEN


def test_max_length_beyond_the_model_is_refused(tiny_ce_path):
    with pytest.raises(ModelLoadError, match="more than the model's 64"):
        load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", max_length=128).warm_up()


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"device": "gpu"}, "unknown device"),
        ({"batch_size": 0}, "batch_size"),
        ({"long_documents": "chop"}, "long_documents"),
        ({"normalize": "softmax"}, "normalization"),
        ({"bogus": 1}, "bogus"),
        ({"max_length": 4}, "max_length"),
    ],
)
def test_bad_options_fail_at_construction(tiny_ce_path, options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_reranker(f"cross-encoder:{tiny_ce_path}", **options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error(tiny_ce_path):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        load_reranker(f"cross-encoder:{tiny_ce_path}", device="cuda").warm_up()


def test_model_kwargs_pass_through_to_sentence_transformers(tiny_ce_path):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", model_kwargs={"torch_dtype": torch.float64})
    assert next(rr.encoder.model.parameters()).dtype == torch.float64
    assert len(rr.rerank(QUERY, DOCS)) == len(DOCS)


def test_missing_sentence_transformers_names_the_extra(tiny_ce_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    with pytest.raises(MissingDependencyError, match=r"rankrelay\[local\]"):
        rr.warm_up()


async def test_concurrent_async_calls_on_one_model(tiny_ce):
    import asyncio

    requests = [(f"query {i} wing", DOCS[i % 3:] + [f"extra {i}"]) for i in range(24)]
    results = await asyncio.gather(*(tiny_ce.arerank(q, d) for q, d in requests))
    for (q, d), res in zip(requests, results):
        assert res.indices == tiny_ce.rerank(q, d).indices
