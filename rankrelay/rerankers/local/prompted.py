"""Language-model rerankers scored from an answer token: Qwen3-Reranker, mxbai-rerank v2, bge-reranker-v2-gemma, monoT5.

The prompt of each family is in :mod:`rankrelay.rerankers.local.prompt_families`; this module loads the model
with transformers and gives it the library's guarantees: long documents become passages (the template's tokens
counted), length buckets, the score cache (the instruction is part of its key), budgets, runtimes and precision.
The raw score is ``logit(yes) - logit(no)`` (or the ``yes`` logit alone), so ``normalize="sigmoid"`` gives the
model card's probability.

Example:
    >>> from rankrelay.rerankers.local.prompted import PromptedReranker
    >>> rr = PromptedReranker("Qwen/Qwen3-Reranker-0.6B", family="qwen3-reranker", instruction="Find the law")
    >>> rr.name, rr.render_query("tax on bread")[:28]      # nothing is loaded until warm_up() or the first call
    ('qwen3-reranker', '<Instruct>: Find the law\\n<Qu')
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.config import PRESETS
from rankrelay.errors import ConfigError, ModelLoadError
from rankrelay.hub import ResolvedModel
from rankrelay.rerankers.local.model import model_window
from rankrelay.rerankers.local.pairs import PairModelReranker
from rankrelay.rerankers.local.passages import PassagePlanner
from rankrelay.rerankers.local.prompt_families import BOS, EOS, FAMILIES, PromptFamily
from rankrelay.results import RerankResult

logger = logging.getLogger(__name__)

#: the instruction of the call in progress (``rerank(..., instruction=...)``)
_call_instruction: contextvars.ContextVar[str | None] = contextvars.ContextVar("rankrelay_instruction", default=None)


def _scorer_class() -> Any:
    """:class:`PromptedScorer`'s class, built on first use so that importing this module needs no torch."""
    import torch

    class PromptedScorer(torch.nn.Module):
        """A language model and its family's prompt as a scoring module: ``preprocess(pairs)`` makes the token
        tensors, ``forward(features)["scores"]`` the answer logit margin (one per pair). Pairs are
        ``(query side, document text)``."""

        def __init__(self, lm: Any, tokenizer: Any, family: PromptFamily, max_seq_length: int) -> None:
            super().__init__()
            self.lm, self.tokenizer, self.family = lm, tokenizer, family
            self.max_seq_length = max_seq_length
            self.head = [t for part in family.head for t in self._special_or_text(part)]
            self.tail = [t for part in family.tail for t in self._special_or_text(part)]
            self.separator = None if family.separator is None else self.ids(family.separator)
            self.yes_id = self._answer_id(family.yes)
            self.no_id = None if family.no is None else self._answer_id(family.no)
            pad = tokenizer.pad_token_id
            self.pad_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))
            if family.kind == "seq2seq":
                start = getattr(lm.config, "decoder_start_token_id", None)
                self.decoder_start = int(start if start is not None else self.pad_id)

        def ids(self, text: str) -> list[int]:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

        def _special_or_text(self, part: str) -> list[int]:
            if part in (BOS, EOS):
                token = self.tokenizer.bos_token_id if part == BOS else self.tokenizer.eos_token_id
                if token is None:
                    raise ModelLoadError(f"the {self.family.name} prompt needs the tokenizer's {part} token; "
                                         "this tokenizer has none")
                return [int(token)]
            return self.ids(part)

        def _answer_id(self, text: str) -> int:
            found = self.ids(text)
            if len(found) != 1:
                raise ModelLoadError(f"the {self.family.name} family answers with {text!r}, which this tokenizer "
                                     f"makes {len(found)} tokens ({found}); it must be one")
            return found[0]

        @property
        def device(self) -> Any:
            return self.lm.device

        def encode(self, query_side: str, document: str) -> list[int]:
            """The token ids of one pair, template included."""
            doc_side = self.family.document_template.format(document=document)
            if self.separator is None:
                body = self.ids(query_side + doc_side)
            else:
                body = self.ids(query_side) + self.separator + self.ids(doc_side)
            return self.head + body + self.tail

        def preprocess(self, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
            rows = [self.encode(q, d) for q, d in pairs]
            width = max(len(r) for r in rows)
            left = self.family.kind == "causal"  # the answer is read at the last position of every row
            ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                where = slice(width - len(row), width) if left else slice(0, len(row))
                ids[i, where] = torch.tensor(row, dtype=torch.long)
                mask[i, where] = 1
            return {"input_ids": ids, "attention_mask": mask}

        def forward(self, features: dict[str, Any]) -> dict[str, Any]:
            ids, mask = features["input_ids"], features["attention_mask"]
            if self.family.kind == "causal":
                positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row counts from its first real token
                logits = self.lm(input_ids=ids, attention_mask=mask, position_ids=positions,
                                 logits_to_keep=1).logits[:, -1, :]
            else:
                start = torch.full((ids.shape[0], 1), self.decoder_start, dtype=ids.dtype, device=ids.device)
                logits = self.lm(input_ids=ids, attention_mask=mask, decoder_input_ids=start).logits[:, 0, :]
            score = logits[:, self.yes_id]
            if self.no_id is not None:
                score = score - logits[:, self.no_id]
            return {"scores": score.unsqueeze(-1)}

    return PromptedScorer


class PromptPlanner(PassagePlanner):
    """Passage planning that counts the whole prompt (head, query side, document template, tail) beside a passage."""

    def __init__(self, scorer: Any, max_length: int, mode: str, overlap: int) -> None:
        super().__init__(scorer.tokenizer, max_length, mode, overlap)
        self.scorer = scorer
        self.special = 0  # the template's tokens, special ones included, are in query_cost

    def query_cost(self, query: str) -> int:
        return len(self.scorer.encode(query, ""))


class PromptedReranker(PairModelReranker):
    """A causal or seq2seq language model that answers yes or no, behind the :class:`~rankrelay.Reranker` protocol.

    Args:
        model: Hugging Face id or local path.
        family: a name in :data:`~rankrelay.rerankers.local.prompt_families.FAMILIES` or a
            :class:`~rankrelay.rerankers.local.prompt_families.PromptFamily`.
        instruction: the task instruction for families that take one (Qwen3-Reranker, mxbai v2); ``rerank(...,
            instruction=...)`` sets it for one call.
        preset: the preset name this reranker was built from, if any.
        **options: see :class:`~rankrelay.rerankers.local.model.LocalModelReranker`.
    """

    supports_calibration = False
    relevance = "sigmoid"

    def __init__(self, model: str, *, family: str | PromptFamily, instruction: str | None = None,
                 preset: str | None = None, **options: Any) -> None:
        if isinstance(family, str):
            if family not in FAMILIES:
                raise ConfigError(f"unknown prompt family {family!r}; known: {', '.join(FAMILIES)}")
            family = FAMILIES[family]
        if not isinstance(family, PromptFamily):
            raise ConfigError(f"family must be a family name or a PromptFamily, got {family!r}")
        self.family = family
        self.name = family.name
        super().__init__(model, **options)
        self.instruction = family.check_instruction(instruction)
        self.preset = preset

    # -- the instruction of a call ---------------------------------------------------------
    @contextlib.contextmanager
    def _instructed(self, instruction: str | None) -> Iterator[None]:
        if instruction is None:
            yield
            return
        token = _call_instruction.set(self.family.check_instruction(instruction))
        try:
            yield
        finally:
            _call_instruction.reset(token)

    def render_query(self, query: str) -> str:
        """The query side of the prompt for ``query`` under the instruction in force (call, spec or default)."""
        return self.family.query_side(query, _call_instruction.get() or self.instruction)

    def rerank(self, query: str, documents: Sequence[Any], top_n: int | None = None, *,
               budget_ms: float | None = None, instruction: str | None = None) -> RerankResult:
        """:meth:`~rankrelay.rerankers.base.SingleQuery.rerank`, with this call's ``instruction``."""
        with self._instructed(instruction):
            return super().rerank(query, documents, top_n, budget_ms=budget_ms)

    def rerank_batch(self, requests: Sequence[Any], top_n: int | None = None, *, budget_ms: float | None = None,
                     instruction: str | None = None) -> list[RerankResult]:
        with self._instructed(instruction):
            return super().rerank_batch(requests, top_n, budget_ms=budget_ms)

    async def arerank(self, query: str, documents: Sequence[Any], top_n: int | None = None, *,
                      budget_ms: float | None = None, instruction: str | None = None) -> RerankResult:
        with self._instructed(instruction):
            return await super().arerank(query, documents, top_n, budget_ms=budget_ms)

    async def arerank_batch(self, requests: Sequence[Any], top_n: int | None = None, *,
                            budget_ms: float | None = None, instruction: str | None = None) -> list[RerankResult]:
        with self._instructed(instruction):
            return await super().arerank_batch(requests, top_n, budget_ms=budget_ms)

    # -- the rendered query goes where the query went --------------------------------------
    def _score_locked(self, queries: list[str], documents: list[Any]) -> Any:
        return super()._score_locked([self.render_query(q) for q in queries], documents)

    def _pair_costs(self, query: str, texts: list[str]) -> list[int]:
        return super()._pair_costs(self.render_query(query), texts)

    def plan_passages(self, query: str, texts: Sequence[str]) -> Any:
        return super().plan_passages(self.render_query(query), texts)

    # -- loading and scoring ---------------------------------------------------------------
    def _load(self, resolved: ResolvedModel, device: str, kwargs: dict[str, Any]) -> Any:
        transformers = import_optional("transformers", extra="local", feature=f"the {self.name} backend")
        common: dict[str, Any] = {k: kwargs[k] for k in ("revision", "token", "local_files_only", "trust_remote_code")
                                  if k in kwargs}
        if "cache_folder" in kwargs:
            common["cache_dir"] = kwargs["cache_folder"]
        tokenizer = transformers.AutoTokenizer.from_pretrained(resolved.location, **common,
                                                               **kwargs.get("tokenizer_kwargs", {}))
        if not getattr(tokenizer, "is_fast", False):
            raise ModelLoadError(f"{self.model!r} has no fast tokenizer (tokenizer.json); the {self.name} family "
                                 "needs one to plan passages")
        auto = (transformers.AutoModelForCausalLM if self.family.kind == "causal"
                else transformers.AutoModelForSeq2SeqLM)
        lm = auto.from_pretrained(resolved.location, **common, **kwargs.get("model_kwargs", {})).eval().to(device)
        window = model_window(lm.config, tokenizer.model_max_length, self.max_length)
        if self.max_length is None:
            window = min(window, PRESETS[self.preset].max_length if self.preset else self.family.max_length)
        return _scorer_class()(lm, tokenizer, self.family, window).eval()

    def _make_planner(self, encoder: Any) -> PassagePlanner:
        return PromptPlanner(encoder, encoder.max_seq_length, self.long_documents, self.passage_overlap)

    def _sample_query(self, query: str) -> str:
        return self.family.query_side(query, self.instruction)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "family": self.family.name,
                **({"instruction": self.instruction} if self.instruction else {})}


def factory(family: str) -> Any:
    """Registry factory of ``<family>:<id or path>`` (a preset of the family when no model is named)."""
    return functools.partial(from_spec, family)


def from_spec(family: str, model: str | None, **options: Any) -> PromptedReranker:
    """``<family>:<model>``; with no model, the family's first preset."""
    if model is None:
        preset = next((p for p in PRESETS.values() if p.backend == family), None)
        if preset is None:
            raise ConfigError(f"{family} needs a model: {family}:<id or path>")
        return from_preset(preset.name, **options)
    return PromptedReranker(model, family=family, **options)


def from_preset(preset: str, **options: Any) -> PromptedReranker:
    """Registry factory for a preset of a prompted family (``qwen3-reranker-0.6b``)."""
    p = PRESETS[preset]
    return PromptedReranker(p.model, family=p.backend, preset=p.name, **options)
