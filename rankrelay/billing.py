"""Billed units (what a provider counts an answer in: ``search_units``, ``input_tokens``, ...), added up and priced.

Example:
    >>> from rankrelay.billing import add_units, price
    >>> total = add_units(add_units({}, {"search_units": 1}), {"search_units": 2, "input_tokens": 10})
    >>> total
    {'search_units': 3, 'input_tokens': 10}
    >>> price(total, {"search_units": 0.002})
    0.006
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

__all__ = ["add_units", "price"]

N = TypeVar("N", int, float)


def add_units(total: dict[str, N], units: Mapping[str, N]) -> dict[str, N]:
    """Add ``units`` into ``total`` (in place) and return it."""
    for unit, n in units.items():
        total[unit] = total.get(unit, 0) + n
    return total


def price(billed: Mapping[str, float], prices: Mapping[str, float]) -> float:
    """Dollars for ``billed`` units at ``prices`` (dollars per unit; an unpriced unit costs nothing)."""
    return float(sum(prices.get(unit, 0.0) * n for unit, n in billed.items()))
