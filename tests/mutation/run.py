"""Mutation testing of every module of the package with mutmut, each judged by the tests that run its lines.

Every module of ``rankrelay/`` is in the mutation set unless :data:`EXCUSED` names it with a reason (re-exports,
entry points, the test doubles of ``rankrelay.testing``). Which tests judge a module comes from coverage, not
from file names: ``make mutation-map`` runs the suite once with a coverage context per test and writes
``tests_by_module.json`` (each module: the test files whose tests run its lines, the fewest that run every
line any test runs, after the three that run most of them). mutmut then runs, for each mutant, only the tests
that called the mutated function.

Modules are mutated a package at a time (one work folder under ``.mutation/<package>/`` with the package linked,
so a package's tests are collected once for all of its modules). ``make mutation`` runs every mutant;
``make mutation-sample`` (CI) a fixed, bounded sample of every module in the set.

A mutant that survives is either killed by a new test or listed: in ``survivors.toml`` as ``equivalent`` (no
input can tell it apart; the entry says why) or ``open`` (a known gap, with what it would take), or in
``untriaged.toml`` (found, counted against the score, not yet looked at: ``--record-untriaged`` writes it).
Entries are keyed by the module, the function and the changed source lines, so they survive renumbering. The
run fails when a mutant survives that is not listed, or (full run) when a module that has reached its target
(:data:`AT_TARGET`) falls under it: killed / (all - equivalent).

    python tests/mutation/run.py                       # everything (hours on 2 cores)
    python tests/mutation/run.py --only scoring experiments.store
    python tests/mutation/run.py --sample 2            # CI: 2 mutants per module (6 at target), a fixed seed
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import time
import tomllib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "rankrelay"
WORK = ROOT / ".mutation"
HERE = Path(__file__).parent
SURVIVORS = HERE / "survivors.toml"
UNTRIAGED = HERE / "untriaged.toml"
TESTS_BY_MODULE = HERE / "tests_by_module.json"

RE_EXPORTS = "re-exports: imports and names only, nothing to mutate (tests/test_structure.py checks it stays so)"
TEST_DOUBLES = ("a test double (the fake provider servers and clock the tests drive): its behaviour is the wire "
                "format, which the official SDKs check in every test that uses it; mutating it tests the fakes")
# Modules left out of the set, each with the reason a reader can check.
EXCUSED: dict[str, str] = {
    **{f"rankrelay/{p}/__init__.py": RE_EXPORTS for p in (
        "batch", "cli", "evaluation", "experiments", "integrations", "rerankers", "rerankers/compose",
        "rerankers/hosted", "rerankers/llm", "rerankers/local", "retrieval", "server", "training")},
    "rankrelay/cli/__main__.py": "the `python -m rankrelay.cli` entry point: one call of main()",
    **{f"rankrelay/distributed/{p}": "runs only on a Ray cluster: its tests (`make test-ray`) start a local cluster, "
       "minutes per run, too slow to run once per mutant" for p in ("__init__.py", "data.py", "serve.py")},
    **{f"rankrelay/testing/{p}": TEST_DOUBLES for p in (
        "__init__.py", "__main__.py", "bedrock_api.py", "chat_api.py", "clock.py", "qdrant_api.py", "rerank_api.py",
        "server.py", "vertex_api.py")},
}

# Test files that judge no module: they need the repository around them (a mutation folder has the package and
# the tests only), with why.
NOT_JUDGES: dict[str, str] = {
    "tests/test_docs.py": "builds the docs site with mkdocs from docs/ and mkdocs.yml (20 s a build, per mutant)",
}

TARGET = 0.85
SAMPLE_AT_TARGET = 6
# The modules whose output users act on (A/B verdicts, runtime choices, tune's advice): a higher target.
STRICT_TARGET = 0.90
STRICT = ("experiments.analysis", "experiments.store", "experiments.online", "experiments.clicks",
          "experiments.interleaving", "experiments.simulate", "experiments.report", "experiments.totals",
          "rerankers.local.auto_runtime", "rerankers.compose.keep_store", "rerankers.local.prompted",
          "rerankers.local.prompt_families", "rerankers.local.pairs", "evaluation.tune", "hub", "tracing",
          "rerankers.local.runtimes", "server.routes")
# Modules whose full run has reached their target (each survivor killed or listed with a reason): a full run
# fails when one falls under it. A module joins when `make mutation ONLY=<it>` passes with no untriaged entry.
AT_TARGET = ("scoring", "rerankers.base", "results", "rerankers.compose.fallback", "rerankers.compose.cascade",
             "rerankers.compose.ab_split", "rerankers.local.budget", "rerankers.hosted.retry",
             "rerankers.local.passages", "rerankers.local.score_cache", "rerankers.registry", "server.guards",
             "server.batching", "server.routes", "batch.job", "rerankers.compose.keep_plan", "experiments.totals",
             "rerankers.local.graph_store", "server.protocol")


def module_name(path: str) -> str:
    """``rankrelay/rerankers/local/model.py`` -> ``rerankers.local.model``."""
    return path.removeprefix("rankrelay/").removesuffix(".py").replace("/", ".")


def package_of(path: str) -> str:
    """The work folder a module is mutated in: its package (``rankrelay`` for the top-level modules)."""
    return module_name(path).rpartition(".")[0] or "rankrelay"


def every_module() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py"))


def mutation_set() -> dict[str, str]:
    """name -> path of every module that is mutated: all of the package but the excused."""
    return {module_name(p): p for p in every_module() if p not in EXCUSED}


def is_thin(path: Path) -> bool:
    """Only a docstring, imports and plain assignments (``__all__``): nothing a mutant could change."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant | ast.List | ast.Tuple):
            continue
        return False
    return True


