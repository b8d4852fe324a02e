"""Team-draft interleaving and multileaving: one shown list from several arms' rankings, clicks credited per arm.

Each round, the arms that have placed the fewest documents so far draw in a random order; an arm places its
highest-ranked document not yet shown. With two arms this is team-draft interleaving (Radlinski, Kurup and
Joachims 2008); with more it is team-draft multileaving (Schuth et al. 2014). The draw is seeded (by the
impression id in the service), so an impression can be rebuilt exactly.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from rankrelay.errors import InvalidInputError

T = TypeVar("T", bound=Hashable)

#: what :func:`outcome` calls an impression whose clicks favour no arm (or that has no click)
TIE = -1


@dataclass(frozen=True, slots=True)
class Interleaved(Generic[T]):
    """The shown list (``order``: the arms' items) and, per position, the arm that placed it (``teams``)."""

    order: list[T]
    teams: list[int]
    arms: int


def team_draft(rankings: Sequence[Sequence[T]], length: int | None = None,
               seed: int | str | None = None) -> Interleaved[T]:
    """Merge ``rankings`` (one per arm, best first) into one list of at most ``length`` items (default: every
    item any arm ranks), recording which arm placed each.

    Example:
        >>> shown = team_draft([["a", "b"], ["b", "c"]], seed=1)
        >>> sorted(shown.order) == ["a", "b", "c"] and set(shown.teams) <= {0, 1}
        True
    """
    if len(rankings) < 2:
        raise InvalidInputError(f"interleaving needs at least two arms' rankings, got {len(rankings)}")
    for arm, ranking in enumerate(rankings):
        if len(set(ranking)) != len(ranking):
            raise InvalidInputError(f"arm {arm}'s ranking names an item twice")
    universe = {item for ranking in rankings for item in ranking}
    size = len(universe) if length is None else min(length, len(universe))
    if size < 0:
        raise InvalidInputError(f"length must be at least 0, got {length}")
    rng = random.Random(seed)
    order: list[T] = []
    teams: list[int] = []
    shown: set[T] = set()
    picks = [0] * len(rankings)
    cursor = [0] * len(rankings)
    while len(order) < size:
        fewest = min(picks[a] for a in range(len(rankings)) if _has_next(rankings[a], cursor, a, shown))
        drawing = [a for a in range(len(rankings))
                   if picks[a] == fewest and _has_next(rankings[a], cursor, a, shown)]
        arm = rng.choice(drawing)
        item = rankings[arm][cursor[arm]]
        order.append(item)
        teams.append(arm)
        shown.add(item)
        picks[arm] += 1
    return Interleaved(order=order, teams=teams, arms=len(rankings))


def _has_next(ranking: Sequence[T], cursor: list[int], arm: int, shown: set[T]) -> bool:
    """Move ``cursor[arm]`` past items already shown; whether the arm still has one to place."""
    while cursor[arm] < len(ranking) and ranking[cursor[arm]] in shown:
        cursor[arm] += 1
    return cursor[arm] < len(ranking)


def credit(shown: Interleaved[T], clicked: Sequence[int]) -> list[int]:
    """Clicks per arm: each click (a position in the shown list) counts for the arm that placed it."""
    counts = [0] * shown.arms
    for position in clicked:
        if not 0 <= position < len(shown.teams):
            raise InvalidInputError(f"click at position {position} is outside the shown list "
                                    f"(0..{len(shown.teams) - 1})")
        counts[shown.teams[position]] += 1
    return counts


def outcome(counts: Sequence[int]) -> int:
    """The arm with strictly the most credited clicks, or :data:`TIE` (no click, or a shared maximum)."""
    best = max(counts, default=0)
    leaders = [arm for arm, c in enumerate(counts) if c == best]
    return leaders[0] if best > 0 and len(leaders) == 1 else TIE
