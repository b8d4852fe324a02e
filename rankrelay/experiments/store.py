"""Where impressions and their feedback are kept: SQLite by default (one file, WAL), PostgreSQL for replicas.

An impression records which arm placed each shown position (``teams``), not what users saw; the query and the
documents' text are kept only with ``store_text``. Feedback is idempotent: the same feedback again is accepted and
changes nothing; different feedback for an impression that has some is a conflict. Retention is bounded by age and
by count, applied on every write; an expired impression takes no feedback. Each experiment's totals
(:mod:`~rankrelay.experiments.totals`) are kept in the same transaction, so a report reads a few rows.

Faults degrade and say so: a database that is away (restarted, failed over, a connection terminated, a full or
read-only disk, the SQLite file deleted) raises :class:`~rankrelay.errors.StoreUnavailableError`, logged once per
outage; PostgreSQL connections come from a pool that checks each one before use and reopens it.

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
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.errors import ConfigError, ConflictError, InvalidInputError, NotFoundError, StoreUnavailableError
from rankrelay.experiments.totals import Totals, feedback_totals, impression_totals, merge, row_totals

logger = logging.getLogger(__name__)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS impressions (
        id TEXT PRIMARY KEY, experiment TEXT NOT NULL, method TEXT NOT NULL, arms TEXT NOT NULL,
        teams TEXT NOT NULL, excluded INTEGER NOT NULL DEFAULT 0, created DOUBLE PRECISION NOT NULL,
        query TEXT, documents TEXT)""",
    "CREATE INDEX IF NOT EXISTS impressions_by_experiment ON impressions (experiment, created)",
    "CREATE INDEX IF NOT EXISTS impressions_by_created ON impressions (created, id)",
    """CREATE TABLE IF NOT EXISTS feedback (
        impression TEXT PRIMARY KEY REFERENCES impressions (id) ON DELETE CASCADE, clicked TEXT NOT NULL,
        dwell TEXT, grade DOUBLE PRECISION, created DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS experiment_totals (
        experiment TEXT NOT NULL, name TEXT NOT NULL, value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (experiment, name))""",
)
ROW = ("SELECT i.id, i.experiment, i.method, i.arms, i.teams, i.excluded, i.created, i.query, i.documents, "
       "f.clicked, f.dwell, f.grade FROM impressions i LEFT JOIN feedback f ON f.impression = i.id")
ALL = ""  # the totals row of the whole store (the count that retention bounds)
CHUNK = 500  # ids per DELETE ... IN (...)


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
    experiment: str = ""


