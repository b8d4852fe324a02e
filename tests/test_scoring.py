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


# --- what mutation testing found unchecked (tests/mutation/run.py --only scoring) ---

NAN, INF = float("nan"), float("inf")


def _same(a, b):
    """Equal lists where NaN equals NaN."""
    return len(a) == len(b) and all((x != x and y != y) or x == pytest.approx(y) for x, y in zip(a, b))


def test_order_by_score_puts_nan_last_wherever_it_starts():
    assert order_by_score([NAN, 1.0, 2.0, NAN]) == [2, 1, 0, 3]


def test_normalize_defaults_to_rank_position_and_handles_one_score():
    assert normalize([3.0, 1.0]) == [1.0, 0.5]
    assert normalize([5.0]) == [1.0]
    assert normalize([5.0], "minmax") == [1.0] and normalize([5.0], "zscore") == [0.0]


def test_minmax_uses_the_lowest_and_highest_finite_scores():
    assert normalize([5.0, 3.0, 1.0], "minmax") == [1.0, 0.5, 0.0]
    assert _same(normalize([2.0, 2.0, NAN], "minmax"), [1.0, 1.0, NAN])  # a NaN stays NaN, not 1.0
    assert _same(normalize([NAN, NAN], "minmax"), [NAN, NAN])  # nothing finite: no error
    assert _same(normalize([INF], "minmax"), [NAN])  # an infinite score has no place on a finite scale


def test_zscore_of_degenerate_inputs():
    assert _same(normalize([2.0, 2.0, NAN], "zscore"), [0.0, 0.0, NAN])
    assert _same(normalize([NAN, NAN], "zscore"), [NAN, NAN])
    assert _same(normalize([INF], "zscore"), [NAN])


def test_calibrated_normalization_applies_the_calibration_and_needs_one():
    assert normalize([4.0, 2.0], "calibrated", calibration=lambda s: [x / 10 for x in s]) == [0.4, 0.2]
    with pytest.raises(ConfigError, match=r"^normalize=.calibrated. needs a model with a fitted calibration \("):
        normalize([4.0, 2.0], "calibrated")


def test_unknown_normalization_lists_every_choice():
    with pytest.raises(ConfigError, match="unknown normalization 'softmax'; choose one of rank, sigmoid, minmax"):
        normalize([1.0], "softmax")


def _doc(index, score, rank, **kw):
    return RankedDocument(index, f"doc {index}", score, rank, 0.0, **kw)


def test_relevance_follows_the_backends_kind_and_mode():
    from rankrelay.scoring import relevance

    docs = [_doc(0, 2.0, 1), _doc(1, 0.5, 2), _doc(2, NAN, 3)]
    sig = RerankResult("q", docs, "x", info={"relevance": "sigmoid"}, num_candidates=3)
    assert relevance(sig) == pytest.approx([1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(-0.5)), 0.0])
    assert relevance(sig, "rank") == pytest.approx([1.0, 2 / 3, 1 / 3])
    unit = RerankResult("q", [_doc(0, 1.7, 1), _doc(1, 0.25, 2), _doc(2, -0.3, 3)], "x", info={"relevance": "unit"})
    assert relevance(unit) == [1.0, 0.25, 0.0]
    plain = RerankResult("q", docs[:2], "x", num_candidates=4)  # no kind: the rank position, over all candidates
    assert relevance(plain) == [1.0, 0.75]
    calibrated = RerankResult("q", [RankedDocument(0, "d", 3.0, 1, 0.9), RankedDocument(1, "e", 1.0, 2, NAN)], "x",
                              normalization="calibrated", info={"relevance": "sigmoid"})
    assert relevance(calibrated) == [0.9, 0.0] and relevance(calibrated, "rank") == [1.0, 0.5]
    with pytest.raises(ConfigError, match="unknown relevance mode 'best'; choose 'score' or 'rank'"):
        relevance(sig, "best")


def test_fusion_keeps_every_field_of_the_documents_and_the_result():
    a = RerankResult("q", [_doc(3, 9.0, 1, id="x", metadata={"m": 1}, passage=(2, 5), truncated=True),
                           _doc(1, 1.0, 2, id="y")], "cross", model="m1", timings={"total": 2.0, "model": 1.5})
    b = RerankResult("q", [_doc(5, 0.8, 1, id="x"), _doc(0, 0.1, 2, id="y")], "cross", model="m1", timings={})
    fused = fuse([a, b], normalization="minmax")
    x = fused[0]
    assert (x.index, x.text, x.id, x.metadata, x.passage, x.truncated) == (3, "doc 3", "x", {"m": 1}, (2, 5), True)
    assert [r.rank for r in fused] == [1, 2] and [r.normalized_score for r in fused] == [1.0, 0.0]
    assert fused[1].id == "y" and fused[1].index == 1  # matched by id across inputs, first seen kept
    assert x.components == {"cross:m1": 9.0, "cross:m1#1": 0.8}
    assert fused.query == "q" and fused.model == "cross:m1+cross:m1#1" and fused.normalization == "minmax"
    assert fused.timings == {"total": 2.0, "model": 0.0} and fused.num_candidates == 2
    assert x.score == pytest.approx(2 / 61)  # k = 60 by default


def test_fusion_names_a_backend_without_a_model_by_its_name_alone():
    fused = fuse([_res("a", [(0, 1.0)]), _res("b", [(0, 1.0)])])
    assert fused.model == "a+b"


def test_a_document_with_an_id_is_not_matched_with_one_at_the_same_index():
    a = RerankResult("q", [_doc(0, 1.0, 1, id="p"), _doc(1, 0.5, 2, id="r")], "a")
    b = RerankResult("q", [_doc(1, 1.0, 1, id="p"), _doc(0, 0.5, 2, id="r")], "b")
    assert [r.score for r in fuse([a, b], k=0)] == pytest.approx([2.0, 1.0])  # "p" at index 0 and 1 is one document


def test_weighted_fusion_min_max_normalizes_inputs_by_default():
    a = _res("a", [(0, 10.0), (1, 6.0), (2, 2.0)])
    assert [r.score for r in fuse([a], "weighted")] == pytest.approx([1.0, 0.5, 0.0])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"method": "borda"}, ConfigError, "unknown fusion method 'borda'; choose one of rrf, weighted"),
        ({"weights": [1.0]}, InvalidInputError, "got 1 weights for 2 results"),
        ({"normalize_inputs": ["minmax"]}, InvalidInputError, "got 1 normalizations for 2 results"),
        ({"k": -1}, InvalidInputError, "k must be >= 0, got -1"),
    ],
)
def test_fusion_bad_arguments_name_the_problem(kwargs, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        fuse([_res("a", [(0, 1.0)]), _res("b", [(0, 1.0)])], **kwargs)


def test_fusion_of_nothing_or_of_different_queries_says_so():
    with pytest.raises(InvalidInputError, match="^fuse needs at least one result$"):
        fuse([])
    with pytest.raises(InvalidInputError, match="^fuse combines rankings of one query; got results for different"):
        fuse([_res("a", [(0, 1.0)], "q1"), _res("b", [(0, 1.0)], "q2")])
