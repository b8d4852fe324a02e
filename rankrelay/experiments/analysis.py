"""What credited impressions say: which arm users prefer, by how much, and how sure that is.

Interleaving: per pair of arms, an impression is a win for the arm credited with more clicks, a loss for the
other, a tie when they are level (impressions without a click say nothing and are counted apart). The preference
is the win share among non-tied impressions with a 95 % Wilson interval and an exact binomial sign test
(scipy); with three or more arms (multileaving) the interval and p-value come from a seeded bootstrap over
impressions, which respects that one impression compares every pair at once. A split test compares the arms'
reciprocal rank of the first click per impression with Welch's t-test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np

from rankrelay.errors import InvalidInputError

ALPHA = 0.05
BOOTSTRAP = 2000


@dataclass(frozen=True, slots=True)
class Preference:
    """``a`` against ``b``: ``share`` is a's wins over non-tied impressions (0.5: no preference either way)."""

    a: str
    b: str
    wins: int
    losses: int
    ties: int
    share: float
    low: float
    high: float
    p_value: float
    test: str

    @property
    def winner(self) -> str | None:
        """The arm the observed share favours (None when level), significant or not."""
        return self.a if self.share > 0.5 else self.b if self.share < 0.5 else None

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "winner": self.winner, "significant": self.significant}


@dataclass(frozen=True, slots=True)
class SplitArm:
    """One arm of a split test: impressions, share with a click, clicks and reciprocal rank per impression."""

    arm: str
    impressions: int
    click_rate: float
    clicks: float
    reciprocal_rank: float


@dataclass(frozen=True, slots=True)
class SplitResult:
    """A split test between ``a`` and ``b`` on the reciprocal rank of the first click (Welch's t-test)."""

    arms: list[SplitArm]
    difference: float
    low: float
    high: float
    p_value: float
    test: str = "welch t-test"

    @property
    def winner(self) -> str | None:
        a, b = self.arms
        return a.arm if self.difference > 0 else b.arm if self.difference < 0 else None

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def to_dict(self) -> dict[str, Any]:
        return {"arms": [asdict(a) for a in self.arms], "difference": self.difference, "low": self.low,
                "high": self.high, "p_value": self.p_value, "test": self.test, "winner": self.winner,
                "significant": self.significant}


def analyse_interleaved(arms: Sequence[str], credits: Sequence[Sequence[int]], *, bootstrap: int = BOOTSTRAP,
                        seed: int = 0) -> list[Preference]:
    """One :class:`Preference` per pair of ``arms`` from per-impression click credits (one count per arm).

    Example:
        >>> prefs = analyse_interleaved(["a", "b"], [[1, 0]] * 9 + [[0, 1]])
        >>> prefs[0].wins, prefs[0].losses, prefs[0].winner, prefs[0].significant
        (9, 1, 'a', True)
    """
    if len(arms) < 2:
        raise InvalidInputError(f"a comparison needs at least two arms, got {len(arms)}")
    table = np.asarray(credits, dtype=np.int64).reshape(-1, len(arms))
    counts = {}
    for i, j in combinations(range(len(arms)), 2):
        sign = np.sign(table[:, i] - table[:, j])
        clicked = (table[:, i] + table[:, j]) > 0
        counts[i, j] = (int((sign > 0).sum()), int((sign < 0).sum()), int((clicked & (sign == 0)).sum()))
    return preferences(arms, counts, len(table), bootstrap=bootstrap, seed=seed)


def preferences(arms: Sequence[str], counts: Mapping[tuple[int, int], Sequence[int]], impressions: int, *,
                bootstrap: int = BOOTSTRAP, seed: int = 0) -> list[Preference]:
    """The :class:`Preference` of each pair ``(i, j)`` of ``arms`` from its (wins, losses, ties) over
    ``impressions`` credited impressions: what a store keeps as feedback arrives, so a report costs the same at any
    size. With three or more arms the bootstrap resamples the impressions (the counts of a multinomial).

    Example:
        >>> [p.wins for p in preferences(["a", "b"], {(0, 1): (9, 1, 0)}, 10)]
        [9]
    """
    if len(arms) < 2:
        raise InvalidInputError(f"a comparison needs at least two arms, got {len(arms)}")
    rng = np.random.default_rng(seed)
    prefs = []
    for i, j in combinations(range(len(arms)), 2):
        wins, losses, ties = (int(x) for x in counts.get((i, j), (0, 0, 0)))
        if len(arms) == 2:
            share, low, high, p = _sign_test(wins, losses)
            test = "sign test"
        else:
            share, low, high, p = _bootstrap(wins, losses, impressions, rng, bootstrap)
            test = "bootstrap"
        prefs.append(Preference(arms[i], arms[j], wins, losses, ties, share, low, high, p, test))
    return prefs


