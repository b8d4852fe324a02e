"""Corpora for retrieval: BEIR ``corpus.jsonl`` (or its folder), plain JSON lines, or text lines.

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

from rankrelay.errors import InvalidDocumentError, InvalidInputError
from rankrelay.results import Document, to_document


def beir_document(row: dict, where: str = "") -> Document:
    """A BEIR corpus row as a Document: ``title + " " + text``, id from ``_id``, title in metadata."""
    text = row.get("text")
    if not isinstance(text, str):
        raise InvalidDocumentError(f"{where}: a corpus row needs a str 'text'")
    title = row.get("title") or ""
    metadata = dict(row.get("metadata") or {})
    if title:
        metadata["title"] = title
    doc_id = row.get("_id", row.get("id"))
    return Document(f"{title} {text}".strip() if title else text, None if doc_id is None else str(doc_id), metadata)


def load_corpus(path: str | os.PathLike[str]) -> list[Document]:
    """Documents from a BEIR folder or ``corpus.jsonl``, a JSON-lines file, or a text file (one a line).

    Raises:
        InvalidInputError: the path does not exist.
        InvalidDocumentError: a line is not a document (names the file and line).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "corpus.jsonl"
    if not p.is_file():
        raise InvalidInputError(f"corpus {str(path)!r} does not exist (a BEIR folder, .jsonl or .txt file)")
    docs: list[Document] = []
    with p.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            where = f"{p}:{number}"
            if p.suffix.lower() not in {".jsonl", ".json", ".ndjson"}:
                docs.append(Document(line, str(len(docs))))
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidDocumentError(f"{where}: not valid JSON ({exc.msg})") from None
            if isinstance(row, dict) and ("_id" in row or "title" in row):
                docs.append(beir_document(row, where))
            else:
                try:
                    doc = to_document(row, number)
                except InvalidDocumentError as exc:
                    raise InvalidDocumentError(f"{where}: {exc}") from None
                docs.append(doc if doc.id is not None else Document(doc.text, str(len(docs)), doc.metadata))
    return docs


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
