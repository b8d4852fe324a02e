"""What `runtime="auto"` costs: the one-off measurement at a model's first load on a machine, and the read of the
stored choice at every later load (targets: <= 60 s once per model and machine, <= 50 ms afterwards).

Each tier is a model of its published shape built as in `benchmarks/tiers.py` (MiniLM-L6 from the bundled
all-MiniLM-L6-v2 weights, TinyBERT-L2 random): cost, not quality. Each model is loaded with a fresh cache
folder (so conversions are included), then loaded again.

    python benchmarks/auto_cost.py [--tiers minilm-l6 tinybert-l2]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from tiers import build_tiers

from rankrelay import load_reranker
from rankrelay.devices import cpu_signature


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiers", nargs="*", default=["minilm-l6", "tinybert-l2"])
    parser.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "rankrelay-tiers",
                        help="where the tiers' models are built (kept between runs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("rankrelay.rerankers.local.auto_runtime").setLevel(logging.INFO)
    paths = build_tiers(args.models)
    table = Table(title=f"runtime='auto' on {cpu_signature()['model']} ({' '.join(cpu_signature()['flags'])})")
    for column in ("tier", "first load s", "of which measuring s", "chose", "next load s", "reading ms"):
        table.add_column(column)
    reasons = []
    for name in args.tiers:
        with tempfile.TemporaryDirectory(prefix="auto-") as cache:
            loads = []
            for _ in range(2):
                t0 = time.perf_counter()
                rr = load_reranker(f"cross-encoder:{paths[name]}", runtime="auto", cache_dir=cache, max_length=512)
                rr.warm_up()
                loads.append((time.perf_counter() - t0, rr.runtime_choice))
        (first, measured), (again, read) = loads
        table.add_row(name, f"{first:.1f}", f"{measured.seconds:.1f}", f"{measured.runtime} {measured.precision}",
                      f"{again:.2f}", f"{read.seconds * 1000:.1f}")
        reasons.append(f"{name}: {measured.reason}")
    console = Console()
    console.print(table)
    for line in reasons:
        console.print(line)


if __name__ == "__main__":
    main()
