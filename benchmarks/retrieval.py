"""First-stage retrieval on a BEIR folder: FAISS flat/HNSW/IVF, BM25, hybrid, and the two-stage pipeline.

Prints: build time and index size; query latency p50/p95 (encode + search) per index; recall@100 of
HNSW/IVF against flat; nDCG@10 (ranx, graded qrels) of BM25, dense and hybrid; the 100k-vector
scaling check; and the pipeline's own overhead outside model calls.

The 100k check: the corpus's document embeddings, each with perturbed copies (Gaussian noise,
sigma 0.05 per coordinate, renormalized) until there are 100,000 vectors; queries are the dataset's
query embeddings. Only index search is timed there (embedding 100k passages on a CPU takes too long).

    python benchmarks/retrieval.py --dataset ../shared/data/cranfield
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from rankrelay import load_reranker
from rankrelay.retrieval import (
    BM25Retriever,
    DenseRetriever,
    HybridRetriever,
    TwoStageSearch,
    load_corpus,
    load_qrels,
    load_queries,
)

logger = logging.getLogger("benchmarks.retrieval")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ndcg10(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> float:
    from ranx import Qrels, Run, evaluate

    judged = {q: d for q, d in qrels.items() if q in run}
    return float(evaluate(Qrels(judged), Run({q: run[q] for q in judged}), "ndcg@10"))


def as_run(results) -> dict[str, float]:
    return {r.id: float(len(results) - i) for i, r in enumerate(results)}  # rank-based: ties cannot reorder


def latency(retriever, queries: list[str], k: int) -> list[float]:
    out = []
    for q in queries:
        start = time.perf_counter()
        retriever.search(q, k)
        out.append((time.perf_counter() - start) * 1000)
    return out


def index_bytes(index) -> int:
    return int(faiss.serialize_index(index).nbytes)


def scaling(doc_vecs: np.ndarray, query_vecs: np.ndarray, n_total: int, k: int, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    copies = int(np.ceil(n_total / len(doc_vecs)))
    big = np.concatenate([doc_vecs] + [doc_vecs + rng.normal(0, 0.05, doc_vecs.shape).astype(np.float32)
                                       for _ in range(copies - 1)])[:n_total]
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    dim = big.shape[1]
    rows = []
    flat = faiss.IndexFlatIP(dim)
    flat.add(big)
    truth = flat.search(query_vecs, k)[1]

    def timed_search(index, reps: int = 3) -> float:
        best = []
        for _ in range(reps):
            start = time.perf_counter()
            for q in query_vecs:
                index.search(q[None, :], k)
            best.append((time.perf_counter() - start) * 1000 / len(query_vecs))
        return min(best)

    flat_ms = timed_search(flat)
    rows.append(("flat", 0.0, flat_ms, 1.0, 1.0))
    for name, spec, construction, knobs in (
        ("hnsw M=32 efC=80", "HNSW32,Flat", 80, (512,)),
        ("hnsw M=64 efC=200 (default)", "HNSW64,Flat", 200, (256, 512, 1024)),
        ("ivf nlist=1024", "IVF1024,Flat", None, (16, 32, 64)),
    ):
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
        start = time.perf_counter()
        if construction is not None:
            index.hnsw.efConstruction = construction
        else:
            index.train(big)
        index.add(big)
        build_s = time.perf_counter() - start
        for knob in knobs:
            if name.startswith("hnsw"):
                index.hnsw.efSearch = knob
            else:
                index.nprobe = knob
            ids = index.search(query_vecs, k)[1]
            recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, truth)])
            ms = timed_search(index)
            label = f"{name}, {'efSearch' if name.startswith('hnsw') else 'nprobe'}={knob}"
            rows.append((label, build_s, ms, recall, flat_ms / ms))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    parser.add_argument("--model", default="all-minilm-l6")
    parser.add_argument("--split", default="test")
    parser.add_argument("--scale", type=int, default=100_000, help="vectors for the scaling check")
    parser.add_argument("--rerank", default="bi-encoder:all-minilm-l6", help="reranker for the pipeline row")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    console = Console(width=150)

    docs = load_corpus(args.dataset)
    queries = load_queries(args.dataset)
    qrels = load_qrels(args.dataset, args.split)
    qids = [q for q in queries if q in qrels]
    texts = [queries[q] for q in qids]

    table = Table(title=f"dense indexes over {len(docs)} documents, {len(qids)} queries ({args.model}, CPU)")
    for col in ("index", "build s", "index MB", "p50 ms", "p95 ms", "recall@100 vs flat", "nDCG@10"):
        table.add_column(col, justify="right")
    start = time.perf_counter()
    flat = DenseRetriever.build(docs, model=args.model, index="flat", device="cpu")
    embed_s = time.perf_counter() - start
    doc_vecs = np.vstack([flat.index.reconstruct(i) for i in range(flat.index.ntotal)])
    flat_runs = flat.search_batch(texts, 100)
    truth = {q: set(r.ids) for q, r in zip(qids, flat_runs)}
    dense_ndcg = ndcg10({q: as_run(r) for q, r in zip(qids, flat_runs)}, qrels)
    rows = [("flat", embed_s, flat)]
    for kind in ("hnsw", "ivf"):
        retriever = DenseRetriever(flat.encoder, None, flat.docs, kind, flat.passages)
        start = time.perf_counter()
        dim = doc_vecs.shape[1]
        if kind == "hnsw":
            index = faiss.index_factory(dim, "HNSW64,Flat", faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 200
            index.hnsw.efSearch = 512
        else:
            lists = max(1, min(int(4 * np.sqrt(len(docs))), len(docs) // 39))
            index = faiss.index_factory(dim, f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT)
            index.train(doc_vecs)
            index.nprobe = max(1, lists // 4)
        index.add(doc_vecs)
        retriever.index = index
        rows.append((kind, time.perf_counter() - start, retriever))
    for kind, build_s, retriever in rows:
        runs = retriever.search_batch(texts, 100)
        recall = statistics.mean(len(set(r.ids) & truth[q]) / max(1, len(truth[q])) for q, r in zip(qids, runs))
        lat = latency(retriever, texts[:100], 100)
        score = ndcg10({q: as_run(r) for q, r in zip(qids, runs)}, qrels)
        build = f"{build_s:.1f}" + (" (embedding)" if kind == "flat" else " (index only)")
        table.add_row(kind, build, f"{index_bytes(retriever.index) / 2**20:.2f}", f"{statistics.median(lat):.2f}",
                      f"{pct(lat, 95):.2f}", f"{recall:.4f}", f"{score:.4f}")
    console.print(table)

    bm25 = BM25Retriever.build(docs)
    hybrid = HybridRetriever([flat, bm25])
    table = Table(title="first stages, nDCG@10 (ranx; graded qrels)")
    for col in ("retriever", "nDCG@10", "p50 ms", "p95 ms"):
        table.add_column(col, justify="right")
    for name, retriever in (("bm25", bm25), ("dense (flat)", flat), ("hybrid (rrf)", hybrid)):
        runs = retriever.search_batch(texts, 100)
        lat = latency(retriever, texts[:100], 100)
        score = dense_ndcg if retriever is flat else ndcg10({q: as_run(r) for q, r in zip(qids, runs)}, qrels)
        table.add_row(name, f"{score:.4f}", f"{statistics.median(lat):.2f}", f"{pct(lat, 95):.2f}")
    console.print(table)

    query_vecs = np.ascontiguousarray(flat.encoder.encode(texts), dtype=np.float32)
    table = Table(title=f"scaling: {args.scale:,} vectors (perturbed copies of the corpus embeddings), k=100, "
                        "one query at a time")
    for col in ("index", "build s", "search ms/query", "recall@100 vs flat", "speed-up vs flat"):
        table.add_column(col, justify="right")
    for label, build_s, ms, recall, speed in scaling(doc_vecs, query_vecs, args.scale, 100):
        table.add_row(label, f"{build_s:.1f}", f"{ms:.3f}", f"{recall:.4f}", f"{speed:.1f}x")
    console.print(table)

    reranker = load_reranker(args.rerank, device="cpu")
    search = TwoStageSearch(hybrid, reranker, retrieve_k=100, top_n=10)
    search.batch(texts[:2])
    own, totals = [], []
    for q in texts[:30]:
        out = search(q)
        retrieval_ms = out.first_stage.timings["total"]
        outside = out.timings["total_ms"] - retrieval_ms - out.timings["model"]
        own.append(outside)
        totals.append(out.timings["total_ms"])
    table = Table(title=f"two-stage pipeline (hybrid top-100 -> {args.rerank} -> top-10), 30 queries")
    for col in ("total ms p50", "outside model and retrieval ms p50", "share of total"):
        table.add_column(col, justify="right")
    table.add_row(f"{statistics.median(totals):.1f}", f"{statistics.median(own):.2f}",
                  f"{sum(own) / sum(totals):.2%}")
    console.print(table)


if __name__ == "__main__":
    main()
