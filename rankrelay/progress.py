"""Progress of a long loop: a bar on a terminal, else a log line every few seconds (a CI log, ``make demo | tee``),
so a run that is not on a terminal still says it is working and how far it is.

Example:
    >>> from rankrelay.progress import steps
    >>> list(steps([1, 2, 3], "scoring", terminal=False))
    [1, 2, 3]
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sized
from time import monotonic
from typing import TypeVar

#: the logger of progress lines (the CLI shows it at INFO; ``-q`` asks for no progress at all)
logger = logging.getLogger("rankrelay.progress")
#: seconds between two progress lines when not on a terminal
EVERY_S = 5.0
T = TypeVar("T")


def steps(items: Iterable[T], description: str, *, total: int | None = None, terminal: bool | None = None,
          every_s: float = EVERY_S, clock: Callable[[], float] = monotonic) -> Iterator[T]:
    """Yield ``items`` one by one, showing progress as each is done: a rich bar on a terminal (``terminal``:
    default whether stderr is one), else a line at most every ``every_s`` seconds and one at the end. ``total``
    is how many there are when ``items`` cannot say (a generator)."""
    if total is None:
        assert isinstance(items, Sized), "steps() needs the total of a generator"
        total = len(items)
    if terminal is None:
        terminal = sys.stderr.isatty()
    if terminal:
        from rich.progress import track

        yield from track(items, description=description, total=total)
        return
    start = last = clock()
    for done, item in enumerate(items, start=1):
        yield item
        now = clock()
        if now - last >= every_s or done == total:
            last = now
            logger.info("%s: %d/%d (%d%%), %.0f s", description, done, total, 100 * done // total, now - start)
