"""`rankrelay tune` on the harness's synthetic BEIR folder: the configurations tried, the recommendation under a
budget (decided on the recorded numbers, never on a wall-clock threshold), and the profile it writes."""

import pytest
from conftest import raises_exactly
from test_compare import backends  # noqa: F401  (a fixture)
from typer.testing import CliRunner

from rankrelay import ConfigError, load_reranker
from rankrelay.cli import app
from rankrelay.errors import InvalidInputError
from rankrelay.evaluation.tune import configurations, recommend, tune

runner = CliRunner()


def test_the_configurations_are_tiers_depths_and_cheap_ahead_of_strong():
    got = [(c.name, c.spec) for c in configurations(["tinybert-l2", "models/x"], 60, "auto")]
    assert got == [
        ("tinybert-l2 over 60", "tinybert-l2?runtime=auto"),
        ("tinybert-l2 over 20", "cascade:first-stage>tinybert-l2?runtime=auto@20"),
        ("tinybert-l2 over 50", "cascade:first-stage>tinybert-l2?runtime=auto@50"),
        ("models/x over 60", "cross-encoder:models/x?runtime=auto"),
        ("models/x over 20", "cascade:first-stage>cross-encoder:models/x?runtime=auto@20"),
        ("models/x over 50", "cascade:first-stage>cross-encoder:models/x?runtime=auto@50"),
        ("tinybert-l2 > models/x @10", "cascade:tinybert-l2?runtime=auto>cross-encoder:models/x?runtime=auto@10"),
        ("tinybert-l2 > models/x @20", "cascade:tinybert-l2?runtime=auto>cross-encoder:models/x?runtime=auto@20"),
        ("tinybert-l2 > models/x @30", "cascade:tinybert-l2?runtime=auto>cross-encoder:models/x?runtime=auto@30"),
    ]
    assert [c.spec for c in configurations(["identity", "minilm-l6?batch_size=8"], 15, "torch")] == [
        "identity", "minilm-l6?batch_size=8&runtime=torch", "cascade:identity>minilm-l6?batch_size=8&runtime=torch@10"]
    with raises_exactly(ConfigError, "tune needs at least one model (--models)"):
        configurations([], 10)
    with raises_exactly(ConfigError, "a model for tune is one tier (a preset, a spec or a path without '>' or '@'), "
                                     "got ['a>b', 'c@3']"):
        configurations(["a>b", "identity", "c@3"], 10)
    # a spec with options and a colon in them, or a path with '?' twice: only its head names the backend
    assert [c.spec for c in configurations(["minilm-l6?cache_dir=/x:y?z", "x:y", "cross-encoder:org/m:rev",
                                            "identity?a=1?b=2"], 10, None)] == [
        "minilm-l6?cache_dir=/x:y?z", "cross-encoder:x:y", "cross-encoder:org/m:rev", "identity?a=1?b=2"]
    assert configurations(["minilm-l6?cache_dir=/x?y"], 10, "torch")[0].spec == "minilm-l6?cache_dir=/x?y&runtime=torch"
    assert configurations(["identity?normalize=minmax"], 10, "torch")[0].spec == "identity?normalize=minmax"
    assert [c.spec for c in configurations(["minilm-l6"], 10)][:1] == ["minilm-l6?runtime=auto"]  # auto by default


def test_tune_defaults_to_bm25_over_100_candidates_on_auto_with_progress():
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(tune).parameters.items()}
    assert (defaults["candidates"], defaults["depth"], defaults["runtime"], defaults["progress"]) == (
        "bm25", 100, "auto", True)


def test_the_recommendation_is_the_best_quality_within_the_budget_and_the_faster_of_equals():
    rows = [{"backend": "a", "p50_ms": 100.0, "ndcg@10": 0.30}, {"backend": "b", "p50_ms": 400.0, "ndcg@10": 0.40},
            {"backend": "c", "p50_ms": 300.0, "ndcg@10": 0.40}, {"backend": "d", "p50_ms": 900.0, "ndcg@10": 0.50}]
    assert recommend(rows, 1000)["backend"] == "d"
    assert recommend(rows, 899.9)["backend"] == "c"
    assert recommend(rows, 300)["backend"] == "c"  # at the budget is within it
    assert recommend(rows, 99) is None


