"""What binds a converted graph to its model: the key it was made for and a digest of each of its files."""

import json

import pytest

from rankrelay.rerankers.local.graph_store import discard, graph_digest, problem, read_record, stored_record

KEY = {"files": "abc", "runtime": "onnx", "format": 2}


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "model.xml").write_bytes(b"<graph/>")
    (tmp_path / "model.bin").write_bytes(b"\x00\x01weights")
    (tmp_path / "agreement.json").write_text(json.dumps({"top10_overlap": 1.0, **stored_record(KEY, tmp_path)}))
    return tmp_path


def test_a_graph_made_for_this_key_with_its_files_intact_may_be_loaded(folder):
    assert problem(folder, KEY, read_record(folder)) is None
    assert sorted(graph_digest(folder)) == ["model.bin", "model.xml"]  # only graph files, not the record


@pytest.mark.parametrize(("change", "why"), [
    (lambda f: (f / "model.bin").write_bytes(b"\x00\x01weightz"), "damaged (model.bin missing or changed"),
    (lambda f: (f / "model.xml").unlink(), "damaged (model.xml missing or changed"),
    (lambda f: (f / "agreement.json").write_text("{"), "without a readable agreement.json"),
    (lambda f: (f / "agreement.json").write_text("[1]"), "without a readable agreement.json"),
    (lambda f: (f / "agreement.json").unlink(), "without a readable agreement.json"),
    (lambda f: (f / "agreement.json").write_text(json.dumps({"key": KEY})), "without a digest of its files"),
    (lambda f: (f / "agreement.json").write_text(json.dumps({"key": KEY, "graph": {}})), "without a digest"),
])
def test_a_changed_file_or_record_is_named(folder, change, why):
    change(folder)
    assert why in problem(folder, KEY, read_record(folder))


def test_a_graph_made_for_another_key_is_not_this_models(folder):
    assert problem(folder, {**KEY, "files": "other"}, read_record(folder)) == \
        "made for another model or runtime (its key differs)"
    assert problem(folder, {**KEY, "format": 1}, read_record(folder)).startswith("made for another")


def test_a_key_with_tuples_matches_its_json_round_trip(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"g")
    key = {"inputs": ("input_ids", "attention_mask")}
    assert problem(tmp_path, key, stored_record(json.loads(json.dumps(key)), tmp_path)) is None


def test_discard_removes_the_folder_and_says_why(folder, caplog):
    discard(folder, "tiny", "openvino", "damaged (model.bin missing or changed since it was converted)")
    assert not folder.exists()
    assert "the converted openvino graph of tiny in" in caplog.text and "converting it again" in caplog.text
