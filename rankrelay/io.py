"""Reading documents from files, with one rule for every command: JSON lines or plain text, BEIR rows included.

A BEIR corpus row (``_id``, ``title``, ``text``) becomes ``title + " " + text`` (BEIR's convention), with
the title also kept in ``metadata["title"]``, wherever it is read: ``rankrelay rerank``, ``index``,
``bench``, ``train`` and :func:`load_corpus` score and embed the same text.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "docs.txt"
    >>> _ = p.write_text("first document\\n\\nsecond document\\n")
    >>> [d.text for d in read_documents(p)]
    ['first document', 'second document']
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rankrelay.errors import InvalidDocumentError, InvalidInputError
from rankrelay.results import Document, to_document

JSON_SUFFIXES = frozenset({".jsonl", ".json", ".ndjson"})


def beir_document(row: dict[str, Any], where: str = "") -> Document:
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


def parse_documents(lines: Iterable[str], *, jsonl: bool, source: str = "<input>",
                    number_ids: bool = False) -> list[Document]:
    """Documents from lines: one JSON object (with ``text``; a BEIR row; or a JSON string) or one plain-text
    document a line. Blank lines are skipped; a bad line raises naming ``source`` and the line number.
    ``number_ids``: a document without an id gets its position (as a string), as a corpus needs."""
    docs: list[Document] = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        where = f"{source}:{number}"
        if not jsonl:
            doc = Document(line)
        else:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidDocumentError(f"{where}: not valid JSON ({exc.msg})") from None
            if isinstance(row, dict) and ("_id" in row or "title" in row):
                doc = beir_document(row, where)
            else:
                try:
                    doc = to_document({"text": row} if isinstance(row, str) else row, number)
                except InvalidDocumentError as exc:
                    raise InvalidDocumentError(f"{where}: {exc}") from None
        if number_ids and doc.id is None:
            doc = Document(doc.text, str(len(docs)), doc.metadata)
        docs.append(doc)
    return docs


def read_documents(path: str | os.PathLike[str]) -> list[Document]:
    """Read ``.jsonl``/``.json`` lines or plain text (one document a line); ``-`` reads stdin as text
    or, when the first character is ``{``, as JSON lines."""
    if os.fspath(path) == "-":
        data = sys.stdin.read()
        return parse_documents(data.splitlines(), jsonl=data.lstrip().startswith("{"), source="<stdin>")
    p = Path(path)
    if not p.is_file():
        raise InvalidDocumentError(f"document file {str(p)!r} does not exist")
    with p.open(encoding="utf-8") as fh:
        return parse_documents(fh, jsonl=p.suffix.lower() in JSON_SUFFIXES, source=str(p))


def load_corpus(path: str | os.PathLike[str]) -> list[Document]:
    """Documents from a BEIR folder or ``corpus.jsonl``, a JSON-lines file, or a text file (one a line);
    a document without an id gets its position.

    Raises:
        InvalidInputError: the path does not exist.
        InvalidDocumentError: a line is not a document (names the file and line).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "corpus.jsonl"
    if not p.is_file():
        raise InvalidInputError(f"corpus {str(path)!r} does not exist (a BEIR folder, .jsonl or .txt file)")
    with p.open(encoding="utf-8") as fh:
        return parse_documents(fh, jsonl=p.suffix.lower() in JSON_SUFFIXES, source=str(p), number_ids=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file beside it, then a rename (a reader never
    sees half a file, and a crash leaves the old one)."""
    import tempfile

    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
