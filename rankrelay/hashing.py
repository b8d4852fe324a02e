"""Stable hashes: the same input gives the same number on every machine and run (unlike ``hash()``).

Example:
    >>> from rankrelay.hashing import unit_interval, short_hash
    >>> 0.0 <= unit_interval("salt\x1fuser-42") < 1.0, len(short_hash("text"))
    (True, 10)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rankrelay.errors import DamagedArtifactError


def stable_int(key: str) -> int:
    """A 64-bit integer from ``key`` (the first 8 bytes of its SHA-256), e.g. a seed for :class:`random.Random`."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def unit_interval(key: str) -> float:
    """A number in [0, 1) from ``key``, uniform over keys: assigns keys to shares (A/B arms, query splits)."""
    return stable_int(key) / 2**64


def short_hash(text: str, length: int = 10) -> str:
    """The first ``length`` hex digits of SHA-256 of ``text`` (for cache keys and folder names)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_sha256(path: str | Path, length: int | None = None) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks (the first ``length`` hex digits, or all)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length] if length else digest.hexdigest()


def folder_checksums(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """``{name: sha256}`` of the files ``names`` in ``folder``: what a manifest records when it is written."""
    return {name: file_sha256(folder / name) for name in sorted(names)}


def verify_checksums(folder: Path, recorded: Mapping[str, Any], rebuild: str) -> None:
    """Raise :class:`DamagedArtifactError` naming the first file of ``recorded`` that is missing or does not
    match its checksum; ``rebuild`` says how to make the folder again."""
    for name, expected in sorted(recorded.items()):
        path = folder / name
        if not path.is_file():
            raise DamagedArtifactError(f"{path} is missing; {rebuild}")
        if file_sha256(path) != expected:
            raise DamagedArtifactError(f"{path} does not match its checksum (damaged or edited); {rebuild}")


def read_json_file(path: Path, rebuild: str) -> Any:
    """A JSON file rankrelay wrote; unreadable or not JSON is a :class:`DamagedArtifactError` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise DamagedArtifactError(f"{path} is damaged ({type(exc).__name__}: {exc}); {rebuild}") from None