@pytest.mark.parametrize("budget", [0, -5, float("nan"), True, "100"])
def test_a_budget_that_is_not_a_positive_number_is_refused_before_any_work(budget, tmp_path):
    with pytest.raises(InvalidInputError, match="--budget-ms must be a positive number"):
        tune(tmp_path / "nowhere", budget, ["identity"])


def test_tune_recommends_the_best_configuration_under_the_budget_and_writes_a_profile_that_loads(
        beir, backends, tmp_path):  # noqa: F811
    cands = str(tmp_path / "cands.trec")
    result = tune(beir, 10**6, ["identity", "oracle"], candidates=cands, depth=10, runtime=None,
                  report=tmp_path / "report", out=tmp_path / "tuned.toml", progress=False, depths=(5,), keeps=(3, 5))
    names = {r["backend"] for r in result.rows}
    assert names == {"identity over 10", "identity over 5", "oracle over 10", "oracle over 5",
                     "identity > oracle @3", "identity > oracle @5"}
    quality = {r["backend"]: r["ndcg@10"] for r in result.rows}
    # relevant documents sit at first-stage ranks 5 and 8: only the oracle over all 10 finds both
    assert quality["oracle over 10"] > quality["oracle over 5"] == quality["identity > oracle @5"] \
        > quality["identity > oracle @3"] == quality["identity over 10"]
    assert result.recommended["backend"] == "oracle over 10" and result.recommended["spec"] == "oracle"
    front = [r for r in result.rows if r["front"]]
    assert all(not any(o["p50_ms"] <= r["p50_ms"] and o["ndcg@10"] > r["ndcg@10"] for o in result.rows) for r in front)
    text = result.profile.read_text()
    assert 'backend = "oracle"' in text and "budget 1e+06 ms p50" in text and "nDCG@10" in text
    assert text.startswith("# rankrelay tune on beir (12 queries), budget 1e+06 ms p50\n# measured here: nDCG@10 ")
    assert (result.budget_ms, result.quality, result.warnings) == (1e6, "nDCG@10", [])
    assert type(load_reranker(str(result.profile))).__name__ == "Oracle"

    # a budget under every measured p50: nothing recommended, the fastest named, no profile
    tight = min(r["p50_ms"] for r in result.rows) / 2
    again = tune(beir, tight, ["identity", "oracle"], candidates=cands, depth=10, runtime=None,
                 report=tmp_path / "report", out=tmp_path / "none.toml", progress=False, depths=(5,), keeps=(3, 5))
    assert again.recommended is None and not (tmp_path / "none.toml").exists()
    assert "no configuration is within" in again.warnings[-1]


def test_tune_from_the_command_line_then_bench_reads_the_profile(beir, backends, tmp_path):  # noqa: F811
    out = runner.invoke(app, ["tune", str(beir), "--budget-ms", "100000", "--models", "identity,oracle",
                              "--candidates", str(tmp_path / "cands.trec"), "--depth", "10", "--runtime", "",
                              "--report", str(tmp_path / "r"), "--out", str(tmp_path / "p.toml"), "-q"])
    assert out.exit_code == 0, out.output
    assert "* oracle over 10" in out.output and f"-> {tmp_path / 'p.toml'}" in " ".join(out.output.split())
    bench = runner.invoke(app, ["bench", "--dataset", str(beir), "--backends", f"identity,{tmp_path / 'p.toml'}",
                                "--candidates", str(tmp_path / "cands.trec"), "--out", str(tmp_path / "b"), "-q"])
    assert bench.exit_code == 0, bench.output
    assert "p.toml" in bench.output
    bad = runner.invoke(app, ["tune", str(beir), "--budget-ms", "0", "--models", "identity"])
    assert bad.exit_code == 2 and "--budget-ms must be a positive number" in bad.output


