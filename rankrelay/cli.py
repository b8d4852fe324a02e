"""The ``rankrelay`` command line: ``rerank`` a file, list ``models``, run the ``demo``, ``index`` a corpus and
``search`` it, ``bench`` backends on a BEIR dataset, ``train`` a cross-encoder, and ``serve`` rerankers over
HTTP. Each command reads its defaults from the settings (``--config``), prints a table (or ``--json``), and
turns a typed error into one line on stderr and exit status 2. Rendering of results lives here; the library
returns them.

Example:
    $ rankrelay rerank --model minilm-l6 --query "what is bm25" docs.jsonl --top-n 5
    $ rankrelay models
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rankrelay.config import PRESETS
from rankrelay.errors import ConfigError, RankRelayError
from rankrelay.results import RerankResult

app = typer.Typer(
    help="rankrelay: every reranker behind one interface.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if Console().is_terminal else 120)
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (else RANKRELAY_CONFIG).")
]


def _fail(exc: Exception) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _quiet_libraries() -> None:
    """Keep model-loading progress bars and warnings out of command output."""
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def snippet(text: str, width: int = 70) -> str:
    """One-line preview of ``text``."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render_result(
    result: RerankResult, *, title: str | None = None, first_ranks: list[int | None] | None = None
) -> Table:
    """A rich table of a result: rank (and first-stage rank), score, normalized score, id, snippet."""
    table = Table(title=title, title_justify="left")
    table.add_column("rank", justify="right")
    if first_ranks is not None:
        table.add_column("was", justify="right")
    table.add_column("score", justify="right")
    table.add_column(f"norm ({result.normalization})", justify="right")
    table.add_column("id")
    table.add_column("text")
    for i, r in enumerate(result.results):
        text = snippet(r.text)
        if r.passage is not None:
            start, end = r.passage
            text = f"[passage {start}-{end} of {len(r.text)}] " + snippet(r.text[start:end], 56)
        elif r.truncated:
            text = "[truncated] " + text
        was = [] if first_ranks is None else [str(first_ranks[i])]
        table.add_row(str(r.rank), *was, f"{r.score:.4f}", f"{r.normalized_score:.3f}",
                      "" if r.id is None else escape(str(r.id)), escape(text))
    return table


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False) -> None:
    """rankrelay: every reranker behind one interface."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not verbose:
        _quiet_libraries()


@app.command()
def rerank(
    documents: Annotated[
        str, typer.Argument(help="Documents: .jsonl (objects with 'text') or .txt (one a line); '-' for stdin.")
    ],
    query: Annotated[str, typer.Option("--query", "-q", help="The query.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Backend spec or preset (default: settings).")
    ] = None,
    top_n: Annotated[int | None, typer.Option("--top-n", "-n", min=1, help="Keep the best N.")] = None,
    normalize: Annotated[str | None, typer.Option(help="rank, sigmoid, minmax, zscore or none.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Pairs per forward pass.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = None,
    long_documents: Annotated[str | None, typer.Option(help="passages, truncate or error.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Rerank documents from a file for one query."""
    from rankrelay.io import read_documents
    from rankrelay.rerankers import load_reranker, load_settings

    overrides = {
        k: v
        for k, v in {"normalize": normalize, "batch_size": batch_size, "device": device,
                     "long_documents": long_documents}.items()
        if v is not None
    }
    try:
        settings = load_settings(str(config) if config else None, **overrides)
        docs = read_documents(documents)
        reranker = load_reranker(model, settings=settings)
        result = reranker.rerank(query, docs, top_n=top_n if top_n is not None else settings.top_n)
    except RankRelayError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    console.print(render_result(result, title=f"{result.backend} {result.model or ''} — {query!r}"))
    console.print(f"{len(result)} of {result.num_candidates} documents; "
                  f"model {result.timings['model']:.1f} ms, total {result.timings['total']:.1f} ms")


