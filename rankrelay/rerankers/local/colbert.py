"""Late-interaction reranking (ColBERT): MaxSim over token embeddings, on plain transformers.

``colbert:<model id or path>`` encodes the query and each passage into one L2-normalized vector per token
(a BERT-style encoder and a linear projection) and scores ``sum over query tokens of max over passage
tokens of the dot product``. Two checkpoint layouts are read:

- Stanford ColBERT (``colbert-ir/colbertv2.0``, ``answerdotai/answerai-colbert-small-v1``): the encoder
  and ``linear.weight`` in one weights file, markers ``[unused0]``/``[unused1]`` and lengths from
  ``artifact.metadata`` when present;
- PyLate / sentence-transformers (``lightonai/GTE-ModernColBERT-v1``): ``modules.json`` with Dense
  modules, prefixes and lengths from ``config_sentence_transformers.json``.

As in ColBERT, the query is padded with ``[MASK]`` tokens to ``query_length`` (query augmentation) and
punctuation tokens of passages are skipped; a query longer than ``query_length`` is encoded whole (ColBERT
would cut it), and only one longer than the model's positions is a :class:`QueryTooLongError`. Long
documents are split into passages of ``document_length`` tokens and scored by their best passage, like the
cross-encoder. Runs on the torch runtime.

Example:
    >>> from rankrelay.rerankers.local.colbert import ColBERTReranker
    >>> ColBERTReranker("colbert-ir/colbertv2.0").model
    'colbert-ir/colbertv2.0'
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.errors import ConfigError, ModelLoadError
from rankrelay.hub import ResolvedModel
from rankrelay.lru import LRU
from rankrelay.rerankers.local.buckets import length_buckets
from rankrelay.rerankers.local.model import LocalModelReranker
from rankrelay.rerankers.local.passages import PassagePlanner
from rankrelay.rerankers.local.runtimes import Forward
from rankrelay.rerankers.local.sample import sample_pairs

DEFAULT_COLBERT = "colbert-ir/colbertv2.0"
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True, slots=True)
class Layout:
    """How a checkpoint marks and sizes queries and documents."""

    query_marker: str
    doc_marker: str
    query_length: int
    doc_length: int
    dense_dirs: tuple[str, ...]  # PyLate Dense modules in order; () for the Stanford layout


def _state(folder: Path) -> dict[str, Any]:
    for name in _WEIGHTS:
        if (folder / name).exists():
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return dict(load_file(str(folder / name)))
            import torch

            return dict(torch.load(folder / name, map_location="cpu", weights_only=True))
    raise ModelLoadError(f"no weights ({' or '.join(_WEIGHTS)}) in {folder}")


def read_layout(folder: Path) -> Layout:
    """The layout of a local ColBERT checkpoint folder."""
    modules = folder / "modules.json"
    if modules.exists():
        entries = json.loads(modules.read_text())
        dense = tuple(e["path"] for e in entries if "Dense" in e.get("type", ""))
        if not dense:
            raise ModelLoadError(f"{folder}: modules.json lists no Dense module, so it is not a ColBERT model")
        st = folder / "config_sentence_transformers.json"
        conf = json.loads(st.read_text()) if st.exists() else {}
        return Layout(conf.get("query_prefix", "[Q] ").strip(), conf.get("document_prefix", "[D] ").strip(),
                      int(conf.get("query_length", 32)), int(conf.get("document_length", 180)), dense)
    meta_file = folder / "artifact.metadata"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    return Layout(meta.get("query_token_id", "[unused0]"), meta.get("doc_token_id", "[unused1]"),
                  int(meta.get("query_maxlen", 32)), int(meta.get("doc_maxlen", 180)), ())


class ColBERTEncoder:
    """Encoder + projection + markers of one checkpoint; ``preprocess`` and ``__call__`` as the local
    backends' forward passes expect (inputs are ``("query" | "doc", text)`` pairs, one kind per batch)."""

    def __init__(self, folder: Path, device: str) -> None:
        import torch

        transformers = import_optional("transformers", extra="local", feature="the ColBERT backend")
        self.layout = read_layout(folder)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        if self.layout.dense_dirs:
            model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
            weights = [_state(folder / d) for d in self.layout.dense_dirs]
        else:
            state = _state(folder)
            weights = [{k: v for k, v in state.items() if k.split(".")[-2:] == ["linear", "weight"]}]
        self.linears = []
        for dense in weights:
            weight = next((v for k, v in dense.items() if k.endswith("linear.weight")), None)
            if weight is None:
                raise ModelLoadError(f"{folder}: no linear.weight projection found (not a ColBERT checkpoint?)")
            bias = next((v for k, v in dense.items() if k.endswith("linear.bias")), None)
            self.linears.append((weight.to(device), bias.to(device) if bias is not None else None))
        if not self.layout.dense_dirs:
            model = self._stanford_encoder(transformers, folder, state)
        self.model = model.to(device).eval()
        self.markers = {}
        for kind, marker in (("query", self.layout.query_marker), ("doc", self.layout.doc_marker)):
            token_id = self.tokenizer.convert_tokens_to_ids(marker)
            if token_id is None or token_id == self.tokenizer.unk_token_id:
                raise ModelLoadError(f"{folder}: the tokenizer has no {marker!r} marker token")
            self.markers[kind] = token_id
        self.device = torch.device(device)
        self.max_seq_length = self.layout.doc_length
        vocab = self.tokenizer.get_vocab()
        self.skip = [vocab[c] for c in string.punctuation if c in vocab]

    @staticmethod
    def _stanford_encoder(transformers: Any, folder: Path, state: dict[str, Any]) -> Any:
        """The encoder of a Stanford checkpoint, from the weights already read (its ``bert.`` prefix taken
        off and the projection left out); anything else unmatched is an error, not a silent random init."""
        model = transformers.AutoModel.from_config(
            transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True))
        prefix = f"{model.base_model_prefix}."
        encoder = {k.removeprefix(prefix): v for k, v in state.items() if not k.startswith("linear.")}
        missing, unexpected = model.load_state_dict(encoder, strict=False)
        missing = [k for k in missing if not k.startswith("pooler.")]  # ColBERT encoders have no pooler
        if missing or unexpected:
            raise ModelLoadError(f"{folder}: the weights do not fit a {type(model).__name__} "
                                 f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model

    def to(self, dtype: Any) -> ColBERTEncoder:
        self.model.to(dtype)
        self.linears = [(w.to(dtype), b.to(dtype) if b is not None else None) for w, b in self.linears]
        return self

    def preprocess(self, inputs: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """Token ids with the marker after ``[CLS]``. A query is padded with ``[MASK]`` up to the query length
        (query augmentation); a longer query is kept whole, without expansion. ``keep`` marks the scored
        positions, so that a query's vectors do not depend on the batch it is in."""
        import torch

        kind = inputs[0][0]
        texts = [t for _, t in inputs]
        if kind == "query":
            enc = self.tokenizer(texts, add_special_tokens=True, padding="longest", return_tensors="pt")
        else:
            enc = self.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=self.layout.doc_length - 1,
                                 padding="longest", return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        marker = torch.full((ids.shape[0], 1), self.markers[kind], dtype=ids.dtype)
        ids = torch.cat([ids[:, :1], marker, ids[:, 1:]], dim=1)
        mask = torch.cat([mask[:, :1], torch.ones_like(marker), mask[:, 1:]], dim=1)
        if kind == "doc":
            keep = mask.clone()
            for token in self.skip:
                keep[ids == token] = 0
            return {"input_ids": ids, "attention_mask": mask, "keep": keep}
        width = max(ids.shape[1], self.layout.query_length)
        if width > ids.shape[1]:
            extra = width - ids.shape[1]
            ids = torch.cat([ids, torch.full((ids.shape[0], extra), self.tokenizer.pad_token_id, dtype=ids.dtype)], 1)
            mask = torch.cat([mask, torch.zeros((mask.shape[0], extra), dtype=mask.dtype)], 1)
        own = torch.clamp(mask.sum(dim=1, keepdim=True), min=self.layout.query_length)
        keep = (torch.arange(width).unsqueeze(0) < own).to(mask.dtype)
        ids[mask == 0] = self.tokenizer.mask_token_id  # the [MASK] tokens are scored, not attended to
        return {"input_ids": ids, "attention_mask": mask, "keep": keep}

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        import torch

        hidden = self.model(input_ids=features["input_ids"].to(self.device),
                            attention_mask=features["attention_mask"].to(self.device)).last_hidden_state
        for weight, bias in self.linears:
            hidden = torch.nn.functional.linear(hidden, weight, bias)
        hidden = torch.nn.functional.normalize(hidden, p=2, dim=-1)
        return {"token_embeddings": hidden * features["keep"].to(self.device).unsqueeze(-1)}


class ColBERTReranker(LocalModelReranker):
    """MaxSim late-interaction scores of ColBERT token embeddings.

    Passage token embeddings do not depend on the query, so the last ``cache_size`` of them are kept (an
    LRU keyed by the passage text, about 0.1 MB each for 180 tokens of 128 dimensions): reranking the same
    candidates for many queries encodes each passage once.

    Args:
        model: Hugging Face id or local path of a ColBERT checkpoint (Stanford or PyLate layout).
        cache_size: passages whose token embeddings are kept (0 turns the cache off).
        **options: see :class:`~rankrelay.rerankers.local.model.LocalModelReranker` (``runtime`` must be torch).
    """

    name = "colbert"
    output = "token_embeddings"

    def __init__(self, model: str, *, cache_size: int = 1000, **options: Any) -> None:
        super().__init__(model, **options)
        if self.runtime != "torch":
            raise ConfigError(f"the colbert backend runs on the torch runtime, not {self.runtime!r}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigError(f"cache_size must be an int >= 0, got {cache_size!r}")
        self.cache_size = cache_size
        self._cache: LRU[str, Any] = LRU(cache_size)

    def _load(self, resolved: ResolvedModel, device: str, kwargs: dict[str, Any]) -> Any:
        folder = Path(resolved.location)  # a local folder (path, cache, bundle), else a Hub id just probed
        if not resolved.local:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(self.model, revision=kwargs.get("revision"),
                                            cache_dir=kwargs.get("cache_folder"), token=kwargs.get("token")))
        return ColBERTEncoder(folder, device)

    def _make_planner(self, encoder: Any) -> PassagePlanner:
        # the document marker takes one of the window's tokens; a query is encoded apart, up to the positions
        return PassagePlanner(encoder.tokenizer, encoder.max_seq_length - 1, self.long_documents,
                              self.passage_overlap, pair=False,
                              query_limit=encoder.model.config.max_position_embeddings - 3)

    def _embed(self, kind: str, texts: list[str], encoder: Any = None, forward: Forward | None = None) -> list[Any]:
        """One (tokens x dim) array per text, padding and skipped tokens removed."""
        encoder = encoder or self._encoder
        forward = forward or self._forward
        assert encoder is not None and forward is not None
        rows: list[Any] = [None] * len(texts)
        for batch in length_buckets([len(t) for t in texts], self.batch_size):
            features = encoder.preprocess([(kind, texts[i]) for i in batch])
            out = forward(features)
            keep = features["keep"].numpy().astype(bool)
            for j, i in enumerate(batch):
                rows[i] = out[j][keep[j]]
        return rows

    def _passages(self, passages: list[str]) -> dict[str, Any]:
        """Token embeddings of distinct ``passages``, from the cache where it has them."""
        found = self._cache.get_many(passages)
        missing = [p for p in passages if p not in found]
        if missing:
            fresh = dict(zip(missing, self._embed("doc", missing)))
            found.update(fresh)
            self._cache.put_many(fresh)
        return found

    def _maxsim(self, pairs: list[tuple[str, str]], encoder: Any = None, forward: Forward | None = None) -> list[float]:
        queries = list(dict.fromkeys(q for q, _ in pairs))
        passages = list(dict.fromkeys(p for _, p in pairs))
        q_emb = dict(zip(queries, self._embed("query", queries, encoder, forward)))
        p_emb = (dict(zip(passages, self._embed("doc", passages, encoder, forward))) if encoder is not None
                 else self._passages(passages))  # a conversion's sample bypasses the cache
        return [float((q_emb[q] @ p_emb[p].T).max(axis=1).sum()) if len(p_emb[p]) else 0.0 for q, p in pairs]

    def _score_pairs(self, pairs: list[tuple[str, str]]) -> Sequence[float]:
        return self._maxsim(pairs)

    def _sample_inputs(self) -> list[Any]:
        queries, documents = sample_pairs()
        return [("query", q) for q in queries] + [("doc", d) for d in documents]

    def _sample_scores(self, encoder: Any, forward: Forward) -> Any:
        import numpy as np

        queries, documents = sample_pairs()
        scores = self._maxsim([(q, d) for q in queries for d in documents], encoder, forward)
        return np.asarray(scores, dtype=np.float32).reshape(len(queries), len(documents))


def from_spec(model: str | None, **options: Any) -> ColBERTReranker:
    """Registry factory: ``colbert:<id or path>`` (default ``colbert-ir/colbertv2.0``)."""
    return ColBERTReranker(model or DEFAULT_COLBERT, **options)
