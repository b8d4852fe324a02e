"""Where impressions and their feedback are kept: SQLite by default (one file, WAL), PostgreSQL for replicas.

An impression records which arm placed each shown position (``teams``), not what users saw; the query and the
documents' text are kept only with ``store_text``. Feedback is idempotent: the same clicks again are accepted and
change nothing; different clicks for an impression that has feedback are a conflict. Retention is bounded by age
and by count, applied as impressions arrive.

Example:
    >>> store = SQLiteStore(":memory:")
    >>> store.add(Impression("imp-1", "test", "team-draft", ["a", "b"], [0, 1, 0]))
    >>> store.feedback("imp-1", [0, 2]).clicked
    [0, 2]
    >>> [(i.id, i.clicked) for i in store.impressions("test")]
    [('imp-1', [0, 2])]
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.errors import ConfigError, ConflictError, InvalidInputError, NotFoundError

logger = logging.getLogger(__name__)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS impressions (
        id TEXT PRIMARY KEY, experiment TEXT NOT NULL, method TEXT NOT NULL, arms TEXT NOT NULL,
        teams TEXT NOT NULL, excluded INTEGER NOT NULL DEFAULT 0, created DOUBLE PRECISION NOT NULL,
        query TEXT, documents TEXT)""",
    "CREATE INDEX IF NOT EXISTS impressions_by_experiment ON impressions (experiment, created)",
    """CREATE TABLE IF NOT EXISTS feedback (
        impression TEXT PRIMARY KEY REFERENCES impressions (id) ON DELETE CASCADE, clicked TEXT NOT NULL,
        dwell TEXT, grade DOUBLE PRECISION, created DOUBLE PRECISION NOT NULL)""",
)
PRUNE_EVERY = 100


@dataclass(slots=True)
class Impression:
    """One answered list of an experiment: per shown position, the index (into ``arms``) of the arm that
    placed it. ``excluded``: an arm failed, so the other answered alone and the analysis leaves it out."""

    id: str
    experiment: str
    method: str
    arms: list[str]
    teams: list[int]
    excluded: bool = False
    created: float = field(default_factory=time.time)
    query: str | None = None
    documents: list[str] | None = None
    clicked: list[int] | None = None


@dataclass(frozen=True, slots=True)
class Feedback:
    impression: str
    clicked: list[int]
    dwell: list[float] | None = None
    grade: float | None = None
    created: bool = True  # False when the same feedback was already there


