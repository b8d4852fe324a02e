"""The package's shape: no import cycles between modules and no module importing another's private names.

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a lazy import
hides a cycle from Python, not from the design.
"""

import ast
from pathlib import Path

import rankrelay

ROOT = Path(rankrelay.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(name: str, path: Path) -> list[tuple[str, str | None]]:
    """``(module, imported name or None)`` for every rankrelay import in ``path``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.split(".")[0] == "rankrelay"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "rankrelay":
                out += [(module, a.name) for a in node.names]
    return out


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = set()
        for module, imported in imports(name, path):
            target = f"{module}.{imported}" if imported and f"{module}.{imported}" in MODULES else module
            if target in MODULES and target != name:
                deps.add(target)
        edges[name] = deps
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle_and_a_clean_graph():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    edges = graph()
    assert len(edges) > 40 and edges["rankrelay.cli"]  # the walk saw the package
    assert cycles(edges) == []


def test_no_module_imports_another_modules_private_names():
    offenders = [
        f"{name} imports {imported} from {module}"
        for name, path in MODULES.items()
        for module, imported in imports(name, path)
        if imported and imported.startswith("_") and not imported.startswith("__") and module != name
    ]
    assert offenders == []


def test_every_package_says_what_lives_there():
    packages = {name: path for name, path in MODULES.items() if path.name == "__init__.py"}
    assert [name for name, path in packages.items() if not ast.get_docstring(ast.parse(path.read_text()))] == []
    families = {f"rankrelay.rerankers.{f}" for f in ("local", "hosted", "llm", "compose")}
    assert families <= set(packages)
