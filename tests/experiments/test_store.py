"""The experiment store on SQLite (a file, WAL) and on a real PostgreSQL server on 127.0.0.1."""

import itertools
import threading

import pytest
from conftest import raises_exactly

from rankrelay.errors import ConfigError, ConflictError, InvalidInputError, NotFoundError
from rankrelay.experiments.store import Impression, PostgresStore, SQLiteStore, open_store
from rankrelay.testing import FakeClock

_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request, tmp_path):
    """A factory of stores on one fresh database (a second store on it is a second worker or replica)."""
    made = []
    if request.param == "sqlite":
        where = str(tmp_path / "experiments.db")
    else:
        import psycopg

        server = request.getfixturevalue("postgres_url")
        name = f"rr_test_{next(_databases)}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        where = server.rsplit("/", 1)[0] + f"/{name}"

    def make(**retention):
        store = open_store(where, **retention)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def imp(n, experiment="exp", teams=(0, 1, 0, 1), created=None, **kw):
    extra = {"created": created} if created is not None else {}
    return Impression(f"imp-{n}", experiment, "team-draft", ["a", "b"], list(teams), **extra, **kw)


def test_an_impression_and_its_feedback_round_trip(make_store):
    store = make_store()
    store.add(imp(1, query="q text", documents=["d0", "d1", "d2", "d3"]))
    store.add(imp(2, excluded=True))
    got = store.get("imp-1")
    assert (got.arms, got.teams, got.clicked, got.query, got.documents) == (["a", "b"], [0, 1, 0, 1], None, "q text",
                                                                             ["d0", "d1", "d2", "d3"])
    fb = store.feedback("imp-1", [2, 0], dwell=[3.5, 1.0], grade=2)
    assert fb.created and fb.clicked == [2, 0]
    kept = {i.id: i for i in store.impressions("exp")}
    assert kept["imp-1"].clicked == [2, 0] and kept["imp-2"].clicked is None and kept["imp-2"].excluded
    assert store.counts() == {"impressions": 2, "feedback": 1}


def test_the_same_feedback_twice_is_recorded_once_and_other_feedback_is_a_conflict(make_store):
    store = make_store()
    store.add(imp(1))
    assert store.feedback("imp-1", [1]).created
    again = store.feedback("imp-1", [1])
    assert not again.created and store.counts()["feedback"] == 1
    with pytest.raises(ConflictError, match="already has feedback"):
        store.feedback("imp-1", [0])


def test_feedback_for_an_unknown_impression_or_another_experiment_is_not_found(make_store):
    store = make_store()
    store.add(imp(1, experiment="first"))
    with pytest.raises(NotFoundError, match="no impression 'nope'"):
        store.feedback("nope", [0])
    with pytest.raises(NotFoundError, match="in experiment 'second'"):
        store.feedback("imp-1", [0], experiment="second")
    assert store.feedback("imp-1", [0], experiment="first").created


@pytest.mark.parametrize(("clicked", "dwell", "match"), [([4], None, r"outside the answered list \(0..3\)"),
                                                          ([-1], None, "outside"), ([1, 1], None, "clicked twice"),
                                                          ([1, 2], [1.0], "dwell has 1 values for 2 clicks")])
def test_bad_feedback_is_refused_and_nothing_is_recorded(make_store, clicked, dwell, match):
    store = make_store()
    store.add(imp(1))
    with pytest.raises(InvalidInputError, match=match):
        store.feedback("imp-1", clicked, dwell=dwell)
    assert store.counts()["feedback"] == 0


def test_an_impression_id_is_recorded_once(make_store):
    store = make_store()
    store.add(imp(1))
    with raises_exactly(ConflictError, "impression 'imp-1' is already recorded"):
        store.add(imp(1, experiment="other"))
    store.add(imp(2))  # the store is still usable after the failed insert
    assert store.counts()["impressions"] == 2


