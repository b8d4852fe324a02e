"""runtime='auto' off the request path: a copy of a model's settings for the measuring child, and what the model
does when the child fails or runs too long (it keeps serving on torch, and says so once)."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import threading

import pytest
from conftest import build_bert_cross_encoder
from tiny_lms import build_causal_lm

from rankrelay import load_reranker
from rankrelay.rerankers.local import background


@pytest.fixture(scope="module")
def qwen3_path(tmp_path_factory):
    return str(build_causal_lm(tmp_path_factory.mktemp("tiny-qwen3") / "qwen3", "qwen3"))


@pytest.mark.parametrize("kind", ["cross-encoder", "bi-encoder", "qwen3-reranker"])
def test_a_copy_of_a_loaded_model_has_its_settings_and_none_of_what_it_loaded(kind, tiny_ce_path, tiny_bi_path,
                                                                              qwen3_path, tmp_path):
    path = {"cross-encoder": tiny_ce_path, "bi-encoder": tiny_bi_path, "qwen3-reranker": qwen3_path}[kind]
    rr = load_reranker(f"{kind}:{path}", device="cpu", batch_size=3, min_agreement=0.8, cache_dir=str(tmp_path))
    answer = rr.rerank("what is a wing", ["lift of the wing", "paris in spring"])
    copy = pickle.loads(pickle.dumps(rr))
    assert type(copy) is type(rr) and not copy.loaded and copy.score_cache is None
    assert (copy.model, copy.batch_size, copy.min_agreement, copy.cache_dir) == (rr.model, 3, 0.8, tmp_path)
    assert [(r.index, r.score) for r in copy.rerank("what is a wing", ["lift of the wing", "paris in spring"])] == \
        [(r.index, r.score) for r in answer]  # it loads again, the same model
    assert rr.loaded  # the original is untouched


def measured(tmp_path, **options):
    """A model never measured in ``tmp_path``, loaded on runtime='auto' (its measurement has started)."""
    folder = build_bert_cross_encoder(tmp_path / "model")
    rr = load_reranker(f"cross-encoder:{folder}", device="cpu", runtime="auto", cache_dir=str(tmp_path / "cache"),
                       **options)
    return rr, folder


def serves_on_torch_after(rr, caplog, why):
    assert rr.wait_for_runtime(300) is None and not rr.measuring
    assert (rr.runtime, rr.precision) == ("torch", "fp32") and len(rr.rerank("q", ["a", "b"])) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and why in warnings[0] and "stays on torch fp32" in warnings[0], warnings


def test_a_measuring_process_that_fails_leaves_the_model_serving_on_torch_with_one_warning(tmp_path, caplog,
                                                                                          monkeypatch):
    held, start = [], background.Measurement.start
    monkeypatch.setattr(background.Measurement, "start", lambda self: held.append(self))  # the test starts it
    rr, folder = measured(tmp_path)
    with caplog.at_level(logging.WARNING):
        rr.warm_up()
        shutil.rmtree(folder)  # the files went away between the load and the measurement: the child cannot load
        start(held[0])
        serves_on_torch_after(rr, caplog, "the measuring process exited with 1")


def test_a_measurement_past_its_limit_is_stopped_and_the_model_stays_on_torch(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(background, "LIMIT_S", 0.2)
    rr, _ = measured(tmp_path)
    with caplog.at_level(logging.WARNING):
        rr.warm_up()
        serves_on_torch_after(rr, caplog, "stopped after the 0.2 s limit")


def test_a_fallback_chain_never_measures_inside_the_request_that_falls_back(tiny_ce_path, refused_url, tmp_path,
                                                                            monkeypatch):
    """The API is down and the local model was never measured here: the request that falls back is answered on
    torch while the measurement is held on the test's gate (measured inside the request, it would wait for it)."""
    from rankrelay.rerankers.compose.fallback import FallbackReranker
    from rankrelay.rerankers.local.auto_runtime import RuntimeChoice

    go = threading.Event()
    monkeypatch.setattr(background.Measurement, "_measure",
                        lambda self: go.wait(60) and RuntimeChoice("torch", "fp32", "measured behind the gate"))
    chain = FallbackReranker([{"spec": f"tei:{refused_url}", "api_key": "k"},
                              {"spec": f"cross-encoder:{tiny_ce_path}", "device": "cpu", "runtime": "auto",
                               "cache_dir": str(tmp_path)}])
    local = chain.backends[1]
    res = chain.rerank("what is a wing", ["lift of the wing", "paris in spring"])
    assert res.backend == "cross-encoder" and local.measuring and local.runtime_choice is None
    go.set()
    assert local.wait_for_runtime(60).reason == "measured behind the gate" and not local.measuring


