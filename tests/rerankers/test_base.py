"""Shared behaviour, checked on a deterministic backend whose scores are known in advance."""

import asyncio

import pytest

from rankrelay import (
    ConfigError,
    Document,
    EmptyQueryError,
    InvalidDocumentError,
    InvalidInputError,
    Reranker,
    RerankResult,
    fuse,
    load_reranker,
)
from rankrelay.rerankers.base import BaseReranker, Scored


class Overlap(BaseReranker):
    """Score = number of query words in the document (known in advance, ties on purpose)."""

    name = "overlap"
    model = "words"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []

    def _score_batch(self, queries, documents):
        self.calls.append([len(d) for d in documents])
        return [
            Scored([float(len(set(q.split()) & set(d.text.split()))) for d in docs])
            for q, docs in zip(queries, documents)
        ], {}


DOCS = ["zero match", "red", "red apple pie", "apple", Document("red apple", id="ra", metadata={"k": 1})]


def test_orders_by_score_descending_not_input_order():
    res = Overlap().rerank("red apple", DOCS)
    # scores: 0, 1, 2, 1, 2 -> 2s first (index order), then 1s, then 0
    assert res.indices == [2, 4, 1, 3, 0]
    assert [r.rank for r in res] == [1, 2, 3, 4, 5]
    assert [r.score for r in res] == [2.0, 2.0, 1.0, 1.0, 0.0]


def test_every_document_comes_back_with_id_and_metadata():
    meta = {"k": 1}
    docs = ["a", Document("red", id="d", metadata=meta), {"text": "red", "id": 3, "metadata": {"z": 0}}]
    res = Overlap().rerank("red", docs)
    by_index = {r.index: r for r in res}
    assert sorted(by_index) == [0, 1, 2]
    assert by_index[1].metadata is meta and by_index[1].id == "d"
    assert by_index[2].id == 3 and by_index[2].metadata == {"z": 0}
    assert by_index[0].text == "a"


def test_duplicates_are_kept():
    res = Overlap().rerank("red", ["red", "red", "blue"])
    assert res.indices == [0, 1, 2] and len(res) == 3


def test_top_n_cuts_after_normalizing_over_all():
    full = Overlap().rerank("red apple", DOCS)
    top = Overlap().rerank("red apple", DOCS, top_n=2)
    assert top.indices == full.indices[:2]
    assert [r.normalized_score for r in top] == [r.normalized_score for r in full][:2]
    assert top.num_candidates == 5
    assert len(Overlap().rerank("red", DOCS, top_n=50)) == 5


@pytest.mark.parametrize("top_n", [0, -3, 2.5, "2", True])
def test_bad_top_n(top_n):
    with pytest.raises(InvalidInputError, match="top_n"):
        Overlap().rerank("red", DOCS, top_n=top_n)


@pytest.mark.parametrize("query, error", [("", EmptyQueryError), ("   \n", EmptyQueryError), (None, InvalidInputError),
                                          (42, InvalidInputError)])
def test_bad_queries(query, error):
    with pytest.raises(error):
        Overlap().rerank(query, DOCS)


def test_non_text_document_is_rejected_before_any_scoring():
    rr = Overlap()
    with pytest.raises(InvalidDocumentError, match="document 2"):
        rr.rerank("red", ["a", "b", 3])
    assert rr.calls == []


def test_empty_document_list_is_an_empty_result_without_scoring():
    rr = Overlap()
    res = rr.rerank("red", [])
    assert res.results == [] and res.num_candidates == 0 and rr.calls == []
    assert res.timings["total"] >= 0 and "model" in res.timings


def test_result_fields():
    res = Overlap(normalize="minmax").rerank("red apple", DOCS)
    assert res.backend == "overlap" and res.model == "words" and res.normalization == "minmax"
    assert [r.normalized_score for r in res] == [1.0, 1.0, 0.5, 0.5, 0.0]
    assert set(res.timings) >= {"total", "model"}


def test_rerank_batch_is_one_scoring_pass_and_equals_single_calls():
    rr = Overlap()
    requests = [("red apple", DOCS), ("pie", ["pie pie", "apple pie", "cake"]), ("red", [])]
    batch = rr.rerank_batch(requests, top_n=2)
    assert rr.calls == [[5, 3]]  # one call, empty request skipped
    for (query, docs), res in zip(requests, batch):
        single = Overlap().rerank(query, docs, top_n=2)
        assert res.query == query
        assert [(r.index, r.score, r.normalized_score) for r in res] == [
            (r.index, r.score, r.normalized_score) for r in single
        ]


async def test_arerank_runs_off_the_event_loop():
    import threading

    gate = threading.Event()

    class Slow(Overlap):
        def _score_batch(self, queries, documents):
            assert gate.wait(5), "the event loop was blocked"
            return super()._score_batch(queries, documents)

    async def release():
        await asyncio.sleep(0.01)
        gate.set()

    res, _ = await asyncio.gather(Slow().arerank("red apple", DOCS, top_n=1), release())
    assert res.indices == [2]
    batch = await Slow().arerank_batch([("red", DOCS)])
    assert batch[0].indices == [1, 2, 4, 0, 3]


class UserReranker:
    """A user's own class: no rankrelay base class, just the protocol's members."""

    name = "user"

    def rerank(self, query, documents, top_n=None):
        res = Overlap().rerank(query, documents, top_n)
        res.backend = self.name
        return res

    async def arerank(self, query, documents, top_n=None):
        return self.rerank(query, documents, top_n)

    def rerank_batch(self, requests, top_n=None):
        return [self.rerank(q, d, top_n) for q, d in requests]

    def warm_up(self):
        pass

    def close(self):
        pass


def test_a_class_without_the_lifetime_members_is_told_what_it_lacks():
    class Old:
        name = "old"
        rerank = UserReranker.rerank
        arerank = UserReranker.arerank
        rerank_batch = UserReranker.rerank_batch

    assert not isinstance(Old(), Reranker)
    with pytest.raises(ConfigError, match="close, warm_up"):
        load_reranker(Old())


def test_user_class_satisfies_the_protocol_and_works_with_the_api():
    user = UserReranker()
    assert isinstance(user, Reranker)
    assert isinstance(Overlap(), Reranker)
    assert not isinstance(object(), Reranker)
    assert load_reranker(user) is user
    fused = fuse([user.rerank("red apple", DOCS), Overlap().rerank("red apple", DOCS)])
    assert isinstance(fused, RerankResult) and fused.indices[0] == 2
