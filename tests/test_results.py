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
