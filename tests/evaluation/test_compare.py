"""The comparison harness on a small synthetic BEIR folder written at test time."""

import json
import math

import pytest
from conftest import N_QUERIES
from typer.testing import CliRunner

from rankrelay import BackendUnavailableError
from rankrelay.cli import app
from rankrelay.evaluation import compare, evaluate, load_beir, rbo, read_trec
from rankrelay.rerankers import register, unregister
from rankrelay.rerankers.base import BaseReranker, Scored


class Oracle(BaseReranker):
    """Knows the qrels: grade as score (an obvious win over the first stage)."""

    name = "oracle"
    grades: dict = {}
    calls = 0

    def _score_batch(self, queries, documents):
        Oracle.calls += 1
        return [Scored([float(self.grades.get(d.id, 0)) for d in docs]) for docs in documents], {}


class AntiOracle(Oracle):
    """Relevant documents last: worse than random."""

    name = "anti"

    def _score_batch(self, queries, documents):
        scored, timings = super()._score_batch(queries, documents)
        return [Scored([-s for s in x.scores]) for x in scored], timings


class Flaky(BaseReranker):
    name = "flaky"

    def _score_batch(self, queries, documents):
        if queries[0].startswith("topic3 "):
            raise BackendUnavailableError("injected outage", backend="flaky")
        return [Scored([0.0] * len(docs)) for docs in documents], {}


@pytest.fixture
def backends(beir):
    grades = {d: g for q in load_beir(beir).qrels.values() for d, g in q.items()}
    Oracle.grades, Oracle.calls = grades, 0
    register("oracle", lambda model, **o: Oracle(**o), options={"normalize"}, description="test oracle")
    register("flaky", lambda model, **o: Flaky(**o), options={"normalize"}, description="test failures")
    register("anti", lambda model, **o: AntiOracle(**o), options={"normalize"}, description="worse than random")
    yield
    unregister("anti")
    unregister("oracle")
    unregister("flaky")


def test_metrics_match_hand_computed_values():
    qrels = {"q": {"a": 2, "c": 1}}
    ranking = {"q": [("x", 9.0), ("a", 8.0), ("y", 7.0), ("c", 6.0)]}
    means, per_query = evaluate(qrels, ranking)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)  # ranx's nDCG: linear gain, log2(rank + 1) discount
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert means["ndcg@10"] == pytest.approx(dcg / idcg)
    assert means["mrr@10"] == pytest.approx(1 / 2)
    assert means["precision@5"] == pytest.approx(2 / 5)
    assert means["recall@10"] == 1.0 and per_query["ndcg@10"]["q"] == pytest.approx(dcg / idcg)


def test_rbo_properties():
    assert rbo(list("abc"), list("abc")) == pytest.approx(1.0)
    assert rbo(list("abc"), list("xyz")) == 0.0
    assert rbo(list("abcd"), list("abdc")) > rbo(list("abcd"), list("bacd"))  # top ranks weigh more


def test_compare_end_to_end(beir, backends, tmp_path):
    out = tmp_path / "report"
    c = compare(beir, str(tmp_path / "cands.trec"), ["identity", "random", "oracle"], out=out, progress=False)
    assert len(c.queries) == N_QUERIES
    candidates = read_trec(out / "candidates.trec")
    for run in c.runs.values():  # every backend reranked exactly the same candidates
        for q, ranking in run.rankings.items():
            assert sorted(d for d, _ in ranking) == sorted(d for d, _ in candidates[q])
    assert c.metrics["identity"] == c.metrics["first-stage"]
    assert c.metrics["oracle"]["ndcg@10"] == pytest.approx(1.0)
    sig = {(s["a"], s["b"], s["metric"]): s for s in c.significance}
    assert sig[("first-stage", "oracle", "ndcg@10")]["significant"]
    assert sig[("first-stage", "oracle", "ndcg@10")]["winner"] == "oracle"
    assert not sig[("first-stage", "identity", "ndcg@10")]["significant"]
    agree = {(a["a"], a["b"]): a for a in c.agreement}
    assert agree[("first-stage", "identity")]["kendall_tau"] == pytest.approx(1.0)
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"]["oracle"]["ndcg@10"] == pytest.approx(1.0) and report["queries"] == N_QUERIES
    md = (out / "report.md").read_text()
    assert "## Metrics" in md and "oracle" in md and "▲" in md and "## Where rankings differ most" in md
    assert c.latency["oracle"]["p50_ms"] > 0
    from PIL import Image

    for name in ("metrics.png", "deltas.png", "latency_quality.png"):
        with Image.open(out / name) as img:  # the PNGs open
            assert img.size[0] > 100 and img.size[1] > 100


