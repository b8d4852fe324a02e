"""What binds a converted graph to its model: the key it was made for and a digest of each of its files."""

import json
import logging

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


DAMAGED = "damaged ({} missing or changed since it was converted)"
UNREADABLE = "without a readable agreement.json"
NO_DIGEST = "without a digest of its files (made by an older rankrelay)"


def both_changed(folder):
    (folder / "model.bin").write_bytes(b"other")
    (folder / "model.xml").write_bytes(b"<other/>")


@pytest.mark.parametrize(("change", "why"), [
    (lambda f: (f / "model.bin").write_bytes(b"\x00\x01weightz"), DAMAGED.format("model.bin")),
    (lambda f: (f / "model.xml").unlink(), DAMAGED.format("model.xml")),
    (both_changed, DAMAGED.format("model.bin, model.xml")),
    (lambda f: (f / "agreement.json").write_text("{"), UNREADABLE),
    (lambda f: (f / "agreement.json").write_text("[1]"), UNREADABLE),
    (lambda f: (f / "agreement.json").unlink(), UNREADABLE),
    (lambda f: (f / "agreement.json").write_text(json.dumps({"key": KEY})), NO_DIGEST),
    (lambda f: (f / "agreement.json").write_text(json.dumps({"key": KEY, "graph": {}})), NO_DIGEST),
])
def test_a_changed_file_or_record_is_named(folder, change, why):
    change(folder)
    assert problem(folder, KEY, read_record(folder)) == why


def test_a_graph_made_for_another_key_is_not_this_models(folder):
    assert problem(folder, {**KEY, "files": "other"}, read_record(folder)) == \
        "made for another model or runtime (its key differs)"
    assert problem(folder, {**KEY, "format": 1}, read_record(folder)).startswith("made for another")


def test_a_key_with_tuples_matches_its_json_round_trip(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"g")
    key = {"inputs": ("input_ids", "attention_mask")}
    assert problem(tmp_path, key, stored_record(json.loads(json.dumps(key)), tmp_path)) is None


def test_the_digest_is_each_graph_files_sha256(folder):
    import hashlib

    assert graph_digest(folder) == {"model.xml": hashlib.sha256(b"<graph/>").hexdigest(),
                                    "model.bin": hashlib.sha256(b"\x00\x01weights").hexdigest()}


def test_discarding_a_folder_another_process_removed_first_is_quiet(tmp_path):
    discard(tmp_path / "gone", "tiny", "onnx", "damaged")  # no error: the goal, no folder, is reached


def test_discard_removes_the_folder_and_says_why(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="rankrelay.rerankers.local.graph_store"):
        discard(folder, "tiny", "openvino", "damaged (model.bin missing or changed since it was converted)")
    assert not folder.exists()
    assert "the converted openvino graph of tiny in" in caplog.text and "converting it again" in caplog.text
