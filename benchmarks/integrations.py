"""The framework adapters' own cost at 100 candidates: LangChain, LlamaIndex and Haystack against a bare
``reranker.rerank`` on the same texts, same model object, one run.

The model is MiniLM-L6 built from the bundled all-MiniLM-L6-v2 weights with a fresh head (the cost of the
ms-marco-MiniLM-L-6-v2 preset; see ``overhead.py``); the score cache is off so every call runs the model.
Two numbers per framework:

- own share: the adapter's time outside the rerank call it makes (reading texts, copying documents,
  adding metadata), measured around that inner call, over the rerank call's time. Precise: the target.
- wall ratio: median adapter call / median bare call, interleaved (noisy on a shared machine).

    python benchmarks/integrations.py --dataset ../shared/data/cranfield
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overhead import build_minilm_cross_encoder, load_texts
from rich.console import Console
from rich.table import Table

from rankrelay import load_reranker
from rankrelay.rerankers.base import Reranker

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
logger = logging.getLogger("benchmarks.integrations")
QUERY = "how does the boundary layer behave at high speed"
TARGET = 0.02


class Timed:
    """A reranker that records how long each inner ``rerank`` takes (what the adapter waits on)."""

    def __init__(self, inner: Reranker) -> None:
        self.inner = inner
        self.last = 0.0

    def rerank(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.rerank(*args, **kwargs)
        finally:
            self.last = time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def adapters(timed: Timed, texts: list[str], top_n: int) -> dict[str, Callable[[], Any]]:
    """One call per framework over ``texts`` as that framework's documents (with metadata)."""
    from haystack import Document as HaystackDocument
    from langchain_core.documents import Document as LangChainDocument
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from rankrelay.integrations.haystack import RankRelayRanker
    from rankrelay.integrations.langchain import RankRelayRerank as LangChainRerank
    from rankrelay.integrations.llamaindex import RankRelayRerank as LlamaIndexRerank

    meta = [{"doc_id": f"d{i}", "source": "bench", "position": i} for i in range(len(texts))]
    lc_docs = [LangChainDocument(t, metadata=m) for t, m in zip(texts, meta)]
    li_nodes = [NodeWithScore(node=TextNode(text=t, id_=m["doc_id"]), score=0.5) for t, m in zip(texts, meta)]
    hs_docs = [HaystackDocument(content=t, meta=m) for t, m in zip(texts, meta)]
    langchain = LangChainRerank(reranker=timed, top_n=top_n)
    llamaindex = LlamaIndexRerank(reranker=timed, top_n=top_n)
    haystack = RankRelayRanker(reranker=timed, top_k=top_n)
    return {
        "langchain": lambda: langchain.compress_documents(lc_docs, QUERY),
        "llamaindex": lambda: llamaindex.postprocess_nodes(li_nodes, QueryBundle(QUERY)),
        "haystack": lambda: haystack.run(query=QUERY, documents=hs_docs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="BEIR folder whose corpus gives the candidates")
    parser.add_argument("--model", help="cross-encoder path or id (default: MiniLM-L6 from bundled weights)")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--top-n", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=6, help="timed calls per framework (and as many bare)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = args.model or build_minilm_cross_encoder(Path(tempfile.gettempdir()) / "rankrelay-bench-minilm-ce")
    rr = load_reranker(f"cross-encoder:{model}", device="cpu", score_cache="off")
    rr.warm_up()
    texts = load_texts(args.dataset, args.candidates)
    timed = Timed(rr)
    calls = adapters(timed, texts, args.top_n)
    rr.rerank(QUERY, texts[:8])
    for call in calls.values():  # the frameworks' first-call costs (imports, validators) are not the adapter's
        call()

    rows = []
    for name, call in calls.items():
        bare, wrapped, own = [], [], []
        for rep in range(args.repeats):  # alternate which goes first: the second of a pair runs warmer
            for which in ((0, 1) if rep % 2 == 0 else (1, 0)):
                start = time.perf_counter()
                if which == 0:
                    rr.rerank(QUERY, texts, top_n=args.top_n)
                    bare.append(time.perf_counter() - start)
                else:
                    call()
                    total = time.perf_counter() - start
                    wrapped.append(total)
                    own.append((total - timed.last, timed.last))
        share = statistics.median(o / inner for o, inner in own)
        rows.append((name, statistics.median(bare), statistics.median(wrapped), share,
                     statistics.median(o for o, _ in own) * 1000))
        logger.info("%s: bare %.3fs adapter %.3fs own %.2f%%", name, rows[-1][1], rows[-1][2], share * 100)

    table = Table(title=f"framework adapters vs reranker.rerank ({args.candidates} candidates, top {args.top_n}, "
                        f"{Path(model).name}, CPU)")
    for col in ("framework", "bare s (median)", "adapter s (median)", "wall ratio", "own ms", "own share", "target"):
        table.add_column(col, justify="right")
    for name, bare, wrapped, share, own_ms in rows:
        verdict = f"<= {TARGET:.0%} " + ("ok" if share <= TARGET else "MISSED")
        table.add_row(name, f"{bare:.3f}", f"{wrapped:.3f}", f"{wrapped / bare:.3f}", f"{own_ms:.2f}",
                      f"{share:.2%}", verdict)
    Console(width=160).print(table)
    Console(width=160).print("own share: the adapter's time outside the rerank call it makes / that call's time "
                             "(median of the calls). wall ratio: median adapter call / median bare call, interleaved.")


if __name__ == "__main__":
    main()
