"""``rankrelay experiment simulate``: replay a BEIR dataset with simulated users and show how many impressions
team-draft interleaving and a split test need to pick the better arm."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rankrelay.cli.common import QuietOption, app, fail, progress_shown
from rankrelay.errors import ConfigError, RankRelayError

experiment_app = typer.Typer(help="Online experiments between backends: simulate interleaving against a split.",
                              short_help="Online experiments: simulate, report.",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


def _numbers(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} takes comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} takes positive numbers, got {text!r}")
    return values


@experiment_app.command(short_help="Simulate interleaving against a split test.")
def simulate(
    dataset: Annotated[Path, typer.Argument(help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")],
    arms: Annotated[str, typer.Option(help="Two reranker specs, comma-separated, e.g. identity,minilm-l6.")],
    click_model: Annotated[str, typer.Option(help="cascade or pbm (position-based).")] = "cascade",
    user: Annotated[str, typer.Option(help="perfect, navigational or informational (Hofmann et al. 2013).")] \
        = "navigational",
    impressions: Annotated[str, typer.Option(help="Impression counts to decide at, comma-separated.")] \
        = "50,100,200,500,1000,2000",
    trials: Annotated[int, typer.Option(min=1, help="Simulated experiments per count.")] = 200,
    candidates: Annotated[str, typer.Option(help="First stage: bm25, dense, hybrid, or a TREC run file.")] = "bm25",
    depth: Annotated[int, typer.Option(min=1, help="Candidates per query.")] = 100,
    queries: Annotated[int | None, typer.Option(min=1, help="The first N judged queries (default: all).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated users and the interleaving draws.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Folder for simulation.json and simulation.html.",
                                             file_okay=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Share of simulated experiments that pick the arm with the higher nDCG@10, team-draft against split."""
    from rankrelay.evaluation import compare
    from rankrelay.evaluation.data import load_beir
    from rankrelay.evaluation.report import table
    from rankrelay.experiments.clicks import click_model as make_click_model
    from rankrelay.experiments.report import write_simulation
    from rankrelay.experiments.simulate import simulate as run

    try:
        specs = [a.strip() for a in arms.split(",") if a.strip()]
        if len(specs) != 2:
            raise ConfigError(f"--arms takes two reranker specs, got {len(specs)}: {arms!r}")
        model = make_click_model(click_model, user)
        counts = _numbers(impressions, "--impressions")
        data = load_beir(dataset)
        compared = compare(data, candidates, specs, depth=depth, queries=queries, progress=progress_shown(quiet))
        missing = [s for s in specs if s not in compared.runs]
        if missing:
            raise ConfigError(f"{', '.join(missing)} failed on every query: nothing to simulate")
        rankings = {s: {q: [d for d, _ in r] for q, r in compared.runs[s].rankings.items()} for s in specs}
        result = run(rankings, data.qrels, {s: compared.metrics[s]["ndcg@10"] for s in specs},
                     model, counts, trials=trials, seed=seed)
    except RankRelayError as exc:
        raise fail(exc) from None
    if out is not None:
        page = write_simulation(result, out)
        typer.echo(f"wrote {out / 'simulation.json'} and {page}", err=True)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(f"{result.arms[0]} nDCG@10 {result.ndcg[result.arms[0]]:.4f} | {result.arms[1]} nDCG@10 "
               f"{result.ndcg[result.arms[1]]:.4f}: the better arm is {result.better} ({result.click_model} users, "
               f"{result.trials} trials)")
    typer.echo(table(["impressions", "team-draft right", "split right", "team-draft right+sig", "split right+sig"],
                     [[r.impressions, f"{r.team_draft:.1%}", f"{r.split:.1%}", f"{r.team_draft_significant:.1%}",
                       f"{r.split_significant:.1%}"] for r in result.rows]))
    for method, label in (("team_draft", "team-draft"), ("split", "split")):
        needed = result.needed(method)
        typer.echo(f"{label}: 95 % right at {needed if needed else 'more than ' + str(result.rows[-1].impressions)} "
                   "impressions")



@experiment_app.command(short_help="Which arm users prefer in each experiment.")
def report(
    store: Annotated[str, typer.Argument(help="The service's experiment store: a SQLite file or a postgresql:// URL.")],
    name: Annotated[str | None, typer.Option(help="One experiment (default: every one in the store).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for experiments.json and experiments.html.",
                                             file_okay=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Which arm users prefer in each experiment: wins, ties, losses, the preference with its interval and p-value."""
    from rankrelay.evaluation.report import table
    from rankrelay.experiments.report import write_experiments
    from rankrelay.experiments.store import open_store
    from rankrelay.experiments.totals import summary

    try:
        if "://" not in store and not Path(store).is_file():
            raise ConfigError(f"no experiment store at {store} (a SQLite file or a postgresql:// URL)")
        kept = open_store(store)
        found = kept.experiments()
        if name is not None and name not in found:
            raise ConfigError(f"no experiment {name!r} in {store}; found: {', '.join(found) or 'none'}")
        reports = [summary(n, arms, method, kept.totals(n)) for n, (method, arms) in found.items() if name in (None, n)]
        kept.close()
    except RankRelayError as exc:
        raise fail(exc) from None
    if out is not None:
        page = write_experiments(reports, out)
        typer.echo(f"wrote {out / 'experiments.json'} and {page}", err=True)
    if as_json:
        typer.echo(json.dumps(reports, indent=2))
        return
    typer.echo(table(["experiment", "method", "impressions", "with clicks", "left out"],
                     [[r["experiment"], r["method"], r["impressions"], r["with_clicks"], r["excluded"]]
                      for r in reports]))
    rows = [[r["experiment"], f"{p['a']} vs {p['b']}", f"{p['wins']}/{p['ties']}/{p['losses']}",
             f"{p['share']:.3f} [{p['low']:.3f}, {p['high']:.3f}]", f"{p['p_value']:.3g}",
             (p["winner"] or "none") + (" (significant)" if p["significant"] else "")]
            for r in reports for p in r.get("preferences", [])]
    rows += [[r["experiment"], " vs ".join(a["arm"] for a in s["arms"]), "split",
              f"{s['difference']:+.3f} [{s['low']:+.3f}, {s['high']:+.3f}]", f"{s['p_value']:.3g}",
              (s["winner"] or "none") + (" (significant)" if s["significant"] else "")]
             for r in reports if (s := r.get("split"))]
    if rows:
        typer.echo(table(["experiment", "pair", "wins/ties/losses", "preference [95 %]", "p", "preferred"], rows))
