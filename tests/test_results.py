import json

import pytest

from rankrelay import Document, InvalidDocumentError, InvalidInputError, RankedDocument, RerankResult
from rankrelay.results import to_documents


def test_documents_from_str_document_and_dict_keep_identity():
    meta = {"k": 1}
    doc = Document("b", id="b", metadata=meta)
    out = to_documents(["a", doc, {"text": "c", "id": 7, "metadata": meta}])
    assert [d.text for d in out] == ["a", "b", "c"]
    assert out[1] is doc
    assert out[2].metadata is meta and out[2].id == 7


def test_beir_dict_keeps_id_and_extra_fields_as_metadata():
    (doc,) = to_documents([{"_id": "d1", "title": "T", "text": "body"}])
    assert doc.id == "d1" and doc.metadata == {"title": "T"}


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (None, "NoneType"),
        (b"bytes", "bytes"),
        (3.5, "float"),
        ({"id": "x"}, "no 'text' key"),
        ({"text": 5}, "'text' is int"),
        ({"text": "x", "metadata": [1]}, "'metadata' must be a dict"),
        (Document(text=None), "text must be str"),  # type: ignore[arg-type]
    ],
)
def test_bad_documents_name_their_index(bad, fragment):
    with pytest.raises(InvalidDocumentError) as err:
        to_documents(["fine", bad])
    assert "document 1" in str(err.value) and fragment in str(err.value)


def test_a_single_string_is_not_a_document_list():
    with pytest.raises(InvalidDocumentError, match="wrap it in a list"):
        to_documents("just one string")  # type: ignore[arg-type]


def _result():
    results = [
        RankedDocument(index=2, text="c", score=3.0, rank=1, normalized_score=1.0, id="c", metadata={"x": 1}),
        RankedDocument(index=0, text="a", score=1.0, rank=2, normalized_score=0.5, passage=(0, 1)),
    ]
    return RerankResult("q", results, backend="test", model="m", timings={"total": 1.0, "model": 0.5},
                        num_candidates=2)


def test_result_access_top_k_and_json():
    res = _result()
    assert res.indices == [2, 0] and res.ids == ["c", None]
    assert res[0].document == Document("c", "c", {"x": 1})
    top = res.top_k(1)
    assert len(top) == 1 and len(res) == 2
    data = json.loads(json.dumps(res.to_dict()))
    assert data["results"][1]["passage"] == [0, 1]
    assert data["results"][0]["metadata"] == {"x": 1}
    assert data["timings"]["total"] == 1.0 and data["backend"] == "test"


@pytest.mark.parametrize("k", [0, -1, 1.5, True, None])
def test_top_k_rejects_bad_k(k):
    with pytest.raises(InvalidInputError):
        _result().top_k(k)


# --- what mutation testing found unchecked (tests/mutation/run.py --only results) ---

def test_every_field_of_a_ranked_document_reaches_its_dict():
    from rankrelay.results import RankedDocument

    doc = RankedDocument(3, "t", 1.5, 2, 0.5, id="d", metadata={"m": 1}, passage=(4, 9), truncated=True,
                         components={"a": 1.0}, stage="cheap")
    assert doc.to_dict() == {"index": 3, "id": "d", "rank": 2, "score": 1.5, "normalized_score": 0.5, "text": "t",
                             "metadata": {"m": 1}, "passage": [4, 9], "truncated": True, "components": {"a": 1.0},
                             "stage": "cheap"}
    plain = RankedDocument(0, "u", float("nan"), 1, 0.0)
    assert plain.to_dict() == {"index": 0, "id": None, "rank": 1, "score": None, "normalized_score": 0.0,
                               "text": "u", "metadata": {}}
    again = doc.document
    assert (again.text, again.id) == ("t", "d") and again.metadata is doc.metadata


