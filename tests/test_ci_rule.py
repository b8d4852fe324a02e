"""The fail-in-CI rule of tests/conftest.py, on a small suite run in a subprocess: under CI=true a test (or a
whole module) that skips fails, unless its reason names the make target that runs it instead."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

SUITE = {
    "test_module_skip.py": 'import pytest\npytest.importorskip("no_such_extra_here", reason="the x extra is not '
                           'installed")\n\ndef test_never():\n    pass\n',
    "test_call_skip.py": 'import pytest\n\ndef test_skips():\n    pytest.skip("no chromium here")\n',
    "test_elsewhere.py": 'import pytest\n\ndef test_elsewhere():\n    pytest.skip("cohere<6 is installed by '
                         '`make test-cohere5`")\n',
    "test_runs.py": "def test_runs():\n    assert True\n",
}


def run_suite(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('project_conftest', {str(CONFTEST)!r})\n"
        "project = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(project)\n"
        "pytest_runtest_makereport = project.pytest_runtest_makereport\n"
        "pytest_make_collect_report = project.pytest_make_collect_report\n")
    for name, text in SUITE.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci is not None else {})
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:randomly", "-p", "no:cacheprovider",
               "-p", "no:xdist", "--continue-on-collection-errors", str(tmp_path)]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_under_ci_a_skip_fails_unless_it_names_the_make_target_that_runs_it(tmp_path, ci):
    out = run_suite(tmp_path, ci)
    assert out.returncode == 1, out.stdout
    lines = out.stdout.splitlines()
    assert any(line.startswith("ERROR test_module_skip.py - CI runs every test, but this one skipped:")
               and line.endswith("the x extra is not installed") for line in lines), out.stdout
    failed = ("FAILED test_call_skip.py::test_skips - CI runs every test, but this one skipped: "
              "Skipped: no chromium here")
    assert failed in lines, out.stdout
    assert any(line.startswith("SKIPPED") and "test_elsewhere.py" in line for line in lines), out.stdout
    assert "1 failed, 1 passed, 1 skipped, 1 error" in lines[-1], out.stdout


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_outside_ci_a_missing_part_skips(tmp_path, ci):
    out = run_suite(tmp_path, ci)
    assert out.returncode == 0, out.stdout
    assert "1 passed, 3 skipped" in out.stdout
