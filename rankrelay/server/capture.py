"""Capture of served requests, the input of ``rankrelay distill --queries capture.jsonl``.

A served model given as a table may say ``capture = "capture.jsonl"`` (off by default), ``sample`` (the share
of distinct queries kept, chosen by a hash of the query, so a query is always or never kept) and ``store_text``
(keep the query's and candidates' text; without it a line holds a hash of the query, the documents' ids and
the scores only). Each kept answer is one JSON line: the model, who served it, the query, the candidates and
the serving backend's raw score of each, in the order they were sent. The request only hands the line to a
queue; a thread writes it (a full queue drops it and counts it).

Example:
    >>> import json, pathlib, tempfile
    >>> from rankrelay import load_reranker
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "capture.jsonl"
    >>> capture = Capture("cohere", path, sample=1.0, store_text=True)
    >>> capture.offer("wings", load_reranker("identity").rerank("wings", ["lift", "drag"]))
    True
    >>> capture.close()
    >>> row = json.loads(path.read_text()); row["query"], row["documents"], row["scores"]
    ('wings', ['lift', 'drag'], [-0.0, -1.0])
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rankrelay.errors import ConfigError
from rankrelay.hashing import unit_interval
from rankrelay.results import RerankResult

logger = logging.getLogger(__name__)
#: the served model's keys that configure its capture (the rest are the reranker's)
CAPTURE_KEYS = ("capture", "sample", "store_text")
QUEUE = 10_000
_STOP = object()


class Capture:
    """Sampled answers of one served model, appended to ``path`` by a thread of its own."""

    def __init__(self, model: str, path: str | Path, *, sample: float = 1.0, store_text: bool = False,
                 max_queue: int = QUEUE, clock: Any = time.time) -> None:
        if not 0.0 < sample <= 1.0:
            raise ConfigError(f"service.models.{model}.sample must be in (0, 1], got {sample!r}")
        self.model, self.path, self.sample, self.store_text, self.clock = model, Path(path), sample, store_text, clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.kept = self.dropped = self.written = 0
        self._queue: queue.Queue[Any] = queue.Queue(max_queue)
        self._thread = threading.Thread(target=self._write, name=f"rankrelay-capture-{model}", daemon=True)
        self._thread.start()

    def sampled(self, query: str) -> bool:
        """Is ``query`` among the kept share (the same answer every time it is asked)?"""
        return self.sample >= 1.0 or unit_interval(f"capture:{query}") < self.sample

    def offer(self, query: str, res: RerankResult) -> bool:
        """Hand a served answer to the writer when its query is sampled; False when it is not kept."""
        if not self.sampled(query):
            return False
        by_index = sorted(res.results, key=lambda r: r.index)
        row: dict[str, Any] = {"time": self.clock(), "model": self.model,
                               "backend": res.backend_label,
                               "ids": [r.id for r in by_index], "scores": [r.score for r in by_index]}
        if self.store_text:
            row |= {"query": query, "documents": [r.text for r in by_index]}
        else:
            row["query_sha256"] = hashlib.sha256(query.encode()).hexdigest()
        if len(by_index) < res.num_candidates:
            row["top_n"] = len(by_index)  # the answer was cut: the rest were not scored back to us
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                logger.warning("capture of %s is behind: %d answers dropped so far", self.model, self.dropped)
            return False
        self.kept += 1
        return True

    def _write(self) -> None:
        with self.path.open("ab", buffering=0) as fh:  # unbuffered: a line that cannot be written is not kept
            while True:
                row = self._queue.get()
                if row is _STOP:
                    return
                try:
                    fh.write((json.dumps(row) + "\n").encode("utf-8"))
                    self.written += 1
                except OSError as exc:
                    self.dropped += 1
                    logger.warning("capture of %s could not write %s: %s", self.model, self.path, exc)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued and stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def stats(self) -> dict[str, int]:
        return {"kept": self.kept, "written": self.written, "dropped": self.dropped}


def split_captures(models: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The served models without their capture keys, and the capture options of each that asks for one (checked
    here; :func:`open_captures` starts them once the models have loaded)."""
    plain: dict[str, Any] = {}
    captures: dict[str, dict[str, Any]] = {}
    for name, spec in models.items():
        if not isinstance(spec, Mapping) or not any(k in spec for k in CAPTURE_KEYS):
            plain[name] = spec
            continue
        plain[name] = {k: v for k, v in spec.items() if k not in CAPTURE_KEYS}
        if not spec.get("capture"):
            raise ConfigError(f"service.models.{name}: sample and store_text need capture = \"FILE.jsonl\"")
        sample = spec.get("sample", 1.0)
        if isinstance(sample, bool) or not isinstance(sample, (int, float)) or not 0.0 < sample <= 1.0:
            raise ConfigError(f"service.models.{name}.sample must be in (0, 1], got {sample!r}")
        captures[name] = {"path": str(spec["capture"]), "sample": float(sample),
                          "store_text": bool(spec.get("store_text", False))}
    return plain, captures


def open_captures(options: Mapping[str, Mapping[str, Any]]) -> dict[str, Capture]:
    """A running :class:`Capture` per served model in ``options`` (from :func:`split_captures`)."""
    return {name: Capture(name, o["path"], sample=o["sample"], store_text=o["store_text"])
            for name, o in options.items()}
