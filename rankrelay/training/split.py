"""A seeded, stable train/dev/test split of query ids.

Each query goes to a part by a hash of ``seed`` and its id alone, so the split does not change when
queries are added or reordered, and the parts never overlap.

Example:
    >>> split = split_queries([str(i) for i in range(100)], (0.6, 0.2, 0.2), seed=0)
    >>> sorted(split), sum(len(v) for v in split.values())
    (['dev', 'test', 'train'], 100)
    >>> {k: sorted(v) for k, v in split.items()} == {k: sorted(v) for k, v in split_queries(
    ...     [str(i) for i in reversed(range(100))], (0.6, 0.2, 0.2), seed=0).items()}  # order-free
    True
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

from rankrelay.errors import ConfigError, InvalidInputError
from rankrelay.hashing import unit_interval

PARTS = ("train", "dev", "test")
SPLIT_FILE = "split.json"


def parse_fractions(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.6,0.2,0.2"`` (or three numbers) -> fractions summing to 1."""
    values = [float(x) for x in text.split(",")] if isinstance(text, str) else [float(x) for x in text]
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6 or values[0] == 0:
        raise ConfigError(f"split takes three fractions train,dev,test summing to 1 (train > 0), got {text!r}")
    return values[0], values[1], values[2]


def split_queries(query_ids: Sequence[str], fractions: Sequence[float], seed: int = 0) -> dict[str, list[str]]:
    """``{"train": [...], "dev": [...], "test": [...]}``, each in the given order."""
    train, dev, _ = parse_fractions(fractions)
    out: dict[str, list[str]] = {p: [] for p in PARTS}
    for qid in query_ids:
        u = unit_interval(f"{seed}:{qid}")
        out["train" if u < train else "dev" if u < train + dev else "test"].append(qid)
    return out


def save_split(folder: str | os.PathLike[str], split: dict[str, list[str]], **info: Any) -> Path:
    path = Path(folder) / SPLIT_FILE
    path.write_text(json.dumps({**info, **split}, indent=1))
    return path


@overload
def load_split(path: str | os.PathLike[str], part: None = None) -> dict[str, Any]: ...
@overload
def load_split(path: str | os.PathLike[str], part: str) -> list[str]: ...
def load_split(path: str | os.PathLike[str], part: str | None = None) -> dict[str, Any] | list[str]:
    """The whole split (a dict) or one part's query ids from ``split.json`` (or a folder holding it)."""
    file = Path(path)
    if file.is_dir():
        file = file / SPLIT_FILE
    if not file.is_file():
        raise InvalidInputError(f"no split file at {str(file)!r}")
    data: dict[str, Any] = json.loads(file.read_text())
    if part is None:
        return data
    if part not in PARTS:
        raise InvalidInputError(f"a split part is one of {', '.join(PARTS)}, got {part!r}")
    return list(data[part])
