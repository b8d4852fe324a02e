"""How a converted graph is made, recorded, checked against torch and loaded: what an operator reads in the
cache and in ``describe()``, and what is refused."""

import hashlib
import importlib
import json
import logging
import re
from pathlib import Path

import pytest

from rankrelay import load_reranker
from rankrelay.devices import cpu_signature, has_bf16_units
from rankrelay.errors import LowAgreementError
from rankrelay.rerankers.local import runtimes
from rankrelay.rerankers.local.runtimes import (
    FORMAT_VERSION,
    TorchForward,
    cache_slug,
    compile_forward,
    model_fingerprint,
)

QUERY = "why does a wing stall"
DOCS = ["the wing lift and air flow", "paris is the capital of france", "boundary layer separation on the wing"]
ENGINE = {"onnx": "onnxruntime", "openvino": "openvino", "openvino-bf16": "openvino"}


@pytest.fixture(scope="module")
def converted(tiny_ce_path, tmp_path_factory):
    """The tiny model on ONNX Runtime, OpenVINO fp32 and OpenVINO bf16, converted once into one cache."""
    cache = tmp_path_factory.mktemp("conversion-cache")
    loaded = {}
    for runtime in ENGINE:
        rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime=runtime, cache_dir=str(cache),
                           min_agreement=0)
        rr.warm_up()
        loaded[runtime] = rr
    return cache, loaded


def graph_folder(cache: Path, runtime: str) -> Path:
    (folder,) = [p for p in (cache / "runtimes").iterdir()
                 if not p.name.startswith(".") and re.search(rf"-{runtime}-[0-9a-f]{{20}}$", p.name)]
    return folder


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_a_graphs_record_says_what_it_was_made_from_and_reads_as_indented_json(tiny_ce_path, converted, runtime):
    import torch

    cache, _ = converted
    load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime=runtime, cache_dir=str(cache),
                  min_agreement=0).warm_up()  # found by its key, in this test: not converted again
    folder = graph_folder(cache, runtime)
    text = (folder / "agreement.json").read_text()
    record = json.loads(text)
    engine = importlib.import_module(ENGINE[runtime])
    assert record["key"] == {
        "files": model_fingerprint(tiny_ce_path), "runtime": runtime, "output": "scores",
        "versions": f"{engine.__version__}/torch-{torch.__version__}",  # a new engine or torch: converted anew
        "inputs": ["input_ids", "attention_mask", "token_type_ids"], "format": FORMAT_VERSION,
    }
    assert text == json.dumps(record, indent=2)  # one field a line, for a reader of the cache
    assert re.fullmatch(rf"{re.escape(cache_slug(tiny_ce_path))}-{runtime}-[0-9a-f]{{20}}", folder.name)


def test_the_cache_folder_follows_the_keys_content_not_the_order_of_its_fields(tmp_path):
    forward = {"files": "abc", "runtime": "onnx", "versions": "1/2", "output": "scores", "format": 2}
    backward = dict(reversed(list(forward.items())))
    folder = runtimes._folder(tmp_path, "model", "onnx", forward)
    assert folder == runtimes._folder(tmp_path, "model", "onnx", backward)
    assert folder != runtimes._folder(tmp_path, "model", "onnx", {**forward, "files": "abd"})
    assert folder.name.endswith(hashlib.sha256(json.dumps(forward, sort_keys=True).encode()).hexdigest()[:20])


@pytest.mark.parametrize("runtime", list(ENGINE))
def test_describe_reports_what_the_engine_runs_the_graph_with(tiny_ce_path, converted, runtime):
    cache, _ = converted  # converted there once; loaded here, in this test
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime=runtime, cache_dir=str(cache),
                       min_agreement=0)
    rr.warm_up()
    assert rr._forward.runtime == runtime
    graph = rr.describe()["graph"]
    engine = importlib.import_module(ENGINE[runtime])
    assert graph["engine"] == f"{ENGINE[runtime]} {engine.__version__}"
    if runtime == "onnx":
        assert graph["providers"] == ["CPUExecutionProvider"] and graph["graph_optimization"] == "ORT_ENABLE_ALL"
    else:
        assert graph["devices"] == ["CPU"] and graph["performance_hint"] == "LATENCY"
        bf16 = runtime.endswith("bf16") and has_bf16_units(cpu_signature())  # elsewhere OpenVINO computes in f32
        assert graph["inference_precision"] == ("bf16" if bf16 else "f32")


def test_a_model_on_torch_describes_no_graph(tiny_ce):
    assert "graph" not in tiny_ce.describe() and tiny_ce.describe()["runtime"] == "torch"


def test_loading_a_graph_prints_nothing(tiny_ce_path, converted, capfd):
    cache, _ = converted
    capfd.readouterr()
    load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="onnx", cache_dir=str(cache)).warm_up()
    out, err = capfd.readouterr()
    assert "EP Error" not in out + err and "Falling back" not in out + err


def int8_ops(folder: Path) -> set[str]:
    """The int8 operations in a graph's file (ONNX's integer matmuls, OpenVINO's quantize nodes)."""
    if (folder / "model.onnx").exists():
        blob = (folder / "model.onnx").read_bytes()
        return {op for op in ("MatMulInteger", "DynamicQuantizeLinear") if op.encode() in blob}
    xml = (folder / "model.xml").read_text()
    return {op for op in ("FakeQuantize", 'element_type="i8"') if op in xml}


