"""``rankrelay bench`` backends on a BEIR dataset, ``tune`` a configuration to a latency budget, and ``train`` a
cross-encoder on its judgments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from rankrelay.cli.common import QuietOption, app, console, err_console, fail, progress_shown
from rankrelay.errors import ConfigError, RankRelayError


@app.command(short_help="Score backends on the same candidates; write a report.")
def bench(
    dataset: Annotated[Path, typer.Option(help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")],
    backends: Annotated[str, typer.Option(help="Comma-separated reranker specs, e.g. identity,random,minilm-l6.")],
    candidates: Annotated[str, typer.Option(help="bm25, dense, hybrid, or a TREC run file.")] = "bm25",
    depth: Annotated[int, typer.Option(min=1, help="Candidates per query.")] = 100,
    queries: Annotated[
        str | None, typer.Option(help="The first N judged queries, or with --split-file a part: train, dev or test.")
    ] = None,
    split_file: Annotated[
        Path | None, typer.Option(help="split.json from 'rankrelay train': evaluate one part's queries only.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Report folder (also caches candidates and runs).", file_okay=False)] \
        = Path("report"),
    split: Annotated[str, typer.Option(help="qrels split.")] = "test",
    use_ray: Annotated[bool, typer.Option("--ray", help="Score on Ray Data, one model per actor "
                                                        "(RAY_ADDRESS joins a cluster, else Ray starts here).")]
    = False,
    strict: Annotated[bool, typer.Option(help="Fail when a backend cannot run here (weights not on this machine, "
                                               "a missing extra) instead of leaving it out with a warning.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Score several backends on the same candidates: metrics, significance, agreement, latency."""
    from rankrelay.evaluation import compare
    from rankrelay.evaluation.report import table

    specs = [b.strip() for b in backends.split(",") if b.strip()]
    try:
        chosen: int | list[str] | None = None
        if split_file is not None:
            from rankrelay.training.split import load_split

            chosen = load_split(split_file, queries or "test")
        elif queries is not None:
            if not queries.isdigit() or int(queries) < 1:
                raise ConfigError(f"--queries takes a number of queries (or a split part with --split-file), "
                                  f"got {queries!r}")
            chosen = int(queries)
        result = compare(dataset, candidates, specs, depth=depth, queries=chosen, out=out, split=split,
                         progress=progress_shown(quiet), use_ray=use_ray, strict=strict)
    except RankRelayError as exc:
        raise fail(exc) from None
    metrics = ("ndcg@10", "mrr@10", "recall@100")
    typer.echo(table(["backend", *metrics], [[n, *(m[k] for k in metrics)] for n, m in result.metrics.items()]))
    typer.echo(table(["backend", "p50 ms", "nDCG@10", "Pareto front", "reranked / query"],
                     [[r["backend"], r["p50_ms"], r["ndcg@10"], "yes" if r["front"] else "",
                       "" if r["reranked_mean"] is None else f"{r['reranked_mean']:.1f}"] for r in result.pareto],
                     optional=("reranked / query",)))
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    console.print(f"report: {out / 'report.html'}, {out / 'report.md'} and {out / 'report.json'}", highlight=False)

