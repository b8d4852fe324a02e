"""Language-model rerankers (Qwen3-Reranker, mxbai v2, bge-reranker-v2-gemma, monoT5) on tiny random models of
each architecture: the backend scores what each model card's own code computes, written here with plain
transformers; the library's guarantees (padding, passages, instruction, cache) hold for them."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import raises_exactly
from numerics import SAME_RUNTIME, assert_scores_close
from tiny_lms import build_causal_lm, build_t5

from rankrelay import load_reranker
from rankrelay.errors import ConfigError, DocumentTooLongError, ModelLoadError, QueryTooLongError
from rankrelay.rerankers.local.prompt_families import FAMILIES, PromptFamily
from rankrelay.rerankers.local.prompted import PromptedReranker

QUERY = "why does a wing stall"
DOCS = ["the wing stall angle of attack", "paris is the capital of france",
        "boundary layer separation at a high angle of attack makes the flow leave the wing and lift falls",
        "cat dog"]
INSTRUCTION = "Given a question, find the passage that answers it"


@pytest.fixture(scope="module")
def lm_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-lms")
    paths = {kind: str(build_causal_lm(root / kind, kind)) for kind in ("qwen3", "qwen2", "gemma")}
    paths["t5"] = str(build_t5(root / "t5"))
    return paths


SPECS = {"qwen3-reranker": "qwen3", "mxbai-rerank-v2": "qwen2", "bge-reranker-gemma": "gemma", "monot5": "t5"}


# -- the model cards' scoring code, with plain transformers ----------------------------------
def card_qwen3(path, query, docs, instruction=None):
    """Qwen/Qwen3-Reranker-0.6B's card: format_instruction, process_inputs, compute_logits (P(yes))."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    prefix = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
              "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
    suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    prefix_tokens = tokenizer.encode(prefix, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(suffix, add_special_tokens=False)
    instruction = instruction or "Given a web search query, retrieve relevant passages that answer the query"
    pairs = [f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}" for doc in docs]
    inputs = tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                       max_length=1024 - len(prefix_tokens) - len(suffix_tokens))
    for i, ele in enumerate(inputs["input_ids"]):
        inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
    inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=1024)
    with torch.no_grad():
        scores = model(**inputs).logits[:, -1, :]
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    pair = torch.nn.functional.log_softmax(torch.stack([scores[:, no], scores[:, yes]], dim=1), dim=1)
    return pair[:, 1].exp().tolist()


def card_mxbai(path, query, docs, instruction=None):
    """mxbai-rerank v2 (mxbai_rerank_v2.py): prefix + query + sep + document + sep + task + suffix; 1 minus 0."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path).eval()

    def ids(x):
        return tokenizer(x, add_special_tokens=False)["input_ids"]

    task = ("You are a search relevance expert who evaluates how well documents match search queries. For each "
            "query-document pair, carefully analyze the semantic relationship between them, then provide your binary "
            "relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:")
    prefix = ids("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                 "<|im_end|>\n<|im_start|>user\n")
    suffix, sep = ids("<|im_end|>\n<|im_start|>assistant\n"), ids("\n")
    query_prompt = f"query: {query}"
    if instruction:
        query_prompt = f"instruction: {instruction}\n{query_prompt}"
    items = [{"input_ids": prefix + ids(query_prompt) + sep + ids(f"document: {d}") + sep + ids(task) + suffix}
             for d in docs]
    inputs = tokenizer.pad(items, padding="longest", pad_to_multiple_of=8, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1, :]
    return (logits[:, ids("1")[0]] - logits[:, ids("0")[0]]).tolist()


def card_gemma(path, query, docs):
    """BAAI/bge-reranker-v2-gemma's card (get_inputs): [bos] A: query, sep, B: passage, sep, prompt; the Yes logit."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    prompt = ("Given a query A and a passage B, determine whether the passage contains an answer to the query by "
              "providing a prediction of either 'Yes' or 'No'.")
    sep_inputs = tokenizer("\n", add_special_tokens=False)["input_ids"]
    prompt_inputs = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    items = []
    for passage in docs:
        query_inputs = tokenizer(f"A: {query}", add_special_tokens=False)["input_ids"]
        passage_inputs = tokenizer(f"B: {passage}", add_special_tokens=False)["input_ids"]
        # prepare_for_model(bos + query, sep + passage, truncation="only_second", add_special_tokens=False) as the
        # card calls it (gone from transformers 5's tokenizers): the two lists joined when nothing is cut
        item = {"input_ids": [tokenizer.bos_token_id] + query_inputs + sep_inputs + passage_inputs}
        item["input_ids"] = item["input_ids"] + sep_inputs + prompt_inputs
        item["attention_mask"] = [1] * len(item["input_ids"])
        items.append(item)
    inputs = tokenizer.pad(items, padding=True, pad_to_multiple_of=8, return_tensors="pt")
    yes_loc = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        return model(**inputs, return_dict=True).logits[:, -1, yes_loc].view(-1).float().tolist()


