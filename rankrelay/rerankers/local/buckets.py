"""Forward passes of similar length: less padding when lengths vary (across requests above all).

A forward pass pads every pair to the longest one in it. sentence-transformers sorts pairs by
length and cuts them into fixed-size batches, so the first batch of a mixed list spans the long
tail: 40 abstracts in batches of 32 pad 32 of them to the longest of all 40. Here a batch also ends
where the next pair is much shorter than the batch's first (longest) pair, so the long tail goes in
small batches and the rest in full ones with little padding; equal lengths still make full batches.

Example:
    >>> length_buckets([10, 300, 12, 280, 11, 9], max_size=4)
    [[1, 3], [2, 4, 0, 5]]
"""

from __future__ import annotations

from collections.abc import Sequence

#: A batch ends before a pair shorter than this share of the batch's longest pair.
MIN_LENGTH_RATIO = 0.75


def length_buckets(lengths: Sequence[int], max_size: int, ratio: float = MIN_LENGTH_RATIO) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches of at most ``max_size``, longest first.

    Within a batch every length is at least ``ratio`` times the batch's first (longest); ties keep
    input order, so the grouping is deterministic.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) >= max_size or lengths[i] < ratio * lengths[current[0]]):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
