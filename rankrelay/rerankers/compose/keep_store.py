"""Stage costs kept on disk, so that every process on a machine plans a cascade's keep alike.

The costs a :mod:`~rankrelay.rerankers.compose.keep_plan` keep comes from are timed once on a machine and kept next
to ``runtime="auto"``'s choices, in ``<cache_dir>/runtimes/keep/``, under a key of both stages (model files,
runtime, precision, window), the CPU and the runtimes' versions; a change to any of them times again, and a
damaged file is timed again with a warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rankrelay.errors import ConfigError
from rankrelay.rerankers.compose.keep_plan import StageCosts, sample_costs, timeable

logger = logging.getLogger(__name__)

#: Bumped when stored stage costs change meaning.
COSTS_FORMAT = 1


def planned_costs(cheap: Any, strong: Any) -> StageCosts | None:
    """:func:`~rankrelay.rerankers.compose.keep_plan.sample_costs`, read from this machine's store when it has
    them for exactly these stages, else timed now and stored; None when either stage is not a local model."""
    from rankrelay.devices import cpu_signature
    from rankrelay.rerankers.local.auto_runtime import (
        STORE_FAILURES,
        keep_measurement,
        measurement_key,
        runtime_versions,
        sane_seconds,
    )

    if not timeable(strong) or (cheap is not None and not timeable(cheap)):
        return None  # not local models: nothing to time
    strong.warm_up()
    if cheap is not None:
        cheap.warm_up()
    key_data = {"cheap": None if cheap is None else cheap._identity, "strong": strong._identity,
                "cpu": cpu_signature(), "versions": runtime_versions(), "format": COSTS_FORMAT}
    path = Path(strong.cache_dir) / "runtimes" / "keep" / f"{measurement_key(key_data)}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["key"] == json.loads(json.dumps(key_data)):
            kept = StageCosts(**data["costs"])
            if sane_seconds(kept.strong, kept.reference) and (kept.cheap == 0 or sane_seconds(kept.cheap)):
                return kept
            STORE_FAILURES["read"] += 1
            logger.warning("the stored stage costs %s are outside sane bounds (%s); timing again", path, kept)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        STORE_FAILURES["read"] += 1
        logger.warning("the stored stage costs %s are unreadable (%s); timing again", path, exc)
    costs = sample_costs(cheap, strong)
    if costs is not None:
        keep_measurement(path, {"key": key_data, "costs": asdict(costs)}, "the stage costs")
    return costs