def test_the_measuring_thread_says_why_once_and_hands_over_no_choice_when_the_child_fails(tmp_path, caplog):
    """The measurement's work, run here in the test's thread (what start() runs in its own)."""
    rr, folder = measured(tmp_path)
    chosen = []
    measurement = background.Measurement(rr, on_choice=chosen.append)
    shutil.rmtree(folder)  # the child cannot load the model
    with caplog.at_level(logging.DEBUG, "rankrelay.rerankers.local.background"):
        measurement._run()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert chosen == [] and measurement.error == "RuntimeError: the measuring process exited with 1"
    assert warnings == [f"runtime='auto' could not measure {rr.model} in the background (RuntimeError: the "
                        "measuring process exited with 1); it stays on torch fp32"]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("ModelNotFoundError" in line for line in said)  # the child's own output, kept at DEBUG


def test_the_child_measures_what_it_was_sent_and_writes_the_choice(tmp_path, monkeypatch, tiny_ce_path, caplog):
    """The child's side, in-process: a pickled reranker on stdin, the choice in the file named (here the machine
    has only torch, so the choice is made at once)."""
    import io
    import json
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setitem(sys.modules, "openvino", None)
    monkeypatch.setattr("rankrelay.rerankers.local.auto_runtime.cpu_signature",
                        lambda: {"model": "any", "machine": "x86_64", "flags": ["avx2"]})  # no bf16 units
    asked = []
    monkeypatch.setattr(background.os, "nice", lambda n: asked.append(n) or 10)  # the test keeps its priority
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="auto", cache_dir=str(tmp_path))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pickle.dumps(rr))))
    with caplog.at_level(logging.INFO, "rankrelay.rerankers.local.background"):
        assert background.main([str(tmp_path / "choice.json")]) == 0
    assert asked == [background.NICENESS] and "measuring at niceness 10" in [r.getMessage() for r in caplog.records]
    choice = json.loads((tmp_path / "choice.json").read_text())
    assert (choice["runtime"], choice["precision"], choice["reason"]) == ("torch", "fp32",
                                                                          "torch is the only runtime here")


def test_the_switch_serves_on_the_chosen_runtime_from_the_next_pass_and_a_torch_choice_changes_nothing(
        tiny_ce_path, tmp_path, caplog):
    """What the measuring thread does with the choice, done here in the test's thread."""
    from numerics import CROSS_RUNTIME, assert_ranking_follows

    from rankrelay.rerankers.local.auto_runtime import RuntimeChoice

    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch", cache_dir=str(tmp_path))
    query, docs = "why does a wing stall", ["lift of the wing", "paris in spring", "the stall angle of a wing"]
    on_torch = rr.rerank(query, docs)
    identity, encoder = rr._identity, rr._encoder
    rr._switch_runtime(RuntimeChoice("torch", "fp32", "torch is the fastest here"))
    assert (rr.runtime, rr._identity, rr._encoder) == ("torch", identity, encoder)
    assert rr.runtime_choice.reason == "torch is the fastest here"
    with caplog.at_level(logging.INFO, "rankrelay.rerankers.local.background"):
        rr._switch_runtime(RuntimeChoice("onnx", "fp32", "onnx is 2x"))
    assert (rr.runtime, rr.precision, rr.runtime_choice.runtime) == ("onnx", "fp32", "onnx")
    assert rr._identity == identity.replace("|torch|", "|onnx|") and rr.agreement.top10_overlap == 1.0
    assert rr._encoder is not encoder  # built on a copy: the serving model was never touched
    assert any(f"{rr.model} now runs on onnx fp32: onnx is 2x" in r.getMessage() for r in caplog.records)
    assert_ranking_follows(rr.rerank(query, docs).indices, [r.score for r in sorted(on_torch, key=lambda r: r.index)],
                           CROSS_RUNTIME)


def child_site(tmp_path, monkeypatch, hold: bool = False) -> None:
    """A site for the measuring child (on its PYTHONPATH): ONNX Runtime and OpenVINO hidden, so it measures torch
    only (seconds, not minutes); it prints what its environment holds (and a line that is not UTF-8), and with
    ``hold`` stays there (the test stops it)."""
    site = tmp_path / "child-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys, time\n"
        "sys.modules['onnxruntime'] = sys.modules['openvino'] = None\n"
        "print(f\"the child started with TQDM_DISABLE={os.environ.get('TQDM_DISABLE')}\")\n"
        "sys.stdout.buffer.write(b'a converter wrote caf\\xe9 in latin-1\\n')\n"
        f"if {hold!r}:\n    time.sleep(600)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    for name in ("TQDM_DISABLE", "PYTHONUNBUFFERED"):  # (what the child is given, not what this shell had)
        monkeypatch.delenv(name, raising=False)


