import math

import pytest

from rankrelay import ConfigError, InvalidInputError, RankedDocument, RerankResult, fuse, normalize
from rankrelay.scoring import order_by_score


def test_order_by_score_descending_ties_by_index_nan_last():
    assert order_by_score([1.0, 3.0, float("nan"), 3.0, 2.0]) == [1, 3, 4, 0, 2]


@pytest.mark.parametrize(
    "method, expected",
    [
        ("rank", [1.0, 0.75, 0.5, 0.25]),
        ("minmax", [1.0, 0.5, 0.25, 0.0]),
        ("none", [4.0, 2.0, 1.0, 0.0]),
        ("sigmoid", [1 / (1 + math.exp(-4)), 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1)), 0.5]),
        ("zscore", [(4 - 1.75) / math.sqrt(2.1875), (2 - 1.75) / math.sqrt(2.1875),
                    (1 - 1.75) / math.sqrt(2.1875), (0 - 1.75) / math.sqrt(2.1875)]),
    ],
)
def test_normalizations(method, expected):
    assert normalize([4.0, 2.0, 1.0, 0.0], method) == pytest.approx(expected)


def test_degenerate_inputs():
    assert normalize([], "rank") == []
    assert normalize([2.0, 2.0], "minmax") == [1.0, 1.0]
    assert normalize([2.0, 2.0], "zscore") == [0.0, 0.0]
    # sigmoid stays finite and ordered for extreme logits (no overflow, no tie at 1.0 for raw scores)
    assert normalize([800.0, -800.0], "sigmoid") == [1.0, 0.0]


def test_unknown_normalization():
    with pytest.raises(ConfigError, match="choose one of"):
        normalize([1.0], "softmax")


def _res(name, scored, query="q"):
    """scored: list of (index, score) best first."""
    return RerankResult(
        query,
        [RankedDocument(i, f"doc {i}", s, r, 0.0, metadata={"i": i}) for r, (i, s) in enumerate(scored, 1)],
        backend=name,
    )


def test_rrf_fusion_matches_formula_and_keeps_components():
    a = _res("a", [(0, 9.0), (1, 5.0), (2, 1.0)])
    b = _res("b", [(2, 0.9), (1, 0.8), (0, 0.1)])
    fused = fuse([a, b], "rrf", k=60)
    expected = {0: 1 / 61 + 1 / 63, 1: 2 / 62, 2: 1 / 63 + 1 / 61}
    assert {r.index: r.score for r in fused} == pytest.approx(expected)
    # 1/61 + 1/63 > 2/62: agreeing at the extremes beats twice the middle; 0 and 2 tie, first seen first
    assert fused.indices == [0, 2, 1]
    assert fused[2].components == {"a": 5.0, "b": 0.8}
    assert fused[2].metadata == {"i": 1} and fused.backend == "fusion:rrf"


def test_weighted_fusion_is_the_seed_hybrid_formula():
    bi = _res("bi", [(0, 0.9), (1, 0.5), (2, 0.2)])
    cross = _res("cross", [(2, 3.0), (0, -1.0), (1, -2.0)])
    alpha = 0.3
    fused = fuse([bi, cross], "weighted", weights=[alpha, 1 - alpha], normalize_inputs=["none", "sigmoid"])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = {0: alpha * 0.9 + (1 - alpha) * sig(-1.0), 1: alpha * 0.5 + (1 - alpha) * sig(-2.0),
                2: alpha * 0.2 + (1 - alpha) * sig(3.0)}
    assert {r.index: r.score for r in fused} == pytest.approx(expected)
    assert fused.indices == sorted(expected, key=lambda i: -expected[i])


def test_fusion_document_missing_from_one_input_gets_nothing_from_it():
    a = _res("a", [(0, 1.0), (1, 0.5)])
    b = _res("b", [(1, 1.0)])
    fused = fuse([a, b], "rrf", k=0)
    assert {r.index: r.score for r in fused} == pytest.approx({0: 1.0, 1: 0.5 + 1.0})


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"method": "borda"}, ConfigError),
        ({"weights": [1.0]}, InvalidInputError),
        ({"normalize_inputs": ["minmax"]}, InvalidInputError),
        ({"k": -1}, InvalidInputError),
    ],
)
def test_fusion_bad_arguments(kwargs, error):
    with pytest.raises(error):
        fuse([_res("a", [(0, 1.0)]), _res("b", [(0, 1.0)])], **kwargs)


def test_fusion_rejects_different_queries_and_empty_input():
    with pytest.raises(InvalidInputError):
        fuse([_res("a", [(0, 1.0)], "q1"), _res("b", [(0, 1.0)], "q2")])
    with pytest.raises(InvalidInputError):
        fuse([])
