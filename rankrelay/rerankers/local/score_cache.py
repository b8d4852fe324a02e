"""Raw scores remembered by (model identity, query, passage text): repeated pairs skip the model.

The identity names the model's files, runtime, window and precision, so a retrained model, another
runtime or another window never reads old scores. Keys are 16-byte BLAKE2b digests of the three
length-prefixed fields (no separator can be forged by the text). ``memory`` is a per-reranker LRU;
a directory is a diskcache store (SQLite) that several processes share, bounded in bytes.

Nothing read from the disk store is unpickled: a score is stored as 16 raw bytes, the float64 and 8 bytes of
BLAKE2b over the key and the float, and is served only when it reads back as exactly that (a finite float
whose digest matches its key). Anything else (a pickled row, a number written over a score, a row moved to
another key) is ignored, counted in :attr:`DiskScoreCache.rejected` and scored again. The digest catches
damage and careless edits, not a writer who recomputes it: the store is as trusted as its folder.

Example:
    >>> from rankrelay.rerankers.local.score_cache import open_score_cache, score_key
    >>> cache = open_score_cache("memory", size=1000)
    >>> key = score_key("cross-encoder|m|torch|512", "query", "passage")
    >>> cache.put_many({key: 1.5})
    >>> list(cache.get_many([key, score_key("another model", "query", "passage")]).values())
    [1.5]
"""

from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
import struct
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rankrelay._optional import import_optional
from rankrelay.errors import ConfigError, positive_int
from rankrelay.lru import LRU

logger = logging.getLogger(__name__)

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


def pack_score(key: bytes, score: float) -> bytes:
    """A score as stored on disk: float64 (little-endian) + 8 bytes of BLAKE2b over the key and the float."""
    value = struct.pack("<d", score)
    return value + hashlib.blake2b(key + value, digest_size=8).digest()


def unpack_score(key: bytes, stored: object) -> float | None:
    """The score of a stored row, or None when the row is not exactly what :func:`pack_score` wrote."""
    if not isinstance(stored, bytes) or len(stored) != 16:
        return None
    value, digest = stored[:8], stored[8:]
    if hashlib.blake2b(key + value, digest_size=8).digest() != digest:
        return None
    score = struct.unpack("<d", value)[0]
    return score if math.isfinite(score) else None


def _raw_disk(diskcache: Any) -> Any:
    """A diskcache Disk that stores and reads raw bytes only: a row in any other mode (pickle, above all) is
    never decoded; it reads as empty bytes, which :func:`unpack_score` rejects."""
    from diskcache.core import MODE_RAW

    class RawDisk(diskcache.Disk):
        def store(self, value: Any, read: bool, key: Any = None) -> Any:
            if type(value) is not bytes or len(value) != 16:
                raise TypeError("the score cache stores 16-byte packed scores only")
            return 0, MODE_RAW, None, sqlite3.Binary(value)

        def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
            if mode != MODE_RAW or not isinstance(value, bytes):
                return b""  # never decoded: read as a row that is not a score (rejected and counted)
            return value

        def get(self, key: Any, raw: bool) -> Any:
            if not raw:
                raise OSError("not a raw key")
            return super().get(key, raw)

    return RawDisk


class DiskScoreCache:
    """A diskcache store: thread- and process-safe, least recently used evicted beyond ``max_bytes``; scores
    verified when read (see the module docstring), never unpickled."""

    def __init__(self, directory: str | Path, max_bytes: int = DEFAULT_DISK_BYTES) -> None:
        diskcache = import_optional("diskcache", extra="cache", feature="a persistent score cache")
        self.directory = str(directory)
        #: rows read that were not packed scores (ignored and scored again)
        self.rejected = 0
        #: reads and writes that failed (a full or read-only disk, a damaged file): served without the cache
        self.failures = 0
        self._failing: set[str] = set()
        if Path(self.directory).exists() and not Path(self.directory).is_dir():
            raise ConfigError(f"score cache {self.directory} is a file, not a folder; name a folder "
                              "(score_cache=DIR) or remove the file")
        try:
            self._cache: Any = diskcache.Cache(
                self.directory, size_limit=max_bytes, eviction_policy="least-recently-used",
                disk=_raw_disk(diskcache),
            )
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"score cache {self.directory} is damaged or unreadable ({type(exc).__name__}: {exc});"
                              " delete the folder and it is rebuilt") from None

    def __repr__(self) -> str:
        return f"<DiskScoreCache {self.directory}>"

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, float]:
        """The stored scores of ``keys``; a cache that cannot be read answers none (they are scored)."""
        found = {}
        try:
            for key in keys:
                stored = self._cache.get(key)
                if stored is None:
                    continue
                score = unpack_score(key, stored)
                if score is None:
                    self._reject()
                    continue
                found[key] = score
        except (sqlite3.Error, OSError) as exc:
            self._failed("read", exc)
            return found
        self._recovered("read")
        return found

    def _failed(self, what: str, exc: BaseException) -> None:
        """A read or write that failed (disk full, read-only, damaged): counted, said once until one succeeds."""
        self.failures += 1
        if what not in self._failing:
            logger.warning("score cache %s cannot be %s (%s: %s): the scores are computed and served without it "
                           "until it works again (delete the folder if it is damaged)", self.directory,
                           "read" if what == "read" else "written", type(exc).__name__, exc)
        self._failing.add(what)

    def _recovered(self, what: str) -> None:
        if what in self._failing:
            logger.warning("score cache %s can be %s again", self.directory, "read" if what == "read" else "written")
            self._failing.discard(what)

    def _reject(self) -> None:
        self.rejected += 1
        if self.rejected == 1:
            logger.warning("score cache %s holds rows that are not scores written by rankrelay (damaged or edited):"
                           " ignored and scored again", self.directory)

    def put_many(self, items: Mapping[bytes, float]) -> None:
        # one set at a time: inside diskcache.transact() culling past size_limit can empty the whole store
        try:
            for key, value in items.items():
                self._cache.set(key, pack_score(key, float(value)))
        except (sqlite3.Error, OSError) as exc:
            self._failed("write", exc)
            return
        self._recovered("write")

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
