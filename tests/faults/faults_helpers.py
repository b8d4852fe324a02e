"""What the fault suite shares: filling a disk (``small_disk`` in tests/conftest.py is a real 2 MiB tmpfs), and a
service with an experiment on a given store."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any


def fill(folder: Path) -> None:
    """Write into ``folder`` until its disk is full (the next write anywhere on it fails with ENOSPC)."""
    with contextlib.suppress(OSError), open(folder / "ballast", "wb") as out:
        block = b"\0" * 65536
        while True:
            out.write(block)
            out.flush()
    with contextlib.suppress(OSError), open(folder / "ballast-small", "wb") as out:  # the last partial block
        while True:
            out.write(b"\0" * 512)
            out.flush()


KEY = "fault-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DOCS = [f"document number {i} about wings and lift" for i in range(8)]


def experiment_app(store: str, **options: Any) -> Any:
    """A service with two arms (identity, random) and the experiment ``ab`` over ``store``."""
    from rankrelay.server.app import create_app

    return create_app({"first": "identity", "shuffled": "random"}, api_keys=[KEY],
                      experiments={"ab": {"arms": ["first", "shuffled"]}}, experiment_store=store, **options)
