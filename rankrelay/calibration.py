"""Score calibration: raw reranker scores mapped to P(relevant), fitted on held-out judgments.

A model trained by ``rankrelay train`` carries ``calibration.json`` beside its weights; a reranker with
``normalize="calibrated"`` fills ``normalized_score`` with it, so a threshold such as "keep scores above
0.5" means "probably relevant". Fitting needs scikit-learn and numpy (the ``train`` extra); applying a
fitted map needs neither.

Example:
    >>> cal = Calibration.fit([-2.0, -1.0, 0.5, 1.0, 2.0, 3.0], [0, 0, 0, 1, 1, 1], method="platt")
    >>> probs = cal([-3.0, 0.0, 3.0])
    >>> 0.0 <= probs[0] < probs[1] < probs[2] <= 1.0
    True
    >>> round(expected_calibration_error([0.9, 0.1], [1, 0]), 2)
    0.1
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankrelay.errors import ConfigError, InvalidInputError
from rankrelay.scoring import sigmoid

CALIBRATION_FILE = "calibration.json"
METHODS = ("platt", "isotonic")


@dataclass(slots=True)
class Calibration:
    """A monotone map from raw score to probability.

    ``platt``: ``sigmoid(a * score + b)``; ``isotonic``: piecewise-linear through ``points`` (x sorted),
    flat beyond the ends.
    """

    method: str
    a: float = 1.0
    b: float = 0.0
    points: list[tuple[float, float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __call__(self, scores: Sequence[float]) -> list[float]:
        if self.method == "platt":
            return [sigmoid(self.a * s + self.b) for s in scores]
        xs = [x for x, _ in self.points]
        ys = [y for _, y in self.points]
        out = []
        for s in scores:
            if s != s:  # NaN stays NaN
                out.append(math.nan)
                continue
            i = bisect.bisect_right(xs, s)
            if i == 0:
                out.append(ys[0])
            elif i == len(xs):
                out.append(ys[-1])
            else:
                x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
                out.append(y0 if x1 == x0 else y0 + (y1 - y0) * (s - x0) / (x1 - x0))
        return out

    @classmethod
    def fit(cls, scores: Sequence[float], labels: Sequence[int], method: str = "platt") -> Calibration:
        """Fit on raw scores and binary labels (1 = relevant) from held-out queries."""
        import numpy as np

        if method not in METHODS:
            raise ConfigError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
        x = np.asarray(scores, dtype=float)
        y = np.asarray(labels, dtype=int)
        if len(x) != len(y) or len(x) == 0:
            raise InvalidInputError("calibration needs as many labels as scores, and at least one")
        if len(set(y.tolist())) < 2:
            raise InvalidInputError("calibration needs both relevant and non-relevant examples")
        info = {"n": int(len(x)), "positives": int(y.sum())}
        if method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6).fit(x.reshape(-1, 1), y)
            return cls("platt", a=float(lr.coef_[0][0]), b=float(lr.intercept_[0]), info=info)
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(x, y)
        points = [(float(a), float(b)) for a, b in zip(iso.X_thresholds_, iso.y_thresholds_)]
        return cls("isotonic", points=points, info=info)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        path.write_text(json.dumps({"method": self.method, "a": self.a, "b": self.b, "points": self.points,
                                    "info": self.info}, indent=2))
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Calibration | None:
        """The calibration saved in a model folder, or None when it has none."""
        path = Path(folder) / CALIBRATION_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        if data.get("method") not in METHODS:
            raise ConfigError(f"{path}: unknown calibration method {data.get('method')!r}")
        return cls(data["method"], a=data.get("a", 1.0), b=data.get("b", 0.0),
                   points=[tuple(p) for p in data.get("points", [])], info=data.get("info", {}))


def expected_calibration_error(probs: Sequence[float], labels: Sequence[int], bins: int = 10) -> float:
    """ECE: the gap between predicted probability and observed relevance, averaged over equal-width bins."""
    if len(probs) != len(labels):
        raise InvalidInputError("ECE needs one label per probability")
    if not probs:
        return 0.0
    totals = [[0, 0.0, 0.0] for _ in range(bins)]  # count, sum of p, sum of labels
    for p, y in zip(probs, labels):
        b = totals[min(bins - 1, max(0, int(p * bins)))]
        b[0] += 1
        b[1] += p
        b[2] += 1 if y else 0
    return sum(abs(s - k) for n, s, k in totals if n) / len(probs)

