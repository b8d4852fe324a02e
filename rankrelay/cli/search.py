"""``rankrelay index`` a corpus (FAISS or Qdrant, and BM25) and ``search`` it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from rankrelay.cli.common import ConfigOption, QuietOption, app, console, fail, progress_shown, render_result
from rankrelay.errors import ConfigError, RankRelayError


@app.command(short_help="Build a dense index (FAISS or Qdrant) and BM25.")
def index(
    corpus: Annotated[str, typer.Argument(help="BEIR folder or corpus.jsonl, JSON lines with 'text', or .txt lines.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the index.", file_okay=False)],
    model: Annotated[str, typer.Option(help="Bi-encoder id, alias or path.")] = "all-minilm-l6",
    index_type: Annotated[str, typer.Option("--index", help="flat, hnsw or ivf (FAISS).")] = "flat",
    store: Annotated[str, typer.Option(help="faiss (in memory) or qdrant (embedded in OUT, or --qdrant-url).")]
    = "faiss",
    qdrant_url: Annotated[str | None, typer.Option(help="A Qdrant server (key: QDRANT_API_KEY).")] = None,
    collection: Annotated[str, typer.Option(help="The Qdrant collection.")] = "rankrelay",
    bm25: Annotated[bool, typer.Option(help="Also build a BM25 index (for --retriever bm25/hybrid).")] = True,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    quiet: QuietOption = False,
) -> None:
    """Build a dense index (FAISS, or a Qdrant collection), and a BM25 one, over a corpus."""
    from rankrelay.retrieval import BM25Retriever, DenseRetriever, load_corpus

    try:
        if store not in ("faiss", "qdrant"):
            raise ConfigError(f"--store must be faiss or qdrant, got {store!r}")
        docs = load_corpus(corpus)
        if store == "faiss":
            DenseRetriever.build(docs, model=model, index=index_type, device=device,
                                 show_progress=progress_shown(quiet)).save(out / "dense")
        else:
            from rankrelay.retrieval.qdrant import QdrantRetriever

            qdrant = QdrantRetriever.build(docs, model=model, path=None if qdrant_url else out / "qdrant",
                                           url=qdrant_url, collection=collection, device=device,
                                           show_progress=progress_shown(quiet))
            qdrant.save(out / "qdrant")
            qdrant.close()
        if bm25:
            BM25Retriever.build(docs).save(out / "bm25")
    except RankRelayError as exc:
        raise fail(exc) from None
    kind = index_type if store == "faiss" else f"qdrant {collection}"
    console.print(f"indexed {len(docs)} documents into {out} ({kind}{' + bm25' if bm25 else ''})", highlight=False)

@app.command(short_help="Search an index, then rerank the candidates.")
def search(
    index_dir: Annotated[Path, typer.Argument(help="A folder made by 'rankrelay index'.")],
    query: Annotated[str, typer.Argument(help="The query.")],
    rerank_spec: Annotated[
        str | None, typer.Option("--rerank", help="Reranker spec or preset; none: first stage only.")
    ] = None,
    retriever_kind: Annotated[str, typer.Option("--retriever", help="dense, bm25 or hybrid.")] = "hybrid",
    store: Annotated[str, typer.Option(help="The dense store: auto (whichever the folder holds), faiss or qdrant.")]
    = "auto",
    retrieve_k: Annotated[int, typer.Option(min=1, help="First-stage depth.")] = 100,
    top_n: Annotated[int, typer.Option(min=1, help="Results shown.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Search an index: first stage, then (with --rerank) a reranker; shows both ranks and the timings."""
    from rankrelay.rerankers import load_reranker, load_settings
    from rankrelay.retrieval import TwoStageSearch, open_index

    try:
        retriever = open_index(index_dir, retriever_kind, store=store)
        reranker = None
        if rerank_spec:
            reranker = load_reranker(rerank_spec, settings=load_settings(str(config) if config else None))
        two_stage = TwoStageSearch(retriever, reranker, retrieve_k=retrieve_k, top_n=top_n)
        start = time.perf_counter()
        two_stage.warm_up()  # loading models is reported apart, not as the query's retrieve or rerank time
        load_ms = (time.perf_counter() - start) * 1000.0
        out = two_stage(query)
    except RankRelayError as exc:
        raise fail(exc) from None
    if as_json:
        data = out.to_dict()
        data["movement"] = out.movement
        data["load_ms"] = load_ms
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    console.print(render_result(out, title=f"{out.served_by} — {query!r}",
                                first_ranks=[m["first_rank"] for m in out.movement]))
    t = out.timings
    console.print(f"retrieve {t['retrieve_ms']:.1f} ms, rerank {t['rerank_ms']:.1f} ms, total {t['total_ms']:.1f} ms "
                  f"(loading the models before it: {load_ms:.0f} ms)")
