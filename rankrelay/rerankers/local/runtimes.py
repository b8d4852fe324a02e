"""Where a local model's forward pass runs: torch, or a graph converted once to ONNX Runtime or OpenVINO.

Tokenizing, passages, length buckets and MaxP are the same on every runtime; only the forward pass
of a batch of token ids changes. A converted graph is built offline from the local weights (never
the Hub), once, and kept in ``<cache_dir>/runtimes/<model>-<key>/``, where the key hashes the model's
files (names, sizes, modification times), the runtime and its version, torch's version and the
output. Converting scores a fixed sample with torch and with the new graph and keeps how well they
agree (largest score deviation, Spearman correlation, top-10 overlap) in ``agreement.json``; an int8
graph whose top-10 overlap falls below ``min_agreement`` is refused (``min_agreement=0`` insists).

Runtimes, and the extra that installs each: ``torch`` (local), ``onnx`` and ``onnx-int8`` (onnx:
onnxruntime; the graph is exported by torch), ``openvino``, ``openvino-bf16`` (bf16 inference, for CPUs with
bf16 units) and ``openvino-int8`` (openvino; the int8 graph is quantized with NNCF on the sample). None of them
needs optimum, whose pins would downgrade transformers and sentence-transformers. ``auto`` measures them and
takes the fastest that agrees with torch (:mod:`rankrelay.rerankers.local.auto_runtime`).

Example:
    >>> from rankrelay.rerankers.local.runtimes import RUNTIMES, check_runtime
    >>> check_runtime("torch"), sorted(RUNTIMES)
    ('torch', ['onnx', 'onnx-int8', 'openvino', 'openvino-bf16', 'openvino-int8', 'torch'])
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, Protocol

from rankrelay.errors import ConfigError, ConversionError, LowAgreementError, MissingDependencyError
from rankrelay.rerankers.local.graph_store import RECORD, discard, problem, read_record, stored_record

logger = logging.getLogger(__name__)

#: Bumped when the converted files change shape, so that old conversions are not reused.
FORMAT_VERSION = 2  # 2: agreement.json keeps the key and a digest of the graph's files
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
PRECISIONS = ("fp32", "fp16", "bf16")
#: the runtime that measures the others on this machine and takes the fastest that agrees with torch
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class RuntimeSpec:
    """A runtime: the engine that runs the graph, the modules it needs and the extra that installs them."""

    name: str
    engine: str  # torch, onnx or openvino
    modules: tuple[str, ...]
    extra: str
    int8: bool = False
    #: OpenVINO's inference precision (f32 stated: on CPUs with bf16 units it otherwise infers in bf16)
    hint: str = "f32"


RUNTIMES: dict[str, RuntimeSpec] = {
    r.name: r
    for r in (
        RuntimeSpec("torch", "torch", (), "local"),  # the model load itself names the extra
        RuntimeSpec("onnx", "onnx", ("onnxruntime", "onnx"), "onnx"),
        RuntimeSpec("onnx-int8", "onnx", ("onnxruntime", "onnx"), "onnx", int8=True),
        RuntimeSpec("openvino", "openvino", ("openvino",), "openvino"),
        RuntimeSpec("openvino-bf16", "openvino", ("openvino",), "openvino", hint="bf16"),
        RuntimeSpec("openvino-int8", "openvino", ("openvino", "nncf"), "openvino", int8=True),
    )
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it)."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def cache_slug(label: str) -> str:
    """A model's name as the readable part of a cache file or folder name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(label).name)[:60]


def torch_dtype(precision: str) -> Any:
    """torch's dtype for a reduced ``precision`` (``fp16``, else bf16)."""
    import torch

    return torch.float16 if precision == "fp16" else torch.bfloat16


def check_runtime(name: object) -> str:
    """Return ``name`` if it is a runtime whose packages are installed; raise a typed error otherwise.

    Raises:
        ConfigError: an unknown runtime (the message lists the known ones).
        MissingDependencyError: its package is missing (the message names the extra to install).
    """
    if name == AUTO:
        return AUTO
    if not isinstance(name, str) or name not in RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r}; choose one of {', '.join([AUTO, *RUNTIMES])}")
    spec = RUNTIMES[name]
    for module in spec.modules:
        if not installed(module):
            raise MissingDependencyError(module, spec.extra, f"the {name} runtime")
    return name


