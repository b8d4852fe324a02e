"""``python -m rankrelay.cli``: the command line."""

from rankrelay.cli import app

app()
