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
