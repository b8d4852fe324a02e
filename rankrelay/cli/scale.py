"""``rankrelay rerank-batch`` a candidates file, ``serve`` rerankers over HTTP (in one process or on Ray), and read a
service's ``usage``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from rankrelay.cli.common import ConfigOption, QuietOption, app, console, err_console, fail
from rankrelay.errors import ConfigError, RankRelayError


@app.command("rerank-batch", short_help="Rerank a large candidates file, resumable.")
def rerank_batch(
    input_path: Annotated[Path, typer.Argument(help="Parquet or JSON lines (query_id, query, doc_id, text), "
                                                    "or a TREC run with --corpus.")],
    model: Annotated[str, typer.Option("--model", help="Reranker spec or preset.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: reranked.parquet, run.trec, parts/.",
                                      file_okay=False)],
    corpus: Annotated[Path | None, typer.Option(help="BEIR folder with the texts of a TREC run's ids.")] = None,
    top_n: Annotated[int | None, typer.Option(min=1, help="Keep the best N per query (default all).")] = None,
    part_queries: Annotated[int, typer.Option(min=1, help="Queries per resumable part.")] = 64,
    use_ray: Annotated[bool, typer.Option("--ray", help="Rerank on Ray Data (RAY_ADDRESS, else local Ray).")]
    = False,
    actors: Annotated[int | None, typer.Option(min=1, help="Ray actors, one model each (default: CPUs).")] = None,
    quiet: QuietOption = False,
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
            raise fail(exc) from None
    resumed = f" ({summary.resumed_parts} resumed)" if summary.resumed_parts else ""
    console.print(f"reranked {summary.queries} queries, {summary.rows} rows in {summary.parts} parts{resumed}: "
                  f"{summary.parquet}, {summary.trec}", highlight=False)

@app.command(short_help="Serve rerankers over HTTP (Cohere's and TEI's APIs).")
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
    from rankrelay.server.protocol import deadline_protocol
    from rankrelay.tracing import RequestIdFilter

    if (replicas != 1 or autoscale) and not use_ray:
        raise fail(ConfigError("--replicas and --autoscale need --ray"))
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
            load_models(plan.models, plan.settings, plan.strict)  # a bad spec fails here, not in every replica
            run(plan, host=host or settings.service.host, port=settings.service.port if port is None else port,
                replicas=replicas, autoscale=parse_autoscale(autoscale) if autoscale else None)
            return
        app_ = create_app_from_settings(settings, models, api_key or [], **overrides)
        app_.state.service.warm_up()  # a model missing here is one line now, not a traceback from uvicorn
    except RankRelayError as exc:
        raise fail(exc) from None
    service = settings.service
    for handler in logging.getLogger().handlers:  # each line says which request it is about
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    uvicorn.run(app_, host=host or service.host, port=service.port if port is None else port, log_level="info",
                timeout_graceful_shutdown=30, timeout_keep_alive=service.keep_alive_s,
                http=deadline_protocol(service.header_timeout_s))


@app.command("fake-api", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                           "help_option_names": []})
def fake_api(ctx: typer.Context) -> None:
    """A fake upstream API for your application's tests."""
    from rankrelay.testing.__main__ import main

    raise typer.Exit(main(list(ctx.args), prog="rankrelay fake-api"))


@app.command(short_help="Usage and spend per client, from a service.")
def usage(
    url: Annotated[str, typer.Option(help="The service's root URL.")] = "http://127.0.0.1:8000",
    key_env: Annotated[str, typer.Option(help="Variable holding the key to send (an admin key sees every client).")]
        = "RANKRELAY_API_KEY",
    client: Annotated[str | None, typer.Option(help="Only this client.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this served model.")] = None,
    since: Annotated[str | None, typer.Option(help="From this time on (ISO 8601 or epoch seconds).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the service's JSON.")] = False,
) -> None:
    """Read ``GET /v1/usage``: requests, documents, billed units and estimated dollars, and each budget's spend."""
    import json
    import os

    import httpx
    from rich.table import Table

    key = os.environ.get(key_env, "")
    params = {k: v for k, v in (("client", client), ("model", model), ("since", since)) if v is not None}
    try:
        reply = httpx.get(f"{url.rstrip('/')}/v1/usage", params=params, timeout=30,
                          headers={"Authorization": f"Bearer {key}"} if key else {})
    except httpx.HTTPError as exc:
        raise fail(ConfigError(f"cannot reach {url}: {type(exc).__name__}: {exc}")) from None
    if reply.status_code != 200:
        message = reply.json().get("message", reply.text) if "json" in reply.headers.get("content-type", "") \
            else reply.text
        raise fail(ConfigError(f"{url}/v1/usage answered {reply.status_code}: {message}"))
    data = reply.json()
    if as_json:
        console.print_json(json.dumps(data))
        return
    table = Table(title="usage", title_justify="left")
    for column in ("client", "model", "deployment", "requests", "documents", "billed units", "$ est."):
        table.add_column(column, justify="right" if column in ("requests", "documents", "$ est.") else "left")
    for row in data["rows"]:
        units = ", ".join(f"{n:g} {unit}" for unit, n in row["billed_units"].items())
        table.add_row(row["client"], row["model"], row["deployment"] or "-", str(row["requests"]),
                      str(row["documents"]), units, f"{row['cost_usd']:.4f}")
    console.print(table)
    for name, budget in data.get("budgets", {}).items():
        console.print(f"budget of {name}: ${budget['spent_usd']:g} of ${budget['usd']:g} "
                      f"{'in total' if budget['per'] == 'total' else 'this ' + budget['per']}")