def _sign_test(wins: int, losses: int) -> tuple[float, float, float, float]:
    from scipy.stats import binomtest

    n = wins + losses
    if n == 0:
        return 0.5, 0.0, 1.0, 1.0
    result = binomtest(wins, n, 0.5)
    ci = result.proportion_ci(1 - ALPHA, method="wilson")
    return wins / n, float(ci.low), float(ci.high), float(result.pvalue)


def _bootstrap(wins: int, losses: int, n: int, rng: np.random.Generator,
               draws: int) -> tuple[float, float, float, float]:
    if wins + losses == 0:
        return 0.5, 0.0, 1.0, 1.0
    sampled = rng.multinomial(n, [wins / n, losses / n, 1 - (wins + losses) / n], size=draws)
    w, decided = sampled[:, 0], sampled[:, 0] + sampled[:, 1]
    shares = np.where(decided > 0, w / np.maximum(decided, 1), 0.5)
    low, high = np.quantile(shares, [ALPHA / 2, 1 - ALPHA / 2])
    share = wins / (wins + losses)
    # two-sided: how often a resample lands on the other side of "no preference" than the observed share
    other = (shares <= 0.5).mean() if share > 0.5 else (shares >= 0.5).mean() if share < 0.5 else 1.0
    return share, float(low), float(high), float(min(1.0, 2 * other))


def reciprocal_rank(clicked: Sequence[int]) -> float:
    """1 / (1 + the first clicked position), 0 without a click."""
    return 1.0 / (1 + min(clicked)) if clicked else 0.0


def analyse_split(arms: Sequence[str], clicks: Sequence[Sequence[Sequence[int]]]) -> SplitResult:
    """Compare two arms of a split test from each arm's impressions (the clicked positions of each).

    Example:
        >>> r = analyse_split(["a", "b"], [[[0]] * 30 + [[]] * 10, [[3]] * 20 + [[]] * 20])
        >>> r.winner, r.significant, r.arms[0].click_rate
        ('a', True, 0.75)
    """
    if len(arms) != 2 or len(clicks) != 2:
        raise InvalidInputError(f"a split test compares two arms, got {len(arms)}")
    sums = []
    for impressions in clicks:
        rr = [reciprocal_rank(c) for c in impressions]
        sums.append(SplitSums(len(impressions), sum(1 for c in impressions if c), sum(len(c) for c in impressions),
                              math.fsum(rr), math.fsum(r * r for r in rr)))
    return split_from_sums(arms, sums)


@dataclass(frozen=True, slots=True)
class SplitSums:
    """What a split test needs of one arm, summed as feedback arrives: impressions with feedback, those with a
    click, clicks, and the reciprocal rank of the first click summed and squared."""

    impressions: int
    clicked: int
    clicks: int
    rr: float
    rr2: float


def split_from_sums(arms: Sequence[str], sums: Sequence[SplitSums]) -> SplitResult:
    """:func:`analyse_split` from each arm's :class:`SplitSums` (Welch's t-test from the moments)."""
    if len(arms) != 2 or len(sums) != 2:
        raise InvalidInputError(f"a split test compares two arms, got {len(arms)}")
    from scipy.stats import t as student_t
    from scipy.stats import ttest_ind_from_stats

    rows, means, variances = [], [], []
    for arm, s in zip(arms, sums):
        n = s.impressions
        mean = s.rr / n if n else 0.0
        means.append(mean)
        variances.append(max(0.0, (s.rr2 - n * mean * mean) / (n - 1)) if n > 1 else 0.0)
        rows.append(SplitArm(arm, n, s.clicked / n if n else 0.0, s.clicks / n if n else 0.0, mean))
    difference = means[0] - means[1]
    small = min(s.impressions for s in sums) < 2
    if small or max(variances) <= 1e-15:  # no spread to test: only a level or a certain gap
        return SplitResult(rows, difference, difference, difference, 1.0 if small or difference == 0 else 0.0)
    (n1, n2), (v1, v2) = (sums[0].impressions, sums[1].impressions), variances
    test = ttest_ind_from_stats(means[0], math.sqrt(v1), n1, means[1], math.sqrt(v2), n2, equal_var=False)
    se2 = v1 / n1 + v2 / n2
    df = se2 * se2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    half = float(student_t.ppf(1 - ALPHA / 2, df)) * math.sqrt(se2)
    return SplitResult(rows, difference, difference - half, difference + half, float(test.pvalue))
