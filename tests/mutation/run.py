"""Mutation testing of the core modules with mutmut, each module against its own tests.

``make mutation`` runs every mutant of every core module; ``make mutation-sample`` (CI) runs a fixed,
bounded sample of each module that has reached the target (``AT_TARGET``). Each module gets a work folder
under ``.mutation/<name>/`` (the package and the tests linked, a pyproject that tells mutmut which file to
mutate and which tests to run), so a module is judged only by the tests written for it.

A mutant that survives is either killed by a new test or listed in ``tests/mutation/survivors.toml``:
``equivalent`` (no input can tell it apart; the entry says why) or ``open`` (a known gap, counted against
the score). Entries are keyed by the module, the function and the changed source lines, so they survive
renumbering when the code around them changes. The run fails when a mutant survives that is not listed,
or (full run) when a module's score is under the target: killed / (all - equivalent).

    python tests/mutation/run.py                       # everything (tens of minutes on 2 cores)
    python tests/mutation/run.py --only scoring results
    python tests/mutation/run.py --at-target --sample 10   # CI: 10 mutants per module at target, a fixed seed
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".mutation"
SURVIVORS = Path(__file__).with_name("survivors.toml")
TARGET = 0.85
# Modules whose full run has reached the target (each survivor killed or listed): CI samples these, so a change
# that leaves a mutant alive there fails CI. A module joins when `make mutation ONLY=<it>` passes.
AT_TARGET = ("scoring", "base", "results", "fallback", "cascade", "ab_split", "budget", "retry", "passages",
             "score_cache", "registry", "guards", "batching", "routes", "job", "keep_plan", "totals", "graph_store",
             "protocol")

# module (what mutmut mutates) -> the tests written for it
MODULES: dict[str, tuple[str, list[str]]] = {
    "base": ("rankrelay/rerankers/base.py", ["tests/rerankers/test_base.py", "tests/rerankers/test_base_contract.py",
                                            "tests/rerankers/test_boundary.py"]),
    "registry": ("rankrelay/rerankers/registry.py", ["tests/rerankers/test_registry.py",
                                                    "tests/rerankers/test_registry_contract.py",
                                                    "tests/rerankers/compose/test_cascade.py"]),
    "fallback": ("rankrelay/rerankers/compose/fallback.py", ["tests/rerankers/compose/test_fallback_contract.py"]),
    "cascade": ("rankrelay/rerankers/compose/cascade.py", ["tests/rerankers/compose/test_cascade.py",
                                                          "tests/rerankers/compose/test_keep_plan.py"]),
    "keep_plan": ("rankrelay/rerankers/compose/keep_plan.py", ["tests/rerankers/compose/test_keep_plan.py"]),
    "ab_split": ("rankrelay/rerankers/compose/ab_split.py", ["tests/rerankers/compose/test_ab_split.py"]),
    "budget": ("rankrelay/rerankers/local/budget.py", ["tests/rerankers/local/test_budget_plan.py"]),
    "score_cache": ("rankrelay/rerankers/local/score_cache.py", ["tests/rerankers/local/test_score_cache.py"]),
    "retry": ("rankrelay/rerankers/hosted/retry.py", ["tests/rerankers/hosted/test_retry.py"]),
    "scoring": ("rankrelay/scoring.py", ["tests/test_scoring.py"]),
    "results": ("rankrelay/results.py", ["tests/test_results.py"]),
    "passages": ("rankrelay/rerankers/local/passages.py", ["tests/rerankers/local/test_passages_plan.py",
                                                    "tests/rerankers/local/test_passages.py"]),
    "routes": ("rankrelay/server/routes.py", ["tests/server/test_routes_contract.py",
                                              "tests/server/test_experiments.py"]),
    "guards": ("rankrelay/server/guards.py", ["tests/server/test_guards_contract.py"]),
    "batching": ("rankrelay/server/batching.py", ["tests/server/test_batching.py"]),
    "job": ("rankrelay/batch/job.py", ["tests/test_batch_job.py", "tests/test_batch.py"]),
    "totals": ("rankrelay/experiments/totals.py", ["tests/experiments/test_totals.py"]),
    "graph_store": ("rankrelay/rerankers/local/graph_store.py", ["tests/rerankers/local/test_graph_store.py"]),
    "protocol": ("rankrelay/server/protocol.py", ["tests/faults/test_slow_clients.py"]),
}

# Lines mutmut leaves alone: log calls (what a log line says is not behaviour a caller sees).
DO_NOT_MUTATE = [r"\blog(ger)?\.(debug|info|warning|error|exception)\("]

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", 37: "type check"}


def _status(code: int | None) -> str:
    """mutmut's verdict for a mutant's exit code."""
    return "not checked" if code is None else STATUS.get(code, "suspicious")


@dataclass
class Outcome:
    name: str
    module: str
    work: Path
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


def _pyproject(module: str, tests: list[str]) -> str:
    text = (ROOT / "pyproject.toml").read_text()
    start = text.index("[tool.pytest.ini_options]")
    pytest_ini = text[start : text.index("\n[", start + 1)]
    # mutmut keeps which tests reach each function until its folder is discarded: a change to the tests (a new
    # one, a fixture whose scope changed) changes this line, so the folder is made again with fresh stats
    digest = hashlib.sha256(b"".join((ROOT / t).read_bytes() for t in tests)).hexdigest()[:16]
    return pytest_ini + "\n" + "\n".join([
        f"# tests {digest}",
        "[tool.mutmut]",
        'source_paths = ["rankrelay"]',
        f"only_mutate = {json.dumps([module])}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-p", "no:randomly", "-p", "no:cacheprovider", "-q", "-x"]',
        f"do_not_mutate_patterns = {json.dumps(DO_NOT_MUTATE)}",
        "",
    ])


def _prepare(name: str, fresh: bool, root: Path = WORK) -> Path:
    module, tests = MODULES[name]
    work = root / name
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for link in ("rankrelay", "tests"):
        if not (work / link).exists():
            (work / link).symlink_to(ROOT / link)
    config = _pyproject(module, tests)
    pyproject = work / "pyproject.toml"
    if not pyproject.exists() or pyproject.read_text() != config:
        pyproject.write_text(config)
        shutil.rmtree(work / "mutants", ignore_errors=True)
    return work


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
    codes = _exit_codes(work, module)
    if not codes:
        _mutmut(work, "run", "--max-children", "1", "generate.only", check=False)  # generates, runs nothing
        codes = _exit_codes(work, module)
    return sorted(codes)


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
    if not SURVIVORS.exists():
        return {}
    data = tomllib.loads(SURVIVORS.read_text())
    out = {}
    for kind in ("equivalent", "open"):
        for entry in data.get(kind, []):
            out[(entry["module"], entry["function"], entry["change"].strip())] = kind
    return out


def judge(name: str, sample: int | None, fresh: bool, seed: int) -> Outcome:
    module, _ = MODULES[name]
    start = time.monotonic()
    work = _prepare(name, fresh, WORK / "sample" if sample else WORK)  # a sample leaves full results alone
    chosen: list[str] = []
    if sample:
        mutants = _all_mutants(work, module)
        chosen = sorted(random.Random(f"{seed}:{name}").sample(mutants, min(sample, len(mutants))))
    children = ("--max-children", str(os.cpu_count() or 1))
    _mutmut(work, "run", *children, *chosen)
    codes = _exit_codes(work, module)
    if chosen:
        codes = {k: codes.get(k) for k in chosen}
    # mutmut keeps a verdict while the source is unchanged, even when a test was added since: try the
    # mutants that were not killed again (a fresh folder gets the same verdict twice, at little cost)
    again = [k for k, code in codes.items() if _status(code) not in ("killed", "timeout")]
    if again:
        _mutmut(work, "run", *children, *again)
        codes |= {k: v for k, v in _exit_codes(work, module).items() if k in again}
    listed = _listed()
    outcome = Outcome(name, module, work)
    for mutant, code in codes.items():
        status = _status(code)
        outcome.counts[status] = outcome.counts.get(status, 0) + 1
        if status in ("survived", "no tests", "suspicious", "not checked"):
            key = _key(work, module, mutant)
            outcome.changes[mutant] = f"{key[1]}: {key[2]}"
            kind = listed.get(key)
            if kind == "equivalent":
                outcome.equivalent += 1
            elif kind == "open":
                outcome.open.append(mutant)
            else:
                outcome.unlisted.append(mutant)
    outcome.seconds = time.monotonic() - start
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(MODULES), help="modules to test (default: all)")
    parser.add_argument("--at-target", action="store_true", help="only the modules that have reached the target")
    parser.add_argument("--sample", type=int, help="mutants per module (a fixed sample); default: every mutant")
    parser.add_argument("--seed", type=int, default=30)
    parser.add_argument("--fresh", action="store_true", help="discard earlier results")
    parser.add_argument("--diffs", action="store_true", help="print each unlisted mutant's change")
    parser.add_argument("--json", type=Path, help="also write the outcome table here")
    args = parser.parse_args(argv)
    names = args.only or (AT_TARGET if args.at_target else list(MODULES))
    outcomes = [judge(name, args.sample, args.fresh, args.seed) for name in names]
    print(f"{'module':<12} {'mutants':>7} {'killed':>6} {'survived':>8} {'no tests':>8} {'equiv':>5} {'open':>4} "
          f"{'unlisted':>8} {'score':>6} {'time':>6}")
    failed = False
    for o in outcomes:
        total = sum(o.counts.values())
        print(f"{o.name:<12} {total:>7} {o.killed:>6} "
              f"{o.counts.get('survived', 0):>8} {o.counts.get('no tests', 0):>8} {o.equivalent:>5} {len(o.open):>4} "
              f"{len(o.unlisted):>8} {o.score:>6.1%} {o.seconds:>5.0f}s")
        if o.unlisted:
            failed = True
            for mutant in o.unlisted:
                print(f"  not killed, not listed: {mutant}  (cd {o.work.relative_to(ROOT)} && mutmut show {mutant})")
                if args.diffs:
                    print("    " + o.changes[mutant].replace("\n", "\n    "))
        if not args.sample and o.score < TARGET:
            failed = True
    if args.json:
        rows = [o.__dict__ | {"work": str(o.work), "killed": o.killed, "score": o.score} for o in outcomes]
        args.json.write_text(json.dumps(rows, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