def test_a_dataset_without_judged_queries_is_a_typed_error_not_a_traceback(tmp_path):
    import json

    folder = tmp_path / "unjudged"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "wing lift"}) + "\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "wing"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(InvalidInputError, match="unjudged has no judged queries"):
        tune(folder, 100, ["identity"], report=tmp_path / "r", progress=False)
    out = runner.invoke(app, ["tune", str(folder), "--budget-ms", "100", "--models", "identity", "--report",
                              str(tmp_path / "r2"), "-q"])
    assert out.exit_code == 2 and "no judged queries" in out.output and "Traceback" not in out.output


@pytest.mark.parametrize("depth", [20, 30, 50, 100])
def test_every_configuration_has_its_own_name_at_any_depth(depth):
    configs = configurations(["tinybert-l2", "minilm-l6"], depth, runtime="torch")
    names = [c.name for c in configs]
    assert len(names) == len(set(names))
    assert [c.name for c in configs if c.name.startswith("minilm-l6 over")] == [
        f"minilm-l6 over {d}" for d in (depth, *[d for d in (20, 50) if d < depth])]
    assert all(int(c.name.rsplit("@", 1)[1]) < depth for c in configs if "@" in c.name)


@pytest.mark.parametrize("flags", [["avx2", "avx512_vnni"], []])
def test_the_profile_says_what_was_measured_on_which_cpu_and_how_to_load_it(tmp_path, monkeypatch, flags):
    from rankrelay.evaluation import tune

    monkeypatch.setattr("rankrelay.devices.cpu_signature", lambda: {"model": "AMD EPYC 9R14", "flags": flags})
    row = {"ndcg@10": 0.41234, "p50_ms": 812.4, "backend": "minilm-l6 over 50", "spec": "cross-encoder:x?keep=50"}
    path = tune.write_profile(tmp_path / "new" / "profilé" / "fast.toml", row, dataset="cranfield", budget_ms=1000,
                              queries=225)
    lines = path.read_bytes().decode("utf-8").splitlines()
    shown = " ".join(flags) or "no AVX2"
    assert lines == [
        "# rankrelay tune on cranfield (225 queries), budget 1000 ms p50",
        "# measured here: nDCG@10 0.4123, p50 812 ms (minilm-l6 over 50)",
        f"# on AMD EPYC 9R14 ({shown}); load with load_reranker({str(path)!r}), serve --config, bench --backends",
        'backend = "cross-encoder:x?keep=50"']
    assert tune.write_profile(path, row, dataset="d", budget_ms=1, queries=1) == path  # written again in place


def test_without_judgments_quality_is_agreement_with_the_strongest_tier_over_every_candidate(beir, tmp_path):
    import shutil

    folder = tmp_path / "unjudged"
    shutil.copytree(beir, folder)
    shutil.rmtree(folder / "qrels")
    result = tune(folder, 1e6, ["identity", "random:1"], depth=10, report=tmp_path / "r", progress=False,
                  depths=(10,), keeps=(), runtime=None)
    assert result.quality == "agreement with random:1 over 10 (nDCG@10 against its top 10; no judgments)"
    quality = {r["backend"]: r["ndcg@10"] for r in result.rows}
    assert quality["random:1 over 10"] == 1.0  # the judge agrees with itself


def test_tune_compares_the_queries_depth_and_runtime_it_was_asked_for_and_writes_the_report_there(
        beir, tmp_path, tiny_ce_path):
    import json

    result = tune(beir, 1e6, [tiny_ce_path], candidates=str(tmp_path / "cands.trec"), depth=6, queries=3,
                  runtime="torch", report=tmp_path / "report", progress=False, depths=(), keeps=())
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["queries"] == 3 and [r["backend"] for r in result.rows] == [f"{tiny_ce_path} over 6"]
    assert result.rows[0]["spec"] == f"cross-encoder:{tiny_ce_path}?runtime=torch"
    kept = (tmp_path / "report" / "candidates.trec").read_text().splitlines()
    assert len(kept) == 3 * 6  # three queries, six candidates each


