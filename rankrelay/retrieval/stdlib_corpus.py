"""A real corpus every machine has: the docstrings of the installed Python standard library.

Docstrings are read with :mod:`ast` (no module is imported, so nothing runs) and split into
passages of whole paragraphs of at most ``max_words`` words.

Example:
    >>> from rankrelay.retrieval.stdlib_corpus import stdlib_passages
    >>> docs = stdlib_passages(limit=50)
    >>> len(docs), docs[0].id.count(":") >= 1
    (50, True)
"""

from __future__ import annotations

import ast
import logging
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from rankrelay.results import Document

logger = logging.getLogger(__name__)

SKIP_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "site-packages",
             "dist-packages", "__pycache__", "encodings", "pydoc_data", "venv", "__phello__"}


def _docstrings(path: Path, module: str) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of the module and its public classes and functions, nested ones named
    through their parents (``mod.Class.method``); a name defined twice (``if``/``else``) gets ``~2``, ``~3``."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return
    seen: dict[str, int] = {}

    def visit(node: ast.AST, name: str) -> Iterator[tuple[str, str]]:
        doc = ast.get_docstring(node) if isinstance(node, (ast.Module, *_DEFS)) else None
        if doc:
            seen[name] = seen.get(name, 0) + 1
            yield (name if seen[name] == 1 else f"{name}~{seen[name]}"), doc
        for child in _children(node):
            if not child.name.startswith("_"):
                yield from visit(child, f"{name}.{child.name}")

    yield from visit(tree, module)


_DEFS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _children(node: ast.AST) -> Iterator[ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef]:
    """The classes and functions defined directly in ``node``'s body (also inside its if/try/with blocks)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _DEFS):
            yield child
        elif not isinstance(child, (ast.Lambda, ast.expr)):
            yield from _children(child)


def _passages(text: str, max_words: int, min_words: int) -> Iterator[str]:
    """Whole paragraphs packed up to ``max_words``; a longer paragraph is cut into ``max_words`` pieces."""
    current: list[str] = []
    for paragraph in text.split("\n\n"):
        words = paragraph.split()
        pieces = [words[i : i + max_words] for i in range(0, len(words), max_words)] or [[]]
        for piece in pieces:
            if current and len(current) + len(piece) > max_words:
                if len(current) >= min_words:
                    yield " ".join(current)
                current = []
            current.extend(piece)
    if len(current) >= min_words:
        yield " ".join(current)


def stdlib_passages(limit: int | None = 5000, max_words: int = 100, min_words: int = 12) -> list[Document]:
    """Passages of standard-library docstrings, in a stable order; ids are ``module.name:part``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[Document] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP_DIRS & set(rel.parts[:-1]) or rel.name.startswith("_") and rel.name != "__init__.py":
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        for name, doc in _docstrings(path, module):
            for part, passage in enumerate(_passages(doc, max_words, min_words)):
                docs.append(Document(passage, f"{name}:{part}", {"module": module, "object": name}))
                if limit is not None and len(docs) >= limit:
                    return docs
    logger.info("%d passages from %s", len(docs), root)
    return docs
