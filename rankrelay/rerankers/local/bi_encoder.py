"""Bi-encoder backend: cosine similarity of sentence-transformers embeddings.

Cheaper and less accurate than a cross-encoder, and it runs anywhere a sentence-transformers
model is available (``bi-encoder:all-minilm-l6`` uses the bundled copy offline). Long documents
are split into passages like the cross-encoder's; the query must fit the window on its own.

Example:
    >>> from rankrelay.rerankers.local.bi_encoder import BiEncoderReranker
    >>> BiEncoderReranker("all-minilm-l6").model
    'sentence-transformers/all-MiniLM-L6-v2'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rankrelay._optional import import_optional
from rankrelay.errors import ConfigError
from rankrelay.hub import ResolvedModel
from rankrelay.lru import LRU
from rankrelay.rerankers.local.model import LocalModelReranker, model_window
from rankrelay.rerankers.local.passages import PassagePlanner
from rankrelay.rerankers.local.runtimes import Forward
from rankrelay.rerankers.local.sample import sample_pairs

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]

DEFAULT_BI_ENCODER = "all-minilm-l6"


class BiEncoderReranker(LocalModelReranker):
    """Rank by cosine similarity between query and passage embeddings (normalized dot product).

    Passage embeddings do not depend on the query, so the last ``cache_size`` of them are kept
    (an LRU keyed by the passage text): reranking the same candidates for many queries embeds
    each passage once.

    Args:
        cache_size: passage embeddings kept (0 turns the cache off).
        **options: see :class:`~rankrelay.rerankers.local.model.LocalModelReranker`.
    """

    name = "bi-encoder"
    relevance = "unit"  # a cosine; below 0 is no relevance
    output = "sentence_embedding"

    def __init__(self, model: str, *, cache_size: int = 20_000, **options: Any) -> None:
        super().__init__(model, **options)
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigError(f"cache_size must be an int >= 0, got {cache_size!r}")
        self.cache_size = cache_size
        self._cache: LRU[str, Any] = LRU(int(cache_size))

    _loaded_state = (*LocalModelReranker._loaded_state, "_cache")

    def _reset_loaded(self) -> None:
        super()._reset_loaded()
        self._cache = LRU(int(getattr(self, "cache_size", 0)))

    def _runtime_changed(self) -> None:
        self._cache = LRU(int(self.cache_size))  # embeddings of the previous runtime are not mixed with the new

    def _load(self, resolved: ResolvedModel, device: str, kwargs: dict[str, Any]) -> Any:
        st = import_optional("sentence_transformers", extra="local", feature="the bi-encoder backend",
                             package="sentence-transformers")
        encoder = st.SentenceTransformer(resolved.location, device=device, **kwargs)
        encoder.max_seq_length = model_window(
            encoder[0].auto_model.config, encoder.max_seq_length, self.max_length
        )
        return encoder

    def _make_planner(self, encoder: Any) -> PassagePlanner:
        return PassagePlanner(
            encoder.tokenizer, encoder.max_seq_length, self.long_documents, self.passage_overlap, pair=False
        )

    def encode(self, texts: list[str], show_progress: bool = False) -> Matrix:
        """Unit-length embeddings of ``texts`` (numpy, float32); one call at a time per model."""
        self.warm_up()
        with self._score_lock:
            return self._embed(texts, show_progress=show_progress)

    def _embed(
        self, texts: list[str], forward: Forward | None = None, show_progress: bool = False, encoder: Any = None
    ) -> Matrix:
        import numpy as np

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        rows = self._forward_batches(list(texts), [len(t) for t in texts], forward, show_progress, encoder)
        emb = np.stack(rows).astype(np.float32, copy=False)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def _sample_inputs(self) -> list[str]:
        queries, documents = sample_pairs()
        return [*queries, *documents]

    def _sample_scores(self, encoder: Any, forward: Forward) -> Any:
        queries, _ = sample_pairs()
        emb = self._embed(self._sample_inputs(), forward, encoder=encoder)
        return emb[: len(queries)] @ emb[len(queries) :].T

    def passage_embeddings(self, passages: list[str]) -> Matrix:
        """Embeddings of ``passages`` (rows in order), from the cache where possible."""
        import numpy as np

        found = self._cache.get_many(passages)
        missing = list(dict.fromkeys(p for p in passages if p not in found))
        if missing:
            vectors = self.encode(missing)
            fresh = dict(zip(missing, vectors))
            found.update(fresh)
            self._cache.put_many(fresh)
        return np.stack([found[p] for p in passages])

    def _score_pairs(self, pairs: list[tuple[str, str]]) -> Sequence[float]:
        queries = list(dict.fromkeys(q for q, _ in pairs))
        passages = list(dict.fromkeys(p for _, p in pairs))
        q_row = {q: i for i, q in enumerate(queries)}
        p_row = {p: i for i, p in enumerate(passages)}
        q_emb = self.encode(queries)
        p_emb = self.passage_embeddings(passages)
        q_idx = [q_row[q] for q, _ in pairs]
        p_idx = [p_row[p] for _, p in pairs]
        return (q_emb[q_idx] * p_emb[p_idx]).sum(axis=1).tolist()


def from_spec(model: str | None, **options: Any) -> BiEncoderReranker:
    """Registry factory: ``bi-encoder:<id, alias or path>``."""
    return BiEncoderReranker(model or DEFAULT_BI_ENCODER, **options)
