"""`rankrelay rerank-batch` in this process: inputs, row-for-row equality with the library, resuming,
malformed rows."""

import json

import pytest
from conftest import write_corpus_and_queries
from numerics import assert_scores_close
from typer.testing import CliRunner

pytest.importorskip("pyarrow", reason="the batch extra is not installed")
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from rankrelay import ConfigError, InvalidInputError, load_reranker  # noqa: E402
from rankrelay.batch import read_candidates, run_batch  # noqa: E402
from rankrelay.cli import app  # noqa: E402
from rankrelay.rerankers.base import SingleQuery  # noqa: E402

QUERIES = {"q1": "why does a wing stall", "q2": "python sort order", "q3": "capital of france",
           "q4": "boundary layer separation", "q5": "cats and dogs"}
TEXTS = ["the wing stall and the angle of attack", "python sort is stable", "paris is the capital of france",
         "boundary layer separation on the wing", "cat and dog", "lift and drag of a wing", "sorting lists in python"]


def rows():
    """Each query's candidates: every text, rotated so the input order differs per query."""
    out = []
    for n, (qid, query) in enumerate(QUERIES.items()):
        for k in range(len(TEXTS)):
            i = (k + n) % len(TEXTS)
            out.append({"query_id": qid, "query": query, "doc_id": f"d{i}", "text": TEXTS[i]})
    return out


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "candidates.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    return path


def expected(tiny_ce, top_n=None):
    """The library's own reranking of each query's candidates, as output rows."""
    out = []
    by_query = {}
    for r in rows():
        by_query.setdefault(r["query_id"], []).append(r)
    for qid, cands in by_query.items():
        res = tiny_ce.rerank(cands[0]["query"], [c["text"] for c in cands], top_n=top_n)
        out += [(qid, cands[r.index]["doc_id"], r.rank, r.score, r.index + 1) for r in res]
    return out


def output(folder):
    table = pq.read_table(folder / "reranked.parquet").to_pydict()
    return list(zip(table["query_id"], table["doc_id"], table["rank"], table["score"], table["input_rank"]))


def check_same(got, want):
    assert [(q, d, k, i) for q, d, k, _, i in got] == [(q, d, k, i) for q, d, k, _, i in want]
    assert_scores_close([s for *_, s, _ in got], [s for *_, s, _ in want])


def test_output_equals_the_library_row_for_row(jsonl, tmp_path, tiny_ce, tiny_ce_path):
    summary = run_batch(jsonl, f"cross-encoder:{tiny_ce_path}", tmp_path / "out", part_queries=2)
    assert (summary.queries, summary.parts, summary.rows, summary.resumed_parts) == (5, 3, 35, 0)
    check_same(output(tmp_path / "out"), expected(tiny_ce))
    trec = (tmp_path / "out" / "run.trec").read_text().splitlines()
    assert len(trec) == 35 and trec[0].split()[:4] == ["q1", "Q0", output(tmp_path / "out")[0][1], "1"]


def test_parquet_and_trec_inputs_and_top_n(tmp_path, tiny_ce, tiny_ce_path):
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(rows()), parquet)
    run_batch(parquet, f"cross-encoder:{tiny_ce_path}", tmp_path / "a", top_n=3)
    check_same(output(tmp_path / "a"), expected(tiny_ce, top_n=3))
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(TEXTS)))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    run = tmp_path / "first.trec"
    run.write_text("".join(f"{r['query_id']} Q0 {r['doc_id']} {k % len(TEXTS) + 1} {1.0 / (k + 1):.3f} bm25\n"
                           for k, r in enumerate(rows())))
    run_batch(run, f"cross-encoder:{tiny_ce_path}", tmp_path / "b", corpus=beir)
    check_same(output(tmp_path / "b"), expected(tiny_ce))


