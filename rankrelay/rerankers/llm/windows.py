"""Listwise reranking by sliding windows (RankGPT): the windows, reading a model's permutation, and the
passes that merge the windows' orders into one ranking.

A list of ``n`` candidates is reranked window by window from the back to the front: a window of ``window``
candidates is ordered, then the window moves ``step`` towards the front, so what a window puts on top is
carried into the next. After one pass the first ``window - step`` positions hold the best ``window - step``
candidates in the order the model gives (the tests check this against an oracle). A pass makes
``1 + ceil((n - window) / step)`` calls when ``n > window``, else one.

Reading an answer never loses a candidate: identifiers are read in order (``[3] > [1] > [2]`` or
``3, 1, 2``); repeated and out-of-range ones are skipped and counted; the ones the answer leaves out keep
their previous relative order after the ranked ones, and are counted.

Example:
    >>> from rankrelay.rerankers.llm.windows import parse_permutation, windows
    >>> windows(100, 20, 10)[:3], len(windows(100, 20, 10))
    ([(80, 100), (70, 90), (60, 80)], 9)
    >>> parse_permutation("[3] > [1] > [3] > [9]", 4)
    ([2, 0, 1, 3], {'duplicates': 1, 'out_of_range': 1, 'missing': 2})
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from rankrelay.errors import ConfigError

T = TypeVar("T")
_NUMBER = re.compile(r"\d+")


def calls_per_pass(n: int, window: int, step: int) -> int:
    """How many windows one pass over ``n`` candidates makes."""
    return 1 if n <= window else 1 + math.ceil((n - window) / step)


def windows(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` slices of one back-to-front pass over ``n`` candidates."""
    if window < 2 or not 1 <= step < window:
        raise ConfigError(f"a sliding window needs window >= 2 and 1 <= step < window, got {window} and {step}")
    if n <= window:
        return [(0, n)] if n else []
    out = []
    end = n
    while True:
        start = max(0, end - window)
        out.append((start, end))
        if start == 0:
            return out
        end -= step


def parse_permutation(answer: str, size: int) -> tuple[list[int], dict[str, int]]:
    """The 0-based order a model's ``answer`` gives ``size`` items (identifiers 1..size), completed so that
    every item appears exactly once; with counts of what was skipped or missing."""
    order: list[int] = []
    seen: set[int] = set()
    stats = {"duplicates": 0, "out_of_range": 0, "missing": 0}
    for token in _NUMBER.findall(answer):
        item = int(token) - 1
        if not 0 <= item < size:
            stats["out_of_range"] += 1
        elif item in seen:
            stats["duplicates"] += 1
        else:
            seen.add(item)
            order.append(item)
    rest = [i for i in range(size) if i not in seen]
    stats["missing"] = len(rest)
    return order + rest, stats


class SlidingPass(Generic[T]):
    """One back-to-front pass, driven from outside (so a sync and an async caller share it): iterate to get
    each window's items in their current order, and :meth:`apply` the model's answer for it before the next.

    ``totals`` sums the parse counts plus ``calls`` and ``unparsed`` (answers with no usable identifier).
    """

    def __init__(self, items: Sequence[T], window: int = 20, step: int = 10) -> None:
        self.items = list(items)
        self.totals = {"calls": 0, "unparsed": 0, "duplicates": 0, "out_of_range": 0, "missing": 0}
        self._spans = windows(len(self.items), window, step)
        self._span = (0, 0)

    def __iter__(self) -> Iterator[list[T]]:
        for span in self._spans:
            self._span = span
            yield self.items[span[0] : span[1]]

    def apply(self, answer: str) -> None:
        """Reorder the current window as ``answer`` (identifiers 1..window) says."""
        start, end = self._span
        chunk = self.items[start:end]
        order, stats = parse_permutation(answer, len(chunk))
        self.totals["calls"] += 1
        self.totals["unparsed"] += stats["missing"] == len(chunk)
        for key in ("duplicates", "out_of_range", "missing"):
            self.totals[key] += stats[key]
        self.items[start:end] = [chunk[i] for i in order]


def sliding_rerank(items: Sequence[T], rank_window: Callable[[list[T]], str], window: int = 20,
                   step: int = 10) -> tuple[list[T], dict[str, int]]:
    """One back-to-front pass: ``rank_window`` gets a window's items (in their current order) and answers
    with a permutation of identifiers 1..len(window); returns the new order of ``items`` (each exactly once)
    and the summed parse counts plus ``calls`` and ``unparsed`` (answers with no usable identifier)."""
    sliding = SlidingPass(items, window, step)
    for chunk in sliding:
        sliding.apply(rank_window(chunk))
    return sliding.items, sliding.totals