def test_a_measurement_in_its_own_process_hands_its_choice_to_the_serving_model(tmp_path, monkeypatch, caplog):
    """The whole path, on torch alone: the child measures, its output reaches the log at DEBUG, the model switches
    to what it chose (the stored choice the next load reads is tested with every runtime, marked ``measures``)."""
    child_site(tmp_path, monkeypatch)
    rr, _ = measured(tmp_path)
    with caplog.at_level(logging.DEBUG, "rankrelay.rerankers.local.background"):
        choice = rr.wait_for_runtime(300)
    assert choice is not None and choice.runtime == "torch" and not rr.measuring
    assert rr._measurement.error is None and (rr.runtime, rr.precision) == (choice.runtime, choice.precision)
    said = [r.getMessage() for r in caplog.records]
    assert any(line.endswith("the child started with TQDM_DISABLE=1") for line in said)
    assert any(line.endswith("a converter wrote caf\ufffd in latin-1") for line in said)  # never a failed read
    niceness = min(19, os.nice(0) + background.NICENESS)
    assert any(line.endswith(f"measuring at niceness {niceness}") for line in said)
    assert not background._LIVE  # nothing left for this process to stop at exit
    assert f"{rr.model} now runs on torch {choice.precision}: {choice.reason}" in said
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_what_the_child_prints_is_logged_as_it_prints_and_waiting_is_bounded_while_it_measures(
        tmp_path, monkeypatch, caplog):
    from polling import until

    child_site(tmp_path, monkeypatch, hold=True)
    rr, _ = measured(tmp_path)
    with caplog.at_level(logging.DEBUG, "rankrelay.rerankers.local.background"):
        rr.warm_up()
        until(lambda: any("the child started" in r.getMessage() for r in caplog.records),
              "the child's first line logged while it still runs", seconds=120)
        (thread,) = [t for t in threading.enumerate() if t.name == f"rankrelay-measure {rr.model}"]
        assert thread.daemon  # a process that exits does not wait for a measurement
        got: list = []
        waiter = threading.Thread(target=lambda: got.append(rr.wait_for_runtime(0.1)), daemon=True)
        waiter.start()
        waiter.join(60)
        assert got == [None] and rr.measuring  # it said "still measuring" without waiting for the child
        background._stop_measuring()  # what this process does at exit
        rr.wait_for_runtime(60)
    assert not rr.measuring and (rr.runtime, rr.precision) == ("torch", "fp32")
    assert rr._measurement.error.startswith("RuntimeError: the measuring process exited with -")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])  # (fp16: what a GPU's choice would be)
def test_a_switch_to_a_reduced_precision_builds_a_copy_in_it_and_leaves_the_serving_weights_in_fp32(
        tiny_ce_path, tmp_path, precision):
    import torch

    from rankrelay.rerankers.local.auto_runtime import RuntimeChoice

    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch", cache_dir=str(tmp_path))
    rr.warm_up()
    serving = rr._encoder
    rr._switch_runtime(RuntimeChoice("torch", precision, f"{precision} is 2x"))
    assert (rr.runtime, rr.precision) == ("torch", precision)
    assert {p.dtype for p in rr._encoder.parameters()} == {{"bf16": torch.bfloat16, "fp16": torch.float16}[precision]}
    assert {p.dtype for p in serving.parameters()} == {torch.float32}  # requests in flight kept their fp32 model


def test_the_graph_built_at_the_switch_is_the_one_the_next_load_on_that_runtime_reads(tiny_ce_path, tmp_path):
    from rankrelay.rerankers.local.auto_runtime import RuntimeChoice
    from rankrelay.rerankers.local.runtimes import RECORD

    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="torch", cache_dir=str(tmp_path))
    rr.warm_up()
    rr._switch_runtime(RuntimeChoice("onnx", "fp32", "onnx is 2x"))
    again = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="onnx", cache_dir=str(tmp_path))
    again.warm_up()
    assert again.runtime == "onnx" and len(list(tmp_path.rglob(RECORD))) == 1  # converted once, read back