def check_precision(precision: object, runtime: str) -> str:
    """fp32 everywhere; fp16 and bf16 are torch's (CUDA, or a CPU with bf16 units); ``auto`` chooses its own."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and runtime == AUTO:
        raise ConfigError(f"runtime='auto' chooses the precision too; for precision={precision!r} name the runtime "
                          "(runtime='torch')")
    if precision != "fp32" and runtime != "torch":
        raise ConfigError(f"precision={precision!r} is for the torch runtime (on CUDA); the {runtime} "
                          "runtime runs fp32 (or its -int8 variant)")
    return str(precision)


def default_cache_dir() -> Path:
    """``RANKRELAY_CACHE_DIR``, else ``$XDG_CACHE_HOME/rankrelay``, else ``~/.cache/rankrelay``."""
    explicit = os.environ.get("RANKRELAY_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rankrelay"


def model_fingerprint(location: str) -> str:
    """A digest of a model folder's files (relative name, size, modification time); a Hub id hashes as is."""
    root = Path(location)
    h = hashlib.sha256()
    if not root.is_dir():
        h.update(location.encode())
        return h.hexdigest()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        stat = path.stat()
        h.update(f"{rel.as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


class Forward(Protocol):
    """One forward pass: tokenized features in, a float32 array out (scores or embeddings)."""

    runtime: str

    def __call__(self, features: Mapping[str, Any]) -> Any: ...


class TorchForward:
    """The sentence-transformers model itself, under ``torch.inference_mode``."""

    runtime = "torch"

    def __init__(self, model: Any, output: str) -> None:
        self.model = model
        self.output = output

    def __call__(self, features: Mapping[str, Any]) -> Any:
        import torch

        device = self.model.device
        feats = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        with torch.inference_mode():
            out = self.model(feats)[self.output]
        return out.float().cpu().numpy()


class GraphForward:
    """A converted graph: ``run`` takes a dict of int64 arrays named like the model's inputs; ``settings``: what
    the engine reports it runs the graph with (execution providers, device, precision), for ``describe()``."""

    def __init__(self, runtime: str, run: Callable[[dict[str, Any]], Any], inputs: tuple[str, ...],
                 settings: Mapping[str, Any] | None = None) -> None:
        self.runtime = runtime
        self._run = run
        self.inputs = inputs
        self.settings = dict(settings or {})

    def __call__(self, features: Mapping[str, Any]) -> Any:
        import numpy as np

        arrays = {}
        for name in self.inputs:
            value = features[name]
            arrays[name] = np.ascontiguousarray(value.numpy() if hasattr(value, "numpy") else value, dtype=np.int64)
        return np.asarray(self._run(arrays), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Agreement:
    """How a converted graph's scores of the fixed sample compare with torch's."""

    pairs: int
    max_abs_diff: float
    spearman: float
    top10_overlap: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def measure_agreement(reference: Any, candidate: Any, tie: float = 1e-4) -> Agreement:
    """Agreement of two score matrices (queries x documents): largest deviation, mean Spearman, mean
    top-10 overlap. A document in the candidate's top 10 counts as agreeing when the reference scores it
    within ``tie`` (relative) of its own 10th best, so near-ties cannot make fp32 graphs disagree."""
    import numpy as np

    ref, cand = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    spearman, overlap = [], []
    k = min(10, ref.shape[1])
    for r, c in zip(ref, cand):
        rr, cr = np.argsort(np.argsort(-r)), np.argsort(np.argsort(-c))
        spearman.append(float(np.corrcoef(rr, cr)[0, 1]) if len(r) > 1 else 1.0)
        kth = np.sort(r)[::-1][k - 1]
        floor = kth - tie * max(1.0, abs(float(kth)))
        overlap.append(float(np.sum(r[np.argsort(-c, kind="stable")[:k]] >= floor)) / k)
    deviation = float(np.max(np.abs(ref - cand)))
    return Agreement(int(ref.size), deviation, float(np.mean(spearman)), float(np.mean(overlap)))


# -- conversion ----------------------------------------------------------------------------
def _exportable(model: Any, output: str) -> Any:
    """A torch module whose forward takes the token tensors positionally and returns ``output``."""
    import torch

    class Exportable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            features = {"input_ids": input_ids, "attention_mask": attention_mask, "modality": "text"}
            if token_type_ids is not None:
                features["token_type_ids"] = token_type_ids
            return self.model(features)[output]

    return Exportable().eval()


def _export_onnx(module: Any, example: tuple[Any, ...], names: tuple[str, ...], path: Path) -> None:
    import torch

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(module, example, str(path), input_names=list(names), output_names=["output"],
                          dynamic_axes={**axes, "output": {0: "batch"}}, opset_version=17, dynamo=False)


def _export_openvino(module: Any, example: tuple[Any, ...], names: tuple[str, ...]) -> Any:
    """An in-memory OpenVINO model (batch and sequence length dynamic)."""
    import openvino as ov
    import torch

    with torch.no_grad():
        return ov.convert_model(module, example_input=example,
                                input=[(n, ov.PartialShape([-1, -1]), ov.Type.i64) for n in names])


def _quantize_onnx(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)


def _quantize_openvino(graph: Any, calibration: list[dict[str, Any]]) -> Any:
    import nncf

    dataset = nncf.Dataset(calibration)
    return nncf.quantize(graph, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration))


def _load_graph(spec: RuntimeSpec, folder: Path, names: tuple[str, ...]) -> GraphForward:
    if spec.engine == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        used = session.get_session_options()
        return GraphForward(spec.name, lambda arrays: session.run(None, arrays)[0], names,
                            {"engine": f"onnxruntime {ort.__version__}", "providers": session.get_providers(),
                             "graph_optimization": used.graph_optimization_level.name})
    import openvino as ov

    compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU",
                                       {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": spec.hint})
    request = compiled.create_infer_request()
    return GraphForward(spec.name, lambda arrays: request.infer(arrays)[compiled.output(0)], names,
                        {"engine": f"openvino {ov.__version__}",
                         "devices": list(compiled.get_property("EXECUTION_DEVICES")),
                         "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
                         "performance_hint": str(compiled.get_property("PERFORMANCE_HINT"))})


def _runtime_version(spec: RuntimeSpec) -> str:
    import torch

    engine = importlib.import_module("onnxruntime" if spec.engine == "onnx" else "openvino")
    return f"{engine.__version__}/torch-{torch.__version__}"


def _convert(spec: RuntimeSpec, model: Any, output: str, example: Mapping[str, Any], names: tuple[str, ...],
             calibration: Callable[[], list[dict[str, Any]]], folder: Path, fp32: Path | None = None) -> None:
    """Write the converted graph for ``spec`` into ``folder``; ``fp32``: the same model already converted by the
    engine's fp32 runtime (its graph is reused, not exported again: OpenVINO's bf16 differs only in the hint it
    is compiled with, the int8 runtimes quantize the fp32 graph)."""
    if spec.engine == "onnx":
        if fp32 is not None:
            _quantize_onnx(fp32 / "model.onnx", folder / "model.onnx")
            return
        plain = folder / ("model.onnx" if not spec.int8 else "model-fp32.onnx")
        _export_onnx(_exportable(model, output), tuple(example[n] for n in names), names, plain)
        if spec.int8:
            _quantize_onnx(plain, folder / "model.onnx")
            plain.unlink()
        return
    import openvino as ov

    if fp32 is not None and not spec.int8:
        for name in ("model.xml", "model.bin"):
            shutil.copyfile(fp32 / name, folder / name)
        return
    graph = (ov.Core().read_model(str(fp32 / "model.xml")) if fp32 is not None
             else _export_openvino(_exportable(model, output), tuple(example[n] for n in names), names))
    if spec.int8:
        graph = _quantize_openvino(graph, calibration())
    ov.save_model(graph, str(folder / "model.xml"), compress_to_fp16=False)


def _folder(cache_dir: Path, label: str, runtime: str, key_data: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / "runtimes" / f"{cache_slug(label)}-{runtime}-{key}"


_exporting = threading.Lock()


def _convert_into(spec: RuntimeSpec, model: Any, output: str, example: Mapping[str, Any], names: tuple[str, ...],
                  calibration: Callable[[], list[dict[str, Any]]], folder: Path, key_data: dict[str, Any],
                  cache_dir: Path, label: str, runtime: str, reference: Callable[[], Any] | None,
                  sample: Callable[[Forward], Any], torch_forward: Forward) -> Forward | None:
    """Convert into ``folder`` (through a temporary folder renamed at the end); the loaded graph, or None when
    another process finished the same conversion first (theirs is used)."""
    plain = next(r.name for r in RUNTIMES.values() if r.engine == spec.engine and r.hint == "f32" and not r.int8)
    fp32 = _folder(cache_dir, label, plain, {**key_data, "runtime": plain}) if plain != runtime else None
    if fp32 is not None and problem(fp32, {**key_data, "runtime": plain}, read_record(fp32)) is not None:
        fp32 = None  # not converted yet, or not to be trusted: export afresh
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        start = perf_counter()
        with _exporting:  # torch's exporters keep global state: one conversion at a time in a process
            _convert(spec, model, output, example, names, calibration, tmp, fp32)
        converted = _load_graph(spec, tmp, names)
        agreement = measure_agreement(reference() if reference else sample(torch_forward), sample(converted))
        (tmp / RECORD).write_text(json.dumps({**agreement.to_dict(), **stored_record(key_data, tmp)}, indent=2))
        logger.info("converted %s to %s in %.1f s; on a %d-pair sample against torch: max |diff| %.2e, "
                    "Spearman %.4f, top-10 overlap %.2f", label, runtime, perf_counter() - start,
                    agreement.pairs, agreement.max_abs_diff, agreement.spearman, agreement.top10_overlap)
        try:
            os.rename(tmp, folder)
            return converted  # loaded (and warmed up by the sample) already
        except OSError:  # another process finished the same conversion first: use theirs
            return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compile_forward(
    model: Any,
    *,
    runtime: str,
    output: str,
    fingerprint: str,
    label: str,
    cache_dir: Path,
    sample: Callable[[Forward], Any],
    example: Mapping[str, Any],
    calibration: Callable[[], list[dict[str, Any]]],
    min_agreement: float,
    reference: Callable[[], Any] | None = None,
) -> tuple[Forward, Agreement | None]:
    """The forward pass of ``model`` on ``runtime``: converted once and cached, then loaded.

    Args:
        model: the loaded sentence-transformers model (the source of the graph and the reference).
        output: the model's output to return (``scores`` or ``sentence_embedding``).
        fingerprint: :func:`model_fingerprint` of the model's local folder (it keys the cache).
        label: the model's name, for messages.
        sample: scores a fixed sample with a forward pass (queries x documents), for the agreement.
        example: tokenized features to trace the graph with.
        calibration: makes tokenized batches as int64 arrays (called only when an int8 graph is quantized).
        min_agreement: top-10 overlap an int8 or bf16 graph needs with torch on the sample.
        reference: torch's scores of the sample, if the caller has them (computed here otherwise).
    """
    spec = RUNTIMES[runtime]
    torch_forward = TorchForward(model, output)
    if spec.engine == "torch":
        return torch_forward, None
    names = tuple(n for n in INPUT_NAMES if n in example)
    forward: Forward | None = None
    try:
        key_data = {"files": fingerprint, "runtime": runtime, "versions": _runtime_version(spec),
                    "output": output, "inputs": names, "format": FORMAT_VERSION}
        folder = _folder(cache_dir, label, runtime, key_data)
        for attempt in range(2):  # a stored graph that is not this model's, or is damaged, is converted again
            if folder.exists() and (why := problem(folder, key_data, read_record(folder))) is not None:
                discard(folder, label, runtime, why)
            if not folder.exists():
                forward = _convert_into(spec, model, output, example, names, calibration, folder, key_data,
                                        cache_dir, label, runtime, reference, sample, torch_forward)
            stored = json.loads((folder / RECORD).read_text())
            agreement = Agreement(**{k: stored[k] for k in Agreement.__slots__})
            if forward is not None:
                break
            try:
                forward = _load_graph(spec, folder, names)
                break
            except Exception as exc:
                if attempt:
                    raise
                discard(folder, label, runtime, f"unloadable ({type(exc).__name__}: {exc})")
        assert forward is not None
    except (ConfigError, MissingDependencyError):
        raise
    except Exception as exc:
        raise ConversionError(f"could not convert {label!r} to the {runtime} runtime: {type(exc).__name__}: {exc}",
                              model=label, runtime=runtime) from exc
    if (spec.int8 or spec.hint != "f32") and agreement.top10_overlap < min_agreement:
        raise LowAgreementError(
            f"{label!r} on {runtime} agrees with torch on only {agreement.top10_overlap:.0%} of the top 10 of a "
            f"fixed sample (max score deviation {agreement.max_abs_diff:.3g}, Spearman {agreement.spearman:.3f}); "
            f"min_agreement is {min_agreement}. Use the fp32 runtime, or pass min_agreement=0 to use it anyway",
            model=label, runtime=runtime, agreement=agreement.to_dict())
    logger.info("%s runs on %s (top-10 overlap with torch on the sample %.2f)", label, runtime,
                agreement.top10_overlap)
    return forward, agreement
