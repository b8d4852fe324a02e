"""Every option of :func:`rankrelay.training.distill`, checked before any work.

Example:
    >>> DistillOptions(loss="margin-mse").check()
    >>> DistillOptions(depth=1).check()
    Traceback (most recent call last):
    ...
    rankrelay.errors.ConfigError: depth and list_size must be >= 2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rankrelay.errors import ConfigError
from rankrelay.evaluation.data import CANDIDATE_KINDS

LOSSES = ("listnet", "margin-mse", "lambda")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(slots=True)
class DistillOptions:
    """Every option of :func:`distill` (see docs/distillation.md)."""

    queries: str = "pseudo:600"
    candidates: str = "bm25"
    depth: int = 30
    list_size: int = 16
    retriever_model: str = "all-minilm-l6"
    loss: str = "listnet"
    temperature: float = 1.0
    epochs: float = 1.0
    max_length: int = 256
    learning_rate: float = 1e-4
    batch_size: int = 4
    dev_share: float = 0.1
    max_dev: int = 30
    patience: int = 2
    evals_per_epoch: int = 3
    max_minutes: float | None = None
    precision: str = "auto"
    max_teacher_calls: int | None = None
    max_cost_usd: float | None = None
    qrels_split: str = "test"
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    command: str = ""

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.candidates not in CANDIDATE_KINDS:
            raise ConfigError(f"candidates come from {', '.join(CANDIDATE_KINDS)}, got {self.candidates!r}")
        if self.depth < 2 or not 2 <= self.list_size:
            raise ConfigError("depth and list_size must be >= 2")
        if not 0.0 < self.dev_share < 1.0 or self.max_dev < 1:
            raise ConfigError(f"dev_share must be in (0, 1) and max_dev >= 1, got {self.dev_share}, {self.max_dev}")
        if self.temperature <= 0 or self.epochs <= 0 or self.learning_rate <= 0 or self.batch_size < 1:
            raise ConfigError("temperature, epochs and learning_rate must be > 0 and batch_size >= 1")


def distill_loss(model: Any, loss: str) -> Any:
    """sentence-transformers' loss for ``loss``: ``ListNetLoss``, ``MarginMSELoss`` or ``LambdaLoss`` (its
    NDCG-Loss2++ weighting: the teacher's above-average candidates as graded labels, pairs weighted by what
    swapping them costs nDCG)."""
    from sentence_transformers.cross_encoder import losses

    if loss == "listnet":
        return losses.ListNetLoss(model, mini_batch_size=32)
    if loss == "lambda":
        return losses.LambdaLoss(model, mini_batch_size=32)
    return losses.MarginMSELoss(model)


def training_bf16(precision: str, device: str, cpu: dict[str, object] | None = None) -> bool:
    """Train in bf16 (autocast)? ``auto``: on a CPU with bf16 units (AVX-512 BF16, AMX), where it is the faster
    arithmetic; never on a GPU here (its own choice is the user's ``bf16``)."""
    from rankrelay.devices import cpu_signature, has_bf16_units

    if precision != "auto":
        return precision == "bf16"
    return device == "cpu" and has_bf16_units(cpu if cpu is not None else cpu_signature())