class SQLStore:
    """The store over DB-API connections; :class:`SQLiteStore` and :class:`PostgresStore` differ in how they hold
    connections (:meth:`_transaction`), in what error means "the database is away", and in their placeholders."""

    placeholder = "?"
    kind = "sql"

    def __init__(self, *, max_age_s: float | None = None, max_count: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if max_age_s is not None and max_age_s <= 0:
            raise ConfigError(f"retention max_age_s must be positive, got {max_age_s}")
        if max_count is not None and max_count < 1:
            raise ConfigError(f"retention max_count must be at least 1, got {max_count}")
        self.max_age_s, self.max_count, self.clock = max_age_s, max_count, clock
        self.outage: str | None = None  # why the last operation could not reach the database, until one does
        self.outages = 0

    # -- connections: what each backend provides ----------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[Any]:  # pragma: no cover - each backend has its own
        raise NotImplementedError
        yield

    def _is_outage(self, exc: BaseException) -> bool:  # pragma: no cover - each backend has its own
        raise NotImplementedError

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """A transaction; the database being away becomes :class:`StoreUnavailableError` (one warning an outage)."""
        try:
            with self._transaction() as cursor:
                yield cursor
        except (ConflictError, NotFoundError, InvalidInputError, ConfigError):
            raise
        except Exception as exc:
            if not self._is_outage(exc):
                raise
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if self.outage is None:
                self.outages += 1
                logger.warning("experiment store %s is unavailable (%s); answering without it until it answers again",
                               self.kind, reason)
            self.outage = reason
            raise StoreUnavailableError(f"the experiment store is unavailable ({reason}); try again later") from exc
        if self.outage is not None:
            logger.warning("experiment store %s is back", self.kind)
            self.outage = None

    def _run(self, cursor: Any, statement: str, params: Sequence[Any] = ()) -> Any:
        cursor.execute(statement.replace("?", self.placeholder), tuple(params))
        return cursor

    def _create(self) -> None:
        with self._tx() as cur:
            for statement in SCHEMA:
                self._run(cur, statement)
            empty = self._run(cur, "SELECT COUNT(*) FROM experiment_totals").fetchone()[0] == 0
            if empty and self._run(cur, "SELECT COUNT(*) FROM impressions").fetchone()[0]:
                self._rebuild_totals(cur)  # a store written before totals were kept

    def _rebuild_totals(self, cur: Any) -> None:
        rows = self._run(cur, "SELECT i.experiment, i.method, i.arms, i.teams, i.excluded, f.clicked FROM "
                              "impressions i LEFT JOIN feedback f ON f.impression = i.id").fetchall()
        self._apply(cur, rows, 1.0)

    def _apply(self, cur: Any, rows: Sequence[Sequence[Any]], sign: float) -> None:
        """Add (``sign`` 1) or take away (-1) the totals of stored rows (experiment, method, arms, teams, excluded,
        clicked), in one order of keys (two writers never wait on each other's rows in turn)."""
        by_experiment: dict[str, Totals] = {}
        for experiment, method, arms, teams, excluded, clicked in rows:
            add = row_totals(method, len(json.loads(arms)), json.loads(teams), bool(excluded),
                             None if clicked is None else json.loads(clicked))
            by_experiment[experiment] = merge(by_experiment.get(experiment, {}), add)
        self._add_totals(cur, {e: merge(t, sign=sign) for e, t in by_experiment.items()}, len(rows) * sign)

    def _add_totals(self, cur: Any, per_experiment: dict[str, Totals], count: float) -> None:
        changes = {(ALL, "impressions"): count} if count else {}
        changes.update({(e, k): v for e, t in per_experiment.items() for k, v in t.items() if v})
        for (experiment, name), value in sorted(changes.items()):
            self._run(cur, "INSERT INTO experiment_totals (experiment, name, value) VALUES (?, ?, ?) ON CONFLICT "
                           "(experiment, name) DO UPDATE SET value = experiment_totals.value + excluded.value",
                      (experiment, name, value))

    # -- impressions and feedback ---------------------------------------------------------------------
    def add(self, impression: Impression) -> None:
        """Record an impression; its id must be new (:class:`ConflictError` otherwise). Retention runs here."""
        with self._tx() as cur:
            inserted = self._run(cur, "INSERT INTO impressions (id, experiment, method, arms, teams, excluded, "
                                      "created, query, documents) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                                      "ON CONFLICT (id) DO NOTHING", _row(impression)).rowcount
            if inserted != 1:
                raise ConflictError(f"impression {impression.id!r} is already recorded")
            self._add_totals(cur, {impression.experiment: impression_totals(impression.excluded)}, 1.0)
            self._prune(cur)

    def add_many(self, impressions: Sequence[Impression]) -> int:
        """Record several impressions in one transaction (a buffer written when the store is back); an id already
        recorded is skipped. Returns how many were new."""
        added: dict[str, Totals] = {}
        count = 0
        with self._tx() as cur:
            for impression in impressions:
                if self._run(cur, "INSERT INTO impressions (id, experiment, method, arms, teams, excluded, created, "
                                  "query, documents) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                             _row(impression)).rowcount == 1:
                    count += 1
                    added[impression.experiment] = merge(added.get(impression.experiment, {}),
                                                         impression_totals(impression.excluded))
            self._add_totals(cur, added, float(count))
            self._prune(cur)
        return count

    def get(self, impression_id: str, experiment: str | None = None) -> Impression:
        """The impression ``impression_id`` (of ``experiment`` when given); :class:`NotFoundError` otherwise, and
        for one older than the retention's age."""
        with self._tx() as cur:
            row = self._run(cur, ROW + " WHERE i.id = ?", (impression_id,)).fetchone()
        return _impression(self._found(row, impression_id, experiment))

    def _found(self, row: Sequence[Any] | None, impression_id: str, experiment: str | None) -> Sequence[Any]:
        where = f" in experiment {experiment!r}" if experiment else ""
        if row is None or (experiment is not None and row[1] != experiment):
            raise NotFoundError(f"no impression {impression_id!r}{where} (never answered, expired, or of another "
                                "experiment)")
        if self.max_age_s is not None and float(row[6]) < self.clock() - self.max_age_s:
            raise NotFoundError(f"impression {impression_id!r} has expired (older than the retention's "
                                f"{self.max_age_s:g} s)")
        return row

    def feedback(self, impression_id: str, clicked: Sequence[int], *, dwell: Sequence[float] | None = None,
                 grade: float | None = None, experiment: str | None = None) -> Feedback:
        """Record the clicked positions of an impression. The same feedback again (clicks, dwell and grade) is
        accepted and changes nothing; other feedback for it is a :class:`ConflictError`."""
        clicks = list(clicked)
        dwells = None if dwell is None else list(dwell)
        with self._tx() as cur:
            row = self._found(self._run(cur, ROW + " WHERE i.id = ?", (impression_id,)).fetchone(), impression_id,
                              experiment)
            shown = _impression(row)
            bad = [c for c in clicks if not 0 <= c < len(shown.teams)]
            if bad:
                raise InvalidInputError(f"clicked: positions {bad} are outside the answered list "
                                        f"(0..{len(shown.teams) - 1})")
            if len(set(clicks)) != len(clicks):
                raise InvalidInputError("clicked: a position is clicked twice in one feedback")
            if dwells is not None and len(dwells) != len(clicks):
                raise InvalidInputError(f"dwell has {len(dwells)} values for {len(clicks)} clicks")
            inserted = self._run(cur, "INSERT INTO feedback (impression, clicked, dwell, grade, created) VALUES "
                                      "(?, ?, ?, ?, ?) ON CONFLICT (impression) DO NOTHING",
                                 (impression_id, json.dumps(clicks), None if dwells is None else json.dumps(dwells),
                                  grade, self.clock())).rowcount == 1
            if inserted and not shown.excluded:
                self._add_totals(cur, {shown.experiment: feedback_totals(shown.method, len(shown.arms),
                                                                         shown.teams, clicks)}, 0.0)
            existing = None if inserted else self._run(cur, "SELECT clicked, dwell, grade FROM feedback WHERE "
                                                            "impression = ?", (impression_id,)).fetchone()
        if existing is not None:
            before = (json.loads(existing[0]), None if existing[1] is None else json.loads(existing[1]),
                      None if existing[2] is None else float(existing[2]))
            if before != (clicks, dwells, None if grade is None else float(grade)):
                raise ConflictError(f"impression {impression_id!r} already has feedback, other than this (clicked "
                                    f"{before[0]}, dwell {before[1]}, grade {before[2]}); feedback is recorded once")
        return Feedback(impression_id, clicks, dwells, grade, created=inserted, experiment=shown.experiment)

    def impressions(self, experiment: str) -> list[Impression]:
        """Every kept impression of ``experiment``, oldest first, with its clicks (None: no feedback)."""
        with self._tx() as cur:
            rows = self._run(cur, ROW + " WHERE i.experiment = ? ORDER BY i.created, i.id", (experiment,)).fetchall()
        return [_impression(r) for r in rows]

    def totals(self, experiment: str) -> Totals:
        """The running totals of ``experiment`` (see :mod:`~rankrelay.experiments.totals`)."""
        with self._tx() as cur:
            rows = self._run(cur, "SELECT name, value FROM experiment_totals WHERE experiment = ?",
                             (experiment,)).fetchall()
        return {name: float(value) for name, value in rows}

    def experiments(self) -> dict[str, tuple[str, list[str]]]:
        """Each experiment with kept impressions: its method and arms (as its newest impression recorded them)."""
        with self._tx() as cur:
            names = [r[0] for r in self._run(cur, "SELECT experiment FROM experiment_totals WHERE name = "
                                                  "'impressions' AND value > 0 AND experiment <> ''").fetchall()]
            found = {}
            for name in sorted(names):
                row = self._run(cur, "SELECT method, arms FROM impressions WHERE experiment = ? ORDER BY created "
                                     "DESC, id DESC LIMIT 1", (name,)).fetchone()
                if row is not None:
                    found[name] = (row[0], json.loads(row[1]))
        return found

    def counts(self) -> dict[str, int]:
        """Impressions and feedback rows kept."""
        with self._tx() as cur:
            impressions = self._run(cur, "SELECT COUNT(*) FROM impressions").fetchone()[0]
            feedback = self._run(cur, "SELECT COUNT(*) FROM feedback").fetchone()[0]
        return {"impressions": int(impressions), "feedback": int(feedback)}

    def ping(self) -> None:
        """Reach the database (:class:`StoreUnavailableError` when it is away)."""
        with self._tx() as cur:
            self._run(cur, "SELECT 1").fetchone()

    # -- retention ------------------------------------------------------------------------------------
    def prune(self) -> int:
        """Apply the retention now; returns the impressions removed."""
        with self._tx() as cur:
            return self._prune(cur)

    def _prune(self, cur: Any) -> int:
        removed = 0
        if self.max_age_s is not None:
            removed += self._delete(cur, "i.created < ?", (self.clock() - self.max_age_s,))
        if self.max_count is not None:
            kept = self._run(cur, "SELECT value FROM experiment_totals WHERE experiment = ? AND name = "
                                  "'impressions'", (ALL,)).fetchone()
            over = round(float(kept[0])) - self.max_count if kept else 0
            if over > 0:
                removed += self._delete(cur, "i.id IN (SELECT id FROM impressions ORDER BY created, id LIMIT ?)",
                                        (over,))
        return removed

    def _delete(self, cur: Any, where: str, params: Sequence[Any]) -> int:
        rows = self._run(cur, "SELECT i.id, i.experiment, i.method, i.arms, i.teams, i.excluded, f.clicked FROM "
                              f"impressions i LEFT JOIN feedback f ON f.impression = i.id WHERE {where}",
                         params).fetchall()
        ids = [r[0] for r in rows]
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            marks = ", ".join("?" * len(chunk))
            self._run(cur, f"DELETE FROM feedback WHERE impression IN ({marks})", chunk)
            self._run(cur, f"DELETE FROM impressions WHERE id IN ({marks})", chunk)
        self._apply(cur, [r[1:] for r in rows], -1.0)
        return len(rows)

    def close(self) -> None:  # pragma: no cover - each backend has its own
        raise NotImplementedError


def _row(impression: Impression) -> tuple[Any, ...]:
    return (impression.id, impression.experiment, impression.method, json.dumps(impression.arms),
            json.dumps(impression.teams), int(impression.excluded), impression.created, impression.query,
            None if impression.documents is None else json.dumps(impression.documents))


def _impression(row: Sequence[Any]) -> Impression:
    return Impression(id=row[0], experiment=row[1], method=row[2], arms=json.loads(row[3]),
                      teams=json.loads(row[4]), excluded=bool(row[5]), created=float(row[6]), query=row[7],
                      documents=None if row[8] is None else json.loads(row[8]),
                      clicked=None if row[9] is None else json.loads(row[9]))


class SQLiteStore(SQLStore):
    """One SQLite file in WAL mode (readers never wait for the writer); ``:memory:`` for tests. One connection
    behind a lock. A file deleted or replaced while the store is open is noticed at the next operation: a warning
    says so, and recording goes on in a new file (what the old one held is gone with it)."""

    kind = "sqlite"

    def __init__(self, path: str, **retention: Any) -> None:
        super().__init__(**retention)
        self.path = path
        self.replaced = 0
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._inode: tuple[int, int] | None = None
        try:
            self._create()
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(f"cannot open the experiment store {path}: {self.outage}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
            stat = os.stat(self.path)
            self._inode = (stat.st_dev, stat.st_ino)
        conn.execute("PRAGMA foreign_keys=ON")  # (a writer's lock is waited for 30 s: connect's timeout)
        return conn

    def _file_changed(self) -> bool:
        if self.path == ":memory:" or self._inode is None:
            return False
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (stat.st_dev, stat.st_ino) != self._inode

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock:
            if self._conn is not None and self._file_changed():
                self.replaced += 1
                logger.warning("the experiment store's file %s was deleted or replaced while in use: what it held "
                               "is gone; recording goes on in a new file", self.path)
                self._conn.close()
                self._conn = None
            fresh = self._conn is None
            if fresh:
                self._conn = self._connect()
            conn = self._conn
            assert conn is not None
            try:
                if fresh:
                    for statement in SCHEMA:
                        conn.execute(statement)
                yield conn.cursor()
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

    def _is_outage(self, exc: BaseException) -> bool:
        # a full or read-only disk, a lock held too long, a damaged file ("file is not a database"); not a bug's
        # IntegrityError or ProgrammingError, which are DatabaseErrors too
        return isinstance(exc, (sqlite3.OperationalError, OSError)) or type(exc) is sqlite3.DatabaseError

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresStore(SQLStore):
    """A PostgreSQL database (``postgresql://...``) through psycopg 3, for several service replicas. Connections
    come from a pool (psycopg_pool) that checks each before use and reopens broken ones; a database that does not
    answer within ``timeout_s`` is unavailable for that operation."""

    placeholder = "%s"
    kind = "postgresql"

    def __init__(self, url: str, *, timeout_s: float = 2.0, max_connections: int = 4, **retention: Any) -> None:
        super().__init__(**retention)
        self.psycopg = import_optional("psycopg", extra="postgres", feature="a PostgreSQL experiment store")
        pool = import_optional("psycopg_pool", extra="postgres", feature="a PostgreSQL experiment store",
                               package="psycopg-pool")
        self.url, self.timeout_s = url, timeout_s
        try:  # a wrong password or a bad address fails here, by its own words, not as a pool's timeout
            self.psycopg.connect(url, connect_timeout=max(1, round(timeout_s))).close()
        except self.psycopg.Error as exc:
            raise StoreUnavailableError(f"cannot open the experiment store {_redact(url)}: "
                                        f"{str(exc).strip().splitlines()[0]}") from None
        logging.getLogger("psycopg.pool").addFilter(_pool_retries)
        self._pool = pool.ConnectionPool(url, min_size=1, max_size=max_connections, open=True, timeout=timeout_s,
                                         check=pool.ConnectionPool.check_connection, reconnect_timeout=timeout_s,
                                         kwargs={"connect_timeout": max(1, round(timeout_s))},
                                         name="rankrelay-experiments")
        self._outage_types = (self.psycopg.OperationalError, self.psycopg.InterfaceError, pool.PoolTimeout,
                              pool.TooManyRequests)
        self._create()

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._pool.connection() as conn, conn.cursor() as cursor:
            yield cursor

    def _is_outage(self, exc: BaseException) -> bool:
        return isinstance(exc, self._outage_types)

    def close(self) -> None:
        self._pool.close()


def _pool_retries(record: logging.LogRecord) -> bool:
    """psycopg_pool's warning per reconnection attempt, kept at DEBUG: the store says an outage once."""
    if record.levelno == logging.WARNING and record.getMessage().startswith(("error connecting", "reconnection")):
        logger.debug("psycopg_pool: %s", record.getMessage())
        return False
    return True


def _redact(url: str) -> str:
    """``url`` without its password."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}{at}{host}" if at else url


def open_store(where: str, **retention: Any) -> SQLStore:
    """A store for ``where``: a ``postgresql://`` URL, or a SQLite file path (``sqlite:///path`` too);
    :class:`StoreUnavailableError` when it cannot be opened."""
    if where.startswith(("postgresql://", "postgres://")):
        return PostgresStore(where, **retention)
    return SQLiteStore(where.removeprefix("sqlite:///") if where.startswith("sqlite:///") else where, **retention)
