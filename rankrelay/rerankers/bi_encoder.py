"""Bi-encoder backend: cosine similarity of sentence-transformers embeddings.

Cheaper and less accurate than a cross-encoder, and it runs anywhere a sentence-transformers
model is available (``bi-encoder:all-minilm-l6`` uses the bundled copy offline). Long documents
are split into passages like the cross-encoder's; the query must fit the window on its own.

Example:
    >>> from rankrelay.rerankers.bi_encoder import BiEncoderReranker
    >>> BiEncoderReranker("all-minilm-l6").model
    'sentence-transformers/all-MiniLM-L6-v2'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.hub import ResolvedModel
from rankrelay.rerankers.local import LocalModelReranker, model_window
from rankrelay.rerankers.passages import PassagePlanner

DEFAULT_BI_ENCODER = "all-minilm-l6"


class BiEncoderReranker(LocalModelReranker):
    """Rank by cosine similarity between query and passage embeddings (normalized dot product)."""

    name = "bi-encoder"

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

    def encode(self, texts: list[str]) -> Any:
        """Unit-length embeddings of ``texts`` (numpy, float32)."""
        return self.encoder.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def _score_pairs(self, pairs: list[tuple[str, str]]) -> Sequence[float]:
        queries = list(dict.fromkeys(q for q, _ in pairs))
        passages = list(dict.fromkeys(p for _, p in pairs))
        q_row = {q: i for i, q in enumerate(queries)}
        p_row = {p: i for i, p in enumerate(passages)}
        q_emb = self.encode(queries)
        p_emb = self.encode(passages)
        q_idx = [q_row[q] for q, _ in pairs]
        p_idx = [p_row[p] for _, p in pairs]
        return (q_emb[q_idx] * p_emb[p_idx]).sum(axis=1).tolist()


def from_spec(model: str | None, **options: Any) -> BiEncoderReranker:
    """Registry factory: ``bi-encoder:<id, alias or path>``."""
    return BiEncoderReranker(model or DEFAULT_BI_ENCODER, **options)
