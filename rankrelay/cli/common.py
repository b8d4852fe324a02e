"""What every ``rankrelay`` command shares: the Typer app, the consoles, the ``--config`` option, error
output (one line on stderr, exit status 2) and the rendering of results.

Example:
    >>> from rankrelay.cli.common import snippet
    >>> snippet("a  long   text", width=8)
    'a long …'
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rankrelay.results import RerankResult

app = typer.Typer(
    help="rankrelay: every reranker behind one interface.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is text: '[service]' is a config section, not rich markup
)
console = Console(width=None if Console().is_terminal else 120)
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (else RANKRELAY_CONFIG).")
]


QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def progress_shown(quiet: bool) -> bool:
    """Progress unless ``--quiet``: a bar on a terminal, else a line every few seconds
    (:func:`rankrelay.progress.steps`)."""
    return not quiet


def fail(exc: Exception) -> typer.Exit:
    """Print ``exc`` as one line on stderr; the exit (status 2) to raise."""
    err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def quiet_libraries() -> None:
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


def _version(shown: bool) -> None:
    if shown:
        from rankrelay import __version__

        console.print(f"rankrelay {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """rankrelay: every reranker behind one interface."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("rankrelay.progress").setLevel(logging.INFO)  # a long job says how far it is, off a terminal too
    if not verbose:
        quiet_libraries()
