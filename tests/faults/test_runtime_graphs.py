"""Faults of the converted runtime graphs: a graph from another model's folder, a damaged graph (truncated,
emptied, deleted, same-size garbage), an unreadable agreement, and a full disk while converting."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from faults_helpers import fill

from rankrelay import load_reranker
from rankrelay.errors import ConversionError

QUERY = "what lifts a wing"
DOCS = ["wings make lift from moving air", "a recipe for bread", "the airfoil's pressure difference", "tax law"]


def scores(rr) -> list[float]:
    return [r.score for r in sorted(rr.rerank(QUERY, DOCS).results, key=lambda r: r.index)]


def graph_folder(cache: Path, runtime: str = "onnx") -> Path:
    (folder,) = [p for p in (cache / "runtimes").glob(f"*-{runtime}-*") if not p.name.startswith(".")]
    return folder


def load(path: str, cache: Path, runtime: str = "onnx"):
    rr = load_reranker(f"cross-encoder:{path}", device="cpu", runtime=runtime, cache_dir=str(cache), auto_measure="now")
    rr.warm_up()
    return rr


DAMAGE = {
    "truncated": lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),
    "emptied": lambda f: f.write_bytes(b""),
    "deleted": lambda f: f.unlink(),
    "same-size garbage": lambda f: f.write_bytes(bytes(255 - b for b in f.read_bytes())),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_graph_is_converted_again_with_one_warning(tiny_ce_path, tmp_path, caplog, damage):
    first = load(tiny_ce_path, tmp_path)
    expected = scores(first)
    DAMAGE[damage](graph_folder(tmp_path) / "model.onnx")
    with caplog.at_level(logging.WARNING):
        again = load(tiny_ce_path, tmp_path)
    assert again.runtime == "onnx" and scores(again) == pytest.approx(expected, abs=1e-4)
    warnings = [r.getMessage() for r in caplog.records if "converting it again" in r.getMessage()]
    assert len(warnings) == 1 and ("damaged" in warnings[0] or "unloadable" in warnings[0])
    assert warnings[0].startswith(f"the converted onnx graph of {tiny_ce_path} in ")
    assert (graph_folder(tmp_path) / "model.onnx").stat().st_size > 0


def test_a_graph_copied_in_from_another_models_folder_is_not_served(tiny_ce_path, tiny_ce2_path, tmp_path, caplog):
    own, other = tmp_path / "own", tmp_path / "other"
    mine = scores(load(tiny_ce_path, own))
    theirs = scores(load(tiny_ce2_path, other))
    assert mine != pytest.approx(theirs, abs=1e-3)  # two different models
    target = graph_folder(own)
    shutil.rmtree(target)
    shutil.copytree(graph_folder(other), target)  # the other model's graph under this model's key
    with caplog.at_level(logging.WARNING):
        again = load(tiny_ce_path, own)
    assert scores(again) == pytest.approx(mine, abs=1e-4)  # this model's scores, not the copied graph's
    assert any("made for another model" in r.getMessage() for r in caplog.records)


def test_an_unreadable_agreement_file_is_converted_again(tiny_ce_path, tmp_path, caplog):
    expected = scores(load(tiny_ce_path, tmp_path))
    (graph_folder(tmp_path) / "agreement.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        again = load(tiny_ce_path, tmp_path)
    assert scores(again) == pytest.approx(expected, abs=1e-4)
    assert json.loads((graph_folder(tmp_path) / "agreement.json").read_text())["graph"]["model.onnx"]
    assert any("without a readable agreement.json" in r.getMessage() for r in caplog.records)


def test_auto_serves_on_torch_when_its_chosen_graph_cannot_be_made_again(tiny_ce_path, runtime_cache, small_disk,
                                                                           caplog):
    """runtime='auto' chose ONNX Runtime earlier; the graph is gone and the disk is full, so it cannot be converted
    again: the model loads on torch with one warning instead of failing every later load."""
    load(tiny_ce_path, Path(runtime_cache), runtime="auto")  # auto's real measurement (once a session)
    torch_scores = scores(load(tiny_ce_path, small_disk / "torch", runtime="torch"))
    stored = small_disk / "runtimes" / "auto"
    stored.mkdir(parents=True)
    for path in (Path(runtime_cache) / "runtimes" / "auto").glob("*.json"):  # the stored choices, made onnx
        data = json.loads(path.read_text())
        data["choice"].update(runtime="onnx", precision="fp32")
        (stored / path.name).write_text(json.dumps(data))
    assert list(stored.glob("*.json"))
    fill(small_disk)
    with caplog.at_level(logging.WARNING):
        auto = load(tiny_ce_path, small_disk, runtime="auto")
    assert auto.runtime_choice.cached and auto.runtime_choice.runtime == "onnx"  # what was stored: onnx
    assert (auto.runtime, auto.precision) == ("torch", "fp32") and scores(auto) == pytest.approx(torch_scores,
                                                                                                abs=1e-5)
    assert sum("cannot be used now" in r.getMessage() for r in caplog.records) == 1


def test_a_full_disk_while_converting_is_a_conversion_error_and_leaves_no_half_graph(tiny_ce_path, small_disk):
    fill(small_disk)
    with pytest.raises(ConversionError, match="could not convert"):
        load(tiny_ce_path, small_disk)
    assert not [p for p in (small_disk / "runtimes").glob("*onnx*")] if (small_disk / "runtimes").exists() else True


def test_two_loads_converting_the_same_graph_at_once_both_serve_and_one_graph_is_kept(tiny_ce_path, tmp_path):
    import threading

    loaded, errors = [], []

    def convert():
        try:
            loaded.append(load(tiny_ce_path, tmp_path))
        except Exception as exc:  # noqa: BLE001 - any error fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=convert) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == [] and len(loaded) == 2
    assert scores(loaded[0]) == pytest.approx(scores(loaded[1]), abs=1e-5)
    folders = [p for p in (tmp_path / "runtimes").iterdir() if "-onnx-" in p.name]
    assert len(folders) == 1 and not folders[0].name.startswith(".")  # no temporary folder left behind


def test_a_stored_graph_the_engine_cannot_load_is_converted_again_naming_why_and_twice_is_an_error(
        tiny_ce_path, tmp_path, monkeypatch, caplog):
    from rankrelay.rerankers.local import runtimes

    expected = scores(load(tiny_ce_path, tmp_path))
    original, failures = runtimes._load_graph, ["engine upgrade broke it"]

    def load_graph(*args, **kwargs):  # the stored graph is whole, but this engine cannot load it (once)
        if failures:
            raise RuntimeError(failures.pop())
        return original(*args, **kwargs)

    monkeypatch.setattr(runtimes, "_load_graph", load_graph)
    with caplog.at_level(logging.WARNING):
        again = load(tiny_ce_path, tmp_path)
    assert again.runtime == "onnx" and scores(again) == pytest.approx(expected, abs=1e-4)
    (warning,) = [r.getMessage() for r in caplog.records if "converting it again" in r.getMessage()]
    assert warning.startswith(f"the converted onnx graph of {tiny_ce_path} in {graph_folder(tmp_path)} is ")
    assert warning.endswith("unloadable (RuntimeError: engine upgrade broke it): converting it again")

    def never(*args, **kwargs):
        raise RuntimeError("no such operator")

    monkeypatch.setattr(runtimes, "_load_graph", never)  # unloadable, and again once converted afresh
    with pytest.raises(ConversionError, match="onnx runtime: RuntimeError: no such operator") as err:
        load(tiny_ce_path, tmp_path)
    assert err.value.runtime == "onnx"


def test_a_damaged_fp32_graph_is_not_the_source_of_the_int8_one(tiny_ce_path, tmp_path, monkeypatch):
    from rankrelay.rerankers.local import runtimes

    load(tiny_ce_path, tmp_path)
    fp32 = graph_folder(tmp_path)
    DAMAGE["truncated"](fp32 / "model.onnx")
    exports = []
    original = runtimes._export_onnx
    monkeypatch.setattr(runtimes, "_export_onnx", lambda *a, **kw: exports.append(a) or original(*a, **kw))
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="onnx-int8", cache_dir=str(tmp_path),
                       min_agreement=0)
    assert sorted(rr.rerank(QUERY, DOCS).indices) == [0, 1, 2, 3] and rr.runtime == "onnx-int8"
    assert len(exports) == 1  # exported afresh from the model, not quantized from the damaged file
