"""Late interaction (colbert:): tiny ColBERT checkpoints built here, in both layouts, against a MaxSim
computed independently with torch."""

import json
import string

import pytest
import torch
from conftest import MAX_LEN, _bert_vocab
from safetensors.torch import save_file

from rankrelay import load_reranker
from rankrelay.errors import ConfigError, DocumentTooLongError, ModelLoadError, QueryTooLongError

QUERY = "boundary layer separation"
DOCS = ["wing lift", "boundary layer separation of the flow", "cooking pasta", "the boundary of france",
        "pressure angle attack"]
DIM = 8


def build(path, layout, seed=0):
    """A tiny BERT + a linear projection, saved as Stanford ColBERT or as PyLate; returns what the test
    needs to compute MaxSim on its own."""
    from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer

    path.mkdir(parents=True, exist_ok=True)
    markers = ["[unused0]", "[unused1]"] if layout == "stanford" else ["[Q]", "[D]"]
    vocab = _bert_vocab() + (markers if layout == "stanford" else [])
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=MAX_LEN)
    if layout == "pylate":
        tokenizer.add_tokens(markers, special_tokens=True)
    tokenizer.save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=max(tokenizer.get_vocab().values()) + 1, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=MAX_LEN)
    bert = BertModel(config).eval()
    linear = torch.randn(DIM, 32) / 6
    if layout == "stanford":
        state = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
        save_file({**state, "linear.weight": linear}, str(path / "model.safetensors"))
        config.save_pretrained(path)
        (path / "artifact.metadata").write_text(json.dumps({"query_maxlen": 16, "doc_maxlen": 24}))
    else:
        bert.save_pretrained(path)
        (path / "1_Dense").mkdir()
        save_file({"linear.weight": linear}, str(path / "1_Dense" / "model.safetensors"))
        (path / "1_Dense" / "config.json").write_text(json.dumps({"in_features": 32, "out_features": DIM,
                                                                   "bias": False}))
        (path / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]))
        (path / "config_sentence_transformers.json").write_text(json.dumps(
            {"query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 16, "document_length": 24}))
    return bert, linear, tokenizer, markers


def maxsim(bert, linear, tokenizer, markers, query, doc):
    """ColBERT's score written out: [CLS] marker tokens [SEP], the query padded with [MASK] to 16,
    punctuation left out of the document, unit vectors, sum of per-query-token maxima."""
    def embed(text, marker, length=None):
        ids = [tokenizer.cls_token_id, tokenizer.convert_tokens_to_ids(marker),
               *tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.sep_token_id]
        attention = [1] * len(ids)
        if length is not None:
            attention += [0] * (length - len(ids))
            ids += [tokenizer.mask_token_id] * (length - len(ids))
        with torch.no_grad():
            out = bert(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([attention])).last_hidden_state[0]
        vectors = torch.nn.functional.normalize(out @ linear.T, dim=-1)
        if length is None:
            punct = {tokenizer.convert_tokens_to_ids(c) for c in string.punctuation}
            vectors = vectors[[i not in punct for i in ids]]
        return vectors

    q, d = embed(query, markers[0], 16), embed(doc, markers[1])
    return float((q @ d.T).max(dim=1).values.sum())


@pytest.fixture(scope="module", params=["stanford", "pylate"])
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"colbert-{request.param}")
    return path, build(path, request.param)


def test_maxsim_scores_match_an_independent_computation(checkpoint):
    path, parts = checkpoint
    rr = load_reranker(f"colbert:{path}", device="cpu", batch_size=2)
    docs = [*DOCS, "layer, separation! boundary?"]
    res = rr.rerank(QUERY, docs)
    expected = [maxsim(*parts, QUERY, d) for d in docs]
    got = {r.index: r.score for r in res.results}
    assert [got[i] for i in range(len(docs))] == pytest.approx(expected, abs=1e-4)
    assert res.indices == sorted(range(len(docs)), key=lambda i: -expected[i])
    assert res.backend == "colbert"


def test_long_documents_are_scored_by_their_best_passage(checkpoint):
    path, parts = checkpoint
    rr = load_reranker(f"colbert:{path}", device="cpu", passage_overlap=4)
    long = " ".join(["cooking pasta"] * 30 + ["boundary layer separation"])
    res = rr.rerank(QUERY, [long, "wing lift"])
    top = next(r for r in res.results if r.index == 0)
    assert top.passage is not None and top.passage[1] == len(long) and not top.truncated
    start, end = top.passage
    assert top.score == pytest.approx(maxsim(*parts, QUERY, long[start:end]), abs=1e-4)
    with pytest.raises(DocumentTooLongError, match="has 363 tokens"):
        load_reranker(f"colbert:{path}", device="cpu", long_documents="error").rerank(QUERY, [long])
    cut = load_reranker(f"colbert:{path}", device="cpu", long_documents="truncate").rerank(QUERY, [long])
    assert cut.results[0].truncated


def test_bad_input_and_configuration(checkpoint):
    path, _ = checkpoint
    rr = load_reranker(f"colbert:{path}", device="cpu")
    with pytest.raises(QueryTooLongError, match="reads at most 61"):  # the tiny model has 64 positions
        rr.rerank(" ".join(["boundary"] * 70), DOCS)
    assert rr.rerank(QUERY, []).results == []
    with pytest.raises(ConfigError, match="torch runtime"):
        load_reranker(f"colbert:{path}", runtime="onnx")


def test_a_cross_encoder_folder_is_not_a_colbert_model(tiny_ce_path):
    with pytest.raises(ModelLoadError, match="no linear.weight projection"):
        load_reranker(f"colbert:{tiny_ce_path}", device="cpu").warm_up()


def test_passage_embeddings_are_cached_across_queries(checkpoint):
    path, parts = checkpoint
    rr = load_reranker(f"colbert:{path}", device="cpu", cache_size=3, score_cache="off")
    embedded = []
    embed = rr._embed
    rr._embed = lambda kind, texts, *a: (embedded.append((kind, list(texts))), embed(kind, texts, *a))[1]
    rr.rerank(QUERY, DOCS[:3])
    second = rr.rerank("pressure angle", DOCS[:3])
    assert embedded == [("query", [QUERY]), ("doc", DOCS[:3]), ("query", ["pressure angle"])]
    assert {r.index: r.score for r in second.results} == pytest.approx(
        {i: maxsim(*parts, "pressure angle", DOCS[i]) for i in range(3)}, abs=1e-4)
    rr.rerank(QUERY, DOCS[3:])  # two new passages push the oldest out of a cache of 3
    assert len(rr._cache) == 3


def test_weights_that_do_not_fit_the_encoder_are_an_error(tmp_path):
    from safetensors.torch import load_file

    build(tmp_path, "stanford")
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["bert.encoder.layer.1.output.dense.weight"]
    save_file({**state, "bert.extra.weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelLoadError, match=r"do not fit.*output\.dense\.weight.*extra\.weight"):
        load_reranker(f"colbert:{tmp_path}", device="cpu").warm_up()


def test_a_query_longer_than_the_query_length_is_read_whole_and_batches_do_not_change_scores(checkpoint):
    path, parts = checkpoint
    rr = load_reranker(f"colbert:{path}", device="cpu", score_cache="off", batch_size=8)
    long = "boundary layer separation on the wing at a high angle of attack and the pressure of the air flow"
    alone = [{r.index: r.score for r in rr.rerank(q, DOCS).results} for q in (QUERY, long)]
    together = [{r.index: r.score for r in res.results} for res in rr.rerank_batch([(QUERY, DOCS), (long, DOCS)])]
    for a, b in zip(alone, together):
        assert [b[i] for i in range(len(DOCS))] == pytest.approx([a[i] for i in range(len(DOCS))], abs=1e-5)
    assert [alone[1][i] for i in range(len(DOCS))] == pytest.approx(
        [maxsim(*parts, long, d) for d in DOCS], abs=1e-4)  # more than 16 query tokens: none cut, no [MASK]
