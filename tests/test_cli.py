import json

import pytest
from typer.testing import CliRunner

from rankrelay.cli import app

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
    out = runner.invoke(app, ["rerank", str(path), "-q", "python sort", "-m", f"cross-encoder:{tiny_ce_path}",
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
    ],
)
def test_errors_exit_2_with_a_clear_message(docs_jsonl, args, fragment):
    out = runner.invoke(app, ["rerank", str(docs_jsonl), *args])
    assert out.exit_code == 2
    assert fragment in out.output and "Traceback" not in out.output


def test_missing_document_file(tmp_path):
    out = runner.invoke(app, ["rerank", str(tmp_path / "nope.jsonl"), "-q", "x"])
    assert out.exit_code == 2 and "does not exist" in out.output


def test_bad_jsonl_line_names_the_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "ok"}\n{"id": 1}\n')
    out = runner.invoke(app, ["rerank", str(path), "-q", "x"])
    assert out.exit_code == 2 and "docs.jsonl:2" in out.output


def test_config_file_option(tiny_ce_path, tmp_path, docs_jsonl):
    cfg = tmp_path / "rr.toml"
    cfg.write_text(f'backend = "cross-encoder:{tiny_ce_path}"\ndevice = "cpu"\nnormalize = "zscore"\n')
    out = runner.invoke(app, ["rerank", str(docs_jsonl), "-q", "wing", "--config", str(cfg), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["normalization"] == "zscore" and data["model"] == tiny_ce_path


def test_models_lists_presets_and_backends():
    out = runner.invoke(app, ["models"])
    assert out.exit_code == 0
    for name in ("minilm-l6", "minilm-l12", "bge-base", "bge-large", "cross-encoder", "bi-encoder"):
        assert name in out.output


@pytest.mark.parametrize("command", [[], ["rerank"], ["models"], ["demo"], ["index"], ["search"], ["bench"],
                                     ["serve"]])
def test_help_everywhere(command):
    out = runner.invoke(app, [*command, "--help"])
    assert out.exit_code == 0 and "Usage" in out.output




def test_serve_refuses_to_start_without_auth_or_with_a_bad_model_option():
    out = runner.invoke(app, ["serve", "--model", "ref=identity"])
    assert out.exit_code == 2 and "--no-auth" in out.output
    out = runner.invoke(app, ["serve", "--model", "identity", "--no-auth"])
    assert out.exit_code == 2 and "NAME=SPEC" in out.output


def test_config_with_a_toml_syntax_error_prints_one_line_and_exits_2(tmp_path, docs_jsonl):
    cfg = tmp_path / "broken.toml"
    cfg.write_text("backend = \n")
    out = runner.invoke(app, ["rerank", str(docs_jsonl), "-q", "wing", "--config", str(cfg)])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert "ConfigError" in out.output and "broken.toml is not valid TOML" in out.output and "line 1" in out.output
