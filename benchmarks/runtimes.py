"""Local reranking on each runtime, side by side in one run: speed-up over torch and agreement with it.

Every runtime reranks the same candidates (Cranfield abstracts for a query, or stdlib docstrings without
a dataset) at 10, 100 and 1000 candidates; the runtimes take turns within each repeat, so machine noise
hits them alike, and the medians are compared as ratios to torch. Agreement is measured on the
100-candidate list: largest score deviation, Spearman correlation and top-10 overlap with torch. The
score cache is off (every call runs the model); a last table shows what the cache saves on a repeat.

The model is MiniLM-L6 (the architecture of cross-encoder/ms-marco-MiniLM-L-6-v2, max_length 512) built
from the bundled all-MiniLM-L6-v2 weights with a fresh head (`--model PATH` for any other, e.g. one made
by `rankrelay train`: its scores mean something, so agreement means more).

    python benchmarks/runtimes.py --dataset ../shared/data/cranfield
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from overhead import build_minilm_cross_encoder, load_texts
from rich.console import Console
from rich.table import Table

from rankrelay import load_reranker
from rankrelay.rerankers.local.runtimes import RUNTIMES, measure_agreement

logger = logging.getLogger("benchmarks.runtimes")
QUERY = "how does the boundary layer behave at high speed"


def timed_rerank(rr, texts: list[str]) -> tuple[float, dict[int, float]]:
    start = time.perf_counter()
    res = rr.rerank(QUERY, texts)
    return time.perf_counter() - start, {r.index: r.score for r in res}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="BEIR folder whose corpus gives the candidates")
    parser.add_argument("--model", help="cross-encoder path (default: MiniLM-L6 from bundled weights)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated runtimes")
    parser.add_argument("--sizes", default="10,100,1000", help="candidate counts")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per size (1000+: 1)")
    parser.add_argument("--max-length", type=int, help="model window (default: the model's)")
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "rankrelay-bench-cache"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "sentence_transformers", "nncf"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    model = args.model or build_minilm_cross_encoder(Path(tempfile.gettempdir()) / "rankrelay-bench-minilm-ce")
    options = {"device": "cpu", "score_cache": "off", "cache_dir": args.cache_dir, "min_agreement": 0}
    if args.max_length:
        options["max_length"] = args.max_length
    names = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    rerankers = {}
    for name in names:
        start = time.perf_counter()
        rr = load_reranker(f"cross-encoder:{model}", runtime=name, **options)
        rr.warm_up()
        rerankers[name] = rr
        logger.info("%s ready in %.1f s (conversion cached after the first run)", name, time.perf_counter() - start)

    sizes = [int(s) for s in args.sizes.split(",")]
    texts = load_texts(args.dataset, max(sizes))
    times: dict[tuple[str, int], list[float]] = {}
    scores: dict[str, dict[int, float]] = {}
    for n in sizes:
        for rr in rerankers.values():
            rr.rerank(QUERY, texts[:4])  # warm the kernels for this process
        reps = args.repeats if n < 1000 else 1
        for rep in range(reps):
            order = names if rep % 2 == 0 else names[::-1]
            for name in order:
                seconds, by_index = timed_rerank(rerankers[name], texts[:n])
                times.setdefault((name, n), []).append(seconds)
                if n == 100 or (n == sizes[0] and name not in scores):
                    scores[name] = by_index
            logger.info("n=%d repeat %d: %s", n, rep + 1, ", ".join(
                f"{name} {times[(name, n)][-1]:.2f}s" for name in names))

    reference = "torch" if "torch" in names else names[0]
    table = Table(title=f"Runtimes: {Path(model).name}, {len(texts[:100])} candidates for agreement, CPU")
    table.add_column("runtime")
    for n in sizes:
        table.add_column(f"{n} cand. s (median)", justify="right")
        table.add_column(f"x{reference} @{n}", justify="right")
    for col in ("max |diff|", "Spearman", "top-10 overlap", "sample top-10"):
        table.add_column(col, justify="right")
    ref_scores = scores[reference]
    keys = sorted(ref_scores)
    for name in names:
        row = [name]
        for n in sizes:
            med = statistics.median(times[(name, n)])
            row += [f"{med:.3f}", f"{statistics.median(times[(reference, n)]) / med:.2f}"]
        agree = measure_agreement(np.array([[ref_scores[k] for k in keys]]),
                                  np.array([[scores[name][k] for k in keys]]))
        sample = rerankers[name].agreement
        row += [f"{agree.max_abs_diff:.2e}", f"{agree.spearman:.4f}", f"{agree.top10_overlap:.2f}",
                "" if sample is None else f"{sample.top10_overlap:.2f}"]
        table.add_row(*row)
    console = Console(width=200)
    console.print(table)
    console.print(f"x{reference}: median time of {reference} / median time of the runtime (higher is faster). "
                  "Agreement on the 100-candidate list against torch; sample top-10: the check made at conversion.")

    # what the score cache saves: the same query and candidates again
    fastest = min(names, key=lambda name: statistics.median(times[(name, 100)]))
    cached = load_reranker(f"cross-encoder:{model}", runtime=fastest, **{**options, "score_cache": "memory"})
    cached.warm_up()
    first, _ = timed_rerank(cached, texts[:100])
    repeats = [timed_rerank(cached, texts[:100])[0] for _ in range(5)]
    cache_table = Table(title=f"Score cache ({fastest}, 100 candidates, the same query again)")
    for col in ("uncached s", "cached s (median of 5)", "cached / uncached"):
        cache_table.add_column(col, justify="right")
    cache_table.add_row(f"{first:.3f}", f"{statistics.median(repeats):.4f}",
                        f"{statistics.median(repeats) / first:.2%}  (target <= 5%)")
    console.print(cache_table)


if __name__ == "__main__":
    main()
