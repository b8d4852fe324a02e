"""What binds a converted graph to the model it came from: ``agreement.json`` keeps the key the graph was made for
(the source model's file digest, runtime, versions, output, inputs) and a sha256 of each graph file. A folder whose
key is another's (a graph copied in from another model's folder), or whose files are missing, emptied, truncated or
replaced, is not loaded: it is converted again, with one warning.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "model.onnx").write_bytes(b"graph")
    >>> record = stored_record({"files": "abc"}, folder)
    >>> problem(folder, {"files": "abc"}, record) is None, problem(folder, {"files": "xyz"}, record)
    (True, 'made for another model or runtime (its key differs)')
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

GRAPH_FILES = ("model.onnx", "model.xml", "model.bin")
RECORD = "agreement.json"


def graph_digest(folder: Path) -> dict[str, str]:
    """The sha256 of each graph file in ``folder``."""
    out = {}
    for name in GRAPH_FILES:
        path = folder / name
        if path.is_file():
            with open(path, "rb") as f:
                out[name] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def stored_record(key_data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """What ``agreement.json`` keeps besides the agreement: the key and the graph's digest."""
    return {"key": key_data, "graph": graph_digest(folder)}


def read_record(folder: Path) -> dict[str, Any] | None:
    """``folder``'s ``agreement.json``, or None when it is missing or unreadable."""
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def problem(folder: Path, key_data: dict[str, Any], record: dict[str, Any] | None) -> str | None:
    """Why the graph in ``folder`` must not be loaded for ``key_data`` (None: it may)."""
    if record is None:
        return "without a readable agreement.json"
    if record.get("key") != json.loads(json.dumps(key_data)):
        return "made for another model or runtime (its key differs)"
    expected = record.get("graph")
    if not isinstance(expected, dict) or not expected:
        return "without a digest of its files (made by an older rankrelay)"
    found = graph_digest(folder)
    damaged = sorted(name for name, digest in expected.items() if found.get(name) != digest)
    if damaged:
        return f"damaged ({', '.join(damaged)} missing or changed since it was converted)"
    return None


def discard(folder: Path, label: str, runtime: str, why: str) -> None:
    """Remove a stored graph that must not be used, saying why once."""
    logger.warning("the converted %s graph of %s in %s is %s: converting it again", runtime, label, folder, why)
    shutil.rmtree(folder, ignore_errors=True)
