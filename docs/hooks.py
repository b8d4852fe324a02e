"""MkDocs hooks: the CLI reference page is generated from the typer app at build time, so it never goes stale."""

from __future__ import annotations

from typing import Any


def on_page_read_source(page: Any, config: Any) -> str | None:
    """The markdown of ``reference/cli.md``: typer's own docs of every command and option."""
    if page.file.src_uri != "reference/cli.md":
        return None
    import typer
    from typer.cli import get_docs_for_click

    from rankrelay.cli import app

    command = typer.main.get_command(app)
    docs = get_docs_for_click(obj=command, ctx=typer.Context(command), name="rankrelay", title="CLI reference")
    return docs.strip() + "\n"
