"""How each family of language-model rerankers is asked its question, written once per family.

A prompted reranker reads ``head + query side + document side + tail`` and scores the pair from the
next-token logits of its answer: ``logit(yes) - logit(no)`` (its sigmoid is the model card's probability), or
the ``yes`` logit alone where the card scores that way. The query side carries the instruction for the families
that take one, so the score cache and the passage planner see it like any query text.

The families, from their model cards' own scoring code:

- ``qwen3-reranker`` (Qwen/Qwen3-Reranker-*): a system prompt, then ``<Instruct>: ...\\n<Query>: ...\\n<Document>:
  ...`` tokenized as one text, then the assistant turn with an empty think block; "yes"/"no".
- ``mxbai-rerank-v2`` (mixedbread-ai/mxbai-rerank-*-v2): Qwen's default system prompt; the query (with an optional
  instruction) and ``document: ...`` tokenized apart, joined by a newline; a task prompt; "1"/"0".
- ``bge-reranker-gemma`` (BAAI/bge-reranker-v2-gemma): BOS, ``A: query``, newline, ``B: passage``, newline, a
  prompt; the "Yes" logit alone.
- ``monot5`` (castorini/monot5-*): ``Query: ... Document: ... Relevant:`` and EOS into the encoder; "true"/"false"
  at the first decoder step.

Example:
    >>> from rankrelay.rerankers.local.prompt_families import FAMILIES
    >>> FAMILIES["qwen3-reranker"].query_side("what is a stall?")[:44]
    '<Instruct>: Given a web search query, retrie'
    >>> FAMILIES["monot5"].query_side("what is a stall?")
    'Query: what is a stall? Document: '
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Literal

from rankrelay.errors import ConfigError

#: stands for the tokenizer's BOS (in ``head``) or EOS (in ``tail``) id
BOS, EOS = "<bos>", "<eos>"


def _fields(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"template {template!r} does not parse: {exc}") from exc


def _braced(names: set[str]) -> str:
    return ", ".join("{" + n + "}" for n in sorted(names))


@dataclass(frozen=True, slots=True)
class PromptFamily:
    """A family's prompt and answer tokens (checked at construction: a missing placeholder is a ConfigError).

    Args:
        name: the backend name (``qwen3-reranker:<path>``).
        kind: ``causal`` (the last position's next-token logits; left padding) or ``seq2seq`` (the first decoder
            step; right padding).
        query_template: the query side, with ``{query}``.
        document_template: the document side, with ``{document}``.
        head: texts tokenized apart before the query side (:data:`BOS` for the BOS id).
        tail: texts tokenized apart after the document side (:data:`EOS` for the EOS id).
        separator: ``None``: query side and document side are tokenized as one text; else apart, with this between.
        instructed_template: the query side with ``{instruction}`` and ``{query}``; ``None``: no instruction.
        default_instruction: the instruction when none is given (``None``: the plain ``query_template``).
        yes: the answer token whose logit scores the pair.
        no: the answer token subtracted (``None``: the ``yes`` logit alone).
        max_length: the window the card scores with (tokens, template included).
        model_types: the ``config.json`` model types ``cross-encoder:<path>`` recognises as this family.
        name_hints: parts of a Hub id that mark this family.
    """

    name: str
    kind: Literal["causal", "seq2seq"]
    query_template: str
    document_template: str
    head: tuple[str, ...] = ()
    tail: tuple[str, ...] = ()
    separator: str | None = None
    instructed_template: str | None = None
    default_instruction: str | None = None
    yes: str = "yes"
    no: str | None = "no"
    max_length: int = 8192
    model_types: tuple[str, ...] = field(default=())
    name_hints: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in ("causal", "seq2seq"):
            raise ConfigError(f"family {self.name!r}: kind must be 'causal' or 'seq2seq', got {self.kind!r}")
        for what, template, needed in (
            ("query_template", self.query_template, {"query"}),
            ("document_template", self.document_template, {"document"}),
            ("instructed_template", self.instructed_template, {"instruction", "query"}),
        ):
            if template is None:
                continue
            found = _fields(template)
            if found != needed:
                missing, extra = needed - found, found - needed
                problem = f"lacks {_braced(missing)}" if missing else f"has unknown {_braced(extra)}"
                raise ConfigError(f"family {self.name!r}: {what} {template!r} {problem}; it takes {_braced(needed)}")
        if self.default_instruction is not None and self.instructed_template is None:
            raise ConfigError(f"family {self.name!r} has a default instruction but no instructed_template")
        if self.max_length < 8:
            raise ConfigError(f"family {self.name!r}: max_length must be >= 8, got {self.max_length}")

    @property
    def takes_instruction(self) -> bool:
        return self.instructed_template is not None

    def check_instruction(self, instruction: object) -> str | None:
        """``instruction`` if this family takes it (None passes); a :class:`ConfigError` otherwise."""
        if instruction is None:
            return None
        if not self.takes_instruction:
            raise ConfigError(f"the {self.name} family takes no instruction (its prompt has no place for one); "
                              f"families that do: {', '.join(n for n, f in FAMILIES.items() if f.takes_instruction)}")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ConfigError(f"instruction must be non-blank text, got {instruction!r}")
        return instruction

    def query_side(self, query: str, instruction: str | None = None) -> str:
        """The query side of the prompt: with ``instruction`` (or the default one) where the family takes one."""
        instruction = instruction or self.default_instruction
        if instruction is not None and self.instructed_template is not None:
            return self.instructed_template.format(instruction=instruction, query=query)
        return self.query_template.format(query=query)


_QWEN3_SYSTEM = ('<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the '
                 'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')
_MXBAI_TASK = ("You are a search relevance expert who evaluates how well documents match search queries. For each "
               "query-document pair, carefully analyze the semantic relationship between them, then provide your "
               "binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:")
_GEMMA_PROMPT = ("Given a query A and a passage B, determine whether the passage contains an answer to the query by "
                 "providing a prediction of either 'Yes' or 'No'.")

FAMILIES: dict[str, PromptFamily] = {
    f.name: f
    for f in (
        PromptFamily(
            "qwen3-reranker", "causal",
            query_template="<Query>: {query}\n<Document>: ",
            instructed_template="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: ",
            default_instruction="Given a web search query, retrieve relevant passages that answer the query",
            document_template="{document}",
            head=(_QWEN3_SYSTEM,),
            tail=("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",),
            yes="yes", no="no", max_length=8192, model_types=("qwen3",), name_hints=("qwen3-reranker",),
        ),
        PromptFamily(
            "mxbai-rerank-v2", "causal",
            query_template="query: {query}",
            instructed_template="instruction: {instruction}\nquery: {query}",
            document_template="document: {document}",
            separator="\n",
            head=("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                  "<|im_end|>\n<|im_start|>user\n",),
            tail=("\n", _MXBAI_TASK, "<|im_end|>\n<|im_start|>assistant\n"),
            yes="1", no="0", max_length=8192, model_types=("qwen2",), name_hints=("mxbai-rerank",),
        ),
        PromptFamily(
            "bge-reranker-gemma", "causal",
            query_template="A: {query}",
            document_template="B: {document}",
            separator="\n",
            head=(BOS,),
            tail=("\n", _GEMMA_PROMPT),
            yes="Yes", no=None, max_length=1024, model_types=("gemma", "gemma2"),
            name_hints=("bge-reranker-v2-gemma",),
        ),
        PromptFamily(
            "monot5", "seq2seq",
            query_template="Query: {query} Document: ",
            document_template="{document} Relevant:",
            tail=(EOS,),
            yes="true", no="false", max_length=512, model_types=("t5", "mt5"), name_hints=("monot5",),
        ),
    )
}
"""The families by backend name."""


def recognise(model_type: str | None, architectures: list[str] | None, model_id: str) -> PromptFamily | None:
    """The family of a model from its ``config.json`` (a causal LM or a T5) or its id; None: a plain cross-encoder.

    Raises:
        ConfigError: a causal or seq2seq LM of no known family (it needs its prompt named).
    """
    lowered = model_id.lower()
    archs = architectures or []
    generative = any(a.endswith(("ForCausalLM", "ForConditionalGeneration")) for a in archs)
    if archs and not generative:
        return None  # a classifier, whatever its folder is called
    for family in FAMILIES.values():
        if any(hint in lowered for hint in family.name_hints):
            return family
    if not generative:
        return None
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise ConfigError(f"{model_id!r} is a language model ({', '.join(archs)}) of no known reranker family; load it "
                      f"as <family>:<path> with one of: {', '.join(FAMILIES)}")