def target_of(name: str) -> float:
    return STRICT_TARGET if name in STRICT else TARGET


def tests_by_module() -> dict[str, list[str]]:
    return json.loads(TESTS_BY_MODULE.read_text())["modules"] if TESTS_BY_MODULE.exists() else {}


def test_files() -> list[str]:
    """Every test file of the suite (what a map is made from: a new one means the map is old)."""
    return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py"))


def mapped_test_files() -> list[str]:
    """The test files there were when ``tests_by_module.json`` was written."""
    return json.loads(TESTS_BY_MODULE.read_text())["test_files"] if TESTS_BY_MODULE.exists() else []


def body_lines(path: Path) -> set[int]:
    """The lines inside function bodies: what a test runs by calling the module, not by importing it (a module's
    top level runs once per process, in whichever test imported it first)."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for statement in node.body:
                lines.update(range(statement.lineno, (statement.end_lineno or statement.lineno) + 1))
    return lines


def coverage_map(data_file: Path, share: float = 0.5, extra: int = 3) -> dict[str, list[str]]:
    """Each module's judging test files, from a coverage file with one context per test (``--cov-context=test``).

    Only function-body lines count (:func:`body_lines`). A test file's weight for a module is the lines it runs
    there over the square root of all the lines it runs in the package: a focused test outranks one that runs
    everything. Chosen: the ``extra`` heaviest files that run at least ``share`` of the module's reached lines,
    then, greedily by weight, files until every line any test runs is run by a chosen one.
    """
    from coverage import CoverageData

    data = CoverageData(basename=str(data_file))
    data.read()
    by_module: dict[str, dict[str, set[int]]] = {}
    for measured in data.measured_files():
        path = Path(measured).resolve()
        if not path.is_relative_to(PACKAGE) or path.suffix != ".py":  # (a template coverage saw rendered)
            continue
        lines_by_test: dict[str, set[int]] = defaultdict(set)
        body = body_lines(path)
        for line, contexts in data.contexts_by_lineno(measured).items():
            if line not in body:
                continue
            for context in contexts:
                test = context.split("::")[0]
                if test.startswith("tests/") and test not in NOT_JUDGES:  # (not a doctest, not the empty context)
                    lines_by_test[test].add(line)
        by_module[path.relative_to(ROOT).as_posix()] = lines_by_test
    reach: dict[str, int] = defaultdict(int)
    for lines_by_test in by_module.values():
        for test, lines in lines_by_test.items():
            reach[test] += len(lines)
    out: dict[str, list[str]] = {}
    for module, lines_by_test in sorted(by_module.items()):
        def weight(test: str, lines: set[int]) -> tuple[float, str]:
            return (-len(lines) / reach[test] ** 0.5, test)

        reached = set().union(*lines_by_test.values()) if lines_by_test else set()
        ranked = sorted((t for t, lines in lines_by_test.items() if len(lines) >= share * len(reached)),
                        key=lambda t: weight(t, lines_by_test[t]))
        chosen = set(ranked[:extra])
        left = reached - set().union(set(), *(lines_by_test[t] for t in chosen))
        while left:
            best = min(lines_by_test, key=lambda t: weight(t, lines_by_test[t] & left))
            chosen.add(best)
            left -= lines_by_test[best]
        out[module] = sorted(chosen)
    return out


def resolve(names: list[str]) -> list[str]:
    """Module names as given (``experiments.store``, or a unique tail: ``store``; an ambiguous tail: each)."""
    known = mutation_set()
    out: list[str] = []
    for name in names:
        found = [n for n in known if n == name] or [n for n in known if n.split(".")[-1] == name or
                                                    n.endswith("." + name)]
        if not found:
            raise SystemExit(f"no module {name!r} in the mutation set (excused or unknown); known: {sorted(known)}")
        out += [n for n in found if n not in out]
    return out


# Lines mutmut leaves alone: log calls (what a log line says is not behaviour a caller sees).
DO_NOT_MUTATE = [r"\blog(ger)?\.(debug|info|warning|error|exception)\("]

# (-9: mutmut's SIGKILL a second after the CPU limit's SIGXCPU went unheeded; -11: the tests crashed the process)
STATUS = {1: "killed", 3: "killed", -11: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", -9: "timeout",
          37: "type check"}


def _status(code: int | None) -> str:
    """mutmut's verdict for a mutant's exit code."""
    return "not checked" if code is None else STATUS.get(code, "suspicious")


@dataclass
class Outcome:
    name: str
    module: str
    work: Path
    untriaged: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    equivalent: int = 0
    open: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    changes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def killed(self) -> int:
        return self.counts.get("killed", 0) + self.counts.get("timeout", 0)

    @property
    def score(self) -> float:
        total = sum(self.counts.values()) - self.equivalent
        return self.killed / total if total else 1.0


def _pyproject(modules: list[str], tests: list[str]) -> str:
    text = (ROOT / "pyproject.toml").read_text()
    start = text.index("[tool.pytest.ini_options]")
    pytest_ini = text[start : text.index("\n[", start + 1)]
    return pytest_ini + "\n" + "\n".join([
        "[tool.mutmut]",
        'source_paths = ["rankrelay"]',
        f"only_mutate = {json.dumps(modules)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        "pytest_add_cli_args = " + json.dumps(["-p", "no:randomly", "-p", "no:cacheprovider", "-q", "-x",
                                                "-m", "not slow and not ray and not measures"]),
        f"do_not_mutate_patterns = {json.dumps(DO_NOT_MUTATE)}",
        # mutmut stops a mutant after (usual time of its tests + constant) x multiplier of wall time: here 2x plus
        # 20 s (a deadlock is a kill, found in minutes; mutmut's defaults, 15x plus 15 s, let a mutant that hangs
        # the service's batcher hold a CI run for a quarter hour)
        "timeout_multiplier = 2.0",
        "timeout_constant = 10.0",
        "",
    ])


def tests_of(package: str) -> list[str]:
    """The tests that judge a package's modules: the union of each module's (a mutant runs those that call it)."""
    selection = tests_by_module()
    modules = [p for p in mutation_set().values() if package_of(p) == package]
    return sorted({t for m in modules for t in selection.get(m, []) if (ROOT / t).exists()})


def _prepare(package: str, fresh: bool, root: Path = WORK) -> Path:
    """The package's work folder: every module of it in the set mutated, judged by the union of their tests."""
    modules = sorted(p for p in mutation_set().values() if package_of(p) == package)
    tests = tests_of(package)
    if not tests:
        raise SystemExit(f"no tests for {package} in {TESTS_BY_MODULE.name}: run `make mutation-map`")
    work = root / package
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for link in ("rankrelay", "tests"):
        if not (work / link).exists():
            (work / link).symlink_to(ROOT / link)
    _sync_data_files(work)
    config = _pyproject(modules, tests)
    pyproject = work / "pyproject.toml"
    if not pyproject.exists() or pyproject.read_text() != config:
        # the verdicts are kept: mutmut itself discards them all when the test selection or the way tests run
        # changed, collects the stats of tests added to the same files, and the survivors run again (run_package)
        pyproject.write_text(config)
    return work


