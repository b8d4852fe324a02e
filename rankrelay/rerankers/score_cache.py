"""Raw scores remembered by (model identity, query, passage text): repeated pairs skip the model.

The identity names the model's files, runtime, window and precision, so a retrained model, another
runtime or another window never reads old scores. Keys are 16-byte BLAKE2b digests of the three
length-prefixed fields (no separator can be forged by the text). ``memory`` is a per-reranker LRU;
a directory is a diskcache store (SQLite) that several processes share, bounded in bytes.

Example:
    >>> from rankrelay.rerankers.score_cache import open_score_cache, score_key
    >>> cache = open_score_cache("memory", size=1000)
    >>> key = score_key("cross-encoder|m|torch|512", "query", "passage")
    >>> cache.put_many({key: 1.5})
    >>> list(cache.get_many([key, score_key("another model", "query", "passage")]).values())
    [1.5]
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rankrelay._optional import import_optional
from rankrelay.errors import ConfigError, positive_int
from rankrelay.lru import LRU

#: Entries of the default in-memory cache (about 100 bytes each).
DEFAULT_SIZE = 100_000
#: Bytes a disk cache may hold before it evicts the least recently used scores.
DEFAULT_DISK_BYTES = 2**30


@runtime_checkable
class ScoreCache(Protocol):
    """What a score cache offers; any object with these two methods can be passed as ``score_cache``."""

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, float]:
        """Scores found for ``keys`` (missing keys are left out)."""
        ...

    def put_many(self, items: Mapping[bytes, float]) -> None:
        """Remember ``items``."""
        ...


def score_key(identity: str, query: str, passage: str) -> bytes:
    """The cache key of one scored pair."""
    h = hashlib.blake2b(digest_size=16)
    for part in (identity, query, passage):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


class DiskScoreCache:
    """A diskcache store: thread- and process-safe, least recently used evicted beyond ``max_bytes``."""

    def __init__(self, directory: str | Path, max_bytes: int = DEFAULT_DISK_BYTES) -> None:
        diskcache = import_optional("diskcache", extra="cache", feature="a persistent score cache")
        self.directory = str(directory)
        self._cache: Any = diskcache.Cache(
            self.directory, size_limit=max_bytes, eviction_policy="least-recently-used"
        )

    def __repr__(self) -> str:
        return f"<DiskScoreCache {self.directory}>"

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, float]:
        found = {}
        for key in keys:
            value = self._cache.get(key)
            if value is not None:
                found[key] = value
        return found

    def put_many(self, items: Mapping[bytes, float]) -> None:
        # one set at a time: inside diskcache.transact() culling past size_limit can empty the whole store
        for key, value in items.items():
            self._cache.set(key, float(value))

    def __len__(self) -> int:
        return len(self._cache)

    def volume(self) -> int:
        """Bytes on disk."""
        return int(self._cache.volume())

    def close(self) -> None:
        self._cache.close()


_disk_caches: dict[str, DiskScoreCache] = {}
_disk_lock = threading.Lock()


def open_score_cache(spec: str | ScoreCache | None, *, size: int = DEFAULT_SIZE) -> ScoreCache | None:
    """``memory`` (an LRU of ``size`` entries), ``off``/None, a directory (shared on-disk store, also
    written ``disk:DIR``), or a :class:`ScoreCache` object."""
    if spec is None or spec == "off":
        return None
    if isinstance(spec, ScoreCache) and not isinstance(spec, str):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"score_cache must be 'memory', 'off', a directory or a ScoreCache, got {spec!r}")
    if spec == "memory":
        return LRU(positive_int(size, "score_cache_size", ConfigError))
    directory = str(Path(spec.removeprefix("disk:")).expanduser().resolve())
    with _disk_lock:
        if directory not in _disk_caches:
            _disk_caches[directory] = DiskScoreCache(directory)
        return _disk_caches[directory]