@pytest.mark.parametrize(("runtime", "from_fp32"), [("onnx-int8", False), ("onnx-int8", True),
                                                    ("openvino-int8", True)])  # OpenVINO's export: the fp32 test
def test_an_int8_graph_is_quantized_and_keeps_only_its_own_files(tiny_ce_path, tmp_path, runtime, from_fp32):
    plain = runtime.removesuffix("-int8")
    if from_fp32:
        load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime=plain, cache_dir=str(tmp_path)).warm_up()
        assert not int8_ops(graph_folder(tmp_path, plain))
        if plain == "openvino":  # an fp32 graph keeps f32 weights (not compressed to f16)
            xml = (graph_folder(tmp_path, plain) / "model.xml").read_text()
            assert 'element_type="f32"' in xml and 'element_type="f16"' not in xml
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime=runtime, cache_dir=str(tmp_path),
                       min_agreement=0)
    assert sorted(rr.rerank(QUERY, DOCS).indices) == [0, 1, 2]
    folder = graph_folder(tmp_path, runtime)
    assert int8_ops(folder)
    graph = {"model.onnx"} if plain == "onnx" else {"model.xml", "model.bin"}
    assert {p.name for p in folder.iterdir()} == graph | {"agreement.json"}  # no fp32 export left behind


def test_a_graph_is_written_in_a_hidden_folder_beside_its_place_then_renamed_and_logged(tiny_ce_path, tmp_path,
                                                                                       monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="rankrelay")
    written = []
    original = runtimes._convert
    monkeypatch.setattr(runtimes, "_convert", lambda *a, **kw: written.append(Path(a[6])) or original(*a, **kw))
    load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="onnx", cache_dir=str(tmp_path)).warm_up()
    final = graph_folder(tmp_path, "onnx")
    (tmp,) = written
    assert tmp.parent == final.parent and tmp.name.startswith(f".{final.name}-") and not tmp.exists()
    assert any(r.getMessage().startswith(f"converted {tiny_ce_path} to onnx in ") for r in caplog.records)


@pytest.fixture(scope="module")
def tiny(tiny_ce_path):
    """The tiny model loaded on torch, with what compile_forward needs to check a graph against it."""
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu")
    encoder = rr.encoder
    torch_scores = rr._sample_scores(encoder, TorchForward(encoder, "scores"))
    return rr, encoder, torch_scores


def compile_with(tiny, cache: Path, runtime: str, min_agreement: float, reference=None):
    rr, encoder, _ = tiny
    return compile_forward(
        encoder, runtime=runtime, output="scores", fingerprint="tiny-files", label="tiny", cache_dir=cache,
        sample=lambda forward: rr._sample_scores(encoder, forward),
        example=encoder.preprocess(rr._sample_inputs()[:2]), calibration=lambda: [],
        min_agreement=min_agreement, reference=reference)


def test_a_reference_the_caller_has_is_used_and_not_computed_again(tiny, tmp_path):
    calls = []

    def reversed_reference():  # torch's scores turned upside down: the graph disagrees with it completely
        calls.append(1)
        return -tiny[2]

    forward, agreement = compile_with(tiny, tmp_path, "onnx", 0.9, reference=reversed_reference)
    assert calls == [1] and agreement.spearman < -0.9 and agreement.top10_overlap < 0.9
    assert forward.runtime == "onnx"  # an fp32 graph is not judged by agreement: it computes what torch does


@pytest.mark.parametrize("runtime", ["openvino-bf16", "onnx-int8"])
def test_a_bf16_or_int8_graph_that_disagrees_is_refused_naming_model_and_runtime(tiny, tmp_path, runtime):
    with pytest.raises(LowAgreementError, match="min_agreement") as err:
        compile_with(tiny, tmp_path, runtime, 0.9, reference=lambda: -tiny[2])
    assert err.value.model == "tiny" and err.value.runtime == runtime
    assert err.value.agreement["top10_overlap"] < 0.9


def test_an_agreement_exactly_at_min_agreement_is_accepted(tiny, tmp_path):
    _, first = compile_with(tiny, tmp_path, "onnx-int8", 0.0)
    forward, again = compile_with(tiny, tmp_path, "onnx-int8", first.top10_overlap)  # read from the record
    assert forward.runtime == "onnx-int8" and again == first


def test_torch_needs_no_conversion(tiny, tmp_path):
    forward, agreement = compile_with(tiny, tmp_path, "torch", 0.9)
    assert isinstance(forward, TorchForward) and agreement is None and not tmp_path.joinpath("runtimes").exists()


def test_torch_moves_the_features_to_the_models_device_and_hands_back_cpu_float32():
    import numpy as np
    import torch

    class OnAnotherDevice:  # a model whose weights sit on another device (a GPU's place, here "meta")
        device = torch.device("meta")

        def __init__(self):
            self.seen = {}

        def __call__(self, features):
            self.seen = {k: v.device.type if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            return {"scores": torch.tensor([[1.5], [2.5]], dtype=torch.bfloat16)}

    model = OnAnotherDevice()
    out = TorchForward(model, "scores")({"input_ids": torch.ones(2, 3, dtype=torch.long), "modality": "text"})
    assert model.seen == {"input_ids": "meta", "modality": "text"}  # tensors moved, other values as they were
    assert out.dtype == np.float32 and out.tolist() == [[1.5], [2.5]]
