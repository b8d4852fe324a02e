"""Hybrid retrieval: dense and BM25 rankings fused (RRF by default, weighted as an option).

Example:
    >>> from rankrelay.retrieval.hybrid import HybridRetriever
    >>> HybridRetriever.__init__.__defaults__
    ('rrf', None, 60, None)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from time import perf_counter

from rankrelay.errors import ConfigError
from rankrelay.results import RerankResult
from rankrelay.retrieval.base import Retriever, warm_up_retriever
from rankrelay.scoring import fuse


class HybridRetriever:
    """Fuse the rankings of several retrievers (each asked for ``depth`` candidates, default ``2 * k``).

    Args:
        retrievers: e.g. ``[dense, bm25]``.
        method: ``rrf`` or ``weighted`` (min-max normalized scores).
        weights: one per retriever.
        k_rrf: the RRF constant.
        depth: candidates asked of each retriever (default: twice the ``k`` of the search).
    """

    name = "hybrid"
    score_normalization = "minmax"

    def __init__(self, retrievers: Sequence[Retriever], method: str = "rrf", weights: Sequence[float] | None = None,
                 k_rrf: int = 60, depth: int | None = None) -> None:
        self.retrievers = list(retrievers)
        self.method = method
        self.weights = weights
        self.k_rrf = k_rrf
        self.depth = depth
        self.model = "+".join(r.name for r in self.retrievers)

    def warm_up(self) -> None:
        """Load every part's encoder now (parts without ``warm_up`` need nothing)."""
        for retriever in self.retrievers:
            warm_up_retriever(retriever)

    def __len__(self) -> int:
        return len(self.retrievers[0])  # type: ignore[arg-type]

    def search(self, query: str, k: int = 100) -> RerankResult:
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[str], k: int = 100) -> list[RerankResult]:
        start = perf_counter()
        depth = self.depth or 2 * k
        per_retriever = [r.search_batch(queries, depth) for r in self.retrievers]
        out = []
        for i in range(len(queries)):
            fused = fuse([rows[i] for rows in per_retriever], self.method, self.weights, self.k_rrf)
            fused = fused.top_k(k) if len(fused) > k else fused
            fused.backend, fused.model = self.name, self.model
            fused.timings = {"total": (perf_counter() - start) * 1000.0 / len(queries), "model": 0.0}
            out.append(fused)
        return out


STORES = {"auto": ("dense", "qdrant"), "faiss": ("dense",), "qdrant": ("qdrant",)}


def open_index(path: str | Path, retriever: str = "hybrid", *, device: str = "auto", store: str = "auto") -> Retriever:
    """Open a folder made by ``rankrelay index`` as a ``dense``, ``bm25`` or ``hybrid`` retriever.

    The dense part is the FAISS index (``dense/``) or the Qdrant collection (``qdrant/``, embedded or on a
    server) the folder holds: ``store`` picks one (``faiss``, ``qdrant``), ``auto`` whichever is there (FAISS
    first). ``hybrid`` falls back to dense alone when the folder has no BM25 index.

    Raises:
        ConfigError: an unknown retriever kind or store, or no such index in ``path``.
    """
    from rankrelay.retrieval.bm25 import BM25Retriever
    from rankrelay.retrieval.dense import DenseRetriever

    if retriever not in ("dense", "bm25", "hybrid"):
        raise ConfigError(f"retriever must be dense, bm25 or hybrid, got {retriever!r}")
    if store not in STORES:
        raise ConfigError(f"store must be auto, faiss or qdrant, got {store!r}")
    path = Path(path)
    dense = next((path / name for name in STORES[store] if (path / name).exists()), None)
    parts: list[Retriever] = []
    if retriever in ("dense", "hybrid") and dense is not None:
        if dense.name == "dense":
            parts.append(DenseRetriever.load(dense, device=device))
        else:
            from rankrelay.retrieval.qdrant import QdrantRetriever

            parts.append(QdrantRetriever.open(dense, device=device))
    if retriever in ("bm25", "hybrid") and (path / "bm25").exists():
        parts.append(BM25Retriever.load(path / "bm25"))
    if not parts or (retriever == "hybrid" and dense is None):
        missing = "bm25" if retriever == "bm25" else "dense" if store == "auto" else store
        raise ConfigError(f"no {missing} index in {path} (build one with 'rankrelay index CORPUS --out {path}')")
    return parts[0] if len(parts) == 1 else HybridRetriever(parts)
