"""Dense (FAISS), BM25, hybrid retrieval and the two-stage search, on a tiny bi-encoder built at test time."""

import json
import logging
import math
import random

import numpy as np
import pytest
from conftest import WORDS
from numerics import assert_ranking_follows, assert_scores_close

from rankrelay import ConfigError, EmptyQueryError, InvalidInputError, TwoStageSearch, fuse, load_reranker
from rankrelay.retrieval import BM25Retriever, DenseRetriever, HybridRetriever, load_corpus


def corpus(n, seed=0):
    rng = random.Random(seed)
    return [{"id": f"d{i}", "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))),
             "metadata": {"n": i}} for i in range(n)]


QUERIES = ["wing stall angle", "python sort order", "paris france capital", "boundary layer flow"]


@pytest.fixture(scope="module")
def docs():
    return corpus(300)


@pytest.fixture(scope="module")
def flat(tiny_bi_path, docs):
    return DenseRetriever.build(docs, model=tiny_bi_path, device="cpu")


def test_flat_search_is_exact(flat, docs):
    emb = flat.encoder.encode([d["text"] for d in docs])
    for query in QUERIES:
        q = flat.encoder.encode([query])[0]
        exact = (emb @ q).tolist()
        hits = flat.search(query, k=10)
        assert_ranking_follows([r.index for r in hits], exact)
        assert_scores_close([r.score for r in hits], [exact[r.index] for r in hits])
        assert hits[0].id == docs[hits[0].index]["id"] and hits[0].metadata == docs[hits[0].index]["metadata"]
        assert hits.backend == "dense" and [r.rank for r in hits] == list(range(1, 11))


@pytest.mark.parametrize("index, options, floor", [("hnsw", {}, 0.95), ("ivf", {}, 0.5), ("ivf", {"nprobe": 7}, 1.0)])
def test_approximate_indexes_recall_against_flat(tiny_bi_path, docs, flat, index, options, floor):
    approx = DenseRetriever.build(docs, model=tiny_bi_path, index=index, device="cpu", **options)
    many = QUERIES + [" ".join(random.Random(i).choices(WORDS, k=4)) for i in range(20)]
    recall = np.mean([len(set(approx.search(q, 10).ids) & set(flat.search(q, 10).ids)) / 10 for q in many])
    assert recall >= floor


def test_save_load_round_trip_and_manifest(flat, tmp_path, tiny_bi_path, tiny_ce_path):
    flat.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["corpus_size"] == 300 and manifest["index_type"] == "flat" and manifest["model"] == tiny_bi_path
    again = DenseRetriever.load(tmp_path / "idx", device="cpu")
    for q in QUERIES:
        a, b = flat.search(q, 5), again.search(q, 5)
        assert a.ids == b.ids and [r.metadata for r in a] == [r.metadata for r in b]
    with pytest.raises(ConfigError, match="was built with"):
        DenseRetriever.load(tmp_path / "idx", model=tiny_ce_path)
    docs_file = tmp_path / "idx" / "docs.jsonl"
    docs_file.write_text(docs_file.read_text().replace("d1", "dX", 1))
    with pytest.raises(InvalidInputError, match="checksum"):
        DenseRetriever.load(tmp_path / "idx")
    with pytest.raises(InvalidInputError, match="no dense index"):
        DenseRetriever.load(tmp_path)


def test_incremental_add_equals_building_at_once(tiny_bi_path, docs, flat):
    part = DenseRetriever.build(docs[:200], model=tiny_bi_path, device="cpu")
    part.add(docs[200:])
    assert len(part) == 300
    for q in QUERIES:
        assert part.search(q, 10).ids == flat.search(q, 10).ids


def test_edge_cases(tiny_bi_path, flat):
    with pytest.raises(InvalidInputError, match="empty"):
        DenseRetriever.build([], model=tiny_bi_path)
    with pytest.raises(EmptyQueryError):
        flat.search("  ")
    with pytest.raises(InvalidInputError):
        flat.search("wing", k=0)
    small = DenseRetriever.build(["wing", "cat", "dog"], model=tiny_bi_path, device="cpu")
    assert sorted(small.search("wing", k=50).ids) == ["0", "1", "2"]
    with pytest.raises(ConfigError):
        DenseRetriever.build(["x"], model=tiny_bi_path, index="lsh")


