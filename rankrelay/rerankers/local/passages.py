"""Long documents: overlapping token windows aligned to word starts, mapped back to character spans.

A document that fits the model's window after the query is one passage (the whole text). A longer
one becomes windows of at most ``budget`` tokens; the reranker scores every window and keeps the
best (MaxP). ``truncate`` keeps the first window and marks the document; ``error`` raises.

Example:
    >>> from rankrelay.rerankers.local.passages import check_long_documents
    >>> check_long_documents("passages")
    'passages'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rankrelay.errors import ConfigError, DocumentTooLongError, ModelLoadError, QueryTooLongError
from rankrelay.lru import LRU

LongDocuments = Literal["passages", "truncate", "error"]
LONG_DOCUMENT_MODES: tuple[str, ...] = ("passages", "truncate", "error")
#: Tokens kept free in each window so that re-tokenizing a span never spills over the limit.
SAFETY_TOKENS = 2
#: A query must leave at least this many tokens for document text.
MIN_DOC_TOKENS = 16


def check_long_documents(mode: str) -> str:
    """Return ``mode`` if known, else raise :class:`ConfigError`."""
    if mode not in LONG_DOCUMENT_MODES:
        raise ConfigError(
            f"unknown long_documents mode {mode!r}; choose one of {', '.join(LONG_DOCUMENT_MODES)}"
        )
    return mode


@dataclass(slots=True)
class Pieces:
    """How one document is scored: its character spans and whether the model sees all of it."""

    spans: list[tuple[int, int]]
    split: bool = False
    truncated: bool = False


def _align(word_ids: Sequence[int], i: int, lo: int, slack: int) -> int:
    """Move token boundary ``i`` back to the start of its word, by at most ``slack`` tokens and
    never to ``lo`` or below; a word longer than that is cut where it stands (word id -1: none)."""
    j = i
    while j > lo + 1 and j > i - slack and word_ids[j] >= 0 and word_ids[j] == word_ids[j - 1]:
        j -= 1
    if word_ids[j] >= 0 and word_ids[j] == word_ids[j - 1]:
        return i
    return j


def _windows(offsets: Any, word_ids: Sequence[int], window: int, stride: int) -> list[tuple[int, int]]:
    """Character spans of overlapping windows of at most ``window`` tokens, cut at word starts."""
    n = len(offsets)
    overlap = window - stride
    slack = max(4, window // 8)
    spans = []
    start = 0
    while True:
        end = start + window
        if end >= n:
            spans.append((int(offsets[start][0]), int(offsets[n - 1][1])))
            return spans
        end = _align(word_ids, end, start, slack)
        spans.append((int(offsets[start][0]), int(offsets[end - 1][1])))
        start = _align(word_ids, max(end - overlap, start + 1), start, slack)


class PassagePlanner:
    """Plans the pieces of each document for one tokenizer and window size.

    Args:
        tokenizer: a Hugging Face *fast* tokenizer (offsets are needed).
        max_length: the model's window in tokens (query + document + special tokens).
        mode: ``passages``, ``truncate`` or ``error``.
        overlap: tokens shared by consecutive windows.
        cache_size: tokenizations kept (an LRU keyed by text): the same candidates for many
            queries are tokenized once.
        pair: the model reads query and document together (a cross-encoder); a bi-encoder
            reads the document alone, and the query must fit the window by itself.
        query_limit: tokens a query encoded apart may have (default: the document window's; ColBERT reads
            queries up to its position table).
    """

    def __init__(
        self, tokenizer: Any, max_length: int, mode: str = "passages", overlap: int = 32, *, pair: bool = True,
        cache_size: int = 20_000, query_limit: int | None = None,
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ModelLoadError(
                "splitting long documents needs a fast (Rust) tokenizer; this model has a slow one"
            )
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.mode = check_long_documents(mode)
        self.overlap = overlap
        self.pair = pair
        self.special = tokenizer.num_special_tokens_to_add(pair=pair)
        self.query_limit = query_limit
        self.cache_size = cache_size
        self._cache: LRU[str, tuple[Any, Any]] = LRU(cache_size)

    def tokenize(self, texts: Sequence[str]) -> list[tuple[Any, Any]]:
        """Per text: token character offsets (n x 2) and word ids (-1 for none), as int32 arrays."""
        import numpy as np

        found = self._cache.get_many(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            enc = self.tokenizer(
                missing,
                add_special_tokens=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                verbose=False,  # lengths beyond the window are the point here, not a mistake
            )
            for i, text in enumerate(missing):
                offsets = np.asarray(enc["offset_mapping"][i], dtype=np.int32).reshape(-1, 2)
                words = np.asarray([-1 if w is None else w for w in enc.word_ids(i)], dtype=np.int32)
                found[text] = (offsets, words)
            self._cache.put_many({t: found[t] for t in missing})
        return [found[t] for t in texts]

    def query_cost(self, query: str) -> int:
        """Tokens of a window that are not document text: ``query``'s and the special tokens (a prompted model
        counts its whole template)."""
        return self.special + len(self.tokenizer(query, add_special_tokens=False, verbose=False)["input_ids"])

    def budget(self, query: str) -> int:
        """Document tokens that fit beside ``query`` in one window."""
        if not self.pair:
            q_tokens = self.query_cost(query) - self.special
            limit = self.query_limit if self.query_limit is not None else self.max_length - self.special
            if q_tokens > limit:
                raise QueryTooLongError(f"the query has {q_tokens} tokens; the model reads at most {limit}")
            return self.max_length - self.special
        cost = self.query_cost(query)
        budget = self.max_length - cost
        if budget < MIN_DOC_TOKENS + SAFETY_TOKENS:
            raise QueryTooLongError(
                f"the query has {cost - self.special} tokens and leaves {max(budget, 0)} of the model's "
                f"{self.max_length} for document text; shorten the query or raise max_length"
            )
        return budget

    def plan(self, query: str, texts: Sequence[str]) -> list[Pieces]:
        """Pieces of every text for ``query``; raises :class:`DocumentTooLongError` in ``error`` mode."""
        budget = self.budget(query)
        encoded = self.tokenize(texts)
        window = budget - SAFETY_TOKENS
        stride = max(1, window - min(self.overlap, window // 2))
        plans = []
        for i, (text, (offsets, word_ids)) in enumerate(zip(texts, encoded)):
            n = len(offsets)
            if n <= budget:
                plans.append(Pieces([(0, len(text))]))
            elif self.mode == "error":
                raise DocumentTooLongError(
                    f"document {i} has {n} tokens; {budget} fit beside the query in the model's "
                    f"window of {self.max_length} (use long_documents='passages' or 'truncate')",
                    index=i,
                    tokens=n,
                    limit=budget,
                )
            elif self.mode == "truncate":
                plans.append(Pieces([(0, len(text))], truncated=True))
            else:
                spans = _windows(offsets, word_ids, window, stride)
                plans.append(Pieces(spans, split=True))
        return plans