def test_resume_skips_finished_queries(beir, backends, tmp_path):
    out = tmp_path / "report"
    first = compare(beir, str(tmp_path / "cands.trec"), ["oracle"], out=out, progress=False)
    calls = Oracle.calls
    assert calls == N_QUERIES
    again = compare(beir, str(tmp_path / "cands.trec"), ["oracle"], out=out, progress=False)
    assert Oracle.calls == calls  # nothing re-run
    assert again.metrics == first.metrics


def test_failures_are_reported_not_scored(beir, backends, tmp_path):
    c = compare(beir, str(tmp_path / "cands.trec"), ["identity", "flaky"], out=tmp_path / "r", progress=False)
    assert list(c.runs["flaky"].failures) == ["q3"]
    assert "q3" not in c.queries and len(c.queries) == N_QUERIES - 1
    assert any("flaky failed on 1 queries" in w for w in c.warnings)
    assert "q3" in json.loads((tmp_path / "r" / "report.json").read_text())["failures"]["flaky"]


def test_a_reranker_that_does_not_beat_random_is_flagged(beir, backends, tmp_path):
    c = compare(beir, str(tmp_path / "cands.trec"), ["random", "anti", "oracle"], out=tmp_path / "r2",
                progress=False)
    assert c.metrics["anti"]["ndcg@10"] < c.metrics["random"]["ndcg@10"] < c.metrics["oracle"]["ndcg@10"]
    assert any("anti does not beat the random reference" in w for w in c.warnings)
    assert not any("oracle does not beat" in w for w in c.warnings)


