"""Experiments over a store, in-process (no server): which arm answers, what is recorded, what is excluded, and
what an experiment that cannot run says. The arms are plain async functions over the reference rerankers."""

from __future__ import annotations

import pytest
from conftest import raises_exactly

from rankrelay.errors import BackendFailedError, ConfigError
from rankrelay.experiments.online import Experiment, Experiments, check_experiments, split_arm
from rankrelay.experiments.store import SQLiteStore
from rankrelay.rerankers.reference import IdentityReranker, RandomReranker
from rankrelay.results import to_documents

DOCS = to_documents([f"document {i} about lift" for i in range(6)])


def arms(failing: dict[str, BaseException] | None = None):
    models = {"first": IdentityReranker(), "shuffled": RandomReranker(seed=3)}

    async def rerank(arm, query, docs, top_n):
        if failing and arm in failing:
            raise failing[arm]
        return await models[arm].arerank(query, docs, top_n)

    return rerank


def runner(method="team-draft", **options):
    store = SQLiteStore(":memory:")
    return Experiments({"ab": Experiment("ab", ["first", "shuffled"], method)}, store, **options), store


async def test_a_split_answered_by_the_other_arm_after_its_own_failed_is_left_out_of_the_analysis():
    exp, store = runner("split")
    for _ in range(12):  # both arms get chosen; whichever is chosen, "shuffled" fails
        res = await exp.answer("ab", "lift", DOCS, None, arms({"shuffled": BackendFailedError("down")}))
        kept = store.get(res.info["impression"])
        chosen = split_arm(kept.id, 2)
        assert set(kept.teams) == {0}  # the first arm answered every time
        assert kept.excluded is (chosen == 1)  # left out exactly when the chosen arm was the one that failed
    assert store.totals("ab")["excluded"] == sum(store.get(i.id).excluded for i in store.impressions("ab"))


@pytest.mark.parametrize("failure", [TimeoutError(), BackendFailedError("down")])
async def test_an_interleaved_arm_that_times_out_or_fails_lets_the_other_answer_alone(failure):
    exp, store = runner()
    res = await exp.answer("ab", "lift", DOCS, None, arms({"shuffled": failure}))
    kept = store.get(res.info["impression"])
    assert [r.index for r in res.results] == list(range(6)) and kept.excluded and set(kept.teams) == {0}


async def test_when_every_arm_fails_the_answer_fails_and_nothing_is_recorded():
    exp, store = runner()
    with pytest.raises(BackendFailedError):
        await exp.answer("ab", "lift", DOCS, None, arms({"first": BackendFailedError("a"),
                                                         "shuffled": BackendFailedError("b")}))
    assert store.counts()["impressions"] == 0


async def test_store_text_keeps_the_query_and_the_shown_documents_in_shown_order():
    exp, store = runner(store_text=True)
    res = await exp.answer("ab", "why lift", DOCS, 3, arms())
    kept = store.get(res.info["impression"])
    assert kept.query == "why lift" and kept.documents == [r.text for r in res.results] and len(kept.documents) == 3
    plain, plain_store = runner()
    res = await plain.answer("ab", "why lift", DOCS, 3, arms())
    kept = plain_store.get(res.info["impression"])
    assert kept.query is None and kept.documents is None


def test_an_experiment_naming_the_same_arm_twice_is_refused():
    with raises_exactly(ConfigError, "experiment 'ab': an arm is named twice: ['a', 'a']"):
        check_experiments({"ab": Experiment("ab", ["a", "a"], "multileave")}, served=["a"])


def test_what_ready_says_of_a_store_that_is_up_or_that_cannot_be_opened_and_when_it_is_tried_again(caplog):
    import logging

    from rankrelay.errors import NotFoundError, StoreUnavailableError
    from rankrelay.testing import FakeClock

    healthy, _ = runner()
    assert healthy.state() == {"state": "up", "pending": 0, "outages": 0}
    assert Experiments({}, None).state() == {}  # no experiment: nothing to say
    clock, tries = FakeClock(start=100.0), []

    def opener():
        tries.append(clock())
        if len(tries) < 3:
            raise StoreUnavailableError("the database is down")
        return SQLiteStore(":memory:")

    away = Experiments({"ab": Experiment("ab", ["first", "shuffled"], "team-draft")}, opener, retry_s=5.0,
                       clock=clock)
    with caplog.at_level(logging.WARNING, "rankrelay.experiments.online"):
        assert away.open_store() is None
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and said[0].startswith("experiment store unavailable (the database is down)")
    assert away.state() == {"state": "unavailable", "reason": "the database is down", "pending": 0, "outages": 0}
    clock.sleep(4.9)
    assert away.open_store() is None and tries == [100.0]  # not tried again within retry_s
    clock.sleep(0.1)
    assert away.open_store() is None and tries == [100.0, 105.0] and len(caplog.records) == 1  # said once
    with raises_exactly(StoreUnavailableError, "the experiment store is unavailable; try again later"):
        away.report("ab")  # (not tried again: within retry_s of the last try)
    clock.sleep(5.0)
    assert away.open_store() is not None and away.state() == {"state": "up", "pending": 0, "outages": 0}
    with raises_exactly(NotFoundError, "no experiment 'other'; experiments: ab"):
        away.report("other")
    two = Experiments({n: Experiment(n, ["first", "shuffled"], "team-draft") for n in ("ab", "cd")}, None)
    with raises_exactly(NotFoundError, "no experiment 'other'; experiments: ab, cd"):
        two.report("other")
    with raises_exactly(NotFoundError, "no experiment 'ab'; experiments: none"):
        Experiments({}, None).report("ab")
    assert away.report("ab")["experiment"] == "ab"


