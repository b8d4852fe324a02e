"""Local cross-encoder backend on sentence-transformers: presets, any model id or local path.

Scores are the model's raw logits (no activation), so they never saturate; a two-label model's
score is ``logit[1] - logit[0]`` (its sigmoid is the softmax probability of the positive class).

Example:
    >>> from rankrelay.rerankers.local.cross_encoder import CrossEncoderReranker
    >>> rr = CrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L-6-v2", batch_size=16)
    >>> rr.model, rr.batch_size            # nothing is loaded until warm_up() or the first call
    ('cross-encoder/ms-marco-MiniLM-L-6-v2', 16)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.calibration import CALIBRATION_FILE, Calibration
from rankrelay.config import PRESETS
from rankrelay.errors import ConfigError, ModelLoadError
from rankrelay.hub import ResolvedModel
from rankrelay.rerankers.local.model import LocalModelReranker, model_window
from rankrelay.rerankers.local.pairs import PairModelReranker
from rankrelay.rerankers.local.passages import PassagePlanner
from rankrelay.rerankers.local.prompt_families import PromptFamily, recognise

logger = logging.getLogger(__name__)


class CrossEncoderReranker(PairModelReranker):
    """A sentence-transformers ``CrossEncoder`` behind the :class:`~rankrelay.Reranker` protocol.

    Args:
        model: Hugging Face id or local path of a sequence-classification model with 1 or 2 labels.
        activation: what maps the raw score to a probability (``sigmoid`` for every preset).
        preset: the preset name this reranker was built from, if any.
        **options: see :class:`~rankrelay.rerankers.local.model.LocalModelReranker`.
    """

    name = "cross-encoder"
    supports_calibration = True

    def __init__(self, model: str, *, activation: str = "sigmoid", preset: str | None = None, **options: Any) -> None:
        super().__init__(model, **options)
        if activation not in ("sigmoid", "none"):
            raise ConfigError(f"activation must be 'sigmoid' or 'none', got {activation!r}")
        self.activation = activation
        self.relevance = "sigmoid" if activation == "sigmoid" else "rank"
        self.preset = preset

    def _load(self, resolved: ResolvedModel, device: str, kwargs: dict[str, Any]) -> Any:
        st = import_optional("sentence_transformers", extra="local", feature="the cross-encoder backend",
                             package="sentence-transformers")
        encoder = st.CrossEncoder(resolved.location, device=device, **kwargs)
        labels = encoder.num_labels
        if labels not in (1, 2):
            raise ModelLoadError(
                f"{self.model!r} has {labels} output labels; a reranker needs 1 (a relevance logit) or 2"
            )
        window = model_window(encoder.config, encoder.max_seq_length, self.max_length)
        if self.max_length is None and self.preset is not None:
            window = min(window, PRESETS[self.preset].max_length)
        encoder.max_seq_length = window
        folder = Path(resolved.location)
        self.calibration = Calibration.load(folder) if folder.is_dir() else None
        if self.normalize == "calibrated" and self.calibration is None:
            raise ConfigError(f"{self.model!r} has no {CALIBRATION_FILE}: normalize='calibrated' needs a model "
                              "trained by 'rankrelay train' (or use normalize='sigmoid')")
        return encoder

    def _make_planner(self, encoder: Any) -> PassagePlanner:
        return PassagePlanner(encoder.tokenizer, encoder.max_seq_length, self.long_documents, self.passage_overlap)



def from_spec(model: str | None, **options: Any) -> LocalModelReranker:
    """Registry factory: ``cross-encoder:<id or path>``; a language-model reranker (Qwen3-Reranker, mxbai v2,
    bge-reranker-v2-gemma, monoT5) is recognised from its ``config.json`` or id and prompted as its family."""
    if model is None:
        model = PRESETS["minilm-l6"].model
    family = _family_of(model)
    if family is not None:
        from rankrelay.rerankers.local.prompted import PromptedReranker

        logger.info("%s is a %s model: prompted as that family", model, family.name)
        options.pop("activation", None)  # every family's answer margin maps to a probability by the sigmoid
        return PromptedReranker(model, family=family, **options)
    return CrossEncoderReranker(model, **options)


def _family_of(model: str) -> PromptFamily | None:
    config = Path(model).expanduser() / "config.json"
    if not config.is_file():
        return recognise(None, None, model)
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {config}: {exc}") from exc
    return recognise(data.get("model_type"), data.get("architectures"), model)


def from_preset(preset: str, **options: Any) -> CrossEncoderReranker:
    """Registry factory for a preset name such as ``minilm-l6``."""
    p = PRESETS[preset]
    return CrossEncoderReranker(p.model, activation=p.activation, preset=p.name, **options)