def _sync_data_files(work: Path) -> None:
    """mutmut copies the package's other files (templates, data) into its folder once and regenerates only the
    Python ones: keep the others current, so a kept folder tests today's templates."""
    mutants = work / "mutants"
    if not mutants.exists():
        return
    for source in PACKAGE.rglob("*"):
        if source.is_file() and source.suffix not in (".py", ".pyc") and "__pycache__" not in source.parts:
            target = mutants / source.relative_to(ROOT)
            if not target.exists() or target.read_bytes() != source.read_bytes():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


def _mutmut(work: Path, *args: str, check: bool = True) -> None:
    log = work / "mutmut.log"
    with log.open("w") as out:
        # Each mutant runs in a fork of mutmut's process, which has run the tests (models loaded, warm): a fork
        # is safe only while torch has no thread pool (a fork of one hangs in the child: a false 'timeout').
        env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, stdout=out, stderr=subprocess.STDOUT,
                              env=env)
    if check and proc.returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"mutmut {args[0]} failed in {work} (exit {proc.returncode}); see {log}")


def _exit_codes(work: Path, module: str) -> dict[str, int | None]:
    meta = work / "mutants" / f"{module}.meta"
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}


def _all_mutants(work: Path, module: str) -> list[str]:
    """Generate the mutants (mutmut's own listing) without running any."""
    if not (work / "mutants").exists():
        _mutmut(work, "run", "--max-children", "1", "generate.only", check=False)  # generates, runs nothing
    return sorted(_exit_codes(work, module))


