"""`rerank-batch --ray` on a local Ray that the test starts (2 CPUs): equal to the in-process run row for
row, and an actor killed mid-part loses and duplicates nothing."""

import json
import os
import sys

import pytest
from conftest import finishes, require

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.ray
pq = pytest.importorskip("pyarrow.parquet", reason="the batch extra is not installed")

from rankrelay import BackendUnavailableError, ConfigError, MissingDependencyError  # noqa: E402
from rankrelay.batch import run_batch  # noqa: E402
from rankrelay.distributed import check_reachable, ray_module  # noqa: E402
from rankrelay.distributed.data import KILL_ONCE_ENV  # noqa: E402

QUERIES = [f"query {i} about the wing stall and the boundary layer" for i in range(12)]
TEXTS = ["the wing stall and the angle of attack", "python sort is stable", "paris is the capital of france",
         "boundary layer separation on the wing", "cat and dog", "lift and drag of a wing"]


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """Ray on this machine with 2 CPUs; the kill hook armed but held (its marker exists)."""
    marker = tmp_path_factory.mktemp("ray") / "killed"
    marker.write_text("held")
    os.environ[KILL_ONCE_ENV] = str(marker)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {KILL_ONCE_ENV: str(marker)}})
    except Exception as exc:  # a sandbox without the ports or shared memory Ray needs
        require(False, f"Ray cannot start here: {type(exc).__name__}: {exc}")
    yield marker
    ray.shutdown()
    os.environ.pop(KILL_ONCE_ENV, None)


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    path = tmp_path_factory.mktemp("cands") / "c.jsonl"
    path.write_text("".join(json.dumps({"query_id": f"q{i}", "query": q, "doc_id": f"d{k}", "text": t}) + "\n"
                            for i, q in enumerate(QUERIES) for k, t in enumerate(TEXTS)))
    return path


def table(folder):
    data = pq.read_table(folder / "reranked.parquet").to_pydict()
    return list(zip(data["query_id"], data["doc_id"], data["rank"], data["score"], data["input_rank"]))


def test_ray_output_equals_in_process_row_for_row(local_ray, candidates, tmp_path, tiny_ce_path):
    spec = f"cross-encoder:{tiny_ce_path}"
    here = run_batch(candidates, spec, tmp_path / "here", part_queries=3)
    there = run_batch(candidates, spec, tmp_path / "ray", part_queries=3, use_ray=True, actors=2)
    assert (there.parts, there.rows) == (here.parts, here.rows) == (4, 72)
    a, b = table(tmp_path / "here"), table(tmp_path / "ray")
    assert [r[:3] + r[4:] for r in a] == [r[:3] + r[4:] for r in b]
    assert all(abs(x[3] - y[3]) <= 1e-4 * max(1.0, abs(x[3])) for x, y in zip(a, b))


def test_an_actor_killed_mid_part_is_retried_and_no_row_is_lost_or_doubled(local_ray, candidates, tmp_path,
                                                                           tiny_ce_path):
    local_ray.unlink()  # arm: the first actor to start a part dies
    summary = run_batch(candidates, f"cross-encoder:{tiny_ce_path}", tmp_path / "out", part_queries=2,
                        use_ray=True, actors=2)
    assert local_ray.exists()  # an actor did die
    rows = table(tmp_path / "out")
    assert summary.rows == len(rows) == 72 and summary.parts == 6
    assert sorted((q, d) for q, d, *_ in rows) == sorted((f"q{i}", f"d{k}") for i in range(12) for k in range(6))
    per_query = {}
    for q, _, rank, *_ in rows:
        per_query.setdefault(q, []).append(rank)
    assert all(ranks == list(range(1, 7)) for ranks in per_query.values())


def test_ray_needs_a_spec_it_can_ship(local_ray, candidates, tmp_path, tiny_ce):
    with pytest.raises(ConfigError, match="needs the reranker as a spec"):
        run_batch(candidates, tiny_ce, tmp_path / "out", use_ray=True)


def test_an_unreachable_cluster_fails_fast_naming_it(refused_url):
    address = refused_url.replace("http://", "")
    with pytest.raises(BackendUnavailableError, match=f"Ray cluster at {address}"):
        finishes(lambda: check_reachable(address))


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"rankrelay\[ray\]"):
        ray_module()


def test_bench_on_ray_scores_like_bench_here(local_ray, tmp_path, tiny_ce_path):
    from rankrelay.evaluation import compare, write_trec

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    corpus, queries, qrels, run = [], [], ["query-id\tcorpus-id\tscore"], {}
    for q in range(6):
        queries.append({"_id": f"q{q}", "text": f"why does the wing stall {q}"})
        ids = [f"q{q}d{i}" for i in range(8)]
        corpus += [{"_id": d, "title": "", "text": TEXTS[i % len(TEXTS)] + f" {q}"} for i, d in enumerate(ids)]
        qrels += [f"q{q}\t{ids[0]}\t2", f"q{q}\t{ids[3]}\t1"]
        run[f"q{q}"] = [(d, float(8 - i)) for i, d in enumerate(ids)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    write_trec(tmp_path / "cands.trec", run, "fixed")
    specs = ["identity", "random:3", f"cross-encoder:{tiny_ce_path}"]
    here = compare(folder, str(tmp_path / "cands.trec"), specs, progress=False)
    there = compare(folder, str(tmp_path / "cands.trec"), specs, progress=False, use_ray=True)
    assert there.queries == here.queries and set(there.runs) == set(here.runs)
    for name in here.runs:
        a, b = here.runs[name], there.runs[name]
        assert b.served_by == a.served_by and set(b.latency_ms) == set(a.latency_ms) == set(here.queries)
        for q in here.queries:
            assert [d for d, _ in b.rankings[q]] == [d for d, _ in a.rankings[q]] or name.startswith("cross")
            assert [s for _, s in b.rankings[q]] == pytest.approx([s for _, s in a.rankings[q]], rel=1e-4, abs=1e-4)
        assert there.metrics[name] == pytest.approx(here.metrics[name], abs=1e-6)
    with pytest.raises(ConfigError, match="needs the reranker as a spec"):
        from rankrelay import load_reranker

        compare(folder, str(tmp_path / "cands.trec"), [load_reranker("identity")], progress=False, use_ray=True)