class FailsOnce(SingleQuery):
    """Scores by shared words; raises on its ``fail_at``-th call (a run that stops half way)."""

    name = "words"

    def __init__(self, fail_at):
        self.calls, self.fail_at = 0, fail_at

    def rerank(self, query, documents, top_n=None, **kwargs):
        raise NotImplementedError

    def rerank_batch(self, requests, top_n=None, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("the machine went away")
        return [load_reranker("identity").rerank(q, docs, top_n=top_n) for q, docs in requests]

    async def arerank(self, query, documents, top_n=None, **kwargs):
        raise NotImplementedError


def test_a_stopped_run_resumes_where_it_stopped(jsonl, tmp_path):
    flaky = FailsOnce(fail_at=3)
    with pytest.raises(RuntimeError, match="went away"):
        run_batch(jsonl, flaky, tmp_path / "out", part_queries=1)
    assert sorted(p.name for p in (tmp_path / "out" / "parts").iterdir()) == ["part-00000.parquet",
                                                                              "part-00001.parquet"]
    summary = run_batch(jsonl, flaky, tmp_path / "out", part_queries=1)
    assert (summary.parts, summary.resumed_parts, summary.rows) == (5, 2, 35) and flaky.calls == 6
    got = output(tmp_path / "out")
    assert [(q, d) for q, d, *_ in got] == [(r["query_id"], r["doc_id"]) for r in rows()]  # identity: input order
    with pytest.raises(ConfigError, match="another batch job .* part_queries"):
        run_batch(jsonl, flaky, tmp_path / "out", part_queries=2)


def test_malformed_rows_are_reported_by_line_and_nothing_is_written(tmp_path, tiny_ce_path):
    path = tmp_path / "bad.jsonl"
    good = rows()
    lines = [json.dumps(good[0]), json.dumps({**good[1], "text": None}), "{not json", json.dumps(good[2]),
             json.dumps({**good[3], "query": "another text for q1"}), json.dumps({**good[4], "text": 7}), ""]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidInputError) as err:
        run_batch(path, f"cross-encoder:{tiny_ce_path}", tmp_path / "out")
    message = str(err.value)
    assert "4 malformed row(s)" in message
    for fragment in (":2: 'text' is missing", ":3: not JSON", ":5: query 'q1' has another text",
                     ":6: 'text' is int, not text"):
        assert fragment in message
    assert not (tmp_path / "out").exists()
    table = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{**r, "query": ""} if i == 2 else r for i, r in enumerate(good[:4])]), table)
    with pytest.raises(InvalidInputError, match=r"bad.parquet row 3: 'query' is empty"):
        read_candidates(table)
    pq.write_table(pa.Table.from_pylist([{"query_id": "q", "text": "t"}]), table)
    with pytest.raises(InvalidInputError, match="no column query, doc_id"):
        read_candidates(table)


