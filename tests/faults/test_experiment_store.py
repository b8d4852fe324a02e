"""Faults of the experiment store, against the real parts: a PostgreSQL server restarted and its connections
terminated under load, a SQLite file deleted or on a full disk, a database that cannot be opened."""

from __future__ import annotations

import logging
import threading
import time

import httpx
import pytest
from faults_helpers import AUTH, DOCS, experiment_app, fill
from polling import until
from serving import running

from rankrelay.errors import StoreUnavailableError
from rankrelay.experiments.store import Impression, PostgresStore, SQLiteStore, open_store


def imp(n: object, experiment: str = "exp") -> Impression:
    return Impression(f"imp-{n}", experiment, "team-draft", ["a", "b"], [0, 1, 0, 1])


def test_a_postgres_restart_under_load_answers_no_500_and_loses_no_acknowledged_impression(postgres_server):
    where = postgres_server.database("restart_under_load")
    answers: list[tuple[int, str | None, str | None]] = []
    feedback: list[int] = []
    stop = threading.Event()

    def client(base: str) -> None:
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
            while not stop.is_set():
                r = http.post("/v2/rerank", json={"model": "ab", "query": "lift", "documents": DOCS})
                answers.append((r.status_code, r.json().get("id"), r.headers.get("X-Impression-Recorded")))
                if r.status_code == 200:
                    feedback.append(http.post("/v1/feedback", json={"id": r.json()["id"], "clicked": [0]}).status_code)

    with running(experiment_app(where)) as (base, _):
        threads = [threading.Thread(target=client, args=(base,)) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        postgres_server.stop()
        time.sleep(2.0)
        during = len(answers)
        postgres_server.start()
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:  # feedback comes back on its own
            def feedback_recorded() -> bool:
                r = http.post("/v2/rerank", json={"model": "ab", "query": "lift", "documents": DOCS})
                return http.post("/v1/feedback", json={"id": r.json()["id"], "clicked": [1]}).status_code == 200

            until(feedback_recorded, "feedback recovered after the database came back", seconds=60, every=0.2)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(60)
    statuses = {status for status, _, _ in answers} | set(feedback)
    assert statuses <= {200, 503} and 500 not in statuses
    assert {status for status, _, _ in answers} == {200}  # reranking never depended on the store
    outcomes = {recorded for _, _, recorded in answers}
    assert "buffered" in outcomes and "lost" not in outcomes and during > 0
    store = PostgresStore(where)
    try:
        kept = {i.id for i in store.impressions("ab")}
        acknowledged = {id_ for _, id_, recorded in answers if recorded in ("recorded", "buffered")}
        assert acknowledged <= kept  # the buffer was written when the database came back (or at the stop)
        assert store.totals("ab")["impressions"] == len(kept)
    finally:
        store.close()


def test_terminated_postgres_connections_are_reopened_before_use(postgres_server, caplog):
    store = PostgresStore(postgres_server.database("terminated"))
    try:
        store.add(imp(1))
        assert postgres_server.terminate_backends() >= 1
        with caplog.at_level(logging.WARNING, logger="rankrelay.experiments.store"):
            store.add(imp(2))  # the pool checks the connection, finds it dead and opens another
            assert store.feedback("imp-1", [0]).created
        assert store.counts() == {"impressions": 2, "feedback": 1} and store.outages == 0
        assert not [r for r in caplog.records if "unavailable" in r.message]
    finally:
        store.close()


def test_a_postgres_outage_is_one_warning_and_a_typed_error_then_the_store_comes_back(postgres_server, caplog):
    store = PostgresStore(postgres_server.database("outage"), timeout_s=1.0)
    try:
        store.add(imp(1))
        postgres_server.stop()
        with caplog.at_level(logging.WARNING, logger="rankrelay.experiments.store"):
            for n in range(3):
                with pytest.raises(StoreUnavailableError, match="experiment store is unavailable"):
                    store.add(imp(f"down-{n}"))
            postgres_server.start()
            def added() -> bool:
                try:
                    store.add(imp(2))
                except StoreUnavailableError:
                    return False
                return True

            until(added, "the store came back", seconds=30, every=0.2)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert all(r.name == "rankrelay.experiments.store" for r in caplog.records if r.levelno >= logging.WARNING)
        assert sum("unavailable" in m for m in warnings) == 1 and sum(m.endswith("is back") for m in warnings) == 1
        assert store.outages == 1 and store.outage is None
        assert {i.id for i in store.impressions("exp")} == {"imp-1", "imp-2"}
    finally:
        store.close()


@pytest.mark.parametrize("where", ["postgresql://nobody:wrong@127.0.0.1:{port}/nodb", "{tmp}/missing/dir/exp.db"])
def test_a_store_that_cannot_be_opened_is_a_typed_error_naming_it_without_its_password(where, tmp_path,
                                                                                         postgres_url):
    port = postgres_url.rsplit(":", 1)[1].split("/")[0]
    address = where.format(port=port, tmp=tmp_path)
    with pytest.raises(StoreUnavailableError, match="cannot open the experiment store") as caught:
        open_store(address)
    assert "wrong" not in str(caught.value)


def test_the_sqlite_file_deleted_while_serving_is_said_once_and_recording_goes_on_in_a_new_file(tmp_path, caplog):
    path = tmp_path / "exp.db"
    store = SQLiteStore(str(path))
    try:
        store.add(imp(1))
        path.unlink()
        with caplog.at_level(logging.WARNING, logger="rankrelay.experiments.store"):
            store.add(imp(2))
            store.add(imp(3))
        assert [r.message for r in caplog.records if "deleted or replaced" in r.message] != []
        assert store.replaced == 1 and path.exists()
        reopened = SQLiteStore(str(path))
        assert [i.id for i in reopened.impressions("exp")] == ["imp-2", "imp-3"]  # in the file on disk now
        reopened.close()
    finally:
        store.close()


def test_a_full_disk_makes_the_sqlite_store_unavailable_not_broken_and_it_recovers(small_disk):
    store = SQLiteStore(str(small_disk / "exp.db"))
    try:
        store.add(imp(0))
        fill(small_disk)
        with pytest.raises(StoreUnavailableError, match="full"):
            for n in range(1, 2000):  # the pages SQLite had in hand run out
                store.add(Impression(f"imp-{n}", "exp", "team-draft", ["a", "b"], [0, 1] * 200,
                                     query="q" * 2000))
        written = store.counts()["impressions"]  # reading still works
        (small_disk / "ballast").unlink()
        store.add(imp("after"))
        assert store.counts()["impressions"] == written + 1 and store.outage is None
    finally:
        store.close()


def test_a_sqlite_file_damaged_in_place_is_unavailable_not_a_crash(tmp_path, caplog):
    path = tmp_path / "exp.db"
    store = SQLiteStore(str(path))
    try:
        store.add(imp(1))
        store.close()
        store = SQLiteStore(str(path))
        size = path.stat().st_size
        with open(path, "r+b") as f:  # same file, same inode: its pages overwritten with garbage
            f.write(b"\xde\xad\xbe\xef" * (size // 4))
        with caplog.at_level(logging.WARNING, logger="rankrelay.experiments.store"):
            with pytest.raises(StoreUnavailableError, match="not a database|malformed"):
                store.add(imp(2))
        assert store.outage is not None and store.outages == 1
    finally:
        store.close()


async def test_impressions_wait_in_a_bounded_buffer_while_the_disk_is_full_and_are_written_when_there_is_room(
        small_disk):
    from rankrelay.experiments.online import Experiment, Experiments
    from rankrelay.rerankers.reference import IdentityReranker
    from rankrelay.results import to_documents
    from rankrelay.testing import FakeClock

    store = SQLiteStore(str(small_disk / "exp.db"))
    events: list[tuple[str, str, str]] = []
    clock = FakeClock(start=0.0)
    runner = Experiments({"ab": Experiment("ab", ["a", "b"])}, store, buffer=3,
                         on_event=lambda *event: events.append(event), clock=clock)
    model = IdentityReranker()

    async def rerank(arm, query, docs, top_n):
        return await model.arerank(query, docs, top_n)

    async def answer(query: str) -> str:
        # a long query, stored with store_text, so that each impression needs fresh pages
        res = await runner.answer("ab", query * 2000, to_documents(DOCS), None, rerank)
        return res.info["impression_recorded"]

    runner.store_text = True
    assert await answer("a") == "recorded"
    fill(small_disk)
    outcomes = [await answer(q) for q in "bcdef"]
    assert "buffered" in outcomes and outcomes[-1] == "lost" and runner.pending == 3
    with pytest.raises(StoreUnavailableError, match="not stored yet"):
        await runner.feedback(runner._pending[0].id, [0])
    (small_disk / "ballast").unlink()
    clock.sleep(runner.retry_s)  # the store is tried again after retry_s
    assert runner.flush() == 3 and runner.pending == 0
    kept = {i.id for i in store.impressions("ab")}
    assert len(kept) == 1 + outcomes.count("buffered") + outcomes.count("recorded")
    assert ("ab", "impression", "lost") in events
    store.close()
