"""A cascade's keep from a cost target: the strong stage reorders as many of the cheap stage's best as the target
allows on this machine.

A profile such as ``balanced`` promises a speed (a fifth of its strong tier's cost over every candidate on torch
fp32), not a fixed keep: on a CPU where the strong tier runs 3x faster (int8 with VNNI, bf16 units) it reorders its
full ``keep``; on one where it runs no faster than torch it reorders fewer, never under ``min_keep``. The costs
are each stage's seconds to rerank the same passages (:func:`~rankrelay.rerankers.local.sample.timing_pairs`) the way
it reranks a request (planning, tokenizing, the forward pass), timed when the cascade first warms up on a machine
and kept (:mod:`rankrelay.rerankers.compose.keep_store`); torch fp32's is the strong stage's plus the forward-pass
gap ``runtime="auto"`` measured between the two runtimes. The keep is then the same for every request and every
process there.

Example:
    >>> from rankrelay.rerankers.compose.keep_plan import StageCosts, plan_keep
    >>> avx2 = StageCosts(cheap=0.04, strong=0.79, reference=0.87)  # tinybert-l2, minilm-l6 on openvino, torch
    >>> plan_keep(100, avx2, share=0.2, keep=20, min_keep=10)
    13
    >>> plan_keep(100, StageCosts(cheap=0.034, strong=0.27, reference=0.95), share=0.2, keep=20, min_keep=10)
    20
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from rankrelay.errors import ConfigError, RankRelayError, positive_int
from rankrelay.rerankers.local.auto_runtime import RuntimeChoice, trial_seconds

logger = logging.getLogger(__name__)

#: Share of the target a plan fills: the rest absorbs what the sample does not show (tokenizing, merging, a
#: request's texts being longer or shorter than the sample's).
HEADROOM = 0.85


@dataclass(frozen=True, slots=True)
class StageCosts:
    """Seconds each stage takes on the same sample: the cheap stage and the strong one on their runtimes, and the
    strong one on torch fp32 (the cost the target is a share of)."""

    cheap: float
    strong: float
    reference: float

    def __post_init__(self) -> None:
        if not (self.cheap >= 0 and self.strong > 0 and self.reference > 0):
            raise ConfigError(f"stage costs must be positive seconds, got {self}")


def check_plan(share: float | None, keep: int, min_keep: int | None) -> None:
    """Raise :class:`ConfigError` unless ``share`` is in (0, 1] and ``1 <= min_keep <= keep``."""
    if share is None:
        if min_keep is not None:
            raise ConfigError("a cascade's min_keep needs a cost_share (the target that lowers keep)")
        return
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ConfigError(f"a cascade's cost_share must be a number in (0, 1], got {share!r}")
    if min_keep is not None:
        positive_int(min_keep, "a cascade's min_keep", ConfigError)
        if min_keep > keep:
            raise ConfigError(f"a cascade's min_keep ({min_keep}) is above its keep ({keep})")


def plan_keep(n: int, costs: StageCosts, *, share: float, keep: int, min_keep: int) -> int:
    """The most of ``n`` candidates (from ``min_keep`` up to ``keep``) the strong stage can reorder while the cheap
    stage over all ``n`` plus the strong one over them costs at most ``share`` of the strong stage over all ``n``
    on torch fp32 (planned at :data:`HEADROOM` of it)."""
    room = n * (share * HEADROOM * costs.reference - costs.cheap)
    return max(min_keep, min(keep, math.floor(room / costs.strong + 1e-9)))


def sample_costs(cheap: Any, strong: Any) -> StageCosts | None:
    """The stages' costs on the timing passages (each reranking them as it reranks a request), or None when either
    stage is not a local model that scores pairs (a hosted API, a bi-encoder: then the cascade keeps its fixed
    ``keep``). ``cheap`` None is the first stage (free)."""
    strong_times = _pass_seconds(strong)
    if strong_times is None:
        return None
    cheap_own = 0.0
    if cheap is not None:
        cheap_times = _pass_seconds(cheap)
        if cheap_times is None:
            return None
        cheap_own = cheap_times[0]
    own, reference = strong_times
    if min(own, reference) <= 0:  # a clock too coarse to time the passages: no plan from it
        return None
    return StageCosts(cheap_own, own, reference)


def known_costs(cheap: RuntimeChoice | None, strong: RuntimeChoice | None) -> StageCosts | None:
    """An estimate from two stored ``runtime="auto"`` choices (each with its trials; forward passes alone, where a
    cascade times the whole path when it loads), or None when either was not measured: what ``rankrelay models``
    shows of a profile's keep before loading it."""
    if cheap is None or strong is None:
        return None
    cheap_times, strong_times = trial_seconds(cheap), trial_seconds(strong)
    cheap_own = cheap_times.get((cheap.runtime, cheap.precision))
    own = strong_times.get((strong.runtime, strong.precision))
    if cheap_own is None or own is None:
        return None
    return StageCosts(cheap_own, own, strong_times.get(("torch", "fp32"), own))


def timeable(stage: Any) -> bool:
    """Whether the stage is a local model that scores pairs, the kind a cascade can time."""
    from rankrelay.rerankers.local.pairs import PairModelReranker

    return isinstance(stage, PairModelReranker)


def _pass_seconds(stage: Any) -> tuple[float, float] | None:
    if not timeable(stage):
        return None
    try:
        return stage.pass_seconds()
    except RankRelayError as exc:  # e.g. long_documents="error" and a timing passage longer than its window
        logger.warning("could not time %s on the timing passages (%s: %s); the cascade keeps its keep",
                       stage.model, type(exc).__name__, exc)
        return None
