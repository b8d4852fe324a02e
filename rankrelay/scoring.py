"""Score normalization and fusion.

Raw scores are never changed: normalization fills ``normalized_score`` beside them, and fusion
combines several rankings into a new :class:`~rankrelay.results.RerankResult`.

Example:
    >>> from rankrelay.scoring import normalize
    >>> normalize([4.0, 2.0, 0.0], "rank")
    [1.0, 0.6666666666666667, 0.33333333333333337]
    >>> normalize([4.0, 2.0, 0.0], "minmax")
    [1.0, 0.5, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Literal

from rankrelay.errors import ConfigError, InvalidInputError
from rankrelay.results import RankedDocument, RerankResult

Normalization = Literal["rank", "sigmoid", "minmax", "zscore", "none", "calibrated"]
NORMALIZATIONS: tuple[str, ...] = ("rank", "sigmoid", "minmax", "zscore", "none", "calibrated")
FUSION_METHODS: tuple[str, ...] = ("rrf", "weighted")


def check_normalization(method: str) -> str:
    """Return ``method`` if it is a known normalization, else raise :class:`ConfigError`."""
    if method not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalization {method!r}; choose one of {', '.join(NORMALIZATIONS)}")
    return method


def order_by_score(scores: Sequence[float]) -> list[int]:
    """Indices sorted by score descending; ties (and NaN, placed last) keep input order."""
    return sorted(
        range(len(scores)),
        key=lambda i: (math.inf if scores[i] != scores[i] else -scores[i], i),
    )


def sigmoid(x: float) -> float:
    """The logistic function, without overflow for large negative ``x``."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def normalize(
    scores: Sequence[float], method: str = "rank", calibration: Callable[[Sequence[float]], list[float]] | None = None
) -> list[float]:
    """Normalize scores given in ranked order (best first).

    Args:
        scores: raw scores, best first (rank 1 first).
        method: ``rank`` (1 - (rank-1)/n), ``sigmoid``, ``minmax`` (all-equal -> 1.0),
            ``zscore`` (zero spread -> 0.0), ``none``, or ``calibrated`` (a model's fitted
            :class:`~rankrelay.calibration.Calibration`, given as ``calibration``).

    Returns:
        One normalized value per score, in the same order.
    """
    check_normalization(method)
    n = len(scores)
    if n == 0:
        return []
    if method == "rank":
        return [1.0 - i / n for i in range(n)]
    if method == "sigmoid":
        return [sigmoid(s) for s in scores]
    if method == "none":
        return [float(s) for s in scores]
    if method == "calibrated":
        if calibration is None:
            raise ConfigError("normalize='calibrated' needs a model with a fitted calibration (rankrelay train)")
        return list(calibration(scores))
    finite = [s for s in scores if math.isfinite(s)]
    if method == "minmax":
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
        if hi == lo:
            return [1.0 if math.isfinite(s) else math.nan for s in scores]
        return [(s - lo) / (hi - lo) for s in scores]
    mean = sum(finite) / len(finite) if finite else 0.0
    std = math.sqrt(sum((s - mean) ** 2 for s in finite) / len(finite)) if finite else 0.0
    if std == 0.0:
        return [0.0 if math.isfinite(s) else math.nan for s in scores]
    return [(s - mean) / std for s in scores]


#: How a backend's raw score becomes a per-document relevance in [0, 1] (``res.info["relevance"]``):
#: ``sigmoid`` of a logit or log-odds, ``unit`` for scores already in [0, 1] (clamped; a cosine below 0 is 0),
#: ``rank`` where the backend has no per-document probability (a listwise order, a reference).
RELEVANCE_KINDS: tuple[str, ...] = ("sigmoid", "unit", "rank")


def relevance(res: RerankResult, mode: str = "score") -> list[float]:
    """One relevance in [0, 1] per result of ``res`` (in its order), as Cohere's ``relevance_score``.

    ``mode="score"`` follows Cohere's contract, a per-document score comparable across queries: a model's
    calibration when the result was calibrated, else the backend's own activation (``res.info["relevance"]``,
    e.g. the sigmoid of a cross-encoder's logit); a backend without one falls back to the rank position.
    ``mode="rank"`` is the rank-position normalization (1.0 for the top document), the harness's default for
    comparing backends. A document no model scored (NaN: a latency budget's tail) gets 0.0.

    Example:
        >>> from rankrelay import load_reranker
        >>> res = load_reranker("identity").rerank("q", ["a", "b"])
        >>> relevance(res, "rank"), res.info["relevance"]
        ([1.0, 0.5], 'rank')
    """
    if mode not in ("score", "rank"):
        raise ConfigError(f"unknown relevance mode {mode!r}; choose 'score' or 'rank'")
    kind = res.info.get("relevance", "rank") if mode == "score" else "rank"
    if mode == "score" and res.normalization == "calibrated":
        values = [r.normalized_score for r in res.results]
    elif kind == "sigmoid":
        values = [sigmoid(r.score) if math.isfinite(r.score) else math.nan for r in res.results]
    elif kind == "unit":
        values = [min(1.0, max(0.0, r.score)) if math.isfinite(r.score) else math.nan for r in res.results]
    else:
        n = max(res.num_candidates, len(res.results))
        values = [1.0 - (r.rank - 1) / n for r in res.results]
    return [v if math.isfinite(v) else 0.0 for v in values]