@app.command()
def models() -> None:
    """List presets (with whether their weights are on this machine) and registered backends."""
    from rankrelay.hub import find_local
    from rankrelay.rerankers import backends

    presets = Table(title="presets (weights: where they are on this machine)", title_justify="left")
    for col in ("name", "model", "max len", "activation", "weights"):
        presets.add_column(col)
    for p in PRESETS.values():
        try:
            local = find_local(p.model)
        except RankRelayError:
            local = None
        presets.add_row(p.name, p.model, str(p.max_length), p.activation, local.source if local else "hub")
    console.print(presets)
    table = Table(title="backends (spec: name:model)", title_justify="left")
    for col in ("name", "extra", "about"):
        table.add_column(col)
    for b in backends():
        table.add_row(b.name, b.extra or "", b.description)
    console.print(table)


@app.command()
def demo(
    dataset: Annotated[
        str | None, typer.Option(help="A BEIR folder to search instead of the standard library's docstrings.")
    ] = None,
    questions: Annotated[int, typer.Option(min=1, help="How many example questions (or dataset queries).")] = 4,
    rebuild: Annotated[bool, typer.Option(help="Rebuild the cached index.")] = False,
    model: Annotated[
        str | None, typer.Option(help="A cross-encoder from 'rankrelay train' (default: models/<dataset name>).")
    ] = None,
) -> None:
    """Two-stage search (hybrid retrieval, then a fallback chain of rerankers) on a real corpus, offline."""
    from rankrelay.demo import run_demo

    try:
        run = run_demo(dataset, questions, rebuild, model,
                       notify=lambda note: console.print(note, highlight=False), show_progress=console.is_terminal)
    except RankRelayError as exc:
        raise _fail(exc) from None
    for out in run.results:
        console.print(render_result(out, title=f"{out.query!r} — served by {out.served_by}",
                                    first_ranks=[m["first_rank"] for m in out.movement]))
        t = out.timings
        failed = ", ".join(f"{f['backend']} ({f['error']})" for f in out.info.get("fallbacks", []))
        console.print(f"per query (batch of {len(run.results)}): retrieve {t['retrieve_ms']:.0f} ms, "
                      f"rerank {t['rerank_ms']:.0f} ms, total {t['total_ms']:.0f} ms"
                      + (f"; fell back past: {failed}" if failed else ""), highlight=False)


@app.command()
def index(
    corpus: Annotated[str, typer.Argument(help="BEIR folder or corpus.jsonl, JSON lines with 'text', or .txt lines.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the index.")],
    model: Annotated[str, typer.Option(help="Bi-encoder id, alias or path.")] = "all-minilm-l6",
    index_type: Annotated[str, typer.Option("--index", help="flat, hnsw or ivf (FAISS).")] = "flat",
    store: Annotated[str, typer.Option(help="faiss (in memory) or qdrant (embedded in OUT, or --qdrant-url).")]
    = "faiss",
    qdrant_url: Annotated[str | None, typer.Option(help="A Qdrant server (key: QDRANT_API_KEY).")] = None,
    collection: Annotated[str, typer.Option(help="The Qdrant collection.")] = "rankrelay",
    bm25: Annotated[bool, typer.Option(help="Also build a BM25 index (for --retriever bm25/hybrid).")] = True,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
) -> None:
    """Build a dense index (FAISS, or a Qdrant collection), and a BM25 one, over a corpus."""
    from rankrelay.retrieval import BM25Retriever, DenseRetriever, load_corpus

    try:
        if store not in ("faiss", "qdrant"):
            raise ConfigError(f"--store must be faiss or qdrant, got {store!r}")
        docs = load_corpus(corpus)
        if store == "faiss":
            DenseRetriever.build(docs, model=model, index=index_type, device=device,
                                 show_progress=console.is_terminal).save(out / "dense")
        else:
            from rankrelay.retrieval.qdrant import QdrantRetriever

            qdrant = QdrantRetriever.build(docs, model=model, path=None if qdrant_url else out / "qdrant",
                                           url=qdrant_url, collection=collection, device=device,
                                           show_progress=console.is_terminal)
            qdrant.save(out / "qdrant")
            qdrant.close()
        if bm25:
            BM25Retriever.build(docs).save(out / "bm25")
    except RankRelayError as exc:
        raise _fail(exc) from None
    kind = index_type if store == "faiss" else f"qdrant {collection}"
    console.print(f"indexed {len(docs)} documents into {out} ({kind}{' + bm25' if bm25 else ''})", highlight=False)


