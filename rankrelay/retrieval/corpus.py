"""BEIR datasets for retrieval: the corpus (read by :func:`rankrelay.io.load_corpus`, the one document
reader), ``queries.jsonl`` and ``qrels/<split>.tsv``.

A BEIR document with a title is embedded and reranked as ``title + " " + text`` (BEIR's
convention); the title is also kept in ``metadata["title"]``.

Example:
    >>> import json, pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "corpus.jsonl").write_text(json.dumps({"_id": "1", "title": "Wings", "text": "Lift."}) + "\\n")
    >>> load_corpus(d)[0]
    Document(text='Wings Lift.', id='1', metadata={'title': 'Wings'})
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rankrelay.io import beir_document, load_corpus

__all__ = ["beir_document", "load_corpus", "load_qrels", "load_queries"]


def load_queries(path: str | os.PathLike[str]) -> dict[str, str]:
    """BEIR ``queries.jsonl`` (or its folder) as ``{query_id: text}``."""
    p = Path(path)
    if p.is_dir():
        p = p / "queries.jsonl"
    with p.open(encoding="utf-8") as fh:
        return {str(row["_id"]): row["text"] for row in map(json.loads, filter(str.strip, fh))}


def load_qrels(path: str | os.PathLike[str], split: str = "test") -> dict[str, dict[str, int]]:
    """BEIR ``qrels/<split>.tsv`` (or its folder) as ``{query_id: {doc_id: grade}}``."""
    p = Path(path)
    if p.is_dir():
        p = p / "qrels" / f"{split}.tsv"
    qrels: dict[str, dict[str, int]] = {}
    with p.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            parts = line.rstrip("\n").split("\t")
            if i == 0 and not parts[-1].lstrip("-").isdigit():
                continue  # header
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels
