"""What the framework adapter tests share: a small corpus with metadata and the ranking check (the fixtures,
``tiny_embedder`` and ``failing_chain``, are in tests/conftest.py)."""

from __future__ import annotations

QUERY = "why does the wing stall at high angle of attack"
CORPUS = [
    "the wing stalls when the angle of attack is too high and the flow separates",
    "paris is the capital of france",
    "boundary layer separation on the wing at high angle",
    "python's sort is stable",
    "lift grows with the angle of attack until the wing stalls",
    "cats and dogs sleep most of the day",
    "high speed flow over a swept wing",
    "the stall of a wing at a high angle of attack",
    "a recipe for bread with flour water and salt",
    "turbulence in the wake behind the wing",
]
SOURCES = ["aero", "geo", "code", "aero", "pets", "aero", "food", "aero"]


def metadata(i: int) -> dict:
    """Document ``i``'s metadata: its id and a source (each must come back unchanged)."""
    return {"doc_id": f"d{i}", "source": SOURCES[i % len(SOURCES)]}


def check_ranked(ids: list[str], scores: dict[str, float] | None, candidates: list[str], reference, top: int) -> None:
    """``ids`` (best first) are the best ``top`` of ``candidates`` by the reference result (the library's own
    ``rerank`` of the candidates' texts), with the reference's raw ``scores`` where given; nothing repeats."""
    from numerics import assert_ranking_follows, assert_scores_close

    ref = {r.index: r.score for r in reference.results}
    ref_scores = [ref[i] for i in range(len(candidates))]
    assert len(ids) == min(top, len(candidates)) and len(set(ids)) == len(ids)
    order = [candidates.index(i) for i in ids]
    assert_ranking_follows(order, ref_scores)
    if scores is not None:
        assert_scores_close([scores[i] for i in ids], [ref_scores[k] for k in order])
