"""`rankrelay distill` on a BEIR folder: the issue's targets, measured in one run.

- `minilm`: teacher `bi-encoder:all-minilm-l6` (the one real pretrained model offline), student of MiniLM-L6 shape
  from the bundled encoder's weights with a fresh head, pseudo-queries only (the dataset's queries held out):
  minutes end to end, top-10 overlap with the teacher before and after, nDCG@10 against BM25's.
- `minilm-l2`: the same with the first two layers of that encoder (`shape:minilm-l2`, two epochs): a third of the
  work per pair.
- `tinybert`: the same with a TinyBERT-L2-shaped student (`shape:tinybert-l2`): its agreement and speed.
- `hosted`: a Cohere teacher (the project's fake server, deterministic scoring, through the SDK): a run stopped
  by `--max-teacher-calls` half way, then started again without it, then once more: teacher calls per run,
  billed units and dollars.

    python benchmarks/distill.py --dataset ../shared/data/cranfield --out /tmp/distill
    python benchmarks/distill.py --dataset ../shared/data/cranfield --out /tmp/distill --parts hosted
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rankrelay.devices import cpu_signature
from rankrelay.training import distill

logger = logging.getLogger("benchmarks.distill")
TEACHER = "bi-encoder:all-minilm-l6"
STUDENTS = {"minilm": "all-minilm-l6", "minilm-l2": "shape:minilm-l2", "tinybert": "shape:tinybert-l2"}
#: a pretrained encoder needs one gentle epoch; a shape with fresh layers more steps at a higher rate
RECIPES = {"minilm": {"learning_rate": 1e-4, "epochs": 1.0}, "minilm-l2": {"learning_rate": 2e-4, "epochs": 2.0},
           "tinybert": {"learning_rate": 5e-4, "epochs": 3.0}}


def student_run(dataset: str, out: Path, part: str, args: argparse.Namespace) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    teacher = TEACHER if args.teacher_runtime == "auto" else {"spec": TEACHER, "runtime": args.teacher_runtime}
    report = distill(dataset, out, teacher=teacher, student=STUDENTS[part], queries=f"pseudo:{args.pseudo}",
                     candidates="bm25", depth=args.depth, list_size=args.list_size, max_length=args.max_length,
                     max_minutes=args.max_minutes, temperature=args.temperature, loss=args.loss, seed=args.seed,
                     progress=False,
                     **{**RECIPES[part], **({"epochs": args.epochs} if args.epochs else {})})
    report["minutes"] = (time.perf_counter() - start) / 60
    return report


def hosted_run(dataset: str, out: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from rankrelay.testing import API_KEY, FakeRerankAPI

    shutil.rmtree(out, ignore_errors=True)
    api = FakeRerankAPI().start()
    teacher = {"spec": "cohere:rerank-v3.5", "base_url": api.url, "api_key": API_KEY}
    options = {"queries": "pseudo:60", "candidates": "bm25", "depth": 20, "list_size": 8, "max_length": 128,
               "epochs": 1, "learning_rate": 5e-4, "progress": False}
    rows = []
    try:
        for label, limit in (("stopped at 30 calls", 30), ("started again", None), ("once more", None)):
            before = api.count("/v2/rerank")
            report = distill(dataset, out, teacher=teacher, student="shape:tinybert-l2", max_teacher_calls=limit,
                             **options)
            rows.append({"run": label, "requests": api.count("/v2/rerank") - before, **report["teacher"],
                         "unasked": report["queries"]["unasked"]})
    finally:
        api.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="BEIR folder (Cranfield)")
    parser.add_argument("--out", type=Path, required=True, help="work folder (each part a subfolder)")
    parser.add_argument("--parts", default="minilm,minilm-l2,tinybert,hosted")
    parser.add_argument("--pseudo", type=int, default=600, help="pseudo-queries to train on")
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--list-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--loss", default="listnet", help="listnet, margin-mse or lambda")
    parser.add_argument("--seed", type=int, default=0, help="queries, split, head and batches")
    parser.add_argument("--teacher-runtime", default="auto", help="the teacher's runtime (auto, torch, onnx, ...)")
    parser.add_argument("--epochs", type=float, help="epochs of every student (default: each one's recipe)")
    parser.add_argument("--max-minutes", type=float, default=12.0, help="training time of a student")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    console = Console()
    cpu = cpu_signature()
    console.print(f"CPU: {cpu['model']}, flags {' '.join(cpu['flags'])}")  # type: ignore[arg-type]
    parts = args.parts.split(",")
    results: dict[str, Any] = {"cpu": cpu, "args": {k: str(v) for k, v in vars(args).items()}}
    students = [p for p in parts if p in STUDENTS]
    if students:
        table = Table("student", "minutes", "overlap@10 before", "after", "tau before", "after",
                      "nDCG@10 student", "95 % CI", "before", "teacher", "BM25", "student p50 ms")
        for part in students:
            r = student_run(args.dataset, args.out / part, part, args)
            results[part] = r
            a, q = r["agreement"], r["quality"]
            table.add_row(STUDENTS[part], f"{r['minutes']:.1f}", f"{a['before']['overlap@10']:.3f}",
                          f"{a['student']['overlap@10']:.3f}", f"{a['before']['kendall_tau']:.3f}",
                          f"{a['student']['kendall_tau']:.3f}", f"{q['student']['ndcg@10']:.4f}",
                          "{:.3f}-{:.3f}".format(*q["student"]["ci95"]), f"{q['before']['ndcg@10']:.4f}",
                          f"{q['teacher']['ndcg@10']:.4f}", f"{q['first_stage']['ndcg@10']:.4f}",
                          f"{q['student']['p50_ms']:.1f}")
        console.print(table)
    if "hosted" in parts:
        rows = hosted_run(args.dataset, args.out / "hosted", args)
        results["hosted"] = rows
        table = Table("run", "requests to the API", "calls this run", "calls recorded", "replayed", "billed units",
                      "$ in all", "queries left unasked")
        for row in rows:
            table.add_row(row["run"], str(row["requests"]), str(row["calls_this_run"]), str(row["calls_recorded"]),
                          str(row["replayed"]), json.dumps(row["billed_units"]), f"{row['usd']:.4f}",
                          str(row["unasked"]))
        console.print(table)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
