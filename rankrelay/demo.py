"""The main job behind ``make demo``: two-stage search over a real corpus, offline, in-process.

The corpus is the installed standard library's docstrings (or a BEIR folder with ``--dataset``).
A dense FAISS index and a BM25 index are built once and cached; questions go through hybrid
retrieval, then a fallback chain of rerankers: Cohere when a key is set, a cross-encoder preset
when its weights are on this machine, and the bi-encoder (bundled all-MiniLM-L6-v2) otherwise.
:func:`run_demo` returns the results; the CLI (``rankrelay demo``) renders them. Progress notes go
to ``notify`` (the CLI prints them; by default they are logged).
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankrelay import __version__
from rankrelay.config import PRESETS
from rankrelay.errors import InvalidInputError, ModelNotFoundError, RankRelayError
from rankrelay.hashing import short_hash
from rankrelay.hub import find_local
from rankrelay.rerankers import FallbackReranker
from rankrelay.rerankers.hosted.cohere import KEY_ENV
from rankrelay.rerankers.local.runtimes import default_cache_dir
from rankrelay.results import Document

if TYPE_CHECKING:
    from rankrelay.retrieval import HybridRetriever, SearchResult

logger = logging.getLogger(__name__)
Notify = Callable[[str], None]

QUESTIONS = (
    "how do I parse command line arguments",
    "compute a cryptographic hash of some bytes",
    "read rows of a CSV file as dictionaries",
    "wait until a subprocess finishes and get its exit status",
)
CROSS_ENCODER_PRESET = "minilm-l6"
BI_ENCODER = "all-minilm-l6"


def trained_model(dataset: str | None, explicit: str | None = None) -> Path | None:
    """A cross-encoder made by ``rankrelay train`` for this dataset: ``explicit``, else ``models/<dataset name>``."""
    if explicit:
        if not (Path(explicit) / "config.json").exists():
            raise RankRelayError(f"{explicit!r} holds no model (no config.json)")
        return Path(explicit)
    if dataset:
        candidate = Path("models") / Path(dataset).resolve().name
        if (candidate / "config.json").exists():
            return candidate
    return None


def build_chain(notify: Notify = logger.info, trained: Path | None = None) -> FallbackReranker:
    """Cohere (if a key is set) -> the cross-encoder trained on this dataset (if any) -> cross-encoder preset
    (if its weights are here) -> bi-encoder. Local models run on torch: a first demo does not wait for
    ``runtime="auto"`` to measure every runtime (``rankrelay models`` and docs/fast-cpu.md say how)."""
    chain: list[Any] = []
    here = {"device": "cpu", "runtime": "torch"}  # every local stage
    if any(os.environ.get(k) for k in KEY_ENV):
        chain.append({"spec": "cohere:rerank-v3.5", "timeout": 10.0, "max_attempts": 2})
    else:
        notify("cohere: no API key set (RANKRELAY_COHERE_API_KEY or CO_API_KEY); not in the chain")
    if trained is not None:
        notify(f"using the cross-encoder trained on this dataset: {trained}")
        chain.append({"spec": f"cross-encoder:{trained}", **here})
    try:
        local = find_local(PRESETS[CROSS_ENCODER_PRESET].model)
    except ModelNotFoundError:
        local = None
    if local is not None:
        chain.append({"spec": CROSS_ENCODER_PRESET, **here})
    else:
        notify(f"{CROSS_ENCODER_PRESET}: the weights of {PRESETS[CROSS_ENCODER_PRESET].model} are not on "
                      "this machine (no Hub here); using the bi-encoder reranker instead")
    chain.append({"spec": f"bi-encoder:{BI_ENCODER}", **here})
    return FallbackReranker(chain)


def build_retriever(docs: list[Document] | None, key: str, notify: Notify = logger.info, rebuild: bool = False,
                    show_progress: bool = False) -> HybridRetriever:
    """Hybrid (dense + BM25) retriever over ``docs`` (None: the stdlib passages), cached by ``key``."""
    from rankrelay.retrieval import BM25Retriever, DenseRetriever, HybridRetriever
    from rankrelay.retrieval.stdlib_corpus import stdlib_passages

    folder = default_cache_dir() / f"demo-{key}-v{__version__}"  # beside the converted graphs, same folder
    if (folder / "dense" / "manifest.json").exists() and (folder / "bm25" / "bm25.json").exists() and not rebuild:
        try:
            dense = DenseRetriever.load(folder / "dense", device="cpu")
            bm25 = BM25Retriever.load(folder / "bm25")
            notify(f"using the cached index in {folder}")
            return HybridRetriever([dense, bm25])
        except (InvalidInputError, OSError) as exc:  # damaged or cut short: it is only a cache
            logger.warning("the cached demo index in %s cannot be read (%s); building it again", folder, exc)
    docs = stdlib_passages() if docs is None else docs
    if not docs:
        raise RankRelayError("the demo corpus is empty")
    notify(f"indexing {len(docs)} passages (once; cached in {folder}) ...")
    dense = DenseRetriever.build(docs, model=BI_ENCODER, device="cpu", show_progress=show_progress)
    bm25 = BM25Retriever.build(docs)
    dense.save(folder / "dense")
    bm25.save(folder / "bm25")
    return HybridRetriever([dense, bm25])


@dataclass(slots=True)
class DemoRun:
    """What the demo did: the chain it built and one two-stage search result per question."""

    chain: str
    results: list[SearchResult]


def run_demo(dataset: str | None = None, questions: int = 4, rebuild: bool = False, model: str | None = None, *,
             notify: Notify = logger.info, show_progress: bool = False) -> DemoRun:
    """Answer a few questions with a two-stage search; return what served and how ranks moved."""
    from rankrelay.retrieval import TwoStageSearch, load_corpus, load_queries

    if dataset:
        docs = load_corpus(dataset)
        queries = list(load_queries(dataset).values())[:questions]
        key = "beir-" + short_hash(str(Path(dataset).resolve()), 12)
    else:
        docs = None  # read only when the index has to be built
        queries = list(QUESTIONS[:questions])
        key = "stdlib-" + short_hash(f"{sys.version}|{sysconfig.get_paths()['stdlib']}", 12)
    retriever = build_retriever(docs, key, notify, rebuild, show_progress)
    with build_chain(notify, trained_model(dataset, model)) as chain:
        notify(f"reranker chain: {chain.model}")
        results = TwoStageSearch(retriever, chain, retrieve_k=50, top_n=3).batch(queries)
    return DemoRun(chain=chain.model, results=results)