def test_bm25_finds_exact_terms(docs, tmp_path):
    extra = docs + [{"id": "rare", "text": "the zygomorphic wing"}]
    bm25 = BM25Retriever.build(extra)
    hits = bm25.search("zygomorphic", k=5)
    assert hits.ids == ["rare"]  # only documents sharing a term are returned
    bm25.save(tmp_path / "bm25")
    again = BM25Retriever.load(tmp_path / "bm25")
    assert again.search("zygomorphic wing", 3).ids == bm25.search("zygomorphic wing", 3).ids


def test_a_corpus_with_no_word_to_index_is_a_typed_error():
    from rankrelay.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"no word to index \(2 documents"):
        BM25Retriever.build(["the a of", "!!"])


def test_hybrid_is_rrf_of_dense_and_bm25(flat, docs):
    bm25 = BM25Retriever.build(docs)
    hybrid = HybridRetriever([flat, bm25], depth=50)
    for q in QUERIES:
        expected = fuse([flat.search(q, 50), bm25.search(q, 50)], "rrf").top_k(10)
        got = hybrid.search(q, 10)
        assert got.ids == expected.ids and got.backend == "hybrid"


def test_two_stage_search(flat, docs, tiny_ce_path):
    reranker = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    search = TwoStageSearch(flat, reranker, retrieve_k=20, top_n=5)
    out = search("wing stall angle")
    first = flat.search("wing stall angle", 20)
    direct = reranker.rerank("wing stall angle", [r.document for r in first], top_n=5)
    assert out.ids == direct.ids and len(out) == 5 and out.served_by == "cross-encoder"
    assert set(out.timings) >= {"retrieve_ms", "rerank_ms", "total_ms"} and out.timings["total_ms"] > 0
    for r in out:
        assert r.text == docs[r.index]["text"] and r.id == docs[r.index]["id"]
    first_rank = {r.id: r.rank for r in first}
    for move in out.movement:
        assert move["first_rank"] == first_rank[move["id"]]
        assert move["moved"] == move["first_rank"] - move["final_rank"]
    assert [m["final_rank"] for m in out.movement] == [1, 2, 3, 4, 5]
    batch = search.batch(["wing stall angle", "python sort order"])
    assert batch[0].ids == out.ids and len(batch[1]) == 5
    hybrid = TwoStageSearch(flat, reranker, retrieve_k=20, top_n=5, final_score="hybrid", alpha=0.3)("wing stall angle")
    assert len(hybrid) == 5 and hybrid[0].components is not None
    with pytest.raises(ConfigError):
        TwoStageSearch(flat, reranker, final_score="mean")


def test_two_stage_without_a_reranker_is_the_first_stage(flat):
    out = TwoStageSearch(flat, None, retrieve_k=20, top_n=5)("wing stall angle")
    first = flat.search("wing stall angle", 20)
    assert out.ids == first.ids[:5] and out.served_by == "dense" and out.num_candidates == 20
    assert [m["first_rank"] for m in out.movement] == [1, 2, 3, 4, 5]
    with pytest.raises(ConfigError, match="needs a reranker"):
        TwoStageSearch(flat, None, final_score="hybrid")


async def test_async_two_stage_search_matches_sync(flat, tiny_ce_path):
    reranker = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    search = TwoStageSearch(flat, reranker, retrieve_k=20, top_n=5)
    sync = search.batch(QUERIES)
    asynchronous = await search.abatch(QUERIES)
    assert [r.ids for r in asynchronous] == [r.ids for r in sync]
    one = await search.asearch(QUERIES[0], retrieve_k=10, top_n=2)  # per-call depth and cut
    assert one.num_candidates == 10 and len(one) == 2


class Shifted:
    """A user's own first stage (no rankrelay base class): the dense ranking with scores moved up by 100."""

    name = "dense"  # the name must not decide how scores are normalized
    score_normalization = "minmax"

    def __init__(self, inner):
        self.inner = inner

    def search(self, query, k=100):
        return self.search_batch([query], k)[0]

    def search_batch(self, queries, k=100):
        out = self.inner.search_batch(queries, k)
        for res in out:
            for r in res.results:
                r.score += 100.0
        return out


