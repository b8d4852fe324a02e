"""The model a distillation trains: a local cross-encoder (a spec, preset or folder) or the shape of a tier.

- ``cross-encoder:ID``, a preset (``minilm-l6``) or a folder holding a cross-encoder: trained from its own weights
  (where they are on this machine; offline without them, a clear :class:`~rankrelay.errors.ModelNotFoundError`).
- an encoder (``all-minilm-l6``, a folder or id): its weights with a fresh 1-logit head.
- ``shape:NAME`` (``shape:tinybert-l2``, ``shape:minilm-l2`` … ``shape:minilm-l12``): a BERT of that tier's shape
  started from the bundled all-MiniLM-L6-v2 encoder: its vocabulary and, where the width matches, its embeddings
  and first layers; a narrower shape gets the embeddings projected on their principal components.

Example:
    >>> student_kind("shape:tinybert-l2"), student_kind("minilm-l6"), student_kind("all-minilm-l6")
    ('shape', 'cross-encoder', 'model')
    >>> student_kind("cohere:rerank-v3.5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rankrelay.errors.ConfigError: the student 'cohere:rerank-v3.5' cannot be trained here: a student is a local ...
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from rankrelay.errors import ConfigError, ModelNotFoundError

logger = logging.getLogger(__name__)

#: tier shapes: layers, width, attention heads, feed-forward width (the MS MARCO cross-encoders' configs)
SHAPES: dict[str, tuple[int, int, int, int]] = {
    "tinybert-l2": (2, 128, 2, 512),
    "minilm-l2": (2, 384, 12, 1536),
    "minilm-l4": (4, 384, 12, 1536),
    "minilm-l6": (6, 384, 12, 1536),
    "minilm-l12": (12, 384, 12, 1536),
}
SHAPE_SOURCE = "all-minilm-l6"


def student_kind(spec: str) -> str:
    """``shape``, ``cross-encoder`` (its weights trained as they are) or ``model`` (an encoder, id or folder)."""
    from rankrelay.config import PRESETS

    if spec.startswith("shape:"):
        if spec[6:] not in SHAPES:
            raise ConfigError(f"unknown student shape {spec[6:]!r}; shapes: {', '.join(SHAPES)}")
        return "shape"
    if Path(spec).exists():
        return "model"
    from rankrelay.rerankers.registry import known_names

    preset = PRESETS.get(spec)
    name = preset.backend if preset is not None else spec.split(":", 1)[0] if ":" in spec else spec
    if name == "cross-encoder":
        return "cross-encoder"
    if name not in known_names():
        return "model"  # a model id or alias (all-minilm-l6): an encoder or cross-encoder by its files
    raise ConfigError(f"the student {spec!r} cannot be trained here: a student is a local cross-encoder "
                      "(cross-encoder:ID, a preset such as minilm-l6, shape:tinybert-l2, an encoder such as "
                      "all-minilm-l6, or a folder)")


def _model_id(spec: str) -> str:
    from rankrelay.config import PRESETS

    preset = PRESETS.get(spec)
    return preset.model if preset is not None else spec.split(":", 1)[1] if spec.startswith("cross-encoder:") else spec


def build_shape(shape: str, folder: Path, seed: int) -> str:
    """Write a ``shape`` BERT started from the bundled encoder into ``folder``; returns what it was started from."""
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    from rankrelay.hub import resolve_model

    layers, width, heads, ffn = SHAPES[shape]
    source = resolve_model(SHAPE_SOURCE)
    teacher = AutoModel.from_pretrained(source.location, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(source.location, local_files_only=True)
    config = BertConfig(vocab_size=teacher.config.vocab_size, hidden_size=width, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=ffn,
                        max_position_embeddings=teacher.config.max_position_embeddings)
    torch.manual_seed(seed)
    model = BertModel(config, add_pooling_layer=True)
    with torch.no_grad():
        if width == teacher.config.hidden_size:
            model.embeddings.load_state_dict(teacher.embeddings.state_dict())
            for i in range(min(layers, teacher.config.num_hidden_layers)):
                model.encoder.layer[i].load_state_dict(teacher.encoder.layer[i].state_dict())
            how = f"embeddings and first {min(layers, teacher.config.num_hidden_layers)} layers of {source.name}"
        else:
            words = teacher.embeddings.word_embeddings.weight
            mean = words.mean(0)
            _, _, v = torch.linalg.svd(words - mean, full_matrices=False)  # one basis for every part
            for part in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
                weights = getattr(teacher.embeddings, part).weight
                getattr(model.embeddings, part).weight.copy_((weights - mean) @ v[:width].T)
            how = f"embeddings of {source.name} projected on their first {width} principal components"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return how


def load_student(spec: str, *, max_length: int, device: str, seed: int) -> tuple[Any, str]:
    """The student as a sentence-transformers ``CrossEncoder`` ready to train, and a line saying where it
    started from (for the report and the model card)."""
    from rankrelay.training.trainer import load_base

    kind = student_kind(spec)
    if kind == "shape":
        with tempfile.TemporaryDirectory(prefix="rankrelay-student-") as folder:
            how = build_shape(spec[6:], Path(folder), seed)
            model = load_base(folder, max_length, device, seed)
        logger.info("student %s: %s, fresh head", spec, how)
        return model, f"{spec[6:]} shape: {how}, fresh head"
    try:
        model = load_base(_model_id(spec), max_length, device, seed)
    except ModelNotFoundError as exc:
        if spec.split(":")[-1] in SHAPES:
            raise ModelNotFoundError(f"{exc}; or start from its shape: --student shape:{spec.split(':')[-1]}") from None
        raise
    architectures = getattr(model.model.config, "architectures", None) or []
    own_head = kind == "cross-encoder" or any(a.endswith("ForSequenceClassification") for a in architectures)
    return model, f"{_model_id(spec)}: {'its own weights and head' if own_head else 'its weights, fresh head'}"
