"""The batch job's folder and run contract, with reference rerankers (no model): what ``job.json`` records, when
a folder is another job's, damaged records, the part size, progress, the outputs' types and the TREC tag, and
what run_batch hands to Ray (what mutation testing found unchecked: tests/mutation/run.py --only job)."""

import json

import pytest
from conftest import write_corpus_and_queries

pytest.importorskip("pyarrow", reason="the batch extra is not installed")
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from rankrelay import ConfigError  # noqa: E402
from rankrelay.batch import run_batch  # noqa: E402
from rankrelay.batch.candidates import rerank_part  # noqa: E402
from rankrelay.batch.job import BatchJob, job_manifest  # noqa: E402
from rankrelay.hashing import file_sha256  # noqa: E402
from rankrelay.rerankers.reference import IdentityReranker  # noqa: E402

DOCS = ["alpha", "beta", "gamma"]


def candidates(path, queries=5):
    """``queries`` queries, each with the three documents."""
    path.write_text("".join(json.dumps({"query_id": f"q{n}", "query": f"query {n}", "doc_id": f"d{i}", "text": t})
                            + "\n" for n in range(queries) for i, t in enumerate(DOCS)))
    return path


@pytest.fixture
def jsonl(tmp_path):
    return candidates(tmp_path / "c.jsonl")


def test_job_json_records_the_manifest_and_each_parts_rows_and_checksum(jsonl, tmp_path):
    out = tmp_path / "out"
    run_batch(jsonl, "identity", out, part_queries=2, top_n=2)
    text = (out / "job.json").read_text(encoding="utf-8")
    job = json.loads(text)
    assert text == json.dumps(job, indent=2) + "\n"  # a person reads it
    assert {k: v for k, v in job.items() if k != "parts"} == {
        "input": str(jsonl), "input_sha256": file_sha256(jsonl), "corpus": None, "spec": "identity",
        "part_queries": 2, "top_n": 2}
    assert sorted(job["parts"]) == ["0", "1", "2"]
    assert [job["parts"][n]["rows"] for n in ("0", "1", "2")] == [4, 4, 2]
    for n, record in job["parts"].items():
        assert record["sha256"] == file_sha256(out / "parts" / f"part-{int(n):05d}.parquet")
    assert sorted(p.name for p in out.iterdir()) == ["job.json", "parts", "reranked.parquet", "run.trec"]


def test_a_reranker_object_is_recorded_by_its_label_and_a_trec_runs_corpus_by_its_path(tmp_path):
    beir = write_corpus_and_queries(tmp_path / "beir", DOCS, {"q1": "which"})
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d2 1 3.0 bm25\nq1 Q0 d0 2 2.0 bm25\n")
    manifest = job_manifest(run, beir, IdentityReranker(), 8, None)
    assert manifest == {"input": str(run), "input_sha256": file_sha256(run), "corpus": str(beir), "spec": "identity",
                        "part_queries": 8, "top_n": None}
    summary = run_batch(run, "identity", tmp_path / "out", corpus=beir)
    assert json.loads((tmp_path / "out" / "job.json").read_text())["corpus"] == str(beir)
    assert summary.rows == 2


def test_a_spec_with_a_key_is_recorded_redacted():
    manifest = job_manifest(__file__, None, "tei:http://127.0.0.1:9?api_key=sk-secret-123456", 1, None)
    assert manifest["spec"] == "tei:http://127.0.0.1:9?api_key=***"


@pytest.mark.parametrize(("change", "differs"), [({"top_n": 1}, "top_n"), ({"part_queries": 3}, "part_queries"),
                                                 ({"top_n": 1, "part_queries": 3}, "part_queries, top_n")])
def test_a_folder_with_another_jobs_parts_is_refused_naming_what_differs(jsonl, tmp_path, change, differs):
    out = tmp_path / "out"
    run_batch(jsonl, "identity", out, part_queries=2, top_n=2)
    options = {"part_queries": 2, "top_n": 2} | change
    with pytest.raises(ConfigError) as err:
        run_batch(jsonl, "identity", out, **options)
    assert str(err.value) == (f"{out} holds another batch job with finished parts (it differs in {differs}); "
                              "use a new --out folder or delete it")


def test_another_corpus_or_input_is_another_job(jsonl, tmp_path):
    out = tmp_path / "out"
    run_batch(jsonl, "identity", out)
    other = candidates(tmp_path / "other.jsonl", queries=2)
    with pytest.raises(ConfigError, match=r"differs in input, input_sha256\)"):
        run_batch(other, "identity", out)
    with pytest.raises(ConfigError, match=r"differs in spec\)"):
        run_batch(jsonl, "random", out)


@pytest.mark.parametrize(("content", "why"), [("{half", "Expecting property name"), ("[1, 2]", "not an object")])
def test_a_damaged_job_json_is_a_config_error_saying_how_to_start_again(jsonl, tmp_path, content, why):
    out = tmp_path / "out"
    out.mkdir()
    (out / "job.json").write_text(content)
    with pytest.raises(ConfigError) as err:
        run_batch(jsonl, "identity", out)
    message = str(err.value)
    assert message.startswith(f"{out / 'job.json'} is damaged (") and why in message
    assert message.endswith(f"); delete {out} to start the job again")