def test_cli(jsonl, tmp_path, tiny_ce_path):
    runner = CliRunner()
    out = runner.invoke(app, ["rerank-batch", str(jsonl), "--model", f"cross-encoder:{tiny_ce_path}",
                              "--out", str(tmp_path / "out"), "--top-n", "2", "--part-queries", "2"])
    assert out.exit_code == 0, out.output
    assert "reranked 5 queries, 10 rows in 3 parts" in out.output
    again = runner.invoke(app, ["rerank-batch", str(jsonl), "--model", f"cross-encoder:{tiny_ce_path}",
                                "--out", str(tmp_path / "out"), "--top-n", "2", "--part-queries", "2"])
    assert again.exit_code == 0 and "(3 resumed)" in again.output
    bad = runner.invoke(app, ["rerank-batch", str(tmp_path / "none.jsonl"), "--model", "identity",
                              "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "no such candidates file" in bad.output


# -- trust (#25): parts are verified, ids a TREC run can carry, secrets kept out ------------------
def test_a_part_replaced_by_another_is_recomputed_with_a_warning(jsonl, tmp_path, tiny_ce, tiny_ce_path, caplog):
    out = tmp_path / "out"
    spec = f"cross-encoder:{tiny_ce_path}"
    run_batch(jsonl, spec, out, part_queries=2)
    parts = sorted((out / "parts").glob("*.parquet"))
    parts[0].write_bytes(parts[1].read_bytes())  # part 0 is now a copy of part 1
    with caplog.at_level("WARNING", logger="rankrelay"):
        summary = run_batch(jsonl, spec, out, part_queries=2)
    assert summary.resumed_parts == 2 and "does not match its record" in caplog.text
    check_same(output(out), expected(tiny_ce))  # nothing missing, nothing doubled


def test_a_truncated_part_is_recomputed_not_a_raw_arrow_error(jsonl, tmp_path, tiny_ce, tiny_ce_path):
    out = tmp_path / "out"
    spec = f"cross-encoder:{tiny_ce_path}"
    run_batch(jsonl, spec, out, part_queries=2)
    part = sorted((out / "parts").glob("*.parquet"))[1]
    part.write_bytes(part.read_bytes()[:100])
    assert run_batch(jsonl, spec, out, part_queries=2).resumed_parts == 2
    check_same(output(out), expected(tiny_ce))


def test_a_typo_in_the_model_writes_no_job_and_the_corrected_rerun_runs(jsonl, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="unknown backend"):
        run_batch(jsonl, "idenity", out)
    assert not (out / "job.json").exists()
    assert run_batch(jsonl, "identity", out).rows == 35


def test_a_job_without_finished_parts_gives_way_to_another(jsonl, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "job.json").write_text(json.dumps({"spec": "random:1", "parts": {}}))
    assert run_batch(jsonl, "identity", out).rows == 35


def test_out_naming_a_file_is_a_config_error(jsonl, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        run_batch(jsonl, "identity", tmp_path / "file")


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("doc_id", "d 1", "whitespace"), ("query_id", "q\t1", "whitespace"), ("doc_id", "", "empty"),
    ("doc_id", True, "not an id"), ("query_id", False, "not an id"), ("text", "\ud800", "not valid text"),
])
def test_ids_a_trec_run_cannot_carry_are_refused_naming_the_line(tmp_path, field, value, problem):
    bad = rows()
    bad[3][field] = value
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in bad))
    with pytest.raises(InvalidInputError, match=f"c.jsonl:4: .*{problem}"):
        read_candidates(path)


def test_invalid_utf8_and_a_truncated_parquet_are_one_line_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows()[:2]) + b'{"query_id": "\xff"}\n')
    with pytest.raises(InvalidInputError, match="c.jsonl:3: .*invalid UTF-8"):
        read_candidates(path)
    table = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(rows()), table)
    table.write_bytes(table.read_bytes()[:200])
    with pytest.raises(InvalidInputError, match="not a readable Parquet file"):
        read_candidates(table)


def test_a_key_in_the_spec_reaches_no_file_of_the_job(jsonl, tmp_path, fake_api):
    from rankrelay.testing import API_KEY

    key = "sk-live-batch-0123456789"
    fake_api.api_key = key
    out = tmp_path / "out"
    run_batch(jsonl, f"tei:{fake_api.url}?api_key={key}", out)
    assert API_KEY != key
    for path in out.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    assert "api_key=***" in (out / "run.trec").read_text().split("\n")[0]


def test_a_trec_run_with_unknown_ids_names_each_and_writes_nothing(tmp_path):
    beir = write_corpus_and_queries(tmp_path / "beir", TEXTS, {"q1": "wing"})
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d0 1 2.0 bm25\nq1 Q0 d99 2 1.0 bm25\nq7 Q0 d1 1 1.0 bm25\n")
    with pytest.raises(InvalidInputError) as err:
        run_batch(run, "identity", tmp_path / "out", corpus=beir)
    message = str(err.value)
    assert "2 unknown id(s)" in message and "query 'q7' is not in" in message and "document 'd99'" in message
    assert not (tmp_path / "out").exists()