def _key(work: Path, module: str, mutant: str) -> tuple[str, str, str]:
    """Module, function and changed lines: a mutant's identity that outlives renumbering."""
    here = os.getcwd()
    os.chdir(work)
    try:
        import mutmut.configuration
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        mutmut.configuration.reset_config()  # it is read from the working folder's pyproject
        diff = get_diff_for_mutant(mutant, path=Path(module))
    finally:
        os.chdir(here)
    lines = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    changed = [line[0] + line[1:].strip() for line in lines]
    function = mutant.split(".")[-1].split("__mutmut_")[0].removeprefix("x_")
    return module, function, "\n".join(changed)


def _listed() -> dict[tuple[str, str, str], str]:
    out = {}
    for source, kinds in ((SURVIVORS, ("equivalent", "open")), (UNTRIAGED, ("untriaged",))):
        data = tomllib.loads(source.read_text()) if source.exists() else {}
        for kind in kinds:
            for entry in data.get(kind, []):
                out[(entry["module"], entry["function"], entry["change"].strip())] = kind
    return out


@dataclass
class Run:
    """One package's mutmut run: the exit code of each mutant run, by module."""

    package: str
    work: Path
    modules: dict[str, str]
    codes: dict[str, dict[str, int | None]]
    seconds: float


def run_package(package: str, names: list[str], sample: int | None, fresh: bool, seed: int, children: int) -> Run:
    """Run the mutants of ``names`` (modules of ``package``): all of them, or a sample of each (:func:`sample_size`
    of ``sample``)."""
    start = time.monotonic()
    work = _prepare(package, fresh, WORK / "sample" if sample else WORK)  # a sample leaves full results alone
    new = fresh or not (work / "mutants").exists()  # every verdict of this run is its first
    modules = {name: mutation_set()[name] for name in names}
    mutants = {name: _all_mutants(work, path) for name, path in modules.items()}
    if sample:
        mutants = {name: sorted(random.Random(f"{seed}:{name}").sample(found, min(sample_size(name, sample),
                                                                                   len(found))))
                   for name, found in mutants.items()}
    chosen = [m for found in mutants.values() for m in found]
    if chosen:
        _mutmut(work, "run", "--max-children", str(children), *chosen)
    codes = {name: {k: _exit_codes(work, path).get(k) for k in mutants[name]} for name, path in modules.items()}
    # mutmut keeps a verdict while the source is unchanged, even when a test was added since: try the
    # mutants that were not killed again (in a new folder every verdict is new: nothing to try again)
    again = [k for found in codes.values() for k, code in found.items() if _status(code) not in ("killed", "timeout")]
    if again and not new:
        _mutmut(work, "run", "--max-children", str(children), *again)
        for name, path in modules.items():
            fresh_codes = _exit_codes(work, path)
            codes[name] |= {k: fresh_codes.get(k) for k in codes[name] if k in again}
    return Run(package, work, modules, codes, time.monotonic() - start)


def sample_size(name: str, sample: int) -> int:
    """A module at target is sampled more (:data:`SAMPLE_AT_TARGET` at least): its sample is what keeps it there."""
    return max(sample, SAMPLE_AT_TARGET) if name in AT_TARGET else sample


def verdicts(run: Run) -> list[Outcome]:
    """Each module's outcome: its mutants' verdicts, each survivor looked up in the lists."""
    listed = _listed()
    outcomes = []
    for name, path in run.modules.items():
        outcome = Outcome(name, path, run.work)
        for mutant, code in run.codes[name].items():
            status = _status(code)
            outcome.counts[status] = outcome.counts.get(status, 0) + 1
            if status in ("survived", "no tests", "suspicious", "not checked"):
                key = _key(run.work, path, mutant)
                outcome.changes[mutant] = f"{key[1]}: {key[2]}"
                kind = listed.get(key)
                if kind == "equivalent":
                    outcome.equivalent += 1
                elif kind == "open":
                    outcome.open.append(mutant)
                elif kind == "untriaged":
                    outcome.untriaged.append(mutant)
                else:
                    outcome.unlisted.append(mutant)
        outcomes.append(outcome)
    for outcome in outcomes:  # the package's time, shared by its modules by their number of mutants
        outcome.seconds = run.seconds * len(run.codes[outcome.name]) / max(1, sum(map(len, run.codes.values())))
    return outcomes


