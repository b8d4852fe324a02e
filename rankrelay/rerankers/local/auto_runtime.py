"""``runtime="auto"``: measure the runtimes this machine has, keep those that agree with torch, take the fastest.

At a model's first load on a machine, each candidate (torch fp32; torch bf16 and OpenVINO bf16 where the CPU
has bf16 units; ONNX Runtime and OpenVINO where installed, in int8 too where the CPU has VNNI or AMX) scores the
fixed sample of :mod:`rankrelay.rerankers.local.sample` (its agreement) and is timed on passages of the lengths a
reranker reads (its speed). A candidate whose top-10 overlap with torch fp32 is under ``min_agreement``
is out; of the rest the fastest wins, but only when it is at least :data:`MARGIN` faster than torch fp32 (so
noise never picks a slower runtime). The choice is kept in ``<cache_dir>/runtimes/auto/`` under a key of the
model's files, the CPU (model and speed flags), the device, the runtimes' versions and ``min_agreement``:
later loads read it in milliseconds, and a change to any of them measures again.

Example:
    >>> from rankrelay.rerankers.local.auto_runtime import Trial, pick
    >>> trials = [Trial("torch", "fp32", 1.0), Trial("onnx", "fp32", 0.98, top10_overlap=1.0),
    ...           Trial("openvino-int8", "fp32", 0.4, top10_overlap=0.8)]
    >>> pick(trials, min_agreement=0.9)[:2]  # int8 is fastest but disagrees; onnx is not 5% faster
    ('torch', 'fp32')
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

from rankrelay.devices import cpu_signature, has_bf16_units, has_int8_units
from rankrelay.io import write_text_atomic
from rankrelay.rerankers.local.runtimes import RUNTIMES, Forward, cache_slug, installed, measure_agreement

logger = logging.getLogger(__name__)

#: How much faster than torch fp32 another runtime must be to be chosen.
MARGIN = 0.05
#: Bumped when the stored choice changes shape or meaning (2: timed on passages of several lengths).
FORMAT_VERSION = 2
_PACKAGES = ("torch", "onnxruntime", "openvino", "nncf")


@dataclass(slots=True)
class Trial:
    """One candidate's measurement: seconds to score the sample (best of the repeats) and its agreement with
    torch fp32, or the error that ruled it out."""

    runtime: str
    precision: str
    seconds: float | None = None
    top10_overlap: float | None = None
    spearman: float | None = None
    error: str | None = None


@dataclass(slots=True)
class RuntimeChoice:
    """What ``auto`` chose and why; ``cached`` when read from an earlier measurement on this machine."""

    runtime: str
    precision: str
    reason: str
    trials: list[Trial] = field(default_factory=list)
    cached: bool = False
    seconds: float = 0.0  # what the choice cost (measuring, or reading the stored one)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeChoice:
        """The choice :meth:`to_dict` wrote."""
        return cls(**{**data, "trials": [Trial(**t) for t in data["trials"]]})


def candidates(device: str, cpu: dict[str, object]) -> list[tuple[str, str]]:
    """(runtime, precision) pairs worth measuring here: torch fp32 first (the reference). bf16 and int8 are
    candidates only where the CPU has units for them: elsewhere they were measured to gain nothing, and an int8
    conversion (NNCF's calibration) is most of what a measurement costs."""
    if device != "cpu":
        return [("torch", "fp32")]
    bf16, int8 = has_bf16_units(cpu), has_int8_units(cpu)
    out = [("torch", "fp32")] + ([("torch", "bf16")] if bf16 else [])
    for name, spec in RUNTIMES.items():
        if (spec.engine != "torch" and (bf16 or spec.hint == "f32") and (int8 or not spec.int8)
                and all(installed(m) for m in spec.modules)):
            out.append((name, "fp32"))
    return out


def pick(trials: Sequence[Trial], min_agreement: float) -> tuple[str, str, str]:
    """(runtime, precision, reason): the fastest trial that agrees with torch fp32 (the first trial) and beats it
    by :data:`MARGIN`; else torch fp32."""
    reference = trials[0]
    assert reference.seconds is not None
    fair = [t for t in trials[1:] if t.error is None and t.seconds is not None
            and (t.top10_overlap or 0.0) >= min_agreement]
    best = min(fair, key=lambda t: t.seconds or 0.0, default=None)
    if best is not None and best.seconds is not None and best.seconds < reference.seconds * (1 - MARGIN):
        return best.runtime, best.precision, (
            f"{best.runtime} {best.precision} took {best.seconds:.3f} s on the timing passages vs torch fp32's "
            f"{reference.seconds:.3f} s ({reference.seconds / best.seconds:.2f}x), top-10 overlap "
            f"{best.top10_overlap:.2f}")
    if best is None:
        return "torch", "fp32", "no other runtime here agrees with torch fp32 on the sample"
    assert best.seconds is not None
    return "torch", "fp32", (f"no runtime here is {MARGIN:.0%} faster than torch fp32 (the fastest, {best.runtime} "
                             f"{best.precision}, is {reference.seconds / best.seconds:.2f}x)")


def runtime_versions() -> dict[str, str | None]:
    """The installed versions of the packages a runtime's speed depends on (None: not installed); part of the
    key of every stored measurement."""
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def choose_runtime(
    *,
    label: str,
    fingerprint: str,
    device: str,
    cache_dir: Path,
    min_agreement: float,
    forward: Callable[[str, str], Forward],
    sample: Callable[[Forward], Any],
    clock: Callable[[], float] = perf_counter,
    repeats: int = 2,
    cpu: dict[str, object] | None = None,
    timing: Callable[[Forward], Any] | None = None,
    measure: bool = True,
) -> RuntimeChoice | None:
    """Measure (or read the earlier measurement) and choose.

    Args:
        label: the model's name, for messages and the stored file's name.
        fingerprint: the model files' digest (it keys the stored choice).
        forward: builds the forward pass of (runtime, precision); may raise (that candidate is then out).
        sample: scores the fixed sample through a forward pass (a queries x documents matrix).
        clock: reads seconds; a fake one in tests.
        timing: what each candidate is timed on, after one pass of ``sample`` (default: ``sample`` itself).
        cpu: :func:`~rankrelay.devices.cpu_signature` (read here by default).
        measure: False: only read an earlier choice; None when there is none (and more than torch to try).
    """
    start = clock()
    cpu = cpu if cpu is not None else cpu_signature()
    pairs = candidates(device, cpu)
    key_data = {"files": fingerprint, "device": device, "cpu": cpu, "versions": runtime_versions(), "candidates": pairs,
                "min_agreement": min_agreement, "format": FORMAT_VERSION}
    path = cache_dir / "runtimes" / "auto" / f"{cache_slug(label)}-{measurement_key(key_data)}.json"
    stored = _read(path, key_data)
    if stored is not None:
        stored.cached, stored.seconds = True, clock() - start
        logger.info("%s runs on %s %s (chosen earlier on this machine: %s)", label, stored.runtime, stored.precision,
                    stored.reason)
        return stored
    if len(pairs) == 1:
        reason = "torch is the only runtime here" if device == "cpu" else f"on {device} the runtime is torch"
        return RuntimeChoice("torch", "fp32", reason, seconds=clock() - start)
    if not measure:
        return None
    logger.info("runtime='auto' measures %s on %s, once on this machine (a minute or so)", label,
                ", ".join(f"{r} {p}" for r, p in pairs))
    try:
        trials = _measure(pairs, forward, sample, clock, repeats, timing)
    except Exception as exc:  # the reference itself could not be measured: torch, said once
        logger.warning("runtime='auto' could not measure %s (%s: %s); using torch", label, type(exc).__name__, exc)
        return RuntimeChoice("torch", "fp32", f"not measured ({type(exc).__name__}: {exc})",
                             seconds=clock() - start)
    runtime, precision, reason = pick(trials, min_agreement)
    failed = [f"{t.runtime} {t.precision} ({t.error})" for t in trials if t.error]
    if failed:
        logger.warning("runtime='auto' for %s could not try: %s", label, "; ".join(failed))
    for t in trials:
        if t.top10_overlap is not None and t.top10_overlap < min_agreement:
            logger.info("runtime='auto' for %s: %s %s disagrees with torch fp32 (top-10 overlap %.2f < %.2f)", label,
                        t.runtime, t.precision, t.top10_overlap, min_agreement)
    choice = RuntimeChoice(runtime, precision, reason, trials, seconds=clock() - start)
    keep_measurement(path, {"choice": choice.to_dict(), "key": key_data}, "the runtime choice")
    logger.info("%s runs on %s %s: %s (measured in %.1f s, once on this machine)", label, runtime, precision, reason,
                choice.seconds)
    return choice


def _measure(pairs: list[tuple[str, str]], forward: Callable[[str, str], Forward], sample: Callable[[Forward], Any],
             clock: Callable[[], float], repeats: int, timing: Callable[[Forward], Any] | None) -> list[Trial]:
    def timed(fwd: Forward) -> tuple[Any, float]:
        # the best of `repeats` passes: the first may pay for warming up (kernels compiled, memory allocated), the
        # rest do not (a converted graph comes warm: its agreement was just checked on the same sample)
        scores = sample(fwd) if timing is not None else None  # (timed apart: its agreement, one pass)
        out, best = None, float("inf")
        for _ in range(repeats):
            t0 = clock()
            out = (timing or sample)(fwd)
            best = min(best, clock() - t0)
        return (out if timing is None else scores), best

    reference, seconds = timed(forward(*pairs[0]))
    trials = [Trial(*pairs[0], seconds, 1.0, 1.0)]
    for runtime, precision in pairs[1:]:
        try:
            scores, seconds = timed(forward(runtime, precision))
        except Exception as exc:  # a conversion that fails rules out this candidate only
            trials.append(Trial(runtime, precision, error=f"{type(exc).__name__}: {str(exc)[:200]}"))
            continue
        agreement = measure_agreement(reference, scores)
        trials.append(Trial(runtime, precision, seconds, agreement.top10_overlap, agreement.spearman))
    return trials


def _read(path: Path, key_data: dict[str, Any]) -> RuntimeChoice | None:
    """The stored choice, when it exists and was made for exactly ``key_data``; anything else is measured again."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["key"] != json.loads(json.dumps(key_data)):
            return None
        stored = _choice(data)
        if (stored.runtime, stored.precision) not in [tuple(p) for p in key_data["candidates"]]:
            return None
        if not sane_seconds(*(t.seconds for t in stored.trials if t.seconds is not None)):
            STORE_FAILURES["read"] += 1
            logger.warning("the stored runtime choice %s has timings outside sane bounds; measuring again", path)
            return None
        return stored
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        STORE_FAILURES["read"] += 1
        logger.warning("the stored runtime choice %s is unreadable (%s); measuring again", path, exc)
        return None


def _choice(data: dict[str, Any]) -> RuntimeChoice:
    return RuntimeChoice.from_dict({**data["choice"], "cached": True})


#: what a stored timing of a sample pass may be, in seconds: anything else (negative, zero, 1e308, NaN) is a damaged
#: or hand-edited file, measured again
SANE_SECONDS = (1e-7, 3600.0)


def sane_seconds(*values: float) -> bool:
    """Whether every one of ``values`` is a plausible stored timing (see :data:`SANE_SECONDS`)."""
    low, high = SANE_SECONDS
    return all(isinstance(v, (int, float)) and low <= v <= high for v in values)


def measurement_key(key_data: dict[str, Any]) -> str:
    """The file-name key of a stored measurement: a digest of everything it was made for."""
    return hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:20]


#: stored measurements (runtime choices, stage costs) that could not be read or kept, by "read" and "write": each
#: was measured again or kept for this process only, with a warning
STORE_FAILURES: Counter[str] = Counter()


def keep_measurement(path: Path, data: dict[str, Any], what: str) -> None:
    """Store ``data`` (JSON) at ``path`` whole or not at all; a read-only cache keeps it for this process only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(data, indent=2))
    except OSError as exc:
        STORE_FAILURES["write"] += 1
        logger.warning("could not keep %s in %s (%s); it is measured again next time", what, path, exc)


def known_choice(label: str, cache_dir: Path, cpu: dict[str, object] | None = None) -> RuntimeChoice | None:
    """The newest choice stored for the model ``label`` on this CPU (any version of its files), or None: what
    ``rankrelay models`` shows as the speed measured here."""
    cpu = cpu if cpu is not None else cpu_signature()
    stored = (cache_dir / "runtimes" / "auto").glob(f"{cache_slug(label)}-{'?' * 20}.json")
    found = sorted(stored, key=lambda p: p.stat().st_mtime)
    for path in reversed(found):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["key"]["cpu"] == json.loads(json.dumps(cpu)):
                return _choice(data)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def trial_seconds(choice: RuntimeChoice) -> dict[tuple[str, str], float]:
    """Each measured candidate's seconds on the timing passages, by (runtime, precision)."""
    return {(t.runtime, t.precision): t.seconds for t in choice.trials if t.seconds}


def speedup(choice: RuntimeChoice) -> float | None:
    """How many times faster than torch fp32 the chosen runtime ran the timing passages (None: not measured)."""
    times = trial_seconds(choice)
    ref, chosen = times.get(("torch", "fp32")), times.get((choice.runtime, choice.precision))
    return ref / chosen if ref and chosen else None
