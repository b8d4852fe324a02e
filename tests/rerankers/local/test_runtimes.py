"""Runtimes: torch, ONNX Runtime and OpenVINO (fp32 and int8) behind the same reranker, converted once."""

import json
import sys
from pathlib import Path

import pytest
from conftest import MAX_LEN, WORDS
from numerics import CROSS_RUNTIME, HALF, assert_ranking_follows, assert_scores_close

from rankrelay import ConfigError, MissingDependencyError, load_reranker
from rankrelay.errors import ConversionError, LowAgreementError

QUERY = "why does a wing stall"
DOCS = [
    "the wing lift and air flow",
    "paris is the capital of france",
    "boundary layer separation on the wing",
    "python sort is stable",
    "angle of attack and pressure",
    " ".join(WORDS[(i * 7) % len(WORDS)] for i in range(3 * MAX_LEN)),  # split into passages
]
FP32 = ["onnx", "openvino"]


def scores_by_index(res):
    return [r.score for r in sorted(res, key=lambda r: r.index)]


@pytest.mark.parametrize("runtime", FP32)
def test_fp32_runtime_scores_like_torch_with_passages_and_buckets(tiny_ce, tiny_ce_path, runtime_cache, runtime):
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime=runtime, cache_dir=runtime_cache,
                       batch_size=2)
    res = rr.rerank(QUERY, DOCS)
    ref = tiny_ce.rerank(QUERY, DOCS)
    assert_scores_close(scores_by_index(res), scores_by_index(ref), CROSS_RUNTIME)
    assert_ranking_follows(res.indices, scores_by_index(ref), CROSS_RUNTIME)
    long_doc = next(r for r in res if r.index == 5)
    assert long_doc.passage is not None and long_doc.passage == next(r for r in ref if r.index == 5).passage
    assert rr.describe()["runtime"] == runtime
    assert rr.agreement.top10_overlap == 1.0 and rr.agreement.max_abs_diff < 1e-3 and rr.agreement.pairs == 120
    assert [r.document.text for r in sorted(res, key=lambda r: r.index)] == DOCS


@pytest.mark.parametrize("runtime", FP32)
def test_bi_encoder_runtime_embeds_like_torch(tiny_bi_path, runtime_cache, runtime):
    import numpy as np

    torch_bi = load_reranker(f"bi-encoder:{tiny_bi_path}", device="cpu")
    bi = load_reranker(f"bi-encoder:{tiny_bi_path}", device="cpu", runtime=runtime, cache_dir=runtime_cache)
    emb, ref = bi.encode(DOCS), torch_bi.encode(DOCS)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert_scores_close(emb.ravel().tolist(), ref.ravel().tolist(), CROSS_RUNTIME)
    assert_ranking_follows(bi.rerank(QUERY, DOCS).indices, scores_by_index(torch_bi.rerank(QUERY, DOCS)),
                           CROSS_RUNTIME)


def test_conversion_is_cached_and_keyed_by_the_model_files(tiny_ce_path, tmp_path):
    import shutil

    runtime_cache = str(tmp_path / "runtimes-of-this-test")  # its own: other tests' conversions sit in the shared one

    first = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="onnx", cache_dir=runtime_cache)
    first.warm_up()
    root = Path(runtime_cache) / "runtimes"
    before = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    again = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="onnx", cache_dir=runtime_cache)
    again.warm_up()
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == before  # nothing converted again
    stored = json.loads(next(p for p in root.iterdir() if "-onnx-" in p.name and p.name.startswith("tiny")
                             ).joinpath("agreement.json").read_text())
    assert stored["key"]["runtime"] == "onnx" and stored["top10_overlap"] == 1.0
    # a changed model (same path) is converted anew, never served from the old graph
    copy = shutil.copytree(tiny_ce_path, tmp_path / "copy")
    load_reranker(f"cross-encoder:{copy}", device="cpu", runtime="onnx", cache_dir=runtime_cache).warm_up()
    n = len(list(root.iterdir()))
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    load_reranker(f"cross-encoder:{copy}", device="cpu", runtime="onnx", cache_dir=runtime_cache).warm_up()
    assert len(list(root.iterdir())) == n + 1


