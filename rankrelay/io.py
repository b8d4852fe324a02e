"""Read candidate documents from files: JSON lines or plain text.

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

from rankrelay.errors import InvalidDocumentError
from rankrelay.results import Document, to_document


def parse_documents(lines: Iterable[str], *, jsonl: bool, source: str = "<input>") -> list[Document]:
    """Documents from lines: one JSON object (with ``text``) or one plain-text document a line.

    Blank lines are skipped; a JSON line without text raises naming the line number.
    A BEIR corpus line (``_id``, ``title``, ``text``) keeps ``_id`` as id and ``title`` in metadata.
    """
    docs = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if not jsonl:
            docs.append(Document(line))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidDocumentError(f"{source}:{number}: not valid JSON ({exc.msg})") from None
        if isinstance(obj, str):
            obj = {"text": obj}
        try:
            docs.append(to_document(obj, number))
        except InvalidDocumentError as exc:
            raise InvalidDocumentError(f"{source}:{number}: {exc}") from None
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
        return parse_documents(fh, jsonl=p.suffix.lower() in {".jsonl", ".json", ".ndjson"}, source=str(p))
