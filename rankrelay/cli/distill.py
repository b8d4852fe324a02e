"""``rankrelay distill``: teach a local cross-encoder to rank like a teacher, and say how closely it does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from rankrelay.cli.common import QuietOption, app, console, fail, progress_shown
from rankrelay.errors import ConfigError, RankRelayError


def teacher_spec(text: str) -> Any:
    """A spec, or a chain written as a JSON list (``'["cohere:rerank-v3.5", "minilm-l6"]'``)."""
    if text.lstrip().startswith("["):
        try:
            chain = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--teacher: a chain is a JSON list of specs, got {text!r} ({exc})") from None
        if not isinstance(chain, list) or not chain or not all(isinstance(s, str) for s in chain):
            raise ConfigError(f"--teacher: a chain is a JSON list of specs, got {text!r}")
        return chain
    return text


@app.command(short_help="Teach a local cross-encoder to rank like a teacher.")
def distill(
    teacher: Annotated[str, typer.Option(help="The reranker to learn from: a spec, or a chain as a JSON list.")],
    student: Annotated[str, typer.Option(help="A local cross-encoder, preset, encoder, folder or shape:NAME "
                                              "(shape:tinybert-l2, shape:minilm-l2 … shape:minilm-l12).")],
    corpus: Annotated[Path, typer.Option(help="BEIR folder (corpus.jsonl; queries.jsonl and qrels/ when it has "
                                              "them).")],
    out: Annotated[Path, typer.Option(help="Folder for the model, teacher.jsonl, report and model card.",
                                      file_okay=False)],
    queries: Annotated[str, typer.Option(help="dataset, pseudo:N (written from the corpus) or a capture file.")] = (
        "pseudo:600"),
    candidates: Annotated[str, typer.Option(help="First stage: bm25, dense or hybrid.")] = "bm25",
    depth: Annotated[int, typer.Option(min=2, help="Candidates per query the teacher scores.")] = 30,
    list_size: Annotated[int, typer.Option(min=2, help="Candidates per training list.")] = 16,
    loss: Annotated[str, typer.Option(
        help="listnet (listwise), margin-mse or lambda (LambdaLoss, NDCG-Loss2++).")] = "listnet",
    temperature: Annotated[float, typer.Option(help="Of the standardized teacher scores (lower: sharper).")] = 1.0,
    epochs: Annotated[float, typer.Option(min=0.01)] = 1.0,
    max_length: Annotated[int, typer.Option(min=16, help="Tokens per pair, learnt and served.")] = 256,
    learning_rate: Annotated[float, typer.Option("--lr")] = 1e-4,
    batch_size: Annotated[int, typer.Option(min=1, help="Queries (lists) per step.")] = 4,
    max_minutes: Annotated[float | None, typer.Option(help="Stop training after this long.")] = None,
    precision: Annotated[str, typer.Option(help="auto (bf16 where the CPU has bf16 units), fp32 or bf16.")] = "auto",
    max_teacher_calls: Annotated[int | None, typer.Option(min=0, help="Teacher calls in all (every run).")] = None,
    max_cost_usd: Annotated[float | None, typer.Option(help="Dollars the teacher may cost in all (every run).")] = (
        None),
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option()] = "cpu",
    quiet: QuietOption = False,
) -> None:
    """Score pseudo, captured or dataset queries' candidates with the teacher once (resumable), train the student on
    its order, and measure both on held-out queries (report/report.html, README.md)."""
    import shlex
    import sys

    from rankrelay.training import distill as run_distill

    try:
        report = run_distill(
            corpus, out, teacher=teacher_spec(teacher), student=student, queries=queries, candidates=candidates,
            depth=depth, list_size=list_size, loss=loss, temperature=temperature, epochs=epochs,
            max_length=max_length, learning_rate=learning_rate, batch_size=batch_size, max_minutes=max_minutes,
            precision=precision,
            max_teacher_calls=max_teacher_calls, max_cost_usd=max_cost_usd, seed=seed, device=device,
            progress=progress_shown(quiet), command="rankrelay " + shlex.join(sys.argv[1:]),
        )
    except RankRelayError as exc:
        raise fail(exc) from None
    t, a = report["teacher"], report["agreement"]
    console.print(f"student saved to {out}; teacher calls {t['calls_this_run']} this run ({t['calls_recorded']} in "
                  f"all, {t['replayed']} replayed), billed {t['billed_units']}, ${t['usd']:.4f}", highlight=False,
                  soft_wrap=True)
    for key in ("before", "student"):
        if key in a:
            console.print(f"{'before' if key == 'before' else 'after':<6} agreement on {a[key]['queries']} held-out "
                          f"queries: top-10 overlap {a[key]['overlap@10']:.3f}, Kendall tau "
                          f"{a[key]['kendall_tau']:.3f}, nDCG@10 vs teacher {a[key]['teacher_ndcg@10']:.3f}",
                          highlight=False, soft_wrap=True)
    for v in report["quality"].values():
        console.print(f"nDCG@10 {v['name']:<40} {v['ndcg@10']:.4f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]",
                      highlight=False, soft_wrap=True)
    console.print(f"fallback chain: {report['chain']}", highlight=False, soft_wrap=True)
    if report["quality"]:
        backends = ",".join([*([] if teacher.lstrip().startswith("[") else [teacher]), f"cross-encoder:{out}",
                             "bi-encoder:all-minilm-l6"])
        console.print(f"compare: rankrelay bench --dataset {corpus} --candidates {out / 'held-out-candidates.trec'} "
                      f"--backends '{backends}'", highlight=False, soft_wrap=True)