def test_retention_by_count_runs_on_every_write_and_keeps_the_newest(make_store):
    store = make_store(max_count=10)
    for n in range(250):
        store.add(imp(n, created=1000.0 + n))
        assert store.counts()["impressions"] <= 10  # never more than the limit, not every hundredth write
    assert [i.id for i in store.impressions("exp")] == [f"imp-{n}" for n in range(240, 250)]
    assert store.totals("exp")["impressions"] == 10  # the report's totals forget what retention removed


def test_retention_by_age_removes_old_impressions_with_their_feedback_and_expired_ones_take_no_feedback(make_store):
    clock = FakeClock(start=1000.0)
    store = make_store(max_age_s=100, clock=clock)
    for n in range(5):
        store.add(imp(n, created=900.0 + 10 * n))  # created 900, 910, ..., 940
    store.feedback("imp-0", [0])
    store.feedback("imp-4", [1])
    clock.sleep(35)  # now 1035: older than 935 has expired
    with pytest.raises(NotFoundError, match="'imp-1' has expired"):
        store.feedback("imp-1", [0])
    assert store.prune() == 4 and [i.id for i in store.impressions("exp")] == ["imp-4"]
    assert store.counts() == {"impressions": 1, "feedback": 1}
    totals = store.totals("exp")
    assert (totals["impressions"], totals["with_feedback"]) == (1, 1)


def test_bad_retention_is_a_config_error(tmp_path):
    with raises_exactly(ConfigError, "retention max_age_s must be positive, got 0"):
        SQLiteStore(str(tmp_path / "x.db"), max_age_s=0)
    with raises_exactly(ConfigError, "retention max_count must be at least 1, got 0"):
        SQLiteStore(str(tmp_path / "x.db"), max_count=0)


def test_workers_sharing_the_store_record_every_impression_and_feedback_once(make_store):
    """Two stores on one database (two service workers, or two replicas), four threads each."""
    stores = [make_store(), make_store()]
    errors = []

    def work(store, worker):
        try:
            for n in range(60):
                key = f"{worker}-{n}"
                store.add(imp(key))
                store.feedback(f"imp-{key}", [n % 4])
                store.feedback(f"imp-{key}", [n % 4])  # a client's retry: idempotent
        except Exception as exc:  # noqa: BLE001 - any error fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(stores[w % 2], w)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert stores[0].counts() == stores[1].counts() == {"impressions": 480, "feedback": 480}


def test_open_store_picks_the_backend_from_the_address(tmp_path):
    assert isinstance(open_store(str(tmp_path / "a.db")), SQLiteStore)
    assert open_store(f"sqlite:///{tmp_path / 'b.db'}").path == str(tmp_path / "b.db")
    assert PostgresStore.placeholder == "%s"


def test_a_store_written_before_totals_were_kept_gets_them_from_its_rows_when_opened(make_store):
    store = make_store()
    for n in range(4):
        store.add(imp(n, teams=(n % 2, 1, 0, 1), excluded=n == 3))
    store.feedback("imp-0", [0])
    store.feedback("imp-1", [1, 2])
    store.add(imp(9, experiment="other"))
    kept = {name: store.totals(name) for name in ("exp", "other")}
    with store._transaction() as cur:  # as a store from before running totals: rows, no totals
        store._run(cur, "DELETE FROM experiment_totals")
    assert store.totals("exp") != kept["exp"]
    reopened = make_store()
    assert {name: reopened.totals(name) for name in ("exp", "other")} == kept
    assert reopened.experiments() == store.experiments() and reopened.counts() == {"impressions": 5, "feedback": 2}


def test_the_store_says_what_it_holds_and_what_is_missing_by_name(make_store):
    store = make_store()
    assert store.add_many([imp(1), imp(2)]) == 2
    assert store.add_many([imp(2), imp(3), imp(4)]) == 2  # an id already recorded is skipped, not counted
    assert store.add_many([]) == 0
    assert store.experiments() == {"exp": ("team-draft", ["a", "b"])}
    store.ping()  # the database is reached
    with raises_exactly(NotFoundError, "no impression 'imp-9' (never answered, expired, or of another experiment)"):
        store.get("imp-9")
    with raises_exactly(NotFoundError, "no impression 'imp-1' in experiment 'other' (never answered, expired, or of "
                                       "another experiment)"):
        store.get("imp-1", "other")


