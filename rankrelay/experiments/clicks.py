"""Simulated users: cascade and position-based click models driven by relevance grades.

The click and stop probabilities per grade are the published five-grade instantiations of Hofmann, Whiteson and
de Rijke (2013, "Fidelity, soundness, and efficiency of interleaved comparison methods"), used since by the
interleaving and multileaving literature: ``perfect``, ``navigational`` and ``informational`` users. A cascade
user reads top-down, clicks with P(click | grade) and, after a click, stops with P(stop | grade); a
position-based (PBM) user examines rank k with probability (1/k)^eta (eta = 1, Joachims et al. 2017) and clicks an
examined result with P(click | grade). Grades of any scale are mapped onto the five levels.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from rankrelay.errors import ConfigError

#: per user type: (P(click | grade 0..4), P(stop | click, grade 0..4))
USERS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "perfect": ((0.0, 0.2, 0.4, 0.8, 1.0), (0.0, 0.0, 0.0, 0.0, 0.0)),
    "navigational": ((0.05, 0.3, 0.5, 0.7, 0.95), (0.2, 0.3, 0.5, 0.7, 0.9)),
    "informational": ((0.4, 0.6, 0.7, 0.8, 0.9), (0.1, 0.2, 0.3, 0.4, 0.5)),
}
CLICK_MODELS = ("cascade", "pbm")


@dataclass(frozen=True, slots=True)
class ClickModel:
    """A simulated user: ``kind`` (cascade or pbm) with one of :data:`USERS`' parameter sets."""

    kind: str
    user: str
    click: tuple[float, ...]
    stop: tuple[float, ...]
    eta: float = 1.0

    def clicks(self, grades: Sequence[float], top: float, rng: random.Random) -> list[int]:
        """The clicked positions of a shown list whose documents have ``grades`` (``top``: the scale's best).

        Example:
            >>> model = click_model("cascade", "perfect")
            >>> model.clicks([0, 4, 0, 4], top=4, rng=random.Random(0))
            [1, 3]
        """
        clicked = []
        for position, grade in enumerate(grades):
            level = _level(grade, top)
            if self.kind == "pbm" and rng.random() >= (1.0 / (position + 1)) ** self.eta:
                continue
            if rng.random() < self.click[level]:
                clicked.append(position)
                if self.kind == "cascade" and rng.random() < self.stop[level]:
                    break
        return clicked


def _level(grade: float, top: float) -> int:
    """``grade`` on a 0..``top`` scale as one of the five levels (unjudged and non-relevant: 0)."""
    if top <= 0 or grade <= 0:
        return 0
    return max(0, min(4, round(4 * grade / top)))


def click_model(kind: str = "cascade", user: str = "navigational", eta: float = 1.0) -> ClickModel:
    """A :class:`ClickModel` by name (``cascade`` or ``pbm``; a user type of :data:`USERS`)."""
    if kind not in CLICK_MODELS:
        raise ConfigError(f"unknown click model {kind!r}; use {', '.join(CLICK_MODELS)}")
    if user not in USERS:
        raise ConfigError(f"unknown user type {user!r}; use {', '.join(USERS)}")
    click, stop = USERS[user]
    return ClickModel(kind, user, click, stop, eta)