def test_bm25_candidates_and_cli(beir, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["bench", "--dataset", str(beir), "--backends", "identity,random",
                                      "--candidates", "bm25", "--depth", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "identity" in result.output and (out / "candidates.trec").exists()
    cands = read_trec(out / "candidates.trec")
    assert len(cands) == N_QUERIES and all(len(r) <= 5 for r in cands.values())
    before = (out / "candidates.trec").read_bytes()
    assert CliRunner().invoke(app, ["bench", "--dataset", str(beir), "--backends", "identity",
                                    "--out", str(out)]).exit_code == 0
    assert (out / "candidates.trec").read_bytes() == before  # reused, not rebuilt


def test_api_backends_and_fallback_chains_with_cost(beir, tmp_path, fake_api, refused_url):
    from rankrelay import FallbackReranker
    from rankrelay.testing import API_KEY

    api = {"spec": "cohere:rerank-v3.5", "name": "cohere", "api_key": API_KEY, "base_url": fake_api.url}
    chain = FallbackReranker([{"spec": f"tei:{refused_url}", "max_attempts": 1}, "identity"])
    c = compare(beir, str(tmp_path / "cands.trec"), [api, chain], out=tmp_path / "r3", progress=False,
                prices={"search_units": 0.5})
    assert c.runs["cohere"].billed == {"search_units": N_QUERIES}
    assert c.latency["cohere"]["cost_usd"] == pytest.approx(0.5 * N_QUERIES)
    chain_name = next(n for n in c.runs if n.startswith("fallback"))
    assert set(c.runs[chain_name].served_by.values()) == {"identity"}
    report = json.loads((tmp_path / "r3" / "report.json").read_text())
    assert report["served_by"][chain_name] == {"identity": N_QUERIES}


def test_pareto_view_with_cascades_budgets_and_runtime_specs(beir, backends, tmp_path, tiny_ce_path):
    specs = ["identity", "oracle", "cascade:first-stage>oracle@5", "cascade:first-stage>oracle@3",
             f"cross-encoder:{tiny_ce_path}?device=cpu&budget_ms=0.0001",
             {"spec": f"cross-encoder:{tiny_ce_path}", "runtime": "onnx", "cache_dir": str(tmp_path / "rt"),
              "name": "tiny on onnx"}]
    c = compare(beir, str(tmp_path / "cands.trec"), specs, out=tmp_path / "report", progress=False)
    rows = {r["backend"]: r for r in c.pareto}
    assert set(rows) == {"identity", "oracle", "cascade:first-stage>oracle@5", "cascade:first-stage>oracle@3",
                         f"cross-encoder:{tiny_ce_path}?device=cpu&budget_ms=0.0001", "tiny on onnx"}
    # relevant documents sit at first-stage ranks 5 and 8: keeping 5 finds one, keeping 3 finds none
    assert c.metrics["cascade:first-stage>oracle@3"]["ndcg@10"] == pytest.approx(c.metrics["identity"]["ndcg@10"])
    assert c.metrics["identity"]["ndcg@10"] < c.metrics["cascade:first-stage>oracle@5"]["ndcg@10"] \
        < c.metrics["oracle"]["ndcg@10"]
    assert rows["cascade:first-stage>oracle@5"]["reranked_mean"] == 5
    budget = rows[f"cross-encoder:{tiny_ce_path}?device=cpu&budget_ms=0.0001"]
    assert budget["reranked_mean"] == 0  # too small a budget: the first-stage order, marked
    assert c.metrics[budget["backend"]]["ndcg@10"] == pytest.approx(c.metrics["identity"]["ndcg@10"])
    assert rows["tiny on onnx"]["cache_hit_rate"] == 0.0
    assert rows["oracle"]["front"] or any(
        r["ndcg@10"] >= rows["oracle"]["ndcg@10"] and r["p50_ms"] <= rows["oracle"]["p50_ms"] for r in c.pareto
        if r["backend"] != "oracle")
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Quality against latency" in report and "**yes**" in report
    assert json.loads((tmp_path / "report" / "report.json").read_text())["pareto"][0]["backend"] == c.pareto[0][
        "backend"]
    assert (tmp_path / "report" / "latency_quality.png").stat().st_size > 10_000


def test_long_backend_names_sharing_a_prefix_keep_separate_runs(beir, backends, tmp_path):
    specs = [f"cascade:first-stage>oracle@{k}" for k in (3, 5)]
    long_a, long_b = ({"spec": s, "name": "a very long backend name that goes on and on past sixty characters " + s}
                      for s in specs)
    c = compare(beir, str(tmp_path / "cands.trec"), [long_a, long_b], out=tmp_path / "report", progress=False)
    assert len(list((tmp_path / "report" / "runs").iterdir())) == 2
    assert c.metrics[long_a["name"]]["ndcg@10"] < c.metrics[long_b["name"]]["ndcg@10"]  # not one run reused


def test_llm_rerankers_in_the_harness_with_token_cost(beir, tmp_path, fake_chat):
    from rankrelay.testing import API_KEY

    llm = {"spec": f"llm:fake@{fake_chat.base_url}", "name": "llm", "api_key": API_KEY, "window": 4, "step": 2}
    judge = {"spec": f"llm-pointwise:fake@{fake_chat.base_url}", "name": "judge", "api_key": API_KEY}
    prices = {"prompt_tokens": 1e-6, "completion_tokens": 3e-6}
    c = compare(beir, str(tmp_path / "cands.trec"), [llm, judge], out=tmp_path / "r4", progress=False, prices=prices)
    calls = N_QUERIES * 4  # 10 candidates, window 4, step 2: 1 + ceil(6 / 2) windows per query
    assert fake_chat.count() == calls + N_QUERIES * 10
    for name in ("llm", "judge"):
        run = c.runs[name]
        assert len(run.rankings) == N_QUERIES and not run.failures
        assert run.billed["prompt_tokens"] > 0 and run.billed["completion_tokens"] > 0
        assert c.latency[name]["cost_usd"] == pytest.approx(
            run.billed["prompt_tokens"] * 1e-6 + run.billed["completion_tokens"] * 3e-6)


def test_a_key_in_a_spec_reaches_no_report_run_name_or_output(beir, tmp_path, fake_api):
    key = "sk-live-report-0123456789"
    fake_api.api_key = key
    out = tmp_path / "secret"
    spec = f"cohere-http:m@{fake_api.url}?api_key={key}"
    result = CliRunner().invoke(app, ["bench", "--dataset", str(beir), "--backends", f"identity,{spec}",
                                      "--candidates", "bm25", "--depth", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert key not in result.output
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files)
    for path in files:
        assert key not in path.name and key.encode() not in path.read_bytes(), path


def test_a_damaged_or_edited_run_file_is_scored_again_not_read(beir, backends, tmp_path):
    out = tmp_path / "r"
    first = compare(beir, str(tmp_path / "cands.trec"), ["oracle"], out=out, progress=False)
    run_file = next((out / "runs").glob("*.json"))
    data = json.loads(run_file.read_text())
    qid = next(iter(data["run"]["rankings"]))
    data["run"]["rankings"][qid] = list(reversed(data["run"]["rankings"][qid]))  # an edited ranking
    run_file.write_text(json.dumps(data))
    again = compare(beir, str(tmp_path / "cands.trec"), ["oracle"], out=out, progress=False)
    assert again.runs["oracle"].rankings == first.runs["oracle"].rankings
    run_file.write_text("{not json")
    assert compare(beir, str(tmp_path / "cands.trec"), ["oracle"], out=out,
                   progress=False).runs["oracle"].rankings == first.runs["oracle"].rankings


def test_the_pareto_front_of_known_points():
    from rankrelay.evaluation.compare import BackendRun, pareto_rows

    points = {"fast-bad": (1.0, 0.2), "fast-good": (2.0, 0.6), "slow-best": (9.0, 0.8), "slow-worse": (9.0, 0.5),
              "tie-a": (5.0, 0.7), "tie-b": (5.0, 0.7), "dominated": (6.0, 0.6)}
    rows = pareto_rows({n: {"ndcg@10": q} for n, (_, q) in points.items()},
                       {n: {"p50_ms": ms} for n, (ms, _) in points.items()},
                       {n: BackendRun(n) for n in points})
    assert [r["backend"] for r in rows] == ["fast-bad", "fast-good", "tie-a", "tie-b", "dominated", "slow-best",
                                            "slow-worse"]
    assert {r["backend"] for r in rows if r["front"]} == {"fast-bad", "fast-good", "tie-a", "tie-b", "slow-best"}


def test_a_missing_model_fails_before_any_candidate_is_built_or_backend_run(beir, backends, tmp_path):
    from rankrelay import ModelNotFoundError

    out = tmp_path / "report"
    with pytest.raises(ModelNotFoundError):
        compare(beir, "bm25", ["oracle", f"cross-encoder:{tmp_path / 'no-such-model'}"], out=out, progress=False)
    assert Oracle.calls == 0 and not (out / "candidates.trec").exists()


def test_a_typo_in_a_backend_fails_before_any_work_suggesting_the_name_meant(beir, backends, tmp_path):
    from rankrelay import UnknownBackendError

    with pytest.raises(UnknownBackendError, match=r"'balnced'; known: .* Did you mean 'balanced'\?"):
        compare(beir, "bm25", ["oracle", "balnced"], out=tmp_path / "r", progress=False)
    assert Oracle.calls == 0


def test_a_backend_that_fails_on_every_query_is_left_out_and_the_report_still_written(beir, backends, tmp_path):
    class Broken(BaseReranker):
        name = "broken"

        def _score_batch(self, queries, documents):
            raise ZeroDivisionError("a bug of its own")

    broken = Broken()
    closed = []
    broken.close = lambda: closed.append(True)
    out = tmp_path / "report"
    result = compare(beir, str(tmp_path / "cands.trec"), ["oracle", broken], out=out, progress=False)
    assert set(result.runs) == {"oracle"} and len(result.queries) == N_QUERIES
    assert any(w.startswith("broken failed on every query (") and "left out of the report" in w
               for w in result.warnings)
    report = json.loads((out / "report.json").read_text())
    assert "oracle" in report["metrics"] and "broken" not in report["metrics"]
    assert (out / "report.html").exists() and closed == []  # the caller's reranker is the caller's to close


def test_bench_names_the_html_report(beir, backends, tmp_path):
    out = CliRunner().invoke(app, ["bench", "--dataset", str(beir), "--backends", "oracle", "--candidates",
                                   str(tmp_path / "cands.trec"), "--out", str(tmp_path / "r"), "-q"])
    assert out.exit_code == 0, out.output
    assert f"report: {tmp_path / 'r' / 'report.html'}, " in " ".join(out.output.split())


def test_without_strict_a_backend_that_cannot_run_here_is_left_out_with_a_row_saying_why(beir, backends, tmp_path):
    absent = tmp_path / "no-such-model"
    out = tmp_path / "report"
    c = compare(beir, "bm25", ["oracle", f"cross-encoder:{absent}"], out=out, progress=False, strict=False)
    name = f"cross-encoder:{absent}"
    assert list(c.metrics) == ["first-stage", "oracle"] and Oracle.calls > 0
    assert list(c.skipped) == [name] and c.skipped[name].startswith("ModelNotFoundError: ")
    assert c.warnings[0] == f"{name} was not compared: it cannot run here ({c.skipped[name]})"
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"] == c.skipped
    md = (out / "report.md").read_text()
    assert f"| {name} | not compared: ModelNotFoundError: " in md
    html = (out / "report.html").read_text()
    assert '<tr class="skipped"><td class="text">' + name in html and "not compared: ModelNotFoundError" in html


def test_without_strict_a_typo_still_fails_and_nothing_to_compare_fails(beir, backends, tmp_path):
    from rankrelay import ModelNotFoundError, UnknownBackendError

    with pytest.raises(UnknownBackendError):
        compare(beir, "bm25", ["oracle", "balnced"], out=tmp_path / "r", progress=False, strict=False)
    with pytest.raises(ModelNotFoundError, match=r"^no backend can run here: cross-encoder:.*no-such: "
                                                 r"ModelNotFoundError: "):
        compare(beir, "bm25", [f"cross-encoder:{tmp_path / 'no-such'}"], out=tmp_path / "r2", progress=False,
                strict=False)
    assert Oracle.calls == 0


def test_bench_leaves_out_what_cannot_run_here_unless_strict(beir, backends, tmp_path):
    absent = f"cross-encoder:{tmp_path / 'absent'}"
    args = ["bench", "--dataset", str(beir), "--backends", f"oracle,{absent}", "-q"]
    lenient = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert lenient.exit_code == 0, lenient.output
    said = "".join(lenient.output.split())  # the console wraps long paths
    assert f"warning:{absent}wasnotcompared:itcannotrunhere(ModelNotFoundError" in said
    calls = Oracle.calls
    strict = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--strict"])
    assert strict.exit_code == 2 and "ModelNotFoundError" in strict.output and Oracle.calls == calls  # no work


def test_a_column_that_says_nothing_for_any_backend_is_left_out_and_shown_when_one_has_it(beir, backends, tmp_path):
    from rankrelay.evaluation.report import table

    assert table(["a", "b", "c"], [[1, "", ""], [2, None, 3]], optional=("b", "c")) == \
        "| a | c |\n|---|---|\n| 1 |  |\n| 2 | 3 |"
    assert table(["a", "b"], [[1, ""]]) == "| a | b |\n|---|---|\n| 1 |  |"  # only optional columns go
    plain = CliRunner().invoke(app, ["bench", "--dataset", str(beir), "--backends", "identity,oracle", "-q",
                                     "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0 and "p50 ms" in plain.output and "reranked / query" not in plain.output
    assert "reranked / query" not in (tmp_path / "plain" / "report.md").read_text()
    cascade = CliRunner().invoke(app, ["bench", "--dataset", str(beir), "--backends",
                                       "identity,cascade:first-stage>oracle@5", "-q", "--out", str(tmp_path / "c")])
    assert cascade.exit_code == 0 and "reranked / query" in cascade.output
    assert "| reranked / query |" in (tmp_path / "c" / "report.md").read_text()


class Unplaceable(Oracle):
    """A backend whose weights are not on this machine: it is built, then fails as it warms up."""

    closed: list = []

    def warm_up(self):
        from rankrelay import ModelNotFoundError

        raise ModelNotFoundError("no weights here")

    def close(self):
        Unplaceable.closed.append(self)


class Closing(Oracle):
    closed: list = []

    def close(self):
        Closing.closed.append(self)


@pytest.mark.parametrize("strict", [False, True])
def test_what_compare_built_is_closed_when_a_backend_cannot_run_and_a_caller_s_own_reranker_is_not(
        beir, backends, tmp_path, strict):
    from rankrelay import ModelNotFoundError

    Unplaceable.closed, Closing.closed = [], []
    register("unplaceable", lambda model, **o: Unplaceable(**o), options={"normalize"}, description="test")
    register("closing", lambda model, **o: Closing(**o), options={"normalize"}, description="test")
    mine = Closing()
    try:
        run = lambda: compare(beir, "bm25", ["closing", mine, "unplaceable"], out=tmp_path / "r",  # noqa: E731
                              progress=False, strict=strict)
        if strict:
            with pytest.raises(ModelNotFoundError, match="no weights here"):
                run()
        else:
            assert list(run().skipped) == ["unplaceable"]
    finally:
        unregister("unplaceable")
        unregister("closing")
    assert len(Unplaceable.closed) == 1  # built for the comparison, failed: closed
    assert len(Closing.closed) == 1 and Closing.closed[0] is not mine  # compare's own, whether it ran or not


def test_two_queries_are_enough_for_a_significance_test_and_one_is_not(beir, backends, tmp_path):
    names = sorted(load_beir(beir).queries)
    two = compare(beir, str(tmp_path / "cands.trec"), ["identity", "oracle"], queries=names[:2], progress=False)
    one = compare(beir, str(tmp_path / "cands.trec"), ["identity", "oracle"], queries=names[:1], progress=False)
    assert len(two.queries) == 2 and {(s["a"], s["b"]) for s in two.significance} >= {("first-stage", "oracle")}
    assert len(one.queries) == 1 and one.significance == []


def test_a_report_without_depth_or_queries_reads_back_as_none_of_either():
    from rankrelay.evaluation.comparison import Comparison

    back = Comparison.from_report({"metrics": {}})
    assert back.depth == 0 and back.queries == [] and back.runs == {}
    assert Comparison.from_report({"queries": ["q1", "q2"], "depth": 20}).queries == ["q1", "q2"]
