"""The bi-encoder backend: cosine similarity on a tiny sentence-transformer built at test time."""

import random

import numpy as np
import pytest
from conftest import MAX_LEN, WORDS
from numerics import assert_ranking_follows, assert_scores_close, expected_order

from rankrelay import QueryTooLongError, load_reranker

QUERY = "why does a wing stall"
DOCS = ["the wing lift and air flow", "paris is the capital of france", "python sort is stable",
        "boundary layer separation", "cat and dog"]


@pytest.fixture(scope="module")
def bi(tiny_bi_path):
    return load_reranker(f"bi-encoder:{tiny_bi_path}", device="cpu")


def cosine(model, query, texts):
    q = model.encode([query], normalize_embeddings=True)[0]
    d = model.encode(texts, normalize_embeddings=True)
    return (d @ q).tolist()


def test_scores_are_cosine_similarities(bi):
    res = bi.rerank(QUERY, DOCS)
    expected = cosine(bi.encoder, QUERY, DOCS)
    assert expected_order(expected) != list(range(len(DOCS)))
    assert_ranking_follows(res.indices, expected)
    assert_scores_close([r.score for r in res], [expected[i] for i in res.indices])
    assert res.backend == "bi-encoder"


def test_long_documents_use_the_best_passage(bi):
    rng = random.Random(1)
    doc = " ".join(rng.choice(WORDS) for _ in range(3 * MAX_LEN))
    (r,) = bi.rerank(QUERY, [doc])
    spans = bi.plan_passages(QUERY, [doc])[0].spans
    assert len(spans) >= 3 and r.passage in spans
    assert_scores_close([r.score], [max(cosine(bi.encoder, QUERY, [doc[a:b] for a, b in spans]))])


def test_query_longer_than_the_window(bi):
    with pytest.raises(QueryTooLongError):
        bi.rerank(" ".join(["wing"] * (MAX_LEN + 5)), DOCS)


def test_batch_matches_single(bi):
    requests = [(QUERY, DOCS), ("python sort", DOCS[::-1])]
    for (q, docs), res in zip(requests, bi.rerank_batch(requests)):
        single = {r.index: r.score for r in bi.rerank(q, docs)}
        assert_scores_close([r.score for r in res], [single[r.index] for r in res])
        assert_ranking_follows(res.indices, [single[i] for i in range(len(docs))])


def test_encode_returns_unit_vectors(bi):
    emb = bi.encode(DOCS)
    assert emb.shape[0] == len(DOCS)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_passage_embeddings_are_cached_across_queries(tiny_bi_path):
    rr = load_reranker(f"bi-encoder:{tiny_bi_path}", device="cpu", cache_size=3)
    encoded = []
    encode = rr.encode
    rr.encode = lambda texts: (encoded.append(list(texts)), encode(texts))[1]
    first = rr.rerank("wing stall", DOCS[:3])
    second = rr.rerank("python sort", DOCS[:3])
    assert encoded == [["wing stall"], DOCS[:3], ["python sort"]]  # the passages were embedded once
    uncached = load_reranker(f"bi-encoder:{tiny_bi_path}", device="cpu", cache_size=0)
    fresh = {r.index: r.score for r in uncached.rerank("python sort", DOCS[:3])}
    assert_scores_close([r.score for r in second], [fresh[r.index] for r in second])
    rr.rerank("cat", DOCS[3:])  # two new passages push the oldest out of a cache of 3
    assert len(rr._cache) == 3 and first.indices
