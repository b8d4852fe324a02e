"""The demo behind ``make demo``: rerank a bundled sample with the best backend this machine has.

It tries a cross-encoder preset first and, when its weights cannot be had offline, says so in one
line and uses the bi-encoder (``bi-encoder:all-minilm-l6``, bundled by the ``minilm`` extra).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from rich.console import Console

from rankrelay.errors import MissingDependencyError, ModelLoadError, ModelNotFoundError
from rankrelay.rerankers import Reranker, load_reranker

#: Backends the demo tries, best first.
DEMO_CHAIN = ("minilm-l6", "bi-encoder:all-minilm-l6")


def load_sample() -> list[dict[str, Any]]:
    """The bundled sample: a list of ``{"query", "documents"}``."""
    text = resources.files("rankrelay").joinpath("data/sample.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def first_available(specs: tuple[str, ...], console: Console) -> Reranker:
    """Load the first spec whose model can be had here; say in one line why each other was skipped."""
    reasons = []
    for spec in specs:
        reranker = load_reranker(spec)
        try:
            warm_up = getattr(reranker, "warm_up", None)
            if warm_up is not None:
                warm_up()
        except (ModelNotFoundError, MissingDependencyError, ModelLoadError) as exc:
            console.print(f"[yellow]skipping {spec}:[/] {exc}", highlight=False)
            reasons.append(f"{spec}: {exc}")
            continue
        return reranker
    raise ModelNotFoundError("no demo backend could be loaded:\n  " + "\n  ".join(reasons))


def run_demo(console: Console, model: str | None = None) -> None:
    """Rerank every sample query and print the rankings."""
    from rankrelay.cli import render_result

    reranker = first_available((model,) if model else DEMO_CHAIN, console)
    console.print(f"using [bold]{reranker.name}[/] {getattr(reranker, 'model', '') or ''}", highlight=False)
    samples = load_sample()
    results = reranker.rerank_batch([(s["query"], s["documents"]) for s in samples], top_n=3)
    for result in results:
        console.print(render_result(result, title=f"{result.query!r} (top 3 of {result.num_candidates})"))
    timings = results[0].timings if results else {}
    console.print(
        f"{len(results)} queries, {sum(r.num_candidates for r in results)} documents in one batch: "
        f"model {timings.get('model', 0.0):.0f} ms, total {timings.get('total', 0.0):.0f} ms"
    )
