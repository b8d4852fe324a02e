"""Passage windows: word-aligned, overlapping, covering, and within the budget."""

import pytest
from transformers import AutoTokenizer

from rankrelay import ConfigError
from rankrelay.rerankers.local.passages import PassagePlanner, check_long_documents


@pytest.fixture(scope="module")
def tokenizer(tiny_ce_path):
    return AutoTokenizer.from_pretrained(tiny_ce_path)


def test_short_document_is_one_whole_passage(tokenizer):
    (p,) = PassagePlanner(tokenizer, 64).plan("q", ["a short text"])
    assert p.spans == [(0, len("a short text"))] and not p.split and not p.truncated


@pytest.mark.parametrize("overlap", [0, 8, 32, 500])
def test_windows_cover_overlap_and_align_to_words(tokenizer, overlap):
    text = " ".join(f"word{i % 10}" for i in range(120))  # each word is several word pieces
    planner = PassagePlanner(tokenizer, 64, overlap=overlap)
    (p,) = planner.plan("wing stall", [text])
    assert p.split and len(p.spans) > 1
    assert p.spans[0][0] == 0 and p.spans[-1][1] == len(text)
    budget = planner.budget("wing stall")
    for a, b in p.spans:
        assert text[a] != " " and (a == 0 or text[a - 1] == " "), "window starts at a word start"
        assert b == len(text) or text[b] == " ", "window ends at a word end"
        assert len(tokenizer(text[a:b], add_special_tokens=False)["input_ids"]) <= budget
    for (a0, a1), (b0, _) in zip(p.spans, p.spans[1:]):
        assert a0 < b0 <= a1 + 1, "windows advance and leave no gap"


def test_a_word_longer_than_the_window_is_cut_not_looped(tokenizer):
    text = "x" * 400 + " tail"
    (p,) = PassagePlanner(tokenizer, 64).plan("q", [text])
    assert p.spans[-1][1] == len(text) and len(p.spans) < 20


def test_unknown_mode():
    with pytest.raises(ConfigError):
        check_long_documents("chop")