def test_a_closed_sqlite_store_opens_again_on_its_next_use_and_waits_30_s_for_a_writers_lock(tmp_path):
    store = SQLiteStore(str(tmp_path / "e.db"))
    store.add(imp(1))
    store.close()
    store.add(imp(2))
    assert store.counts() == {"impressions": 2, "feedback": 0}
    with store._transaction() as cur:
        assert cur.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    store.close()


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://rr:secret@db.example:5432/experiments", "postgresql://rr@db.example:5432/experiments"),
    ("postgresql://rr:se:cr@et@db.example/x", "postgresql://rr@db.example/x"),  # ':' and '@' in the password
    ("postgresql://db.example/x?options=a://b", "postgresql://db.example/x?options=a://b"),
    ("postgresql://rr:pw@db.example/x?next=c://d", "postgresql://rr@db.example/x?next=c://d"),
])
def test_a_store_url_is_shown_without_its_password(url, shown):
    from rankrelay.experiments.store import _redact

    assert _redact(url) == shown


def test_only_the_pools_reconnection_warnings_are_kept_at_debug():
    import logging

    from rankrelay.experiments.store import _pool_retries

    def record(level, message):
        return logging.LogRecord("psycopg.pool", level, __file__, 1, message, None, None)

    assert not _pool_retries(record(logging.WARNING, "error connecting in 'pool-1': refused"))
    assert not _pool_retries(record(logging.WARNING, "reconnection attempt in pool 'p' failed"))
    assert _pool_retries(record(logging.WARNING, "the pool is full"))  # other warnings are the operator's
    assert _pool_retries(record(logging.INFO, "error connecting in 'pool-1'"))


def test_a_missing_postgresql_driver_names_the_extra_and_the_package(monkeypatch, postgres_url):
    import sys

    import psycopg

    from rankrelay.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with raises_exactly(MissingDependencyError, "a PostgreSQL experiment store needs the optional package 'psycopg': "
                                                "pip install 'rankrelay[postgres]'"):
        open_store(postgres_url)
    monkeypatch.setitem(sys.modules, "psycopg", psycopg)  # the driver is back, its pool is not
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)
    with raises_exactly(MissingDependencyError, "a PostgreSQL experiment store needs the optional package "
                                                "'psycopg-pool': pip install 'rankrelay[postgres]'"):
        open_store(postgres_url)


def test_a_postgresql_store_keeps_at_most_four_connections_by_default(postgres_url):
    store = open_store(postgres_url)
    try:
        assert store._pool.max_size == 4
    finally:
        store.close()


def test_a_postgresql_store_warns_nothing_names_its_pool_and_keeps_the_pools_retries_at_debug(postgres_url, caplog):
    import logging
    import threading
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (a pool opened implicitly warns on its first use)
        store = open_store(postgres_url)
        try:
            store.add(imp(1))
            assert {t.name for t in threading.enumerate()} >= {"rankrelay-experiments-scheduler",
                                                               "rankrelay-experiments-worker-0"}
            with caplog.at_level(logging.DEBUG):
                logging.getLogger("psycopg.pool").warning("error connecting in 'rankrelay-experiments': refused")
            assert [(r.name, r.levelno) for r in caplog.records if "refused" in r.getMessage()] == [
                ("rankrelay.experiments.store", logging.DEBUG)]
        finally:
            store.close()


def test_batches_of_impressions_are_counted_and_kept_within_retention(make_store):
    store = make_store(max_count=10)
    for start in range(0, 40, 8):
        assert store.add_many([imp(n, created=1000.0 + n) for n in range(start, start + 8)]) == 8
        assert store.counts()["impressions"] <= 10
    assert [i.id for i in store.impressions("exp")] == [f"imp-{n}" for n in range(30, 40)]
    assert store.totals("exp")["impressions"] == 10