def test_a_job_json_whose_parts_are_not_an_object_starts_the_parts_again(jsonl, tmp_path):
    out = tmp_path / "out"
    run_batch(jsonl, "identity", out, part_queries=2)
    job = json.loads((out / "job.json").read_text())
    (out / "job.json").write_text(json.dumps(job | {"parts": ["0", "1"]}))
    summary = run_batch(jsonl, "identity", out, part_queries=2)
    assert (summary.resumed_parts, summary.parts) == (0, 3)
    assert sorted(json.loads((out / "job.json").read_text())["parts"]) == ["0", "1", "2"]


def test_a_part_changed_after_it_was_checked_is_never_joined(jsonl, tmp_path):
    out = tmp_path / "out"
    run_batch(jsonl, "identity", out, part_queries=2)
    job = BatchJob(out, job_manifest(jsonl, None, "identity", 2, None))
    assert all(job.done(i) for i in range(3))
    job.part_path(1).write_bytes(job.part_path(0).read_bytes())
    with pytest.raises(ConfigError) as err:
        job.finish(3, "t")
    assert str(err.value) == f"{job.part_path(1)} changed while the job ran; run the job again to recompute it"


def test_the_default_part_is_64_queries(tmp_path):
    assert run_batch(candidates(tmp_path / "a.jsonl", 64), "identity", tmp_path / "a").parts == 1
    assert run_batch(candidates(tmp_path / "b.jsonl", 65), "identity", tmp_path / "b").parts == 2


@pytest.mark.parametrize(("options", "message"), [({"part_queries": 0}, "part_queries must be >= 1, got 0"),
                                                  ({"top_n": 0}, "top_n must be >= 1 or None, got 0")])
def test_a_part_size_or_top_n_under_one_is_refused_before_any_file(jsonl, tmp_path, options, message):
    with pytest.raises(ConfigError) as err:
        run_batch(jsonl, "identity", tmp_path / "out", **options)
    assert str(err.value) == message and not (tmp_path / "out").exists()


def test_top_n_one_keeps_each_querys_best(jsonl, tmp_path):
    summary = run_batch(jsonl, "identity", tmp_path / "out", top_n=1)
    table = pq.read_table(tmp_path / "out" / "reranked.parquet").to_pydict()
    assert summary.rows == 5 and set(table["doc_id"]) == {"d0"} and set(table["rank"]) == {1}


def test_progress_counts_parts_done_and_a_resumed_run_starts_from_those_found(jsonl, tmp_path):
    out, calls = tmp_path / "out", []
    run_batch(jsonl, "identity", out, part_queries=2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    (out / "parts" / "part-00002.parquet").unlink()
    calls.clear()
    summary = run_batch(jsonl, "identity", out, part_queries=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 3), (3, 3)] and summary.resumed_parts == 2


def test_the_outputs_have_the_documented_types_and_paths(jsonl, tmp_path):
    out = tmp_path / "out"
    summary = run_batch(jsonl, "identity", out)
    assert (summary.parquet, summary.trec) == (str(out / "reranked.parquet"), str(out / "run.trec"))
    schema = pq.read_schema(summary.parquet)
    assert [(f.name, f.type) for f in schema] == [
        ("query_id", pa.string()), ("doc_id", pa.string()), ("rank", pa.int32()), ("score", pa.float64()),
        ("normalized_score", pa.float64()), ("input_rank", pa.int32()), ("backend", pa.string())]


@pytest.mark.parametrize(("spec", "tag"), [("identity", "rankrelay-identity"), ("random: 7", "rankrelay-random:7"),
                                           (["random", "identity"], "rankrelay")])
def test_the_trec_run_is_tagged_with_the_spec_without_whitespace(jsonl, tmp_path, spec, tag):
    summary = run_batch(jsonl, spec, tmp_path / "out")
    lines = open(summary.trec, encoding="utf-8").read().splitlines()
    assert len(lines) == 15 and {line.split(" ")[-1] for line in lines} == {tag}


def test_a_reranker_object_the_caller_passed_is_not_closed(jsonl, tmp_path):
    class Tracked(IdentityReranker):
        closed = 0

        def close(self):
            self.closed += 1

    reranker = Tracked()
    run_batch(jsonl, reranker, tmp_path / "out")
    assert reranker.closed == 0
    assert open(tmp_path / "out" / "run.trec").readline().split(" ")[-1] == "rankrelay\n"


def test_on_ray_the_job_hands_over_exactly_the_parts_not_done_with_top_n_and_actors(jsonl, tmp_path, monkeypatch):
    """What run_batch gives Ray's executor (tested with real Ray in tests/distributed), here an in-process one."""
    import rankrelay.distributed.data as data

    seen = []

    def here(spec, parts, top_n, actors=None):
        seen.append((spec, [n for n, _ in parts], top_n, actors))
        reranker = IdentityReranker()
        for number, part in parts:
            yield number, rerank_part(reranker, part, top_n)

    monkeypatch.setattr(data, "rerank_parts_on_ray", here)
    out = tmp_path / "out"
    run_batch(jsonl, "identity", out, part_queries=2, top_n=2, use_ray=True, actors=3)
    (out / "parts" / "part-00001.parquet").unlink()
    summary = run_batch(jsonl, "identity", out, part_queries=2, top_n=2, use_ray=True, actors=3)
    assert seen == [("identity", [0, 1, 2], 2, 3), ("identity", [1], 2, 3)]
    assert summary.rows == 10
