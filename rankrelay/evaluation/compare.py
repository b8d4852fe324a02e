"""The comparison harness: several backends rerank the same candidates; metrics, significance,
agreement, latency and disagreements, written as ``report.json`` and ``report.md``.

Example (a BEIR folder, BM25 candidates, two reference backends)::

    from rankrelay.evaluation import compare
    c = compare("path/to/beir-folder", "bm25", ["identity", "random", "minilm-l6"], out="report/")
    c.metrics["minilm-l6"]["ndcg@10"], c.warnings     # also report/report.md and report/report.json
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rankrelay.billing import price
from rankrelay.errors import InvalidInputError, MissingDependencyError, ModelNotFoundError
from rankrelay.evaluation.comparison import (
    BASELINE,
    BackendRun,
    Comparison,
    score_query,
)
from rankrelay.evaluation.data import (
    BeirDataset,
    Ranking,
    build_candidates,
    file_checksum,
    load_beir,
    read_trec,
    write_trec,
)
from rankrelay.evaluation.html import write_html
from rankrelay.evaluation.metrics import METRICS, agreement, evaluate, rbo, significance
from rankrelay.evaluation.plots import write_plots
from rankrelay.evaluation.report import markdown
from rankrelay.hashing import short_hash
from rankrelay.io import write_text_atomic
from rankrelay.progress import steps
from rankrelay.redact import redact_spec
from rankrelay.rerankers.base import label
from rankrelay.rerankers.registry import check_spec, load_chain_item, load_settings, split_options

logger = logging.getLogger(__name__)


def _slug(name: str) -> str:
    """A file name for a backend: readable, and distinct even where long names share their first 60 characters."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:60]
    return f"{readable}-{short_hash(name)}"


def backend_name(item: Any) -> str:
    """A report name for a backend given as a spec, a ``{"spec": ..., "name": ...}`` dict or a Reranker."""
    if isinstance(item, str):
        return str(redact_spec(item))
    if isinstance(item, dict):
        return str(redact_spec(item.get("name") or item.get("spec")))
    return label(item)


def write_run(path: Path, run: BackendRun) -> None:
    """A backend's run file, with the SHA-256 of its content (checked by :func:`read_run`), written atomically."""
    body = json.dumps(run.to_dict(), sort_keys=True)
    write_text_atomic(path, json.dumps({"sha256": hashlib.sha256(body.encode()).hexdigest(), "run": json.loads(body)}))