def test_retention_takes_a_split_test_s_clicks_out_of_its_own_totals(make_store):
    store = make_store(max_count=2)
    store.add(Impression("imp-1", "exp", "split", ["a", "b"], [1], created=1000.0))
    store.feedback("imp-1", [0])
    assert store.totals("exp")["split:1:clicked"] == 1
    for n in (2, 3):
        store.add(Impression(f"imp-{n}", "exp", "split", ["a", "b"], [0], created=1000.0 + n))
    totals = store.totals("exp")  # imp-1 and its click are gone: every count it added is taken back
    assert [i.id for i in store.impressions("exp")] == ["imp-2", "imp-3"]
    assert {k: v for k, v in totals.items() if v} == {"impressions": 2}


def test_an_impression_read_back_keeps_when_it_was_made_and_clicks_given_without_dwell(make_store):
    store = make_store()
    store.add(imp(1, created=1234.5))
    fb = store.feedback("imp-1", [1, 3])
    assert (fb.impression, fb.clicked, fb.dwell, fb.grade, fb.created, fb.experiment) == (
        "imp-1", [1, 3], None, None, True, "exp")
    assert store.get("imp-1").created == 1234.5
    (kept,) = store.impressions("exp")
    assert (kept.created, kept.clicked) == (1234.5, [1, 3])


def test_feedback_with_a_grade_is_recorded_once_and_a_different_one_is_a_conflict_that_says_what_is_there(make_store):
    store = make_store()
    store.add(imp(1))
    fb = store.feedback("imp-1", [1], dwell=[2.5], grade=2)
    assert (fb.dwell, fb.grade) == ([2.5], 2)
    assert not store.feedback("imp-1", [1], dwell=[2.5], grade=2.0).created  # the same again: accepted
    with raises_exactly(ConflictError, "impression 'imp-1' already has feedback, other than this (clicked [1], "
                                       "dwell [2.5], grade 2.0); feedback is recorded once"):
        store.feedback("imp-1", [1], dwell=[2.5], grade=3)
    with raises_exactly(InvalidInputError, "clicked: a position is clicked twice in one feedback"):
        store.feedback("imp-1", [2, 2])


def test_retention_of_one_second_or_of_one_impression_is_valid(tmp_path):
    clock = FakeClock(start=1000.0)
    short = SQLiteStore(str(tmp_path / "short.db"), max_age_s=1, clock=clock)
    short.add(imp(1, created=999.5))
    clock.sleep(1.0)
    assert short.prune() == 1
    one = SQLiteStore(str(tmp_path / "one.db"), max_count=1)
    for n in range(3):
        one.add(imp(n, created=1000.0 + n))
    assert [i.id for i in one.impressions("exp")] == ["imp-2"]
    for store in (short, one):
        store.close()


def test_pruning_by_age_and_by_count_at_once_says_how_many_it_removed(make_store):
    loose = make_store()
    for n in range(6):
        loose.add(imp(n, created=800.0 if n < 2 else 950.0 + n))  # two old ones, four recent
    strict = make_store(max_age_s=100, max_count=3, clock=FakeClock(start=1000.0))
    assert strict.prune() == 3  # the two older than 900, then the oldest of the four left
    assert [i.id for i in strict.impressions("exp")] == ["imp-3", "imp-4", "imp-5"]
    assert make_store(max_count=5).prune() == 0  # (nothing over the count: nothing removed)


def test_pruning_a_store_that_never_held_an_impression_removes_nothing(tmp_path):
    store = SQLiteStore(str(tmp_path / "empty.db"), max_count=5)
    assert store.prune() == 0 and store.counts() == {"impressions": 0, "feedback": 0}
    store.close()


def test_a_postgres_scheme_url_opens_a_postgresql_store(postgres_url):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE rr_scheme")
    url = postgres_url.rsplit("/", 1)[0] + "/rr_scheme"
    store = open_store(url.replace("postgresql://", "postgres://", 1))
    try:
        assert isinstance(store, PostgresStore)
        store.add(imp(1))
        assert store.get("imp-1").teams == [0, 1, 0, 1]
    finally:
        store.close()
