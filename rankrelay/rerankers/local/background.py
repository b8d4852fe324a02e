"""``runtime="auto"`` off the request path: a model never measured on this machine serves on torch at once, while
a child process measures its runtimes at low priority; the model switches when the choice is made.

The child gets a copy of the reranker's settings (a pickle: no loaded weights, no caches), loads the model, runs
:func:`~rankrelay.rerankers.local.auto_runtime.choose_runtime` (which keeps the choice, so the next process reads
it in milliseconds) and writes the choice for its parent. Everything the converters print (warnings, progress
bars) goes to this module's logger at DEBUG; one INFO line says what is measured, one what was chosen. A child
that fails or runs past :data:`LIMIT_S` leaves the model on torch, with one warning.

Example:
    >>> from rankrelay.rerankers.local.background import LIMIT_S
    >>> LIMIT_S >= 600
    True
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

from rankrelay.errors import ConversionError, LowAgreementError
from rankrelay.rerankers.local.auto_runtime import RuntimeChoice
from rankrelay.rerankers.local.runtimes import torch_dtype

logger = logging.getLogger(__name__)

#: The longest a measurement may take before it is stopped (the model stays on torch).
LIMIT_S = 1800.0
#: The child's niceness (where the OS has one): requests come first.
NICENESS = 10


class AutoMeasured:
    """What a local model on ``runtime="auto"`` adds: whether it is being measured, waiting for it, and the switch
    to the chosen runtime (mixed into :class:`~rankrelay.rerankers.local.model.LocalModelReranker`)."""

    if TYPE_CHECKING:
        model: str
        name: str
        runtime: str
        precision: str
        runtime_choice: RuntimeChoice | None
        agreement: Any
        _measurement: Measurement | None
        _fingerprint: str
        _encoder: Any
        _forward: Any
        _planner: Any
        _identity: str
        _score_lock: threading.RLock

        def warm_up(self) -> None: ...

        def identity_of(self, fingerprint: str, planner: Any) -> str: ...

        def _compile(self, encoder: Any, fingerprint: str, runtime: str | None = None,
                     min_agreement: float | None = None, reference: Any = None) -> tuple[Any, Any]: ...

    @property
    def measuring(self) -> bool:
        """True while ``runtime="auto"`` measures this model in the background (it serves on torch meanwhile)."""
        return self._measurement is not None and self._measurement.running

    def wait_for_runtime(self, timeout: float | None = None) -> RuntimeChoice | None:
        """Load the model and wait (up to ``timeout`` seconds) for a background measurement to switch it to its
        runtime; returns what ``auto`` chose (None for an explicit runtime, or while still measuring)."""
        self.warm_up()
        if self._measurement is not None:
            self._measurement.wait(timeout)
        return self.runtime_choice

    def _switch_runtime(self, choice: RuntimeChoice) -> None:
        """Serve on ``choice`` from now on (the background measurement's answer); requests keep being served
        meanwhile, on torch, and a runtime that cannot be built now leaves the model on torch."""
        fingerprint, encoder = self._fingerprint, self._encoder
        if (choice.runtime, choice.precision) != ("torch", "fp32"):
            import copy

            encoder = copy.deepcopy(encoder)  # the serving model is not touched while the new one is built
            if choice.precision != "fp32":
                encoder.to(torch_dtype(choice.precision))
            try:
                forward, agreement = self._compile(encoder, fingerprint, choice.runtime)
            except (ConversionError, LowAgreementError) as exc:
                logger.warning("runtime='auto' chose %s %s for %s, which cannot be used now (%s); it stays on torch "
                               "fp32", choice.runtime, choice.precision, self.model, exc)
                return
            with self._score_lock:  # between two scoring passes
                self._encoder, self._forward, self.agreement = encoder, forward, agreement
                self.runtime, self.precision = choice.runtime, choice.precision
                self._identity = self.identity_of(fingerprint, self._planner)
                self._runtime_changed()
        self.runtime_choice = choice
        logger.info("%s now runs on %s %s: %s", self.model, choice.runtime, choice.precision, choice.reason)

    def _runtime_changed(self) -> None:
        """Forget what was computed on the previous runtime (a subclass's own caches)."""


class Measurement:
    """One model's background measurement: a thread that runs the child process and hands the choice over."""

    def __init__(self, reranker: Any, on_choice: Callable[[RuntimeChoice], None]) -> None:
        self.label = reranker.model
        self.limit_s = LIMIT_S
        self._payload = pickle.dumps(reranker)
        self._on_choice = on_choice
        self._thread = threading.Thread(target=self._run, name=f"rankrelay-measure {self.label}", daemon=True)
        #: what went wrong, when the measurement gave no choice
        self.error: str | None = None

    def start(self) -> None:
        logger.info("runtime='auto' measures %s's runtimes in the background, once on this machine; it serves on "
                    "torch meanwhile", self.label)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> None:
        """Wait (up to ``timeout`` seconds) for the measurement and the switch to end (see :attr:`running`)."""
        self._thread.join(timeout)

    def _run(self) -> None:
        start = perf_counter()
        try:
            choice = self._measure()
        except Exception as exc:  # a failed measurement never fails the model: it stays on torch
            self.error = f"{type(exc).__name__}: {exc}"
            logger.warning("runtime='auto' could not measure %s in the background (%s); it stays on torch fp32",
                           self.label, self.error)
            return
        logger.debug("measured %s in %.1f s", self.label, perf_counter() - start)
        self._on_choice(choice)

    def _measure(self) -> RuntimeChoice:
        with tempfile.TemporaryDirectory(prefix="rankrelay-measure-") as folder:
            out = Path(folder) / "choice.json"
            proc = subprocess.Popen([sys.executable, "-m", __name__, str(out)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_child_env())
            _LIVE.add(proc)
            late = threading.Event()

            def stop() -> None:
                late.set()
                proc.kill()

            timer = threading.Timer(self.limit_s, stop)
            timer.start()
            try:
                assert proc.stdin is not None and proc.stdout is not None
                with proc.stdin:
                    proc.stdin.write(self._payload)
                for line in proc.stdout:  # the converters' own output: kept, at DEBUG
                    text = line.decode(errors="replace").rstrip()
                    if text:
                        logger.debug("[%s] %s", self.label, text)
                code = proc.wait()
            finally:
                timer.cancel()
                _LIVE.discard(proc)
            if late.is_set():
                raise TimeoutError(f"stopped after the {self.limit_s:g} s limit")
            if code != 0:
                raise RuntimeError(f"the measuring process exited with {code}")
            return RuntimeChoice.from_dict(json.loads(out.read_text()))


#: the measuring processes running now: none outlives this process (what a caller did not ask for does not run
#: after it is done; the next process measures again)
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _stop_measuring() -> None:
    for proc in list(_LIVE):
        logger.debug("stopping an unfinished runtime measurement (pid %d) as this process exits", proc.pid)
        proc.kill()


def _child_env() -> dict[str, str]:
    """This environment, and: the child streams its output and shows no progress bars."""
    env = dict(os.environ)
    env.setdefault("TQDM_DISABLE", "1")  # progress bars of the converters: nobody watches them
    env["PYTHONUNBUFFERED"] = "1"
    return env


def main(argv: list[str] | None = None) -> int:
    """The child: read the pickled reranker from stdin, measure, write the choice to the path given."""
    out = Path((argv if argv is not None else sys.argv[1:])[0])
    if hasattr(os, "nice"):
        try:
            logger.info("measuring at niceness %d", os.nice(NICENESS))
        except OSError:  # not allowed here: measure at the usual priority
            logger.info("measuring at the usual priority (the niceness could not be raised)")
    reranker: Any = pickle.loads(sys.stdin.buffer.read())
    reranker.auto_measure = "now"
    reranker.warm_up()
    choice = reranker.runtime_choice
    out.write_text(json.dumps(choice.to_dict()))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
