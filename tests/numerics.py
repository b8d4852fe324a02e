"""How the numerics tests compare scores: one policy, used by every test that checks model outputs.

fp32 results of one model differ in their last bits with the CPU (AVX2 vs AVX-512 kernels), the batch a
pair is scored in (padding and batch size change the order of accumulation), and the runtime (torch,
ONNX Runtime, OpenVINO fuse and reorder operations differently). A score is therefore compared with a
relative *and* an absolute tolerance, never bit for bit, and a ranking is compared exactly only where
the scores are not near-tied: two documents whose scores are within the tolerance may come in either
order.

- ``SAME_RUNTIME``: one runtime, any CPU, any batch composition.
- ``CROSS_RUNTIME``: a converted fp32 graph (ONNX Runtime, OpenVINO) against torch.
- ``HALF``: bf16/fp16 weights against fp32 (8 or 11 mantissa bits; the tiny test models' wide random
  weights amplify rounding, so this only tells a half-precision model from a broken one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    rel: float
    abs: float

    def close(self, a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=self.rel, abs_tol=self.abs)


SAME_RUNTIME = Tolerance(rel=1e-4, abs=1e-4)
CROSS_RUNTIME = Tolerance(rel=2e-3, abs=2e-3)
HALF = Tolerance(rel=0.1, abs=0.5)


def assert_scores_close(actual: Sequence[float], expected: Sequence[float], tol: Tolerance = SAME_RUNTIME) -> None:
    """Every score within ``tol`` of its expected value (same length, same positions)."""
    assert len(actual) == len(expected), f"{len(actual)} scores, expected {len(expected)}"
    bad = [(i, a, e) for i, (a, e) in enumerate(zip(actual, expected)) if not tol.close(float(a), float(e))]
    assert not bad, f"scores differ beyond rel={tol.rel} abs={tol.abs}: " + ", ".join(
        f"[{i}] {a!r} vs {e!r} (diff {abs(a - e):.2e})" for i, a, e in bad[:5]
    )


def assert_ranking_follows(order: Sequence[int], scores: Sequence[float], tol: Tolerance = SAME_RUNTIME) -> None:
    """``order`` (indices, best first; the whole ranking or its top k) ranks by ``scores`` wherever two
    scores are not within ``tol``.

    Near-tied documents may come in either order (and either may make a top k); a document clearly
    better than another must come first, and one left out of a top k must not be clearly better than
    one in it.
    """
    assert len(set(order)) == len(order) and all(0 <= i < len(scores) for i in order), f"bad order {list(order)}"
    position = {i: p for p, i in enumerate(order)}
    last = len(order)
    wrong = [
        (i, j)
        for i in range(len(scores))
        for j in order
        if scores[i] > scores[j] and not tol.close(scores[i], scores[j]) and position.get(i, last) > position[j]
    ]
    assert not wrong, f"order {list(order)} puts clearly lower-scored documents first: {wrong[:5]} (scores {scores})"


def expected_order(scores: Sequence[float]) -> list[int]:
    """Indices by score, best first, ties by index (how rankrelay orders)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))