def test_every_field_of_a_result_reaches_its_dict_and_properties():
    from rankrelay.results import RankedDocument

    docs = [RankedDocument(1, "b", 2.0, 1, 1.0, id="x"), RankedDocument(0, "a", 1.0, 2, 0.5)]
    res = RerankResult("q", docs, "be", model="m", timings={"total": 1.0}, normalization="minmax",
                       num_candidates=5, info={"fallbacks": [{"backend": "api"}], "k": 1})
    out = res.to_dict()
    assert {k: v for k, v in out.items() if k != "results"} == {
        "query": "q", "backend": "be", "model": "m", "normalization": "minmax", "num_candidates": 5,
        "timings": {"total": 1.0}, "info": {"fallbacks": [{"backend": "api"}], "k": 1}}
    assert [r["index"] for r in out["results"]] == [1, 0]
    assert res.ids == ["x", None] and res.indices == [1, 0] and len(res) == 2 and res[1].text == "a"
    assert res.fallbacks == [{"backend": "api"}] and res.fallbacks is not res.info["fallbacks"]
    assert RerankResult("q", [], "be").fallbacks == [] and RerankResult("q", [], "be").normalization == "rank"
    top = res.top_k(1)
    assert top.indices == [1] and top.num_candidates == 5 and res.indices == [1, 0]


@pytest.mark.parametrize("bad, message", [
    (["ok", 3], "^document 1: expected str, Document or dict with 'text', got int$"),
    ([{"txt": "a"}], r"^document 0: a dict document needs a str 'text' \(no 'text' key\)$"),
    ([{"text": 5}], r"^document 0: a dict document needs a str 'text' \('text' is int\)$"),
    ([{"text": "a", "metadata": [1]}], "^document 0: 'metadata' must be a dict, got list$"),
    ([Document(7)], "^document 0: text must be str, got int$"),
    (["a", "b\ud800"], "^document 1 is not valid text: it holds a lone surrogate '\\\\ud800' at position 1$"),
    ([{"text": "\ud800"}], "^document 0 is not valid text: "),
    ([Document("x\udfff")], "^document 0 is not valid text: it holds a lone surrogate '\\\\udfff' at position 1$"),
    ("abc", "^documents must be a list of documents, not a single str; wrap it in a list$"),
    ({"text": "a"}, "^documents must be a list of documents, not a single dict; wrap it in a list$"),
])
def test_bad_documents_say_exactly_what_is_wrong(bad, message):
    from rankrelay.results import to_documents

    with pytest.raises(InvalidDocumentError, match=message):
        to_documents(bad)


def test_dict_documents_take_id_or_beir_id_and_merge_extra_keys_under_metadata():
    from rankrelay.results import to_document

    assert to_document({"text": "a", "_id": "b1"}).id == "b1"
    assert to_document({"text": "a", "id": "i", "_id": "b1"}).id == "i"  # id wins
    doc = to_document({"text": "a", "title": "T", "metadata": {"title": "kept", "x": 1}})
    assert doc.metadata == {"title": "kept", "x": 1}  # the explicit metadata wins over an extra key
    assert to_document({"text": "a"}).metadata == {} and to_document({"text": "a", "y": 2}).metadata == {"y": 2}
    meta = {"z": 0}
    assert to_document({"text": "a", "metadata": meta}).metadata is meta  # untouched when there is nothing to add


def test_non_ascii_text_is_fine_and_checked_text_comes_back():
    from rankrelay.results import check_text, unencodable

    assert unencodable("déjà vu ✓") is None and unencodable("plain") is None
    assert check_text("ünï", "x") == "ünï"
    with pytest.raises(ValueError, match="^the query is not valid text"):
        check_text("\ud800", "the query", ValueError)


def test_a_result_iterates_in_rank_order_and_top_k_names_its_argument():
    from rankrelay.results import RankedDocument, to_document

    res = RerankResult("q", [RankedDocument(2, "c", 3.0, 1, 1.0), RankedDocument(0, "a", 1.0, 2, 0.5)], "be")
    assert [r.index for r in res] == [2, 0]
    with pytest.raises(InvalidInputError, match="^k must be an int >= 1, got 0$"):
        res.top_k(0)
    with pytest.raises(InvalidDocumentError, match="^document 0 is not valid text"):
        to_document("\ud800")


def test_a_result_names_what_served_it_as_backend_and_model():
    from rankrelay.results import RerankResult

    assert RerankResult("q", [], backend="cohere", model="rerank-v3.5").backend_label == "cohere:rerank-v3.5"
    assert RerankResult("q", [], backend="identity").backend_label == "identity"
