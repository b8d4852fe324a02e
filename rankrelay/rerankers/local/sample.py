"""A fixed sample of queries and documents: what a converted runtime is checked (and calibrated) on.

Short and long texts on several topics, so that rankings have a clear head and a near-tied tail. Speed is timed
on a second set, :func:`timing_pairs`: one query with passages of about 80, 170 and 330 tokens, the lengths a
reranker reads (a runtime's speed-up over torch changes with length: ONNX Runtime's fp32 was 1.10x torch at 100
tokens and 0.75x at 360 on one CPU, so a sample of short texts alone chose it where it was slower).

Example:
    >>> from rankrelay.rerankers.local.sample import sample_pairs, timing_pairs
    >>> queries, documents = sample_pairs()
    >>> len(queries), len(documents)
    (4, 30)
    >>> query, passages = timing_pairs()
    >>> len(passages), min(len(p.split()) for p in passages), max(len(p.split()) for p in passages)
    (24, 46, 272)
"""

from __future__ import annotations

QUERIES = (
    "why does a wing stall at a high angle of attack",
    "how is the boundary layer affected by pressure gradients",
    "which reranking model should a search engine use",
    "what is the capital of france",
)

SENTENCES = (
    "A wing stalls when the angle of attack grows past the point where the flow can follow the upper surface.",
    "Separation of the boundary layer near the trailing edge spreads forward as the angle of attack increases.",
    "An adverse pressure gradient slows the flow near the wall until the boundary layer separates.",
    "Favourable pressure gradients keep a laminar boundary layer attached and thin.",
    "Cross-encoders read the query and the document together and score their relevance.",
    "A bi-encoder embeds queries and documents separately, so document vectors can be indexed ahead of time.",
    "Reranking the top hundred candidates of a fast retriever with a stronger model improves precision.",
    "Paris is the capital and the largest city of France, on the river Seine.",
    "Berlin is the capital of Germany and its most populous city.",
    "The heat transfer at the wall of a hypersonic vehicle depends on the state of the boundary layer.",
    "Lift grows almost linearly with the angle of attack until the stall.",
    "Slender delta wings keep producing vortex lift at angles where straight wings have stalled.",
    "The cat sat on the mat while the dog slept by the fire.",
    "Python sorts lists with a stable algorithm called Timsort.",
    "BM25 scores a document by term frequency, inverse document frequency and document length.",
    "Shock waves interacting with the boundary layer can cause separation on transonic wings.",
)


def _documents() -> tuple[str, ...]:
    n = len(SENTENCES)
    short = SENTENCES
    long = tuple(" ".join(SENTENCES[(i + j * 3) % n] for j in range(6)) for i in range(14))
    return short + long


DOCUMENTS = _documents()


#: sentences per timing passage (about 17 tokens each) and passages of each length
TIMING_LENGTHS = (4, 9, 19)
TIMING_PER_LENGTH = 8


def _timing_documents() -> tuple[str, ...]:
    n = len(SENTENCES)
    return tuple(" ".join(SENTENCES[(i + j * 5) % n] for j in range(k))
                 for k in TIMING_LENGTHS for i in range(TIMING_PER_LENGTH))


TIMING_DOCUMENTS = _timing_documents()


def timing_pairs() -> tuple[str, tuple[str, ...]]:
    """The query and the passages a runtime's speed is timed on."""
    return QUERIES[0], TIMING_DOCUMENTS


def sample_pairs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The sample's queries and documents (every query is paired with every document)."""
    return QUERIES, DOCUMENTS
