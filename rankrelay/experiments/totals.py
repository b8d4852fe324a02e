"""An experiment's running totals: what each impression and each feedback adds to the analysis, kept by the store
as they arrive (and taken away when retention removes them), so a report reads a few rows at any size.

Keys (per experiment): ``impressions``, ``excluded``, ``with_feedback``, ``with_clicks``; interleaving adds
``pair:i:j:win|loss|tie`` per pair of arm indices; a split adds ``split:a:n|clicked|clicks|rr|rr2`` per arm.

Example:
    >>> t = merge(impression_totals(False), feedback_totals("team-draft", 2, [0, 1, 0], [0, 2]))
    >>> summary("ab", ["a", "b"], "team-draft", t)["preferences"][0]["wins"]
    1
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

from rankrelay.experiments.analysis import SplitSums, preferences, reciprocal_rank, split_from_sums

Totals = dict[str, float]


def impression_totals(excluded: bool) -> Totals:
    """What recording an impression adds."""
    return {"impressions": 1.0, "excluded": float(excluded)}


def feedback_totals(method: str, arms: int, teams: Sequence[int], clicked: Sequence[int]) -> Totals:
    """What the feedback of a kept (not excluded) impression adds: its clicks credited to the arms (interleaving),
    or to the one arm that answered (a split)."""
    out: Totals = {"with_feedback": 1.0, "with_clicks": float(bool(clicked))}
    if method == "split":
        if teams:
            rr = reciprocal_rank(clicked)
            for key, value in (("n", 1.0), ("clicked", float(bool(clicked))), ("clicks", float(len(clicked))),
                               ("rr", rr), ("rr2", rr * rr)):
                out[f"split:{teams[0]}:{key}"] = value
        return out
    credits = [0] * arms
    for position in clicked:  # each click counts for the arm that placed the clicked position
        credits[teams[position]] += 1
    for i, j in combinations(range(arms), 2):
        if credits[i] > credits[j]:
            out[f"pair:{i}:{j}:win"] = 1.0
        elif credits[i] < credits[j]:
            out[f"pair:{i}:{j}:loss"] = 1.0
        elif credits[i] > 0:
            out[f"pair:{i}:{j}:tie"] = 1.0
    return out


def merge(*parts: Mapping[str, float], sign: float = 1.0) -> Totals:
    """The sum of ``parts`` (times ``sign``: -1 takes them away)."""
    out: Totals = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, 0.0) + sign * value
    return out


def row_totals(method: str, arms: int, teams: Sequence[int], excluded: bool,
               clicked: Sequence[int] | None) -> Totals:
    """All that one stored impression (and its feedback, when it has some) adds."""
    parts = [impression_totals(excluded)]
    if clicked is not None and not excluded:
        parts.append(feedback_totals(method, arms, teams, clicked))
    return merge(*parts)


def summary(name: str, arms: Sequence[str], method: str, totals: Mapping[str, float]) -> dict[str, Any]:
    """Counts and the decision of one experiment from its totals: impressions, with clicks, excluded, and the
    per-pair preferences (interleaving) or the per-arm click metrics with Welch's test (split)."""
    def get(key: str) -> int:
        return round(totals.get(key, 0.0))

    out: dict[str, Any] = {"experiment": name, "method": method, "arms": list(arms),
                           "impressions": get("impressions"), "excluded": get("excluded"),
                           "with_feedback": get("with_feedback"), "with_clicks": get("with_clicks")}
    if method == "split":
        sums = [SplitSums(get(f"split:{a}:n"), get(f"split:{a}:clicked"), get(f"split:{a}:clicks"),
                          totals.get(f"split:{a}:rr", 0.0), totals.get(f"split:{a}:rr2", 0.0))
                for a in range(len(arms))]
        out["split"] = split_from_sums(list(arms), sums).to_dict() if len(arms) == 2 else None
    else:
        counts = {(i, j): tuple(get(f"pair:{i}:{j}:{k}") for k in ("win", "loss", "tie"))
                  for i, j in combinations(range(len(arms)), 2)}
        out["preferences"] = [p.to_dict() for p in preferences(list(arms), counts, get("with_feedback"))]
    return out


def totals_of(rows: Iterable[tuple[str, int, Sequence[int], bool, Sequence[int] | None]]) -> Totals:
    """The totals of stored rows (method, number of arms, teams, excluded, clicked)."""
    return merge(*(row_totals(*row) for row in rows))