class SQLStore:
    """The store over a DB-API connection; :class:`SQLiteStore` and :class:`PostgresStore` differ in how they
    connect and in their placeholders. Thread-safe (one connection behind a lock)."""

    placeholder = "?"

    def __init__(self, connect: Callable[[], Any], *, max_age_s: float | None = None, max_count: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if max_age_s is not None and max_age_s <= 0:
            raise ConfigError(f"retention max_age_s must be positive, got {max_age_s}")
        if max_count is not None and max_count < 1:
            raise ConfigError(f"retention max_count must be at least 1, got {max_count}")
        self.max_age_s, self.max_count, self.clock = max_age_s, max_count, clock
        self._lock = threading.Lock()
        self._conn = connect()
        self._added = 0
        with self._lock:
            for statement in SCHEMA:
                self._execute(statement)
            self._conn.commit()

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)

    def _execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        cursor = self._conn.cursor()
        cursor.execute(self._sql(statement), tuple(params))
        return cursor

    def add(self, impression: Impression) -> None:
        """Record an impression; its id must be new (:class:`ConflictError` otherwise)."""
        row = (impression.id, impression.experiment, impression.method, json.dumps(impression.arms),
               json.dumps(impression.teams), int(impression.excluded), impression.created, impression.query,
               None if impression.documents is None else json.dumps(impression.documents))
        with self._lock:
            try:
                cursor = self._execute("INSERT INTO impressions (id, experiment, method, arms, teams, excluded, "
                                       "created, query, documents) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                                       "ON CONFLICT (id) DO NOTHING", row)
                if cursor.rowcount != 1:
                    raise ConflictError(f"impression {impression.id!r} is already recorded")
                self._added += 1
                if self._added % PRUNE_EVERY == 0:
                    self._prune()
                self._conn.commit()
            except Exception:
                self._conn.rollback()
                raise

    def get(self, impression_id: str, experiment: str | None = None) -> Impression:
        """The impression ``impression_id`` (of ``experiment`` when given); :class:`NotFoundError` otherwise."""
        with self._lock:
            row = self._execute(
                "SELECT i.id, i.experiment, i.method, i.arms, i.teams, i.excluded, i.created, i.query, i.documents,"
                " f.clicked FROM impressions i LEFT JOIN feedback f ON f.impression = i.id WHERE i.id = ?",
                (impression_id,)).fetchone()
            self._conn.commit()
        if row is None or (experiment is not None and row[1] != experiment):
            raise NotFoundError(f"no impression {impression_id!r}" + (f" in experiment {experiment!r}"
                                                                       if experiment else "")
                                + " (never answered, expired, or of another experiment)")
        return _impression(row)

    def feedback(self, impression_id: str, clicked: Sequence[int], *, dwell: Sequence[float] | None = None,
                 grade: float | None = None, experiment: str | None = None) -> Feedback:
        """Record the clicked positions of an impression; the same clicks again are accepted (idempotent)."""
        shown = self.get(impression_id, experiment)
        clicks = [int(c) for c in clicked]
        bad = [c for c in clicks if not 0 <= c < len(shown.teams)]
        if bad:
            raise InvalidInputError(f"clicked positions {bad} are outside the answered list "
                                    f"(0..{len(shown.teams) - 1})")
        if len(set(clicks)) != len(clicks):
            raise InvalidInputError("a position is clicked twice in one feedback")
        if dwell is not None and len(dwell) != len(clicks):
            raise InvalidInputError(f"dwell has {len(dwell)} values for {len(clicks)} clicks")
        with self._lock:
            try:
                cursor = self._execute(
                    "INSERT INTO feedback (impression, clicked, dwell, grade, created) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (impression) DO NOTHING",
                    (impression_id, json.dumps(clicks), None if dwell is None else json.dumps(list(dwell)), grade,
                     self.clock()))
                inserted = cursor.rowcount == 1
                existing = None if inserted else self._execute(
                    "SELECT clicked FROM feedback WHERE impression = ?", (impression_id,)).fetchone()
                self._conn.commit()
            except Exception:
                self._conn.rollback()
                raise
        if existing is not None and json.loads(existing[0]) != clicks:
            raise ConflictError(f"impression {impression_id!r} already has feedback (clicked "
                                        f"{json.loads(existing[0])}); feedback is recorded once")
        return Feedback(impression_id, clicks, None if dwell is None else list(dwell), grade, created=inserted)

    def impressions(self, experiment: str) -> list[Impression]:
        """Every kept impression of ``experiment``, oldest first, with its clicks (None: no feedback)."""
        with self._lock:
            rows = self._execute(
                "SELECT i.id, i.experiment, i.method, i.arms, i.teams, i.excluded, i.created, i.query, i.documents,"
                " f.clicked FROM impressions i LEFT JOIN feedback f ON f.impression = i.id "
                "WHERE i.experiment = ? ORDER BY i.created, i.id", (experiment,)).fetchall()
            self._conn.commit()
        return [_impression(r) for r in rows]

    def experiments(self) -> dict[str, tuple[str, list[str]]]:
        """Each experiment with kept impressions: its method and arms (as its newest impression recorded them)."""
        with self._lock:
            rows = self._execute("SELECT experiment, method, arms FROM impressions ORDER BY created, id").fetchall()
            self._conn.commit()
        return {name: (method, json.loads(arms)) for name, method, arms in rows}

    def counts(self) -> dict[str, int]:
        """Impressions and feedback rows kept."""
        with self._lock:
            impressions = self._execute("SELECT COUNT(*) FROM impressions").fetchone()[0]
            feedback = self._execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
            self._conn.commit()
        return {"impressions": int(impressions), "feedback": int(feedback)}

    def prune(self) -> int:
        """Apply the retention now; returns the impressions removed."""
        with self._lock:
            removed = self._prune()
            self._conn.commit()
        return removed

    def _prune(self) -> int:
        removed = 0
        if self.max_age_s is not None:
            removed += self._delete("created < ?", (self.clock() - self.max_age_s,))
        if self.max_count is not None:
            removed += self._delete("id IN (SELECT id FROM impressions ORDER BY created DESC, id DESC "
                                    "LIMIT -1 OFFSET ?)" if self.placeholder == "?" else
                                    "id IN (SELECT id FROM impressions ORDER BY created DESC, id DESC OFFSET ?)",
                                    (self.max_count,))
        return removed

    def _delete(self, where: str, params: Sequence[Any]) -> int:
        self._execute(f"DELETE FROM feedback WHERE impression IN (SELECT id FROM impressions WHERE {where})", params)
        return int(self._execute(f"DELETE FROM impressions WHERE {where}", params).rowcount)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _impression(row: Sequence[Any]) -> Impression:
    return Impression(id=row[0], experiment=row[1], method=row[2], arms=json.loads(row[3]),
                      teams=json.loads(row[4]), excluded=bool(row[5]), created=float(row[6]), query=row[7],
                      documents=None if row[8] is None else json.loads(row[8]),
                      clicked=None if row[9] is None else json.loads(row[9]))


class SQLiteStore(SQLStore):
    """One SQLite file in WAL mode (readers never wait for the writer); ``:memory:`` for tests."""

    def __init__(self, path: str, **retention: Any) -> None:
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
            if path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            return conn

        self.path = path
        super().__init__(connect, **retention)


class PostgresStore(SQLStore):
    """A PostgreSQL database (``postgresql://...``) through psycopg 3, for several service replicas."""

    placeholder = "%s"

    def __init__(self, url: str, **retention: Any) -> None:
        psycopg = import_optional("psycopg", extra="experiments-pg", feature="a PostgreSQL experiment store")
        self.url = url
        super().__init__(lambda: psycopg.connect(url), **retention)


def open_store(where: str, **retention: Any) -> SQLStore:
    """A store for ``where``: a ``postgresql://`` URL, or a SQLite file path (``sqlite:///path`` too)."""
    if where.startswith(("postgresql://", "postgres://")):
        return PostgresStore(where, **retention)
    return SQLiteStore(where.removeprefix("sqlite:///") if where.startswith("sqlite:///") else where, **retention)