@app.command()
def search(
    index_dir: Annotated[Path, typer.Argument(help="A folder made by 'rankrelay index'.")],
    query: Annotated[str, typer.Argument(help="The query.")],
    rerank_spec: Annotated[
        str | None, typer.Option("--rerank", help="Reranker spec or preset; none: first stage only.")
    ] = None,
    retriever_kind: Annotated[str, typer.Option("--retriever", help="dense, bm25 or hybrid.")] = "hybrid",
    retrieve_k: Annotated[int, typer.Option(min=1, help="First-stage depth.")] = 100,
    top_n: Annotated[int, typer.Option(min=1, help="Results shown.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Search an index: first stage, then (with --rerank) a reranker; shows both ranks and the timings."""
    from rankrelay.rerankers import load_reranker, load_settings
    from rankrelay.retrieval import TwoStageSearch, open_index

    try:
        retriever = open_index(index_dir, retriever_kind)
        reranker = None
        if rerank_spec:
            reranker = load_reranker(rerank_spec, settings=load_settings(str(config) if config else None))
        out = TwoStageSearch(retriever, reranker, retrieve_k=retrieve_k, top_n=top_n)(query)
    except RankRelayError as exc:
        raise _fail(exc) from None
    if as_json:
        data = out.to_dict()
        data["movement"] = out.movement
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    console.print(render_result(out, title=f"{out.served_by} — {query!r}",
                                first_ranks=[m["first_rank"] for m in out.movement]))
    t = out.timings
    console.print(f"retrieve {t['retrieve_ms']:.1f} ms, rerank {t['rerank_ms']:.1f} ms, total {t['total_ms']:.1f} ms")


@app.command("rerank-batch")
def rerank_batch(
    input_path: Annotated[Path, typer.Argument(help="Parquet or JSON lines (query_id, query, doc_id, text), "
                                                    "or a TREC run with --corpus.")],
    model: Annotated[str, typer.Option("--model", help="Reranker spec or preset.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: reranked.parquet, run.trec, parts/.")],
    corpus: Annotated[Path | None, typer.Option(help="BEIR folder with the texts of a TREC run's ids.")] = None,
    top_n: Annotated[int | None, typer.Option(min=1, help="Keep the best N per query (default all).")] = None,
    part_queries: Annotated[int, typer.Option(min=1, help="Queries per resumable part.")] = 64,
    use_ray: Annotated[bool, typer.Option("--ray", help="Rerank on Ray Data (RAY_ADDRESS, else local Ray).")]
    = False,
    actors: Annotated[int | None, typer.Option(min=1, help="Ray actors, one model each (default: CPUs).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Rerank a large candidates file, in parts that a rerun resumes; in-process or on Ray Data."""
    from rich.progress import Progress

    from rankrelay.batch import run_batch

    with Progress(console=err_console, disable=quiet or not err_console.is_terminal, transient=True) as bar:
        task = bar.add_task("reranking parts", total=None)
        try:
            summary = run_batch(input_path, model, out, corpus=corpus, part_queries=part_queries, top_n=top_n,
                                use_ray=use_ray, actors=actors,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
        except RankRelayError as exc:
            raise _fail(exc) from None
    resumed = f" ({summary.resumed_parts} resumed)" if summary.resumed_parts else ""
    console.print(f"reranked {summary.queries} queries, {summary.rows} rows in {summary.parts} parts{resumed}: "
                  f"{summary.parquet}, {summary.trec}", highlight=False)


@app.command()
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
    out: Annotated[Path, typer.Option(help="Report folder (also caches candidates and runs).")] = Path("report"),
    split: Annotated[str, typer.Option(help="qrels split.")] = "test",
    use_ray: Annotated[bool, typer.Option("--ray", help="Score on Ray Data, one model per actor "
                                                        "(RAY_ADDRESS joins a cluster, else Ray starts here).")]
    = False,
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
                         progress=console.is_terminal, use_ray=use_ray)
    except RankRelayError as exc:
        raise _fail(exc) from None
    metrics = ("ndcg@10", "mrr@10", "recall@100")
    typer.echo(table(["backend", *metrics], [[n, *(m[k] for k in metrics)] for n, m in result.metrics.items()]))
    typer.echo(table(["backend", "p50 ms", "nDCG@10", "Pareto front", "reranked / query"],
                     [[r["backend"], r["p50_ms"], r["ndcg@10"], "yes" if r["front"] else "",
                       "" if r["reranked_mean"] is None else f"{r['reranked_mean']:.1f}"] for r in result.pareto]))
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"report: {out / 'report.md'} and {out / 'report.json'}", highlight=False)


@app.command()
def train(
    dataset: Annotated[Path, typer.Option(help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")],
    out: Annotated[Path, typer.Option(help="Folder for the model, split.json, calibration and model card.")],
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
            calibration=calibration, device=device, progress=console.is_terminal,
            command="rankrelay " + shlex.join(sys.argv[1:]),
        )
    except RankRelayError as exc:
        raise _fail(exc) from None
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


@app.command()
def serve(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="NAME=SPEC, repeatable; the first is the default. SPEC may name a "
                     "model of the config's [service.models] or 'fallback' (the config's chain)."),
    ] = None,
    api_key: Annotated[list[str] | None, typer.Option(help="Accepted bearer token, repeatable.")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without authentication.")] = False,
    host: Annotated[str | None, typer.Option(help="Interface (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    index: Annotated[
        Path | None, typer.Option(help="A folder made by 'rankrelay index': enables POST /search.")
    ] = None,
    batching: Annotated[bool | None, typer.Option(help="Dynamic batching of concurrent requests.")] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option(help="How long a request finding the model idle waits for company (0: none).")
    ] = None,
    budget_ms: Annotated[
        float | None, typer.Option(min=0.001, help="Latency budget per request: a local model reranks the head "
                                   "that fits, the rest stays in first-stage order.")
    ] = None,
    use_ray: Annotated[bool, typer.Option("--ray", help="Serve on Ray Serve: models in replicas "
                                                        "(RAY_ADDRESS joins a cluster, else Ray starts here).")]
    = False,
    replicas: Annotated[int, typer.Option(min=1, help="With --ray: model replicas.")] = 1,
    autoscale: Annotated[str | None, typer.Option(help="With --ray: MIN,MAX replicas, scaled by load.")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve rerankers over HTTP: Cohere's /v2/rerank and /v1/rerank, TEI's /rerank, /search, /health, /metrics.

    Models, keys, index and limits come from [service] in the config file; options here override them.
    """
    import uvicorn

    from rankrelay.rerankers import load_settings
    from rankrelay.server.app import create_app_from_settings, plan_from_settings

    if (replicas != 1 or autoscale) and not use_ray:
        raise _fail(ConfigError("--replicas and --autoscale need --ray"))
    try:
        models = {}
        for item in model or []:
            name, sep, spec = item.partition("=")
            if not sep or not name or not spec:
                raise ConfigError(f"--model takes NAME=SPEC, got {item!r}")
            models[name] = spec
        settings = load_settings(str(config) if config else None)
        overrides = {k: v for k, v in {"batching": batching, "max_wait_ms": max_wait_ms, "budget_ms": budget_ms,
                                        "index": str(index) if index else None}.items() if v is not None}
        if no_auth:
            overrides["allow_unauthenticated"] = True
        if use_ray:
            from rankrelay.distributed.serve import parse_autoscale, run
            from rankrelay.server.service import load_models

            plan = plan_from_settings(settings, models, api_key or [], **overrides)
            load_models(plan.models, plan.settings)  # a bad spec fails here, not in every replica Ray starts
            run(plan, host=host or settings.service.host, port=settings.service.port if port is None else port,
                replicas=replicas, autoscale=parse_autoscale(autoscale) if autoscale else None)
            return
        app_ = create_app_from_settings(settings, models, api_key or [], **overrides)
    except RankRelayError as exc:
        raise _fail(exc) from None
    service = settings.service
    uvicorn.run(app_, host=host or service.host, port=service.port if port is None else port, log_level="info",
                timeout_graceful_shutdown=30)


if __name__ == "__main__":  # pragma: no cover
    app()