def card_monot5(path, query, docs):
    """pygaggle's MonoT5: 'Query: q Document: d Relevant:', first decoder step, log-softmax over false/true."""
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = T5ForConditionalGeneration.from_pretrained(path).eval()
    inputs = tokenizer([f"Query: {query} Document: {d} Relevant:" for d in docs], padding=True,
                       return_tensors="pt")
    vocab = tokenizer.get_vocab()
    false_id, true_id = vocab["\u2581false"], vocab["\u2581true"]
    decoder = torch.full((len(docs), 1), model.config.decoder_start_token_id)
    with torch.no_grad():
        logits = model(**inputs, decoder_input_ids=decoder).logits[:, 0, [false_id, true_id]]
    return torch.nn.functional.log_softmax(logits, dim=1)[:, 1].exp().tolist()


def _by_index(res):
    return [r.score for r in sorted(res.results, key=lambda r: r.index)]


def _sigmoid(xs):
    import math

    return [1 / (1 + math.exp(-x)) for x in xs]


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_qwen3_reranker_scores_what_its_model_card_computes(lm_paths, instruction):
    rr = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu")
    res = rr.rerank(QUERY, DOCS, instruction=instruction)
    probabilities = card_qwen3(lm_paths["qwen3"], QUERY, DOCS, instruction)
    assert_scores_close(_sigmoid(_by_index(res)), probabilities)
    assert max(probabilities) - min(probabilities) > 1e-3  # the tiny model tells the documents apart


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_mxbai_v2_scores_what_its_reference_code_computes(lm_paths, instruction):
    rr = load_reranker(f"mxbai-rerank-v2:{lm_paths['qwen2']}", device="cpu", instruction=instruction)
    assert_scores_close(_by_index(rr.rerank(QUERY, DOCS)), card_mxbai(lm_paths["qwen2"], QUERY, DOCS, instruction))


def test_bge_gemma_scores_the_yes_logit_as_its_card_does(lm_paths):
    rr = load_reranker(f"bge-reranker-gemma:{lm_paths['gemma']}", device="cpu")
    assert_scores_close(_by_index(rr.rerank(QUERY, DOCS)), card_gemma(lm_paths["gemma"], QUERY, DOCS))


def test_monot5_scores_true_against_false_at_the_first_decoder_step(lm_paths):
    rr = load_reranker(f"monot5:{lm_paths['t5']}", device="cpu")
    assert_scores_close(_sigmoid(_by_index(rr.rerank(QUERY, DOCS))), card_monot5(lm_paths["t5"], QUERY, DOCS))


@pytest.mark.parametrize("family", list(SPECS))
def test_a_pair_scores_the_same_alone_and_beside_longer_neighbours(lm_paths, family):
    rr = load_reranker(f"{family}:{lm_paths[SPECS[family]]}", device="cpu", score_cache="off", batch_size=8)
    together = _by_index(rr.rerank(QUERY, DOCS))
    alone = [rr.rerank(QUERY, [d]).results[0].score for d in DOCS]
    assert_scores_close(together, alone)
    rows = rr.encoder.preprocess([(rr.render_query(QUERY), d) for d in DOCS])
    mask = rows["attention_mask"]
    if FAMILIES[family].kind == "causal":  # left padding: every row ends with its answer position
        assert bool(mask[:, -1].all()) and not bool(mask[:, 0].all())
    else:
        assert bool(mask[:, 0].all()) and not bool(mask[:, -1].all())


@pytest.mark.parametrize(("family", "yes", "no"), [("qwen3-reranker", "yes", "no"), ("mxbai-rerank-v2", "1", "0"),
                                                   ("bge-reranker-gemma", "Yes", None),
                                                   ("monot5", "\u2581true", "\u2581false")])
def test_the_answer_token_ids_are_the_ones_the_tokenizer_gives(lm_paths, family, yes, no):
    scorer = load_reranker(f"{family}:{lm_paths[SPECS[family]]}", device="cpu").encoder
    assert scorer.tokenizer.convert_ids_to_tokens(scorer.yes_id) == yes
    assert (None if scorer.no_id is None else scorer.tokenizer.convert_ids_to_tokens(scorer.no_id)) == no


def test_the_instruction_reaches_the_prompt_and_keys_the_score_cache(lm_paths):
    rr = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu")
    prompt = rr.encoder.tokenizer.decode(rr.encoder.preprocess([(rr.render_query(QUERY), DOCS[0])])["input_ids"][0])
    assert f"<Instruct>: {FAMILIES['qwen3-reranker'].default_instruction}\n<Query>: {QUERY}\n<Document>: {DOCS[0]}" \
        in prompt and prompt.endswith("</think>\n\n")
    default = _by_index(rr.rerank(QUERY, DOCS))
    per_call = _by_index(rr.rerank(QUERY, DOCS, instruction=INSTRUCTION))  # after the default ran: not a cache hit
    assert per_call != default
    per_spec = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}?instruction={INSTRUCTION}", device="cpu")
    assert per_spec.instruction == INSTRUCTION
    assert_scores_close(_by_index(per_spec.rerank(QUERY, DOCS)), per_call)
    assert_scores_close(_by_index(rr.rerank(QUERY, DOCS)), default)  # the call's instruction did not stick


async def test_the_async_call_takes_its_instruction_too(lm_paths):
    rr = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu")
    res = await rr.arerank(QUERY, DOCS, instruction=INSTRUCTION)
    assert_scores_close(_by_index(res), _by_index(rr.rerank(QUERY, DOCS, instruction=INSTRUCTION)))


def test_a_long_document_becomes_passages_with_the_template_counted(lm_paths):
    rr = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu", max_length=320, score_cache="off")
    rr.warm_up()
    template = rr._planner.query_cost(rr.render_query(QUERY))
    assert template == len(rr.encoder.encode(rr.render_query(QUERY), "")) > 150  # system prompt and all
    long_doc = " ".join(["the boundary layer separation of the flow over the wing"] * 30)
    res = rr.rerank(QUERY, [long_doc, DOCS[0]])
    doc = next(r for r in res.results if r.index == 0)
    (pieces,) = rr.plan_passages(QUERY, [long_doc])[:1]
    assert pieces.split and len(pieces.spans) > 2 and doc.passage in pieces.spans
    lengths = [len(rr.encoder.encode(rr.render_query(QUERY), long_doc[a:b])) for a, b in pieces.spans]
    assert max(lengths) <= 320  # never cut, every window fits
    assert all(b > a2 for (_, b), (a2, _) in zip(pieces.spans, pieces.spans[1:]))  # consecutive passages overlap
    apart = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu", max_length=320, passage_overlap=0)
    spans = apart.plan_passages(QUERY, [long_doc])[0].spans
    assert all(b <= a2 for (_, b), (a2, _) in zip(spans, spans[1:])) and len(spans) < len(pieces.spans)
    best = max(rr.rerank(QUERY, [long_doc[a:b]]).results[0].score for a, b in pieces.spans)
    assert doc.score == pytest.approx(best, abs=1e-5)  # MaxP
    with pytest.raises(DocumentTooLongError):
        load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu", max_length=320,
                      long_documents="error").rerank(QUERY, [long_doc])
    with pytest.raises(QueryTooLongError, match=rf"^the query has {template} tokens and leaves {190 - template} of "
                       "the model's 190 for document text"):  # the template leaves no room for even one passage
        load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu", max_length=190).rerank(QUERY, [DOCS[0]])


def test_cross_encoder_recognises_each_family_from_its_config(lm_paths, tmp_path):
    for family, kind in SPECS.items():
        rr = load_reranker(f"cross-encoder:{lm_paths[kind]}", device="cpu")
        assert isinstance(rr, PromptedReranker) and rr.family is FAMILIES[family] and rr.name == family
    hub = load_reranker("cross-encoder:Qwen/Qwen3-Reranker-4B")  # by its id, before anything is downloaded
    assert isinstance(hub, PromptedReranker) and hub.family.name == "qwen3-reranker"
    other = tmp_path / "llama"
    shutil.copytree(lm_paths["qwen3"], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "llama",
                                                   "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ConfigError, match="no known reranker family.*qwen3-reranker"):
        load_reranker(f"cross-encoder:{other}")


def test_instructions_and_templates_are_checked_at_construction(lm_paths):
    with pytest.raises(ConfigError, match="monot5 family takes no instruction"):
        PromptedReranker(lm_paths["t5"], family="monot5", instruction="find the law")
    rr = load_reranker(f"bge-reranker-gemma:{lm_paths['gemma']}", device="cpu")
    with pytest.raises(ConfigError, match="takes no instruction"):
        rr.rerank(QUERY, DOCS, instruction="find the law")
    with pytest.raises(ConfigError, match="unknown option"):  # the registry knows which families take one
        load_reranker(f"monot5:{lm_paths['t5']}?instruction=x")
    with pytest.raises(ConfigError, match=r"document_template 'B: \{passage\}' lacks \{document\}"):
        PromptFamily("mine", "causal", query_template="A: {query}", document_template="B: {passage}")
    with pytest.raises(ConfigError, match=r"lacks \{instruction\}"):
        PromptFamily("mine", "causal", query_template="{query}", document_template="{document}",
                     instructed_template="{query}")
    with pytest.raises(ConfigError, match="non-blank"):
        PromptedReranker(lm_paths["qwen3"], family="qwen3-reranker", instruction="  ")


def test_an_answer_word_of_several_tokens_is_refused_when_the_model_loads(lm_paths):
    family = PromptFamily("mine", "causal", query_template="{query}\n", document_template="{document}",
                          yes="wing stall", no="no")
    with pytest.raises(ModelLoadError, match=r"'wing stall'.*\d+ tokens"):
        PromptedReranker(lm_paths["qwen3"], family=family, device="cpu").warm_up()


def test_a_causal_family_converts_to_onnx_and_agrees_with_torch(lm_paths, tmp_path):
    pytest.importorskip("onnxruntime")
    torch_rr = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu")
    onnx_rr = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu", runtime="onnx",
                            cache_dir=str(tmp_path))
    assert_scores_close(_by_index(onnx_rr.rerank(QUERY, DOCS)), _by_index(torch_rr.rerank(QUERY, DOCS)),
                        SAME_RUNTIME)
    assert onnx_rr.runtime == "onnx" and onnx_rr.agreement.top10_overlap == 1.0


def test_a_model_that_brings_its_own_code_runs_only_when_trusted(tiny_ce_path, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_ce_path, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_mine.MineModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="trust_remote_code=True"):
        load_reranker(f"cross-encoder:{folder}", device="cpu").warm_up()
    with pytest.raises(ModelLoadError, match="modeling_mine"):  # past the check, transformers looks for the code
        load_reranker(f"cross-encoder:{folder}", device="cpu", trust_remote_code=True).warm_up()


def test_auto_judges_a_prompted_model_on_its_prompt_not_on_the_bare_query(lm_paths):
    """runtime='auto' compares runtimes on the fixed sample; a prompted model must read it as it reads a request."""
    from rankrelay.rerankers.local.sample import sample_pairs

    rr = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu")
    queries, documents = sample_pairs()
    pairs = rr._sample_inputs()
    assert pairs == [(rr.render_query(q), d) for q in queries for d in documents]
    assert all(q.startswith("<Instruct>: ") and q not in queries for q, _ in pairs)


def test_a_sequence_classification_model_whose_name_names_a_family_is_a_cross_encoder(tiny_ce_path, tiny_ce,
                                                                                        tmp_path):
    """A folder called like a prompted family holds a plain BERT cross-encoder: its config decides, not its name."""
    folder = tmp_path / "Qwen3-Reranker-0.6B-seq-cls"
    shutil.copytree(tiny_ce_path, folder)
    rr = load_reranker(f"cross-encoder:{folder}", device="cpu", runtime="torch")
    assert not isinstance(rr, PromptedReranker)
    assert [r.index for r in rr.rerank(QUERY, DOCS)] == [r.index for r in tiny_ce.rerank(QUERY, DOCS)]


@pytest.mark.parametrize(("templates", "message"), [
    ({"query_template": "A: {query}", "document_template": "B: {passage}"},
     "family 'mine': document_template 'B: {passage}' lacks {document}; it takes {document}"),
    ({"query_template": "{query}", "document_template": "{document}", "instructed_template": "{query}"},
     "family 'mine': instructed_template '{query}' lacks {instruction}; it takes {instruction}, {query}"),
    ({"query_template": "{query} {y} {x}", "document_template": "{document}"},
     "family 'mine': query_template '{query} {y} {x}' has unknown {x}, {y}; it takes {query}"),
])
def test_a_family_template_with_the_wrong_fields_is_refused_naming_them_all(templates, message):
    with raises_exactly(ConfigError, message):
        PromptFamily("mine", "causal", **templates)


@pytest.mark.parametrize(("change", "message"), [
    ({"kind": "encoder"}, "family 'mine': kind must be 'causal' or 'seq2seq', got 'encoder'"),
    ({"default_instruction": "find"}, "family 'mine' has a default instruction but no instructed_template"),
    ({"max_length": 7}, "family 'mine': max_length must be >= 8, got 7"),
    ({"query_template": "{query"}, "template '{query' does not parse: expected '}' before end of string"),
])
def test_a_family_that_cannot_prompt_is_refused_at_construction(change, message):
    base = {"name": "mine", "kind": "causal", "query_template": "{query}", "document_template": "{document}"}
    with raises_exactly(ConfigError, message):
        PromptFamily(**(base | change))


@pytest.mark.parametrize("change", [{"kind": "seq2seq"}, {"max_length": 8},
                                    {"instructed_template": "{instruction}: {query}", "default_instruction": "find"}])
def test_a_family_at_the_limits_is_accepted(change):
    base = {"name": "mine", "kind": "causal", "query_template": "{query}", "document_template": "{document}"}
    family = PromptFamily(**(base | change))
    assert family.query_side("q") == ("find: q" if "default_instruction" in change else "q")


def test_a_family_without_instructions_names_those_that_take_one():
    takers = ", ".join(name for name, family in FAMILIES.items() if family.takes_instruction)
    assert takers == "qwen3-reranker, mxbai-rerank-v2"
    with raises_exactly(ConfigError, "the monot5 family takes no instruction (its prompt has no place for one); "
                        f"families that do: {takers}"):
        FAMILIES["monot5"].check_instruction("find the law")


def test_a_language_model_of_no_known_family_is_refused_naming_the_families():
    from rankrelay.rerankers.local.prompt_families import recognise

    message = (f"'org/odd-lm' is a language model (OddForCausalLM, OddLMHeadModel) of no known reranker family; "
               f"load it as <family>:<path> with one of: {', '.join(FAMILIES)}")
    with raises_exactly(ConfigError, message):
        recognise("odd", ["OddForCausalLM", "OddLMHeadModel"], "org/odd-lm")


@pytest.mark.parametrize("call", ["rerank", "arerank", "rerank_batch", "arerank_batch"])
def test_every_way_of_calling_keeps_top_n_the_budget_and_the_calls_own_instruction(lm_paths, call):
    """One call's instruction scores as a model built with it would; top_n and a budget reach the scoring, one
    query or several, sync or async."""
    import asyncio

    path = lm_paths["qwen3"]
    rr = load_reranker(f"qwen3-reranker:{path}", device="cpu", score_cache="off")
    built_with = load_reranker(f"qwen3-reranker:{path}", device="cpu", instruction="Find the cause of a stall")

    def ask(**kw):
        batch = call.endswith("_batch")
        out = getattr(rr, call)([(QUERY, DOCS)] if batch else QUERY, *([] if batch else [DOCS]), **kw)
        out = asyncio.run(out) if call.startswith("a") else out
        return out[0] if batch else out

    expected = built_with.rerank(QUERY, DOCS, top_n=2)
    got = ask(top_n=2, instruction="Find the cause of a stall")
    assert [(r.index, r.score) for r in got] == [(r.index, r.score) for r in expected] and len(got) == 2
    assert [r.score for r in ask(top_n=2)] != [r.score for r in got]  # the default instruction scores otherwise
    assert ask(budget_ms=1e-6).info["reranked"] < len(DOCS) <= len(ask())  # the budget reached the scoring


def test_a_family_named_alone_is_its_first_preset_and_a_family_with_a_model_keeps_its_options(lm_paths):
    from rankrelay.config import PRESETS
    from rankrelay.rerankers.local import prompted

    first = next(p for p in PRESETS.values() if p.backend == "mxbai-rerank-v2")
    alone = load_reranker("mxbai-rerank-v2", batch_size=3)
    assert (alone.model, alone.preset, alone.family.name, alone.batch_size) == (first.model, first.name,
                                                                                 "mxbai-rerank-v2", 3)
    given = load_reranker(f"mxbai-rerank-v2:{lm_paths['qwen2']}", batch_size=3)
    assert (given.model, given.preset, given.family.name, given.batch_size) == (lm_paths["qwen2"], None,
                                                                                 "mxbai-rerank-v2", 3)
    with raises_exactly(ConfigError, "my-family needs a model: my-family:<id or path>"):
        prompted.from_spec("my-family", None)


def test_describe_names_the_family_and_the_instruction_in_force(lm_paths):
    plain = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}").describe()
    told = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", instruction="Find causes").describe()
    assert plain["family"] == "qwen3-reranker" and "instruction" not in plain
    assert (told["family"], told["instruction"]) == ("qwen3-reranker", "Find causes")


def test_auto_measures_a_model_on_the_instruction_it_was_given(lm_paths):
    from rankrelay.rerankers.local.sample import sample_pairs

    rr = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu", instruction="Find causes")
    queries, _ = sample_pairs()
    assert {q for q, _ in rr._sample_inputs()} == {rr.family.query_side(q, "Find causes") for q in queries}
    assert all("Find causes" in q for q, _ in rr._sample_inputs())


def without_token(source, folder, token):
    """A copy of the model at ``source`` whose tokenizer has no ``token`` (``bos_token``, ``pad_token``)."""
    shutil.copytree(source, folder)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).exists():
            config = json.loads((folder / name).read_text())
            config[token] = None
            (folder / name).write_text(json.dumps(config))
    return folder


def test_a_family_whose_prompt_needs_a_special_token_the_tokenizer_lacks_is_refused_naming_it(lm_paths, tmp_path):
    folder = without_token(lm_paths["gemma"], tmp_path / "gemma-without-bos", "bos_token")
    with raises_exactly(ModelLoadError, "the bge-reranker-gemma prompt needs the tokenizer's <bos> token; this "
                                        "tokenizer has none"):
        load_reranker(f"bge-reranker-gemma:{folder}", device="cpu").warm_up()