def _unjudged(beir, tmp_path):
    import shutil

    folder = tmp_path / "unjudged"
    shutil.copytree(beir, folder)
    shutil.rmtree(folder / "qrels")
    return folder


def test_without_judgments_the_strongest_ranks_once_only_the_queries_and_depth_asked_for(
        beir, backends, tmp_path, caplog):  # noqa: F811
    import logging

    from test_compare import Oracle

    caplog.set_level(logging.INFO, logger="rankrelay.progress")
    result = tune(_unjudged(beir, tmp_path), 1e6, ["identity", "oracle"], depth=5, queries=2,
                  report=tmp_path / "r", progress=False, depths=(), keeps=(), runtime=None)
    assert Oracle.calls == 2  # two queries, ranked once: the comparison reuses the judge's run
    assert len((tmp_path / "r" / "candidates.trec").read_text().splitlines()) == 2 * 5
    assert sorted(r["backend"] for r in result.rows) == ["identity over 5", "oracle over 5"]  # (fastest first)
    assert not [r for r in caplog.records if r.name == "rankrelay.progress"]  # progress=False reached the judge


def test_without_judgments_the_judgments_are_the_strongest_s_top_10(beir, backends, tmp_path):  # noqa: F811
    from rankrelay.evaluation import read_trec, write_trec
    from rankrelay.evaluation.tune import _judged

    run = read_trec(tmp_path / "cands.trec")  # 10 candidates a query; two more from another topic make 12
    ids = sorted({d for ranking in run.values() for d, _ in ranking})
    write_trec(tmp_path / "twelve.trec", {q: [*r, *[(d, 0.0) for d in ids if d not in dict(r)][:2]]
                                          for q, r in run.items()}, "twelve")
    data, quality = _judged(_unjudged(beir, tmp_path), "test", {"spec": "oracle", "name": "oracle"},
                            str(tmp_path / "twelve.trec"), 12, None, tmp_path / "r", False)
    assert quality == "agreement with oracle (nDCG@10 against its top 10; no judgments)"
    assert len(data.qrels) == 12 and all(len(judged) == 10 and set(judged.values()) == {1}
                                         for judged in data.qrels.values())


def test_judgments_of_another_split_are_the_ones_tuned_on(beir, tmp_path):
    import shutil

    folder = tmp_path / "dev-only"
    shutil.copytree(beir, folder)
    (folder / "qrels" / "test.tsv").rename(folder / "qrels" / "dev.tsv")
    result = tune(folder, 1e6, ["identity"], split="dev", depth=10, report=tmp_path / "r", progress=False,
                  depths=(), keeps=(), runtime=None)
    assert result.quality == "nDCG@10" and result.rows[0]["ndcg@10"] > 0


def test_a_folder_without_queries_is_refused_naming_it(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text('{"_id": "d0", "title": "", "text": "a document"}\n')
    (folder / "queries.jsonl").write_text("")
    with raises_exactly(InvalidInputError, "empty has no queries: nothing to tune on"):
        tune(folder, 100.0, ["identity"], report=tmp_path / "r", progress=False, runtime=None)


def test_a_cascade_or_a_keep_alone_is_refused_as_a_model_for_tune():
    for model in ("a>b", "c@3"):
        with raises_exactly(ConfigError, "a model for tune is one tier (a preset, a spec or a path without '>' or "
                                         f"'@'), got ['{model}']"):
            configurations(["identity", model], 10)


def test_the_profile_of_a_tune_without_judgments_says_what_its_quality_is(beir, tmp_path):
    tune(_unjudged(beir, tmp_path), 1e6, ["identity", "random:1"], depth=10, report=tmp_path / "r",
         out=tmp_path / "p.toml", progress=False, depths=(), keeps=(), runtime=None)
    assert "agreement with random:1 over 10" in (tmp_path / "p.toml").read_text()
