"""``rankrelay tune``: which configuration meets a latency budget best, on the user's own data and machine.

The configurations are the tiers given (fastest first) over every candidate, each over only the first
stage's best ``depth`` (``cascade:first-stage>tier@depth``), and every cheaper tier ahead of a stronger one
(``cascade:cheap>strong@keep``); each runs on ``runtime`` (``auto`` by default: this machine's fastest that
agrees with torch). The harness (:func:`~rankrelay.evaluation.compare`) scores them on the same candidates
(resumable), the quality/latency Pareto front is reported, and the recommendation is the best nDCG@10 whose
p50 latency is within the budget (ties: the faster). Without judgments (no ``qrels/<split>.tsv``) quality is
agreement with the strongest configuration (the last tier over every candidate): nDCG@10 against its top 10.
The recommendation is written as a TOML settings file whose ``backend`` :func:`~rankrelay.load_reranker`
(``load_reranker("tuned.toml")``), ``rankrelay serve --config`` and ``rankrelay bench --backends tuned.toml``
read.

Example::

    from rankrelay.evaluation.tune import tune
    result = tune("path/to/cranfield", budget_ms=1000, models=["tinybert-l2", "models/cranfield"],
                  out="tuned.toml")
    result.recommended, result.rows[0]
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankrelay.errors import ConfigError, InvalidInputError
from rankrelay.evaluation.compare import compare
from rankrelay.evaluation.data import BeirDataset, load_beir

logger = logging.getLogger(__name__)

#: First-stage depths and cascade keeps tried (those below the candidate depth).
DEPTHS = (20, 50)
KEEPS = (10, 20, 30)


@dataclass(slots=True)
class Configuration:
    """One configuration: its report name and the spec string a profile holds."""

    name: str
    spec: str


@dataclass(slots=True)
class TuneResult:
    """The configurations tried (``rows``: p50 ms, nDCG@10, on the Pareto front), the recommendation, and where
    the profile was written."""

    budget_ms: float
    rows: list[dict[str, Any]]
    recommended: dict[str, Any] | None
    profile: Path | None = None
    warnings: list[str] = field(default_factory=list)
    #: what ``ndcg@10`` measures: the judgments, or agreement with the strongest configuration
    quality: str = "nDCG@10"


def _stage(model: str, runtime: str | None) -> str:
    """A tier as a spec: presets and registered specs as they are, anything else a cross-encoder's path or id;
    ``runtime`` goes to the tiers that take one (local models)."""
    from rankrelay.rerankers.registry import backends, known_names, parse_spec

    head = model.split(":", 1)[0].split("?", 1)[0]
    spec = model if head in known_names() else f"cross-encoder:{model}"
    options = {b.name: b.options for b in backends()}
    if runtime and "runtime" in options[parse_spec(spec.split("?", 1)[0])[0]]:
        spec += ("&" if "?" in spec else "?") + f"runtime={runtime}"
    return spec


def configurations(models: Sequence[str], depth: int, runtime: str | None = "auto", *,
                   depths: Sequence[int] = DEPTHS, keeps: Sequence[int] = KEEPS) -> list[Configuration]:
    """Every configuration :func:`tune` tries for ``models`` (fastest first) over ``depth`` candidates: each tier
    over all of them and over the first ``depths``, and each cheaper tier ahead of a stronger one for each ``keep``
    (depths and keeps under ``depth``)."""
    if not models:
        raise ConfigError("tune needs at least one model (--models)")
    if any(">" in m or "@" in m for m in models):
        raise ConfigError(f"a model for tune is one tier (a preset, a spec or a path without '>' or '@'), got "
                          f"{[m for m in models if '>' in m or '@' in m]}")
    stages = [_stage(m, runtime) for m in models]
    out: list[Configuration] = []
    for model, stage in zip(models, stages):
        out.append(Configuration(f"{model} over {depth}", stage))
        out += [Configuration(f"{model} over {d}", f"cascade:first-stage>{stage}@{d}") for d in depths if d < depth]
    for i, (cheap, cheap_stage) in enumerate(zip(models, stages)):
        for strong, strong_stage in list(zip(models, stages))[i + 1:]:
            out += [Configuration(f"{cheap} > {strong} @{k}", f"cascade:{cheap_stage}>{strong_stage}@{k}")
                    for k in keeps if k < depth]
    return out


def recommend(rows: Sequence[dict[str, Any]], budget_ms: float, metric: str = "ndcg@10") -> dict[str, Any] | None:
    """The best ``metric`` among ``rows`` whose p50 is within the budget (ties: the faster); None if none is."""
    within = [r for r in rows if r["p50_ms"] <= budget_ms]
    return max(within, key=lambda r: (r[metric], -r["p50_ms"]), default=None)


def tune(
    dataset: str | os.PathLike[str],
    budget_ms: float,
    models: Sequence[str],
    *,
    candidates: str = "bm25",
    depth: int = 100,
    queries: int | Sequence[str] | None = None,
    runtime: str | None = "auto",
    report: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
    depths: Sequence[int] = DEPTHS,
    keeps: Sequence[int] = KEEPS,
    split: str = "test",
) -> TuneResult:
    """Try :func:`configurations` on a BEIR folder's judged queries and recommend one for ``budget_ms``.

    Args:
        budget_ms: the p50 latency per query the recommendation must meet (> 0).
        models: tiers, fastest first: presets (``tinybert-l2``), specs, or a model folder (``models/cranfield``).
        report: folder for the harness's report and its resumable runs.
        out: where the recommended profile (TOML) is written; None: not written.

    Raises:
        InvalidInputError: a budget that is not a positive number.
        ConfigError: no model, or a model that is not one tier.
    """
    if isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float)) or not budget_ms > 0:
        raise InvalidInputError(f"--budget-ms must be a positive number of milliseconds, got {budget_ms!r}")
    configs = configurations(models, depth, runtime, depths=depths, keeps=keeps)
    items = [{"name": c.name, "spec": c.spec} for c in configs]
    data, quality = _judged(dataset, split, items[_strongest(configs, models, depth)], candidates,
                            depth, queries, report, progress)
    comparison = compare(data, candidates, items, depth=depth, queries=queries, out=report, progress=progress)
    specs = {c.name: c.spec for c in configs}
    rows = [{**row, "spec": specs[row["backend"]]} for row in comparison.pareto if row["backend"] in specs]
    chosen = recommend(rows, float(budget_ms))
    result = TuneResult(float(budget_ms), rows, chosen, warnings=list(comparison.warnings), quality=quality)
    if chosen is None:
        fastest = min(rows, key=lambda r: r["p50_ms"])
        result.warnings.append(f"no configuration is within {budget_ms:g} ms p50 here; the fastest, "
                               f"{fastest['backend']}, takes {fastest['p50_ms']:.0f} ms")
    elif out is not None:
        result.profile = write_profile(Path(out), chosen, dataset=comparison.dataset, budget_ms=float(budget_ms),
                                       queries=len(comparison.queries), quality=quality)
    return result


def _strongest(configs: Sequence[Configuration], models: Sequence[str], depth: int) -> int:
    """The index of the last tier over every candidate."""
    return next(i for i, c in enumerate(configs) if c.name == f"{models[-1]} over {depth}")


def _judged(dataset: str | os.PathLike[str], split: str, strongest: dict[str, str], candidates: str, depth: int,
            queries: int | Sequence[str] | None, report: str | os.PathLike[str] | None,
            progress: bool) -> tuple[BeirDataset, str]:
    """The dataset with its judgments; without them, with the strongest configuration's top 10 as the judgments
    (every query is then scored, and quality is agreement with it)."""
    folder = Path(dataset)
    if (folder / "qrels" / f"{split}.tsv").exists():
        return load_beir(folder, split), "nDCG@10"
    data = load_beir(folder, split, judged=False)
    if not data.queries:
        raise InvalidInputError(f"{data.name} has no queries: nothing to tune on")
    # the probe only ranks: each query is given one judgment of a document no candidate list holds (the metrics
    # need at least one; with none they fail)
    probe = dataclasses.replace(data, qrels={q: {"\x00no judged document": 1} for q in data.queries})
    first = compare(probe, candidates, [strongest], depth=depth, queries=queries, out=report, progress=progress)
    top = first.runs[strongest["name"]].rankings
    logger.info("no judgments in %s: quality is agreement with %s (nDCG@10 against its top 10)", folder,
                strongest["name"])
    return (dataclasses.replace(data, qrels={q: {d: 1 for d, _ in r[:10]} for q, r in top.items()}),
            f"agreement with {strongest['name']} (nDCG@10 against its top 10; no judgments)")


def write_profile(path: Path, row: dict[str, Any], *, dataset: str, budget_ms: float, queries: int,
                  quality: str = "nDCG@10") -> Path:
    """A TOML settings file whose ``backend`` is the recommended configuration, with what it measured."""
    from rankrelay.devices import cpu_signature

    cpu = cpu_signature()
    flags = " ".join(str(f) for f in cpu["flags"]) or "no AVX2"  # type: ignore[attr-defined]
    lines = [
        f"# rankrelay tune on {dataset} ({queries} queries), budget {budget_ms:g} ms p50",
        f"# measured here: {quality} {row['ndcg@10']:.4f}, p50 {row['p50_ms']:.0f} ms ({row['backend']})",
        f"# on {cpu['model']} ({flags}); load with load_reranker({str(path)!r}), serve --config, bench --backends",
        f"backend = {_toml_string(row['spec'])}",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _toml_string(text: str) -> str:
    import json

    return json.dumps(text)  # a JSON string is a TOML basic string for the characters a spec holds