@pytest.mark.parametrize("runtime", ["onnx-int8", "openvino-int8"])
def test_int8_that_disagrees_with_torch_is_refused_unless_insisted(tiny_ce_path, runtime_cache, runtime):
    # the tiny model's random, wide weights quantize badly (scores off by ~2, Spearman ~0.9): its int8 top 10
    # differs from fp32. By how much depends on the CPU's int8 kernels: under the default min_agreement (0.9)
    # where the test was written, 0.9-0.925 on an AVX-512 VNNI EPYC. So the test asks for 0.99.
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime=runtime, cache_dir=runtime_cache,
                       min_agreement=0.99)
    with pytest.raises(LowAgreementError, match="min_agreement=0") as err:
        rr.warm_up()
    assert err.value.runtime == runtime and err.value.agreement["top10_overlap"] < 0.99
    assert err.value.agreement["max_abs_diff"] > 0.1
    insisted = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime=runtime,
                             cache_dir=runtime_cache, min_agreement=0)
    res = insisted.rerank(QUERY, DOCS)
    assert sorted(res.indices) == list(range(len(DOCS))) and insisted.agreement.top10_overlap < 0.99


def test_failed_conversion_is_a_typed_error_naming_model_and_runtime(tiny_ce_path, tmp_path, monkeypatch):
    import openvino

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(openvino, "convert_model", broken)
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime="openvino", cache_dir=str(tmp_path))
    with pytest.raises(ConversionError, match="openvino runtime: RuntimeError: unsupported operation") as err:
        rr.warm_up()
    assert err.value.model.endswith("tiny-bert-ce0") and err.value.runtime == "openvino"
    assert not list((tmp_path / "runtimes").iterdir())  # no half-written conversion is left to be reused


@pytest.mark.parametrize(
    "options, error, fragment",
    [
        ({"runtime": "tensorrt"}, ConfigError, "unknown runtime 'tensorrt'"),
        ({"runtime": "onnx", "precision": "fp16"}, ConfigError, "torch runtime"),
        ({"precision": "fp8"}, ConfigError, "unknown precision"),
        ({"min_agreement": 1.5}, ConfigError, "min_agreement"),
        ({"score_cache": ""}, ConfigError, "score_cache"),
    ],
)
def test_bad_runtime_options_fail_before_any_model_loads(tiny_ce_path, options, error, fragment):
    with pytest.raises(error, match=fragment):
        load_reranker(f"cross-encoder:{tiny_ce_path}", **options)


@pytest.mark.parametrize("runtime, package, extra", [("openvino", "openvino", "openvino"),
                                                     ("onnx", "onnxruntime", "onnx")])
def test_missing_runtime_package_names_the_extra(tiny_ce_path, monkeypatch, runtime, package, extra):
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(MissingDependencyError, match=rf"rankrelay\[{extra}\]"):
        load_reranker(f"cross-encoder:{tiny_ce_path}", runtime=runtime)


def test_bf16_precision_on_torch(tiny_ce, tiny_ce_path):
    import torch

    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", precision="bf16")
    res = rr.rerank(QUERY, DOCS[:5])
    assert next(rr.encoder.parameters()).dtype == torch.bfloat16
    ref = scores_by_index(tiny_ce.rerank(QUERY, DOCS[:5]))
    assert_scores_close(scores_by_index(res), ref, HALF)


def test_runtime_in_settings_and_spec_dicts(tiny_ce_path, runtime_cache):
    from rankrelay.config import Settings

    settings = Settings(runtime="onnx", cache_dir=runtime_cache)
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}", settings=settings, device="cpu")
    assert rr.runtime == "onnx" and str(rr.cache_dir) == runtime_cache
    chain = load_reranker([{"spec": f"cross-encoder:{tiny_ce_path}", "runtime": "openvino",
                            "cache_dir": runtime_cache}])
    assert chain.backends[0].runtime == "openvino"


@pytest.mark.parametrize(("plain", "variants", "exporter"), [("onnx", ["onnx-int8"], "_export_onnx"),
                                                            ("openvino", ["openvino-bf16", "openvino-int8"],
                                                             "_export_openvino")])
def test_an_engines_variants_reuse_its_fp32_graph_instead_of_exporting_again(tiny_ce, tiny_ce_path, tmp_path,
                                                                              monkeypatch, plain, variants, exporter):
    from rankrelay.rerankers.local import runtimes

    exports = []
    original = getattr(runtimes, exporter)
    monkeypatch.setattr(runtimes, exporter, lambda *a, **kw: exports.append(a) or original(*a, **kw))
    cache = str(tmp_path / "cache")
    load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime=plain, cache_dir=cache).warm_up()
    assert len(exports) == 1
    ref = [r.score for r in sorted(tiny_ce.rerank(QUERY, DOCS), key=lambda r: r.index)]
    for runtime in variants:
        rr = load_reranker(f"cross-encoder:{tiny_ce_path}", device="cpu", runtime=runtime, cache_dir=cache,
                           min_agreement=0)
        res = rr.rerank(QUERY, DOCS)
        assert rr.runtime == runtime and len(exports) == 1  # built from the fp32 graph on disk
        assert sorted(res.indices) == list(range(len(DOCS))) and rr.agreement.pairs > 0
        if runtime.endswith("bf16"):  # the same graph compiled for bf16 (int8's agreement is checked elsewhere)
            assert_ranking_follows(res.indices, ref, HALF)
    assert len(list((tmp_path / "cache" / "runtimes").iterdir())) == 1 + len(variants)  # each keeps its own graph