def test_hybrid_final_score_normalizes_the_first_stage_as_the_retriever_says(flat, tiny_ce_path):
    from rankrelay.retrieval.base import Retriever

    shifted = Shifted(flat)
    assert isinstance(shifted, Retriever)
    reranker = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    out = TwoStageSearch(shifted, reranker, retrieve_k=20, top_n=20, final_score="hybrid", alpha=0.5)(QUERIES[0])
    first = shifted.search(QUERIES[0], 20)
    scores = {r.index: r.score for r in first}
    low, high = min(scores.values()), max(scores.values())
    for r in out:  # min-max brings the shifted scores back to [0, 1]; taken raw they would be ~100
        first_raw, rerank_raw = r.components.values()
        assert first_raw == pytest.approx(scores[r.index])
        expected = 0.5 * (first_raw - low) / (high - low) + 0.5 / (1 + math.exp(-rerank_raw))
        assert r.score == pytest.approx(expected, abs=1e-9)


def test_load_corpus_forms(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "a", "title": "Wings", "text": "Lift and drag."}) + "\n"
        + json.dumps({"_id": "b", "title": "", "text": "No title."}) + "\n")
    docs = load_corpus(tmp_path)
    assert [(d.id, d.text) for d in docs] == [("a", "Wings Lift and drag."), ("b", "No title.")]
    assert docs[0].metadata == {"title": "Wings"}
    (tmp_path / "lines.txt").write_text("one\n\ntwo\n")
    assert [(d.id, d.text) for d in load_corpus(tmp_path / "lines.txt")] == [("0", "one"), ("1", "two")]
    with pytest.raises(InvalidInputError):
        load_corpus(tmp_path / "missing.jsonl")


def test_two_stage_search_behind_a_fallback_chain(flat, tiny_ce_path, refused_url):
    from rankrelay import FallbackReranker

    chain = FallbackReranker([{"spec": f"tei:{refused_url}", "max_attempts": 1},
                              {"spec": f"cross-encoder:{tiny_ce_path}", "device": "cpu"}])
    out = TwoStageSearch(flat, chain, retrieve_k=10, top_n=3)("python sort order")
    assert out.served_by == "cross-encoder" and len(out) == 3
    assert out.info["fallbacks"][0]["backend"] == "tei"


def test_long_documents_are_indexed_as_passages(tiny_bi_path, tmp_path):
    rng = random.Random(7)
    long_doc = " ".join(rng.choice(WORDS) for _ in range(200))  # about 3x the tiny encoder's 64 tokens
    docs = [{"id": "short", "text": "python sort order"}, {"id": "long", "text": long_doc}, {"id": "x", "text": "cat"}]
    dense = DenseRetriever.build(docs, model=tiny_bi_path, device="cpu")
    assert len(dense.passages) > 3 and dense.index.ntotal == len(dense.passages)
    spans = [(a, b) for pos, a, b in dense.passages if pos == 1]
    assert len(spans) >= 3 and spans[0][0] == 0 and spans[-1][1] == len(long_doc)
    query = "boundary layer wing"
    hits = dense.search(query, k=3)
    assert sorted(hits.ids) == ["long", "short", "x"]  # one hit per document, not per passage
    long_hit = next(r for r in hits if r.id == "long")
    q = dense.encoder.encode([query])[0]
    passage_scores = dense.encoder.encode([long_doc[a:b] for a, b in spans]) @ q
    assert_scores_close([long_hit.score], [float(passage_scores.max())])
    assert long_hit.passage == spans[int(passage_scores.argmax())]
    assert next(r for r in hits if r.id == "short").passage is None
    dense.save(tmp_path / "idx")
    again = DenseRetriever.load(tmp_path / "idx")
    assert again.passages == dense.passages and again.search(query, 3).ids == hits.ids


def test_truncate_mode_keeps_one_vector_per_document(tiny_bi_path, caplog):
    long_doc = " ".join(["wing"] * 200)
    with caplog.at_level(logging.WARNING, logger="rankrelay.retrieval.dense"):  # whatever earlier tests set
        dense = DenseRetriever.build(["cat", long_doc], model=tiny_bi_path, device="cpu", long_documents="truncate")
    assert dense.index.ntotal == 2 and "1 of 2 documents are longer" in caplog.text, caplog.records


def test_warm_up_loads_every_encoder_of_the_first_stage_and_the_reranker_before_any_query(flat, docs, tmp_path,
                                                                                       tiny_ce_path):
    flat.save(tmp_path / "dense")
    dense = DenseRetriever.load(tmp_path / "dense", device="cpu")  # a fresh encoder, not loaded yet
    reranker = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    hybrid = HybridRetriever([dense, BM25Retriever.build(docs)])
    assert dense.encoder._encoder is None and reranker._encoder is None
    TwoStageSearch(hybrid, reranker).warm_up()
    assert dense.encoder._encoder is not None and reranker._encoder is not None
