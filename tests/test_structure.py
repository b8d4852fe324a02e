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


# -- mutation testing: the default for every module ---------------------------------------------------------------

def _mutation_runner():
    import importlib.util
    import sys

    if "mutation_run" not in sys.modules:  # (registered first: its dataclasses look their module up)
        spec = importlib.util.spec_from_file_location("mutation_run", Path(__file__).parent / "mutation" / "run.py")
        sys.modules["mutation_run"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["mutation_run"]


def test_every_module_is_mutated_or_excused_with_a_reason():
    run = _mutation_runner()
    modules = run.every_module()
    assert len(modules) > 100 and "rankrelay/experiments/store.py" in run.mutation_set().values()
    assert [p for p in run.EXCUSED if p not in modules] == []  # no excuse outlives its module
    assert [p for p, why in run.EXCUSED.items() if len(why) < 20] == []
    # a module excused as re-exports stays one: logic added to it joins the set
    assert [p for p, why in run.EXCUSED.items() if why == run.RE_EXPORTS and not run.is_thin(run.ROOT / p)] == []


def test_every_module_in_the_set_has_the_tests_that_run_its_lines():
    """A new module is mutated from the day it is written: it needs tests and a fresh `make mutation-map`."""
    run = _mutation_runner()
    selection = run.tests_by_module()
    missing = [p for p in run.mutation_set().values() if not selection.get(p)]
    assert missing == [], f"no tests run these modules' lines (`make mutation-map` after adding tests): {missing}"
    gone = sorted({t for tests in selection.values() for t in tests if not (run.ROOT / t).exists()})
    assert gone == [], f"tests_by_module.json names test files that are gone (`make mutation-map`): {gone}"
    assert set(run.AT_TARGET) <= set(run.mutation_set()) and set(run.STRICT) <= set(run.mutation_set())
    new = sorted(set(run.test_files()) - set(run.mapped_test_files()))
    assert new == [], f"test files the map has not seen judge nothing yet (`make mutation-map`): {new}"


def test_the_test_selection_is_a_cover_of_the_lines_tests_run(tmp_path):
    """From a coverage file with test contexts: the files running most of a module's function bodies, then the
    fewest files running every body line any test runs; import-time lines and doctests choose nothing."""
    from coverage import CoverageData

    run = _mutation_runner()
    source = run.PACKAGE / "scoring.py"
    body = sorted(run.body_lines(source))
    top_level = sorted(set(range(1, body[-1])) - set(body))
    assert len(body) > 60 and top_level
    data = CoverageData(basename=str(tmp_path / ".coverage"))
    runs = {"tests/a.py::t|run": body[:40], "tests/b.py::t|run": body[35:45],  # b alone runs body[40:45]
            "tests/c.py::t|run": body[:4], "tests/d.py::t|setup": top_level,  # d imported the module first
            "rankrelay/scoring.py::rankrelay.scoring|run": body[50:]}
    for context, lines in runs.items():
        data.set_context(context)
        data.add_lines({str(source): lines})
    data.write()
    assert run.coverage_map(tmp_path / ".coverage") == {"rankrelay/scoring.py": ["tests/a.py", "tests/b.py"]}
    assert run.coverage_map(tmp_path / ".coverage", share=0.05)["rankrelay/scoring.py"] == \
        ["tests/a.py", "tests/b.py", "tests/c.py"]
    assert run.coverage_map(tmp_path / ".coverage", share=0.05, extra=1)["rankrelay/scoring.py"] == \
        ["tests/a.py", "tests/b.py"]