async def test_what_ready_says_of_a_store_that_goes_away_while_serving(tmp_path):
    path = tmp_path / "exp.db"
    SQLiteStore(str(path)).close()  # a store file with its tables, opened again by the service
    exp = Experiments({"ab": Experiment("ab", ["first", "shuffled"], "team-draft")}, SQLiteStore(str(path)))
    with open(path, "r+b") as f:  # the same file, its pages overwritten: the database is away
        f.write(b"\xde\xad\xbe\xef" * (path.stat().st_size // 4))
    res = await exp.answer("ab", "why lift", DOCS, 3, arms())
    assert len(res.results) == 3 and res.info["impression_recorded"] == "buffered"  # answered; the impression waits
    state = exp.state()
    assert state == {"state": "unavailable", "reason": exp.store.outage, "pending": 1, "outages": 1}
    assert "not a database" in state["reason"] or "malformed" in state["reason"]


async def test_an_experiment_s_answer_keeps_each_document_and_the_score_the_arm_that_placed_it_gave():
    from rankrelay.results import Document

    docs = [Document(f"document {i} about lift", id=f"d{i}", metadata={"n": i}) for i in range(6)]
    exp, store = runner()
    res = await exp.answer("ab", "lift", docs, 4, arms())
    kept = store.get(res.info["impression"])
    own = [await IdentityReranker().arerank("lift", docs), await RandomReranker(seed=3).arerank("lift", docs)]
    scores = [{r.index: r.score for r in arm.results} for arm in own]
    assert [r.score for r in res.results] == [scores[team][r.index] for r, team in zip(res.results, kept.teams)]
    assert [(r.rank, r.normalized_score) for r in res.results] == [(1, 1.0), (2, 0.75), (3, 0.5), (4, 0.25)]
    assert [(r.id, r.metadata, r.text) for r in res.results] == [(f"d{r.index}", {"n": r.index}, docs[r.index].text)
                                                                  for r in res.results]
    assert (res.query, res.backend, res.normalization, res.num_candidates, res.info["relevance"]) == (
        "lift", "experiment:ab", "rank", 6, "rank")
    assert {key.rsplit(":", 1)[1] for key in res.timings} == {"0", "1"}  # each arm's timings, by its position


async def test_what_the_service_counts_impressions_and_feedback_recorded_or_repeated():
    events = []
    exp, _ = runner(on_event=lambda *event: events.append(event))
    res = await exp.answer("ab", "why lift", DOCS, 3, arms())
    for _ in range(2):
        await exp.feedback(res.info["impression"], [0])
    assert events == [("ab", "impression", "recorded"), ("ab", "feedback", "recorded"), ("ab", "feedback", "repeated")]


async def test_feedback_without_experiments_or_for_an_impression_still_waiting_says_why(tmp_path):
    from rankrelay.errors import NotFoundError, StoreUnavailableError

    with raises_exactly(NotFoundError, "this service runs no experiments: feedback has nowhere to go"):
        await Experiments({}, None).feedback("any", [0])
    path = tmp_path / "exp.db"
    SQLiteStore(str(path)).close()
    exp = Experiments({"ab": Experiment("ab", ["first", "shuffled"], "team-draft")}, SQLiteStore(str(path)))
    with open(path, "r+b") as f:  # the database goes away: the impression waits in the buffer
        f.write(b"\xde\xad\xbe\xef" * (path.stat().st_size // 4))
    waiting = (await exp.answer("ab", "why lift", DOCS, 3, arms())).info["impression"]
    with raises_exactly(StoreUnavailableError, f"impression {waiting!r} is not stored yet (the experiment store is "
                                               "away); try again later"):
        await exp.feedback(waiting, [0])


async def test_the_buffer_is_written_in_batches_when_the_store_returns_and_a_bad_impression_is_the_only_one_lost(
        caplog, postgres_url):
    import logging

    import psycopg

    from rankrelay.errors import StoreUnavailableError
    from rankrelay.experiments.store import open_store
    from rankrelay.testing import FakeClock

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE rr_online_flush")
    clock, store, events = FakeClock(start=0.0), open_store(postgres_url.rsplit("/", 1)[0] + "/rr_online_flush"), []

    def opener():
        if clock() < 5.0:
            raise StoreUnavailableError("the database is down")
        return store

    exp = Experiments({"ab": Experiment("ab", ["first", "shuffled"], "team-draft")}, opener, retry_s=5.0,
                      clock=clock, on_event=lambda *event: events.append(event))
    exp.store_text = True  # a query PostgreSQL cannot hold (text with a NUL) makes its impression unstorable
    queries = ["q0", "q1", "q2", "q3", "bad \x00 query", "q5", "q6"]  # the bad one second in its batch
    ids = [(await exp.answer("ab", q, DOCS, None, arms())).info["impression"] for q in queries]
    assert exp.pending == 7 and exp.flush(batch=3) == 0 and exp.pending == 7  # the store is still away
    clock.sleep(5.0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, "rankrelay.experiments.online"):
        assert exp.flush(batch=3) == 6
    assert exp.pending == 0 and [i.id for i in store.impressions("ab")] == ids[:4] + ids[5:]
    assert events.count(("ab", "impression", "lost")) == 1 and events.count(("ab", "impression", "buffered")) == 7
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "experiment store: a buffered batch failed"] * 2  # q3 then the bad one written alone; the rest in batches
    assert (await exp.feedback(ids[5], [0]))["recorded"]  # a written impression takes feedback at once
    store.close()


def test_a_split_or_team_draft_experiment_of_three_arms_is_refused():
    for method in ("split", "team-draft"):
        with raises_exactly(ConfigError, f"experiment 'abc': {method} compares two arms, got 3; use multileave"):
            check_experiments({"abc": Experiment("abc", ["a", "b", "c"], method)}, ["a", "b", "c"])


async def test_a_split_answers_the_top_n_of_its_arm_and_fails_with_the_arm_s_error_when_both_fail():
    exp, store = runner("split")
    res = await exp.answer("ab", "lift", DOCS, 2, arms())
    chosen = split_arm(res.info["impression"], 2)
    assert len(res.results) == 2 and store.get(res.info["impression"]).teams == [chosen, chosen]
    with raises_exactly(BackendFailedError, "b down"):
        await exp.answer("ab", "lift", DOCS, None, arms({"first": BackendFailedError("b down"),
                                                         "shuffled": BackendFailedError("b down")}))


async def test_an_arm_with_a_bug_fails_the_answer_with_its_own_exception():
    exp, store = runner()
    with pytest.raises(ZeroDivisionError, match="a bug"):
        await exp.answer("ab", "lift", DOCS, None, arms({"shuffled": ZeroDivisionError("a bug")}))
    assert store.counts()["impressions"] == 0


async def test_an_answer_without_documents_is_an_impression_that_counts():
    exp, store = runner()
    res = await exp.answer("ab", "lift", [], None, arms())
    kept = store.get(res.info["impression"])
    assert res.results == [] and kept.teams == [] and not kept.excluded and store.totals("ab")["impressions"] == 1


async def test_an_impression_the_store_refuses_is_answered_and_counted_lost(postgres_url):
    import psycopg

    from rankrelay.experiments.store import open_store

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE rr_online_lost")
    store, events = open_store(postgres_url.rsplit("/", 1)[0] + "/rr_online_lost"), []
    exp = Experiments({"ab": Experiment("ab", ["first", "shuffled"], "team-draft")}, store, store_text=True,
                      on_event=lambda *event: events.append(event))
    res = await exp.answer("ab", "a query with a \x00 PostgreSQL cannot hold", DOCS, 3, arms())
    assert len(res.results) == 3 and res.info["impression_recorded"] == "lost" and exp.pending == 0
    assert events == [("ab", "impression", "lost")] and store.counts()["impressions"] == 0
    store.close()


def test_the_store_is_opened_once_tried_again_after_a_second_by_default_and_each_outage_is_said(caplog):
    import logging

    from rankrelay.errors import StoreUnavailableError
    from rankrelay.testing import FakeClock

    clock, opened, up = FakeClock(start=0.0), [], [False]

    def opener():
        if not up[0]:
            raise StoreUnavailableError("the database is down")
        opened.append(SQLiteStore(":memory:"))
        return opened[-1]

    exp = Experiments({"ab": Experiment("ab", ["first", "shuffled"], "team-draft")}, opener, clock=clock)
    assert (exp.retry_s, exp.buffer_size) == (1.0, 10_000)
    with raises_exactly(StoreUnavailableError, "the database is down (serve with [service] store_strict = false to "
                                               "start without it)"):
        exp.open()  # strict by default
    with caplog.at_level(logging.WARNING, "rankrelay.experiments.online"):
        exp.open(strict=False)
        up[0] = True
        clock.sleep(0.999)
        assert exp.open_store() is None  # tried again after retry_s (1 s), not before
        clock.sleep(0.001)
        store = exp.open_store()
        assert store is not None and exp.open_store() is store and len(opened) == 1  # opened once
        exp.open()  # already open: nothing is opened again
        assert len(opened) == 1
        exp.close()
        up[0] = False
        exp.open(strict=False)  # opened by open() after an outage, closed, down again: said again
        up[0] = True
        exp.open()
        exp.close()
        assert exp.store is None and exp.state()["state"] == "unavailable"
        up[0] = False
        clock.sleep(1.0)
        assert exp.open_store() is None  # reopened on demand: the database is down again
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("experiment store unavailable")]
    assert len(said) == 3  # each outage said once


def test_experiments_given_an_open_store_never_reopen_it_after_close(caplog):
    import logging

    store = SQLiteStore(":memory:")
    exp = Experiments({"ab": Experiment("ab", ["first", "shuffled"], "team-draft")}, store)
    exp.close()
    with caplog.at_level(logging.WARNING):
        assert exp.open_store() is None and exp.state()["state"] == "unavailable"
    assert caplog.records == []
    Experiments({}, SQLiteStore(":memory:")).close()  # no experiment: nothing to open or close


async def test_maintenance_opens_a_store_that_was_down_and_writes_the_buffer_while_the_service_runs():
    import asyncio

    from polling import until_async

    from rankrelay.errors import StoreUnavailableError
    from rankrelay.testing import FakeClock

    clock, up, store = FakeClock(start=0.0), [False], SQLiteStore(":memory:")

    def opener():
        if not up[0]:
            raise StoreUnavailableError("the database is down")
        return store

    exp = Experiments({"ab": Experiment("ab", ["first", "shuffled"], "team-draft")}, opener, clock=clock)
    exp.open(strict=False)
    ids = [(await exp.answer("ab", f"lift {i}", DOCS, 3, arms())).info["impression"] for i in range(3)]
    assert exp.pending == 3
    task = asyncio.create_task(exp.maintain(interval_s=0.001))
    idle = asyncio.create_task(Experiments({}, None).maintain(interval_s=0.001))  # no experiment: it only waits
    up[0] = True
    clock.sleep(1.0)
    await until_async(lambda: exp.pending == 0, "the buffer was written")
    assert [i.id for i in store.impressions("ab")] == ids and exp.state()["state"] == "up"
    assert not task.done() and not idle.done()  # both keep running beside the service
    for t in (task, idle):
        t.cancel()


async def test_maintenance_probes_a_store_that_went_away_and_says_it_is_up_once_it_answers(postgres_server):
    import asyncio

    from polling import until_async

    from rankrelay.errors import StoreUnavailableError
    from rankrelay.experiments.store import open_store
    from rankrelay.testing import FakeClock

    clock = FakeClock(start=0.0)
    store = open_store(postgres_server.database("rr_probe"), timeout_s=1)
    exp = Experiments({"ab": Experiment("ab", ["first", "shuffled"], "team-draft")}, store, clock=clock)
    postgres_server.stop()
    with pytest.raises(StoreUnavailableError):
        exp.report("ab")  # nothing waits in the buffer: only a probe can tell the store is back
    assert exp.state()["state"] == "unavailable" and exp.pending == 0
    task = asyncio.create_task(exp.maintain(interval_s=0.001))
    await until_async(lambda: exp._next_try == 1.0, "a probe failed: the store is set aside for retry_s")
    postgres_server.start()
    await asyncio.sleep(0.05)
    assert exp.state()["state"] == "unavailable"  # not probed again within retry_s
    clock.sleep(1.0)  # exactly retry_s later: probed again
    await until_async(lambda: exp.state()["state"] == "up", "the probe found the store back")
    task.cancel()
    store.close()


async def test_a_flush_that_finds_the_store_away_writes_nothing_and_keeps_the_buffer(postgres_server):
    from rankrelay.experiments.store import open_store
    from rankrelay.testing import FakeClock

    clock = FakeClock(start=0.0)
    store = open_store(postgres_server.database("rr_away"), timeout_s=1)
    exp = Experiments({"ab": Experiment("ab", ["first", "shuffled"], "team-draft")}, store, clock=clock)
    postgres_server.stop()
    assert (await exp.answer("ab", "lift", DOCS, 3, arms())).info["impression_recorded"] == "buffered"
    clock.sleep(exp.retry_s)
    assert exp.flush() == 0 and exp.pending == 1  # tried: still away
    postgres_server.start()
    clock.sleep(exp.retry_s)
    assert exp.flush() == 1 and exp.pending == 0
    store.close()