def read_run(path: Path, name: str) -> BackendRun:
    """The run :func:`write_run` wrote; a damaged, edited or older file is scored again (with a warning)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        body = json.dumps(data["run"], sort_keys=True)
        if hashlib.sha256(body.encode()).hexdigest() != data["sha256"]:
            raise ValueError("its content does not match its checksum")
        return BackendRun(**data["run"])
    except (OSError, ValueError, TypeError, KeyError) as exc:
        logger.warning("%s cannot be trusted (%s: %s): %s is scored again", path, type(exc).__name__, exc, name)
        return BackendRun(name)


def _target(item: Any) -> tuple[Any, float | None]:
    """What to load for a backend item (a spec, a spec dict with options, or a Reranker), and its per-query
    latency budget (a call option, not a load option)."""
    options = {k: v for k, v in item.items() if k != "name"} if isinstance(item, dict) else {}
    if isinstance(item, str):
        spec_text, options = split_options(item)
        options["spec"] = spec_text
    budget_ms = options.pop("budget_ms", None)
    return (options if options else item), budget_ms


#: what a backend that cannot run on this machine raises at load: without ``strict`` it is skipped, with why (a
#: typo or a bad option is never skipped)
CANNOT_LOAD_HERE = (ModelNotFoundError, MissingDependencyError)


def load_backends(backends: Sequence[Any], use_ray: bool = False, *,
                  skipped: dict[str, str] | None = None) -> dict[str, Any]:
    """Every backend built and warmed before the first query, so a missing model or a typo fails in seconds,
    before any work (on Ray, where actors load the models, the specs are checked). Given ``skipped``, a backend
    that cannot load here (:data:`CANNOT_LOAD_HERE`) is recorded in it (name -> why) instead of failing. What was
    built for a backend that failed, and for the others when one fails the call, is closed (a caller's own
    reranker stays the caller's to close)."""
    loaded: dict[str, Any] = {}
    try:
        for item in backends:
            try:
                reranker = _warmed(item, use_ray)
            except CANNOT_LOAD_HERE as exc:
                if skipped is None:
                    raise
                skipped[backend_name(item)] = f"{type(exc).__name__}: {exc}"
                continue
            if reranker is not None:
                loaded[backend_name(item)] = reranker
    except BaseException:
        for reranker in loaded.values():
            _close_ours(backends, reranker)
        raise
    return loaded


def _warmed(item: Any, use_ray: bool) -> Any:
    """``item`` built and warmed (None on Ray, where only its spec is checked here)."""
    target, _ = _target(item)
    if use_ray:
        check_spec(target)
        return None
    reranker = load_chain_item(target)
    try:
        reranker.warm_up()  # loading a model is not a query's latency
    except BaseException:
        _close_ours((item, target), reranker)
        raise
    return reranker


def _close_ours(callers: Sequence[Any], reranker: Any) -> None:
    if not any(reranker is item for item in callers):  # a caller's reranker is the caller's to close
        reranker.close()


def run_backend(item: Any, dataset: BeirDataset, candidates: dict[str, Ranking], cache: Path | None,
                progress: bool = True, use_ray: bool = False, reranker: Any = None) -> BackendRun:
    """Rerank every query's candidates with ``item`` (a spec, a spec dict with options, or a Reranker);
    resumable through ``cache`` (a JSON file). ``reranker``: ``item`` already loaded (see
    :func:`load_backends`). ``use_ray``: the queries run on Ray Data, one model per actor, each query timed
    on its actor."""
    spec = backend_name(item)
    run = BackendRun(spec)
    if cache is not None and cache.exists():
        run = read_run(cache, spec)
        run.failures = {}  # failed queries are tried again
    todo = [q for q in candidates if q not in run.rankings]
    if not todo:
        return run
    target, budget_ms = _target(item)
    work = [(qid, dataset.queries[qid], [dataset.corpus[d] for d, _ in candidates[qid]]) for qid in todo]
    if use_ray:
        from rankrelay.distributed.data import score_queries_on_ray

        outcomes = score_queries_on_ray(target, work, budget_ms)
    else:
        outcomes = _score_here(reranker if reranker is not None else load_chain_item(target), work, budget_ms)
    shown = steps(outcomes, f"{spec:<28}", total=len(work)) if progress else outcomes
    for done, (qid, outcome) in enumerate(shown, start=1):
        run.record(qid, outcome)
        if outcome.get("error"):
            logger.warning("%s failed on query %s: %s", spec, qid, outcome["error"])
        if cache is not None and (done % 20 == 0 or done == len(todo)):
            write_run(cache, run)
    if cache is not None:
        write_run(cache, run)
    return run


def _score_here(reranker: Any, work: list[tuple[str, str, list[Any]]],
                budget_ms: float | None) -> Iterator[tuple[str, dict[str, Any]]]:
    reranker.warm_up()  # loading a model is not a query's latency
    for qid, query, docs in work:
        yield qid, score_query(reranker, query, docs, budget_ms)


def write_report(comparison: Comparison, out: str | os.PathLike[str]) -> Path:
    """Save ``report.json``, ``report.md``, the plots and ``report.html`` of ``comparison`` in ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    report = comparison.to_dict()
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    (folder / "report.md").write_text(markdown(comparison))
    write_plots(comparison, folder)
    write_html(report, folder)
    return folder


def _prices() -> dict[str, float]:
    return load_settings().prices


def _latency(run: BackendRun, prices: dict[str, float]) -> dict[str, float]:
    values = sorted(run.latency_ms.values())
    if not values:
        return {}

    def pct(p: float) -> float:
        return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]

    wall = sum(values)
    docs = sum(len(r) for r in run.rankings.values())
    return {"p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "docs_per_s": docs / (wall / 1000.0) if wall else 0.0,
            "outside_model_share": 1.0 - sum(run.model_ms.values()) / wall if wall else 0.0,
            "compute_s": wall / 1000.0,
            "cost_usd": price(run.billed, prices)}


def pareto_rows(metrics: dict[str, dict[str, float]], latency: dict[str, dict[str, float]],
                runs: dict[str, BackendRun], metric: str = "ndcg@10") -> list[dict[str, Any]]:
    """Quality against p50 latency, fastest first; ``front`` marks the backends no other beats on both
    (at least as good on each and better on one)."""
    points = {n: (latency[n]["p50_ms"], metrics[n][metric]) for n in latency if latency[n] and n in metrics}
    rows = []
    for name, (ms, quality) in sorted(points.items(), key=lambda kv: (kv[1][0], -kv[1][1])):
        dominated = any(o_ms <= ms and o_q >= quality and (o_ms, o_q) != (ms, quality)
                        for other, (o_ms, o_q) in points.items() if other != name)
        run = runs[name]
        looked_up = sum(run.cache.values())
        rows.append({"backend": name, "p50_ms": ms, metric: quality, "front": not dominated,
                     "reranked_mean": statistics.mean(run.reranked.values()) if run.reranked else None,
                     "cache_hit_rate": run.cache.get("hits", 0) / looked_up if looked_up else None})
    return rows


def _calibration(run: BackendRun, data: BeirDataset, qids: list[str]) -> dict[str, float]:
    """Expected calibration error of a run whose normalized scores are probabilities (else empty)."""
    from rankrelay.calibration import expected_calibration_error

    probs, labels = [], []
    for q in qids:
        if q not in run.probabilities:
            continue
        judged = data.qrels.get(q, {})
        probs += run.probabilities[q]
        labels += [1 if judged.get(d, 0) > 0 else 0 for d, _ in run.rankings[q]]
    if not probs:
        return {}
    return {"ece": expected_calibration_error(probs, labels), "mean_probability": sum(probs) / len(probs),
            "relevant_share": sum(labels) / len(labels), "pairs": len(probs)}


def _disagreements(comparison_runs: dict[str, dict[str, Ranking]], dataset: BeirDataset,
                   per_query: dict[str, dict[str, dict[str, float]]], top: int = 5) -> list[dict[str, Any]]:
    """Queries where the backends' top-10s differ most (1 - RBO), with each backend's top 3."""
    references = {BASELINE, "identity"}
    real = [n for n in comparison_runs if n not in references and not n.startswith("random")]
    if len(real) >= 2:
        a, b = real[0], real[1]
    elif len(real) == 1:
        a, b = real[0], BASELINE  # the one real reranker against the order it was given
    elif len(comparison_runs) >= 2:
        a, b = list(comparison_runs)[:2]
    else:
        return []
    scored = []
    for q in set(comparison_runs[a]) & set(comparison_runs[b]):
        ids_a = [d for d, _ in comparison_runs[a][q]][:10]
        ids_b = [d for d, _ in comparison_runs[b][q]][:10]
        scored.append((1.0 - rbo(ids_a, ids_b), q))
    out = []
    for gap, q in sorted(scored, reverse=True)[:top]:
        judged = dataset.qrels.get(q, {})
        out.append({
            "query_id": q, "query": dataset.queries[q], "disagreement": gap,
            "top3": {n: [{"id": d, "grade": judged.get(d, 0), "text": dataset.corpus[d].text[:160]}
                         for d, _ in comparison_runs[n][q][:3]] for n in (a, b)},
            "ndcg@10": {n: per_query[n]["ndcg@10"].get(q) for n in (a, b)},
        })
    return out


def drilldown(runs: dict[str, dict[str, Ranking]], dataset: BeirDataset,
              per_query: dict[str, dict[str, dict[str, float]]], top: int = 10) -> list[dict[str, Any]]:
    """Per query: each backend's top ``top`` ids, and for those documents their grade, first-stage rank and a
    snippet; the query's nDCG@10 per backend; how far the backends' tops differ (largest 1 - RBO of a pair of
    backends that rerank: ``random`` would top every list, and ``identity`` is the first stage, shown once)."""
    first = runs.get(BASELINE, {})
    out = []
    for q in first:
        tops = {n: [d for d, _ in r[q][:top]] for n, r in runs.items()
                if q in r and not (n == "identity" and BASELINE in runs)}
        shown = dict.fromkeys(d for ids in tops.values() for d in ids)
        first_rank = {d: i for i, (d, _) in enumerate(first[q], start=1)}
        judged = dataset.qrels.get(q, {})
        names = [n for n in tops if not n.startswith("random")]
        names = names if len(names) >= 2 else list(tops)
        gaps = [1.0 - rbo(tops[a], tops[b]) for i, a in enumerate(names) for b in names[i + 1:]]
        out.append({
            "query_id": q, "query": dataset.queries[q], "top": tops,
            "grade": {d: judged.get(d, 0) for d in shown}, "first_rank": {d: first_rank.get(d) for d in shown},
            "text": {d: " ".join(dataset.corpus[d].text.split())[:200] for d in shown},
            "ndcg@10": {n: per_query[n]["ndcg@10"].get(q) for n in tops if n in per_query},
            "disagreement": max(gaps, default=0.0),
        })
    return out


def compare(
    dataset: str | os.PathLike[str] | BeirDataset,
    candidates: str = "bm25",
    backends: Sequence[Any] = ("identity", "random"),
    *,
    depth: int = 100,
    queries: int | Sequence[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    split: str = "test",
    progress: bool = True,
    prices: dict[str, float] | None = None,
    use_ray: bool = False,
    strict: bool = True,
) -> Comparison:
    """Score several backends on the same candidates.

    Args:
        dataset: a BEIR folder (or a loaded :class:`BeirDataset`).
        candidates: ``bm25``, ``dense``, ``hybrid`` or a TREC run file.
        backends: reranker specs (``identity`` and ``random`` are references), ``{"spec": ..., "name": ...,
            **options}`` dicts, or Reranker instances (fallback chains included).
        depth: candidates per query.
        queries: the first N judged queries, or explicit query ids (default: all judged).
        out: folder for candidates.trec, per-backend caches (resume) and the reports.
        prices: dollars per billed unit for the cost estimate (default: ``Settings().prices``); local
            backends are costed by their compute time.
        use_ray: score each backend's queries on Ray Data (one model per actor; ``RAY_ADDRESS`` joins a
            cluster), each query timed on its actor; backends must be given as specs.
        strict: a backend that cannot load here (weights not on this machine offline, a missing extra) fails the
            comparison before any work; with ``False`` it is left out with a warning and a row in the report's
            ``skipped`` saying why (``rankrelay bench`` without ``--strict``). A typo always fails.
    """
    data = dataset if isinstance(dataset, BeirDataset) else load_beir(dataset, split)
    qids = data.judged_queries()
    if not qids:
        raise InvalidInputError(f"{data.name} has no judged queries (none of its queries is in qrels/{split}.tsv): "
                                "nothing to evaluate")
    if isinstance(queries, int):
        qids = qids[:queries]
    elif queries is not None:
        missing = [q for q in queries if q not in data.queries]
        if missing:
            raise InvalidInputError(f"unknown query ids: {missing[:5]}")
        qids = list(queries)
    skipped: dict[str, str] = {}
    loaded = load_backends(backends, use_ray, skipped=None if strict else skipped)  # before any work
    backends = [item for item in backends if backend_name(item) not in skipped]
    if not backends:
        raise ModelNotFoundError(f"no backend can run here: {'; '.join(f'{n}: {w}' for n, w in skipped.items())}")
    folder = Path(out) if out is not None else None
    if folder is not None:
        (folder / "runs").mkdir(parents=True, exist_ok=True)
    cand_file = folder / "candidates.trec" if folder is not None else None
    if Path(candidates).is_file():
        run = read_trec(Path(candidates))
    elif cand_file is not None and cand_file.exists():
        run = read_trec(cand_file)
        logger.info("reusing %s", cand_file)
    else:
        run = build_candidates(data, candidates, depth, qids)
    run = {q: r[:depth] for q, r in run.items() if q in set(qids)}
    if cand_file is not None and not cand_file.exists():
        write_trec(cand_file, run, tag=str(candidates))
    checksum = file_checksum(cand_file) if cand_file is not None else "memory"

    runs: dict[str, BackendRun] = {}
    for item in backends:
        name = backend_name(item)
        cache = folder / "runs" / f"{_slug(name)}-{checksum}.json" if folder is not None else None
        runs[name] = run_backend(item, data, run, cache, progress, use_ray, loaded.get(name))
    for reranker in loaded.values():
        _close_ours(backends, reranker)

    warnings = [f"{name} was not compared: it cannot run here ({why})" for name, why in skipped.items()]
    for name, r in list(runs.items()):
        if r.failures and not r.rankings:  # the others are still compared, and the report written
            warnings.append(f"{name} failed on every query ({next(iter(r.failures.values()))}); it is left out "
                            "of the report")
            del runs[name]
    scored_q = [q for q in qids if q in run and all(q in r.rankings for r in runs.values())]
    for name, r in runs.items():
        if r.failures:
            warnings.append(f"{name} failed on {len(r.failures)} queries; they are left out of every metric")
    all_runs = {BASELINE: {q: run[q] for q in scored_q}, **{n: {q: r.rankings[q] for q in scored_q}
                                                           for n, r in runs.items()}}
    metrics, per_query = {}, {}
    for name, rankings in all_runs.items():
        metrics[name], per_query[name] = evaluate(data.qrels, rankings, name, METRICS)
    sig = significance(data.qrels, all_runs) if len(scored_q) > 1 else []
    if "random" in metrics:
        for name in metrics:
            if name not in (BASELINE, "random") and metrics[name]["ndcg@10"] <= metrics["random"]["ndcg@10"]:
                warnings.append(f"{name} does not beat the random reference on nDCG@10")
    latency = {n: _latency(r, _prices() if prices is None else prices) for n, r in runs.items()}
    comparison = Comparison(
        dataset=data.name, candidates=str(candidates), depth=depth, queries=scored_q, runs=runs, baseline=run,
        metrics=metrics, per_query=per_query, significance=sig, agreement=agreement(all_runs),
        latency=latency, disagreements=_disagreements(all_runs, data, per_query), warnings=warnings,
        drilldown=drilldown(all_runs, data, per_query),
        calibration={n: c for n, r in runs.items() if (c := _calibration(r, data, scored_q))},
        pareto=pareto_rows(metrics, latency, runs), skipped=skipped,
    )
    if folder is not None:
        write_report(comparison, folder)
    for w in warnings:
        logger.warning(w)
    return comparison