@pytest.mark.parametrize(("env", "expected"), [
    ({"RANKRELAY_CACHE_DIR": "~/models", "XDG_CACHE_HOME": "/xdg"}, "HOME/models"),
    ({"XDG_CACHE_HOME": "/xdg"}, "/xdg/rankrelay"),
    ({"XDG_CACHE_HOME": ""}, "HOME/.cache/rankrelay"),
    ({}, "HOME/.cache/rankrelay"),
])
def test_the_default_cache_folder_follows_the_environment(monkeypatch, tmp_path, env, expected):
    from rankrelay.rerankers.local.runtimes import default_cache_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RANKRELAY_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_cache_dir() == Path(expected.replace("HOME", str(tmp_path)))


def test_agreement_on_a_worked_example_deviation_spearman_and_top10_overlap():
    from rankrelay.rerankers.local.runtimes import measure_agreement

    reference = [[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]
    candidate = [[3.5, 2.0, 1.0], [3.0, 2.0, 1.0]]  # the first ranks alike, the second reversed
    agreement = measure_agreement(reference, candidate)
    assert agreement.to_dict() == {"pairs": 6, "max_abs_diff": 2.0, "spearman": 0.0, "top10_overlap": 1.0}
    single = measure_agreement([[0.7]], [[0.2]])  # one document: in agreement with itself, not NaN
    assert single.spearman == 1.0 and single.max_abs_diff == pytest.approx(0.5)
    assert measure_agreement([[1.0, 2.0]], [[2.0, 1.0]]).spearman == pytest.approx(-1.0)  # two documents are ranked


def test_agreement_counts_a_top10_document_within_the_relative_tie_of_the_references_tenth():
    from rankrelay.rerankers.local.runtimes import measure_agreement

    scale = [1000.0 - i for i in range(12)]  # the 10th best is 991: a tie of 1e-4 relative is 0.0991
    near = scale[:10] + [990.95] + scale[11:]  # the candidate swaps 10th and 11th; the 11th is 0.05 below
    candidate = [float(12 - i) for i in range(12)]
    candidate[9], candidate[10] = candidate[10], candidate[9]
    assert measure_agreement([near], [candidate]).top10_overlap == 1.0  # within 0.0991 of the 10th: agrees
    small = [0.5 - i * 0.01 for i in range(12)]  # |10th| < 1: the tie is 1e-4 absolute
    small[10] = small[9] - 1.5e-4
    assert measure_agreement([small], [candidate]).top10_overlap == 0.9
    exact = [float(12 - i) for i in range(12)]
    assert measure_agreement([exact], [exact], tie=0.0).top10_overlap == 1.0  # the 10th itself agrees


def test_agreement_takes_tied_candidate_scores_in_input_order():
    from rankrelay.rerankers.local.runtimes import measure_agreement

    candidate = [1.0] * 15 + [2.0] * 5  # five clear, then ten tied for the rest of the top 10
    reference = [5.0 - i * 0.1 for i in range(5)] + [0.0] * 10 + [10.0] * 5  # its top 10: docs 15-19, then 0-4
    reference[5:15] = [-float(i) for i in range(1, 11)]
    assert measure_agreement([reference], [candidate]).top10_overlap == 1.0  # the first five of the tie: 0-4


def test_a_graph_is_fed_contiguous_int64_arrays_from_tensors_lists_or_arrays_and_names_its_runtime():
    import numpy as np
    import torch

    from rankrelay.rerankers.local.runtimes import GraphForward

    seen = {}

    def run(arrays):
        seen.update(arrays)
        return [[0.5], [1.5]]

    graph = GraphForward("onnx", run, ("input_ids", "attention_mask"))
    out = graph({"input_ids": torch.tensor([[1, 2]], dtype=torch.int32), "attention_mask": [[1, 1]],
                 "ignored": object()})
    assert graph.runtime == "onnx" and out.dtype == np.float32 and out.tolist() == [[0.5], [1.5]]
    assert set(seen) == {"input_ids", "attention_mask"}
    assert all(a.dtype == np.int64 and a.flags["C_CONTIGUOUS"] for a in seen.values())
    graph({"input_ids": np.asarray([[3, 4]], dtype=np.int32).T, "attention_mask": np.ones((2, 1), dtype=np.int8)})
    assert seen["input_ids"].tolist() == [[3], [4]] and seen["input_ids"].flags["C_CONTIGUOUS"]


def test_agreement_of_float32_graph_scores_is_judged_in_float64():
    import numpy as np

    from rankrelay.rerankers.local.runtimes import measure_agreement

    reference = np.asarray([12.0 - i for i in range(9)] + [1.0, 0.9999, 0.0], dtype=np.float32)  # as graphs give
    candidate = np.asarray([12.0 - i for i in range(12)], dtype=np.float32)
    candidate[9], candidate[10] = candidate[10], candidate[9]  # its top 10 takes the 11th, 1e-4 below the 10th
    # float32's 0.9999 is 0.99989998..., under the tie's floor 0.9999 exactly: it does not agree (in float32 the
    # floor would round to the same number and it would)
    assert measure_agreement(reference[None], candidate[None]).top10_overlap == 0.9


def test_unknown_runtimes_and_precisions_are_refused_naming_every_choice():
    from rankrelay.rerankers.local.runtimes import check_precision, check_runtime

    with pytest.raises(ConfigError) as runtime:
        check_runtime("tensorrt")
    assert str(runtime.value) == ("unknown runtime 'tensorrt'; choose one of auto, torch, onnx, onnx-int8, openvino, "
                                  "openvino-bf16, openvino-int8")
    with pytest.raises(ConfigError) as precision:
        check_precision("int4", "torch")
    assert str(precision.value) == "unknown precision 'int4'; choose one of fp32, fp16, bf16"
    with pytest.raises(ConfigError) as auto:
        check_precision("bf16", "auto")
    assert str(auto.value) == ("runtime='auto' chooses the precision too; for precision='bf16' name the runtime "
                               "(runtime='torch')")
    with pytest.raises(ConfigError) as graph:
        check_precision("fp16", "onnx")
    assert str(graph.value) == ("precision='fp16' is for the torch runtime (on CUDA); the onnx runtime runs fp32 (or "
                                "its -int8 variant)")


def test_a_runtime_whose_package_is_missing_names_it_and_the_extra(monkeypatch):
    from rankrelay.rerankers.local.runtimes import check_runtime, installed

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # imported before, now blocked
    assert not installed("onnxruntime") and installed("json") and installed("numpy")
    assert not installed("rankrelay_no_such_module") and not installed("rankrelay.no_such_module")
    assert not installed("rankrelay.errors.inner")  # its parent is a module, not a package: find_spec raises
    monkeypatch.delitem(sys.modules, "json")  # not imported yet: found on the path
    assert installed("json")
    with pytest.raises(MissingDependencyError) as missing:
        check_runtime("onnx")
    assert str(missing.value) == ("the onnx runtime needs the optional package 'onnxruntime': "
                                  "pip install 'rankrelay[onnx]'")


def test_a_cache_name_keeps_letters_digits_and_dash_underscore_dot_and_is_at_most_60_long():
    from rankrelay.rerankers.local.runtimes import cache_slug

    assert cache_slug("/models/BAAI/bge-reranker_v2.m3 (copy)") == "bge-reranker_v2.m3__copy_"
    assert cache_slug("cross-encoder/ms-marco-MiniLM-L6-v2") == "ms-marco-MiniLM-L6-v2"
    assert cache_slug("a" * 70) == "a" * 60


def test_a_models_fingerprint_follows_its_files_and_skips_hidden_ones(tmp_path):
    import hashlib
    import os

    from rankrelay.rerankers.local.runtimes import model_fingerprint

    assert model_fingerprint("org/model") == hashlib.sha256(b"org/model").hexdigest()  # a Hub id hashes as is
    (tmp_path / "weights.bin").write_bytes(b"12345")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "config.json").write_text("{}")
    os.utime(tmp_path / "weights.bin", ns=(1, 1_000))
    os.utime(tmp_path / "sub" / "config.json", ns=(1, 2_000))
    expected = hashlib.sha256(b"sub/config.json\x002\x002000\nweights.bin\x005\x001000\n").hexdigest()
    assert model_fingerprint(str(tmp_path)) == expected
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "lock").write_text("x")  # hidden: a download's own bookkeeping
    (tmp_path / ".gitattributes").write_text("x")
    assert model_fingerprint(str(tmp_path)) == expected