@app.command(short_help="Find the best configuration under a latency budget.")
def tune(
    dataset: Annotated[Path, typer.Argument(help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")],
    budget_ms: Annotated[float, typer.Option(help="p50 latency per query the recommendation must meet.")],
    models: Annotated[str, typer.Option(help="Comma-separated tiers, fastest first: presets, specs or model "
                                             "folders (e.g. tinybert-l2,models/cranfield).")] = "tinybert-l2,minilm-l6",
    out: Annotated[Path, typer.Option(help="Where the recommended profile (TOML) is written.", dir_okay=False)]
    = Path("tuned.toml"),
    candidates: Annotated[str, typer.Option(help="bm25, dense, hybrid, or a TREC run file.")] = "bm25",
    depth: Annotated[int, typer.Option(min=1, help="First-stage candidates per query.")] = 100,
    queries: Annotated[int | None, typer.Option(min=1, help="The first N judged queries (default: all).")] = None,
    runtime: Annotated[str, typer.Option(help="Runtime of every tier (auto: this machine's fastest that agrees "
                                              "with torch).")] = "auto",
    report: Annotated[Path, typer.Option(help="Report folder (also caches candidates and runs: resumable).",
                                         file_okay=False)] = Path("tune-report"),
    quiet: QuietOption = False,
) -> None:
    """Try tiers, cascades and depths on your data and machine; recommend the best under --budget-ms."""
    from rankrelay.evaluation.report import table
    from rankrelay.evaluation.tune import tune as run_tune

    try:
        result = run_tune(dataset, budget_ms, [m.strip() for m in models.split(",") if m.strip()],
                          candidates=candidates, depth=depth, queries=queries, runtime=runtime, report=report,
                          out=out, progress=progress_shown(quiet))
    except RankRelayError as exc:
        raise fail(exc) from None
    chosen = result.recommended["backend"] if result.recommended else None
    if result.quality != "nDCG@10":
        console.print(f"quality: {result.quality}", highlight=False)
    typer.echo(table(["configuration", "p50 ms", "nDCG@10", "Pareto front", "within budget"],
                     [[("* " if r["backend"] == chosen else "") + r["backend"], r["p50_ms"], r["ndcg@10"],
                       "yes" if r["front"] else "", "yes" if r["p50_ms"] <= budget_ms else ""] for r in result.rows]))
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if result.profile is None:
        raise typer.Exit(1)
    console.print(f"recommended: {chosen} -> {result.profile} (load_reranker({str(result.profile)!r}), "
                  f"serve --config, bench --backends); report: {report / 'report.md'}", highlight=False)


@app.command(short_help="Fine-tune a cross-encoder on a BEIR folder's judgments.")
def train(
    dataset: Annotated[Path, typer.Option(help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")],
    out: Annotated[Path, typer.Option(help="Folder for the model, split.json, calibration and model card.",
                                      file_okay=False)],
    base: Annotated[str, typer.Option(help="Hugging Face encoder or cross-encoder (id, alias or path).")] = (
        "all-minilm-l6"),
    head: Annotated[str, typer.Option(help="Fresh head on the [CLS] token (cls) or the mean of tokens (mean).")] = (
        "cls"),
    negatives: Annotated[str, typer.Option(help="Hard negatives from dense, bm25 or hybrid.")] = "dense",
    retriever_model: Annotated[
        str, typer.Option(help="Bi-encoder of the first stage (negatives, teacher, dev/test candidates).")
    ] = "all-minilm-l6",
    depth: Annotated[int, typer.Option(min=1, help="First-stage candidates per query.")] = 100,
    negatives_per_query: Annotated[int, typer.Option(min=1)] = 12,
    random_share: Annotated[float, typer.Option(min=0, max=1, help="Share of negatives drawn at random.")] = 0.25,
    skip_top: Annotated[int, typer.Option(min=0, help="Unjudged top candidates not used as negatives.")] = 0,
    epochs: Annotated[float, typer.Option(min=0.01)] = 2.0,
    max_length: Annotated[int, typer.Option(min=16, help="Tokens per (query, document) pair.")] = 128,
    loss: Annotated[str, typer.Option(help="listwise (distillation + judgments) or bce.")] = "listwise",
    teacher: Annotated[bool, typer.Option(help="Distil the first stage's bi-encoder (listwise).")] = True,
    pseudo_queries: Annotated[
        int | None, typer.Option(help="Title -> abstract pseudo-queries (0: none; default: all).")
    ] = 600,
    split: Annotated[str, typer.Option(help="Query fractions train,dev,test.")] = "0.6,0.2,0.2",
    seed: Annotated[int, typer.Option()] = 0,
    learning_rate: Annotated[float, typer.Option("--lr")] = 1e-4,
    batch_size: Annotated[int, typer.Option(min=1, help="Queries (lists) per step.")] = 4,
    max_minutes: Annotated[float | None, typer.Option(help="Stop training after this long.")] = None,
    evals_per_epoch: Annotated[int, typer.Option(min=1, help="Dev evaluations (and checkpoints) per epoch.")] = 2,
    calibration: Annotated[str, typer.Option(help="platt or isotonic (fitted on dev).")] = "platt",
    device: Annotated[str, typer.Option()] = "cpu",
    quiet: QuietOption = False,
) -> None:
    """Fine-tune a cross-encoder on a BEIR folder's judgments (test queries held out); loads as cross-encoder:OUT."""
    import shlex
    import sys

    from rankrelay.training import train as run_training

    try:
        report = run_training(
            dataset, out, base=base, head=head, negatives=negatives, negatives_per_query=negatives_per_query,
            retriever_model=retriever_model, depth=depth,
            random_share=random_share, skip_top=skip_top, epochs=epochs, max_length=max_length, loss=loss,
            teacher=teacher, pseudo_queries=pseudo_queries, split=split, seed=seed, learning_rate=learning_rate,
            batch_size=batch_size, max_minutes=max_minutes, evals_per_epoch=evals_per_epoch,
            calibration=calibration, device=device, progress=progress_shown(quiet),
            command="rankrelay " + shlex.join(sys.argv[1:]),
        )
    except RankRelayError as exc:
        raise fail(exc) from None
    t = report.get("test", {})
    console.print(f"model saved to {out}; dev nDCG@10 {report['dev']['ndcg@10']:.4f}", highlight=False)
    if t:
        console.print(f"test ({t['queries']} queries): nDCG@10 {t['ndcg@10']:.4f} vs first stage "
                      f"{t['first_stage_ndcg@10']:.4f}; ECE {t['ece_sigmoid']:.3f} -> "
                      f"{t['ece_calibrated'] if t['ece_calibrated'] is None else round(t['ece_calibrated'], 3)}",
                      highlight=False)
    console.print(f"evaluate with: rankrelay bench --dataset {dataset} --candidates {out / 'test-candidates.trec'} "
                  f"--backends identity,cross-encoder:{out} --split-file {out / 'split.json'} --queries test",
                  highlight=False)


@app.command(short_help="Write a bench report again from its report.json.")
def report(
    folder: Annotated[Path, typer.Argument(help="A folder written by 'rankrelay bench' (holding report.json).")],
    open_it: Annotated[bool, typer.Option("--open", help="Open report.html in the default browser.")] = False,
) -> None:
    """Write report.html and report.md again from report.json, without re-running anything."""
    import webbrowser

    from rankrelay.evaluation.comparison import Comparison
    from rankrelay.evaluation.html import read_report, write_html
    from rankrelay.evaluation.report import markdown

    try:
        data = read_report(folder)
        html = write_html(data, folder)
        (folder / "report.md").write_text(markdown(Comparison.from_report(data)))
    except RankRelayError as exc:
        raise fail(exc) from None
    console.print(f"wrote {html} and {folder / 'report.md'}", highlight=False)
    if open_it:
        webbrowser.open(html.resolve().as_uri())