def _key(r: RankedDocument) -> Hashable:
    return ("id", r.id) if r.id is not None else ("index", r.index)


def _names(results: Sequence[RerankResult]) -> list[str]:
    names: list[str] = []
    for i, res in enumerate(results):
        name = res.backend_label
        names.append(name if name not in names else f"{name}#{i}")
    return names


def fuse(
    results: Sequence[RerankResult],
    method: str = "rrf",
    weights: Sequence[float] | None = None,
    k: int = 60,
    normalize_inputs: str | Sequence[str] = "minmax",
    normalization: str = "rank",
) -> RerankResult:
    """Combine several rankings of the same query into one.

    Documents are matched by ``id`` when they have one, else by input ``index``. A document
    missing from an input gets nothing from it.

    Args:
        results: rankings to combine (same query).
        method: ``rrf`` (sum of ``w / (k + rank)``) or ``weighted`` (sum of ``w * normalized score``).
        weights: one weight per input (default: all 1.0).
        k: the RRF constant.
        normalize_inputs: for ``weighted``, the normalization of each input, one name or one per
            input; the seed's hybrid ``alpha * bi + (1 - alpha) * sigmoid(cross)`` is
            ``fuse([bi, cross], "weighted", [alpha, 1 - alpha], normalize_inputs=["none", "sigmoid"])``.
        normalization: how the fused result's ``normalized_score`` is filled.

    Returns:
        A :class:`RerankResult` whose ``score`` is the fused score and whose ``components`` keep
        every input's raw score.

    Example:
        >>> from rankrelay.results import RankedDocument, RerankResult
        >>> def res(name, order):
        ...     ranked = [RankedDocument(i, f"d{i}", 1.0 / r, r, 0.0) for r, i in enumerate(order, 1)]
        ...     return RerankResult("q", ranked, name)
        >>> fuse([res("a", [0, 1, 2]), res("b", [1, 0, 2])], "rrf").indices
        [0, 1, 2]
    """
    if not results:
        raise InvalidInputError("fuse needs at least one result")
    if method not in FUSION_METHODS:
        raise ConfigError(f"unknown fusion method {method!r}; choose one of {', '.join(FUSION_METHODS)}")
    if len({res.query for res in results}) > 1:
        raise InvalidInputError("fuse combines rankings of one query; got results for different queries")
    weights = [1.0] * len(results) if weights is None else [float(w) for w in weights]
    if len(weights) != len(results):
        raise InvalidInputError(f"got {len(weights)} weights for {len(results)} results")
    if isinstance(normalize_inputs, str):
        normalize_inputs = [normalize_inputs] * len(results)
    if len(normalize_inputs) != len(results):
        raise InvalidInputError(f"got {len(normalize_inputs)} normalizations for {len(results)} results")
    if k < 0:
        raise InvalidInputError(f"k must be >= 0, got {k}")
    check_normalization(normalization)

    names = _names(results)
    fused: dict[Hashable, float] = {}
    first: dict[Hashable, RankedDocument] = {}
    components: dict[Hashable, dict[str, float]] = {}
    for res, weight, norm, name in zip(results, weights, normalize_inputs, names):
        contributions = (
            [weight / (k + r.rank) for r in res.results]
            if method == "rrf"
            else [weight * v for v in normalize([r.score for r in res.results], norm)]
        )
        for r, value in zip(res.results, contributions):
            key = _key(r)
            first.setdefault(key, r)
            fused[key] = fused.get(key, 0.0) + value
            components.setdefault(key, {})[name] = r.score

    keys = list(fused)
    scores = [fused[key] for key in keys]
    order = order_by_score(scores)
    normalized = normalize([scores[i] for i in order], normalization)
    ranked = []
    for rank, (i, value) in enumerate(zip(order, normalized), start=1):
        src = first[keys[i]]
        ranked.append(
            RankedDocument(
                index=src.index,
                text=src.text,
                score=scores[i],
                rank=rank,
                normalized_score=value,
                id=src.id,
                metadata=src.metadata,
                passage=src.passage,
                truncated=src.truncated,
                components=components[keys[i]],
            )
        )
    return RerankResult(
        query=results[0].query,
        results=ranked,
        backend=f"fusion:{method}",
        model="+".join(names),
        timings={"total": sum(res.timings.get("total", 0.0) for res in results), "model": 0.0},
        normalization=normalization,
        num_candidates=len(ranked),
    )