def record_untriaged(outcomes: list[Outcome]) -> int:
    """Append each unlisted survivor to ``untriaged.toml`` (counted against the score until it is triaged)."""
    lines = []
    for o in outcomes:
        for mutant in o.unlisted:
            function, _, change = o.changes[mutant].partition(": ")
            lines += ["[[untriaged]]", f"module = {json.dumps(o.module)}", f"function = {json.dumps(function)}",
                      f"change = '''\n{change}\n'''", ""]
    if lines:
        head = "" if UNTRIAGED.exists() else (
            "# Survivors found and not yet looked at (tests/mutation/run.py --record-untriaged): each is counted\n"
            "# against its module's score until a test kills it or survivors.toml says why it is equivalent.\n")
        with UNTRIAGED.open("a") as out:
            out.write(head + "\n".join(lines) + "\n")
    return len(lines) // 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="modules to test (default: the whole set)")
    parser.add_argument("--sample", type=int, help="mutants per module (a fixed sample); default: every mutant")
    parser.add_argument("--seed", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="packages run at once")
    parser.add_argument("--fresh", action="store_true", help="discard earlier results")
    parser.add_argument("--diffs", action="store_true", help="print each unlisted mutant's change")
    parser.add_argument("--json", type=Path, help="also write the outcome table here")
    parser.add_argument("--map", type=Path, metavar="COVERAGE_FILE",
                        help="write tests_by_module.json from a coverage file with test contexts, and stop")
    parser.add_argument("--record-untriaged", action="store_true", help="list unlisted survivors in untriaged.toml")
    args = parser.parse_args(argv)
    if args.map:
        data = {"test_files": test_files(), "modules": coverage_map(args.map)}
        TESTS_BY_MODULE.write_text(json.dumps(data, indent=1) + "\n")
        return 0
    names = resolve(args.only) if args.only else sorted(mutation_set())
    by_package: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_package[package_of(mutation_set()[name])].append(name)
    jobs = max(1, min(args.jobs, len(by_package)))
    children = max(1, (os.cpu_count() or 1) // jobs)
    def run(item: tuple[str, list[str]]) -> Run | str:
        try:
            return run_package(item[0], item[1], args.sample, args.fresh, args.seed, children)
        except SystemExit as exc:  # one package's failure (its tests fail unmutated) does not stop the others
            return f"{item[0]}: {exc}"

    with ThreadPoolExecutor(jobs) as pool:  # packages side by side: mutmut's test runs use one core each
        runs = list(pool.map(run, sorted(by_package.items(), key=lambda item: -len(tests_of(item[0])))))
    errors = [r for r in runs if isinstance(r, str)]
    outcomes = sorted((o for r in runs if not isinstance(r, str) for o in verdicts(r)), key=lambda o: o.name)
    print(f"{'module':<30} {'mutants':>7} {'killed':>6} {'survived':>8} {'no tests':>8} {'equiv':>5} {'open':>4} "
          f"{'untriaged':>9} {'unlisted':>8} {'score':>6} {'time':>6}")
    failed = False
    for o in outcomes:
        total = sum(o.counts.values())
        print(f"{o.name:<30} {total:>7} {o.killed:>6} "
              f"{o.counts.get('survived', 0):>8} {o.counts.get('no tests', 0):>8} {o.equivalent:>5} {len(o.open):>4} "
              f"{len(o.untriaged):>9} {len(o.unlisted):>8} {o.score:>6.1%} {o.seconds:>5.0f}s")
        if o.unlisted and not args.record_untriaged:
            failed = True
            for mutant in o.unlisted:
                print(f"  not killed, not listed: {mutant}  (cd {o.work.relative_to(ROOT)} && mutmut show {mutant})")
                if args.diffs:
                    print("    " + o.changes[mutant].replace("\n", "\n    "))
        if not args.sample and o.name in AT_TARGET and o.score < target_of(o.name):
            print(f"  {o.name} is at target, but its score fell under {target_of(o.name):.0%}")
            failed = True
    for error in errors:
        print(f"failed: {error}")
        failed = True
    if args.record_untriaged:
        print(f"{record_untriaged(outcomes)} survivors listed in {UNTRIAGED.relative_to(ROOT)}")
    if args.json:
        rows = [o.__dict__ | {"work": str(o.work), "killed": o.killed, "score": o.score} for o in outcomes]
        args.json.write_text(json.dumps(rows, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