def test_a_tokenizer_without_a_pad_token_pads_with_its_end_token_and_scores_the_same(lm_paths, tmp_path):
    """Padding is masked out: which id pads changes no score, but a tokenizer without one must still batch."""
    folder = without_token(lm_paths["qwen3"], tmp_path / "qwen3-without-pad", "pad_token")
    rr = load_reranker(f"qwen3-reranker:{folder}", device="cpu")
    rr.warm_up()
    assert rr.encoder.tokenizer.pad_token_id is None and rr.encoder.pad_id == rr.encoder.tokenizer.eos_token_id
    padded = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu")
    assert_scores_close(_by_index(rr.rerank(QUERY, DOCS)), _by_index(padded.rerank(QUERY, DOCS)))


def test_the_loading_options_reach_the_tokenizer_and_the_model(lm_paths, tmp_path, monkeypatch):
    """What a spec passes for the Hub (revision, token, cache folder, remote code) and each part's own keyword
    arguments reach transformers' loaders (recorded on the way, the real loaders load)."""
    import transformers

    seen = {}
    for name in ("AutoTokenizer", "AutoModelForCausalLM"):
        real = getattr(transformers, name).from_pretrained

        def record(location, *args, _name=name, _real=real, **kwargs):
            seen[_name] = kwargs
            return _real(location, *args, **kwargs)

        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", record)
    rr = load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu", revision="main", token="hf_x",
                       cache_folder=str(tmp_path), trust_remote_code=True,
                       tokenizer_kwargs={"model_max_length": 100}, model_kwargs={"attn_implementation": "eager"})
    rr.warm_up()
    common = {"revision": "main", "token": "hf_x", "local_files_only": True, "trust_remote_code": True,
              "cache_dir": str(tmp_path)}
    assert seen["AutoTokenizer"] == {**common, "model_max_length": 100}
    assert seen["AutoModelForCausalLM"] == {**common, "attn_implementation": "eager"}
    assert rr.window == 100 and rr.encoder.lm.config._attn_implementation == "eager"


def test_the_window_is_the_least_of_the_models_positions_the_tokenizers_limit_and_the_familys(lm_paths, tmp_path):
    qwen3 = lm_paths["qwen3"]  # 1,024 positions and a tokenizer limit of 1,024
    assert load_reranker(f"qwen3-reranker:{qwen3}", tokenizer_kwargs={"model_max_length": 4096}).window == 1024
    assert load_reranker(f"qwen3-reranker:{qwen3}", tokenizer_kwargs={"model_max_length": 200}).window == 200
    wide = build_causal_lm(tmp_path / "gemma-2048", "gemma", max_length=2048)
    assert load_reranker(f"bge-reranker-gemma:{wide}").window == 1024  # the family reads at most 1,024
    assert load_reranker(f"bge-reranker-gemma:{wide}", max_length=1500).window == 1500  # asked for: the caller's


def test_a_missing_transformers_names_the_extra_to_install(lm_paths, monkeypatch):
    import sys

    from rankrelay.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match=r"rankrelay\[local\]") as caught:
        load_reranker(f"qwen3-reranker:{lm_paths['qwen3']}", device="cpu").warm_up()
    assert "the qwen3-reranker backend" in str(caught.value)


def test_a_prompted_reranker_of_no_known_family_is_refused_naming_the_known_ones():
    with raises_exactly(ConfigError, f"unknown prompt family 'qwen9'; known: {', '.join(FAMILIES)}"):
        PromptedReranker("some/model", family="qwen9")
    assert ", mxbai-rerank-v2, " in ", ".join(FAMILIES)  # the names, comma-separated
    with raises_exactly(ConfigError, "family must be a family name or a PromptFamily, got 3"):
        PromptedReranker("some/model", family=3)
