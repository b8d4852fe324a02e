"""A small thread-safe LRU map: the one bounded in-memory cache every part of rankrelay uses.

Example:
    >>> from rankrelay.lru import LRU
    >>> cache = LRU(2)
    >>> cache.put_many({"a": 1, "b": 2}); cache.get_many(["a"]); cache.put_many({"c": 3})
    {'a': 1}
    >>> sorted(cache.get_many(["a", "b", "c"]))
    ['a', 'c']
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most ``max_size`` entries; reads refresh an entry, the least recently used goes first.

    ``max_size=0`` keeps nothing (every lookup misses).
    """

    def __init__(self, max_size: int) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
            raise ValueError(f"max_size must be an int >= 0, got {max_size!r}")
        self.max_size = max_size
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get_many(self, keys: Iterable[K]) -> dict[K, V]:
        """The entries found for ``keys`` (missing keys are left out)."""
        with self._lock:
            found = {k: self._data[k] for k in keys if k in self._data}
            for k in found:
                self._data.move_to_end(k)
        return found

    def put_many(self, items: Mapping[K, V]) -> None:
        """Add or refresh ``items``, then drop the least recently used beyond ``max_size``."""
        if not self.max_size:
            return
        with self._lock:
            self._data.update(items)
            for k in items:
                self._data.move_to_end(k)
            while len(self._data) > self.max_size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
