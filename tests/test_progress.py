"""Progress off a terminal: a line at most every few seconds and one at the end, timed on an injected clock."""

import logging

from rankrelay.progress import steps
from rankrelay.testing import FakeClock


def test_off_a_terminal_progress_is_a_line_every_five_seconds_and_one_at_the_end(caplog):
    clock = FakeClock(start=0.0)
    caplog.set_level(logging.INFO, logger="rankrelay.progress")
    seen = []
    for item in steps(list(range(10)), "indexing", terminal=False, clock=clock):
        seen.append(item)
        clock.sleep(2.0)  # each item takes 2 s
    assert seen == list(range(10))
    assert [r.getMessage() for r in caplog.records] == [
        "indexing: 3/10 (30%), 6 s", "indexing: 6/10 (60%), 12 s", "indexing: 9/10 (90%), 18 s",
        "indexing: 10/10 (100%), 20 s"]


def test_each_item_is_counted_when_it_is_done_not_before_it_runs(caplog):
    clock = FakeClock(start=0.0)
    caplog.set_level(logging.INFO, logger="rankrelay.progress")
    for _ in steps(["a", "b"], "x", terminal=False, clock=clock, every_s=0.0):
        assert len(caplog.records) == 0 or caplog.records[-1].getMessage().startswith("x: 1/2")
        clock.sleep(1.0)
    assert [r.getMessage() for r in caplog.records] == ["x: 1/2 (50%), 1 s", "x: 2/2 (100%), 2 s"]


def test_an_empty_loop_says_nothing(caplog):
    caplog.set_level(logging.INFO, logger="rankrelay.progress")
    assert list(steps([], "x", terminal=False)) == [] and caplog.records == []


def test_an_item_done_exactly_every_five_seconds_is_a_line_each(caplog):
    clock = FakeClock(start=0.0)
    caplog.set_level(logging.INFO, logger="rankrelay.progress")
    for _ in steps(list(range(4)), "x", terminal=False, clock=clock):
        clock.sleep(5.0)
    assert [r.getMessage() for r in caplog.records] == [
        "x: 1/4 (25%), 5 s", "x: 2/4 (50%), 10 s", "x: 3/4 (75%), 15 s", "x: 4/4 (100%), 20 s"]


def test_on_a_terminal_the_bar_says_what_it_counts(monkeypatch):
    import io

    from rich import progress as rich_progress
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    track = rich_progress.track
    monkeypatch.setattr(rich_progress, "track", lambda *a, **k: track(*a, **k, console=console))  # into `out`
    assert list(steps([1, 2], "embedding passages", terminal=True)) == [1, 2]
    assert "embedding passages" in out.getvalue()
