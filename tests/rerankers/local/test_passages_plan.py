"""Passage planning on a tokenizer whose every split is known: each word of the text is cut into 2-character
pieces, so the exact windows, budgets and boundaries can be written down and compared."""

import numpy as np
import pytest

from rankrelay.errors import ConfigError, DocumentTooLongError, ModelLoadError, QueryTooLongError
from rankrelay.rerankers.local.passages import MIN_DOC_TOKENS, SAFETY_TOKENS, PassagePlanner


class Encoding(dict):
    def __init__(self, offsets, words):
        super().__init__(offset_mapping=offsets, input_ids=[list(range(len(o))) for o in offsets])
        self._words = words

    def word_ids(self, i):
        return self._words[i]


class PieceTokenizer:
    """A fast tokenizer stand-in: words split on spaces, each cut into pieces of 2 characters; '#' is a token
    of no word (word id None)."""

    is_fast = True

    def __init__(self):
        self.calls = 0

    def num_special_tokens_to_add(self, pair=False):
        return 3 if pair else 2

    def _encode(self, text):
        offsets, words, start, word = [], [], 0, 0
        for token in text.split(" "):
            for a in range(0, len(token), 2):
                offsets.append((start + a, start + min(a + 2, len(token))))
                words.append(None if token == "#" else word)
            start += len(token) + 1
            word += 1
        return offsets, words

    def __call__(self, texts, add_special_tokens=False, **kwargs):
        assert add_special_tokens is False and kwargs.get("verbose") is False
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        self.calls += 1
        encoded = [self._encode(t) for t in texts]
        enc = Encoding([o for o, _ in encoded], [w for _, w in encoded])
        return {"input_ids": enc["input_ids"][0]} if single else enc


def words(n, size=2):
    return " ".join("ab"[: min(size, 2)] * (size // 2) + "c" * (size % 2) for _ in range(n))


@pytest.fixture
def tok():
    return PieceTokenizer()


def test_the_document_budget_is_the_window_less_the_query_and_special_tokens(tok):
    planner = PassagePlanner(tok, 40)
    assert planner.budget("abcd ef") == 40 - 3 - 3
    lone = PassagePlanner(tok, 40, pair=False)  # a bi-encoder reads the document alone
    assert lone.budget("abcd ef") == 40 - 2 and lone.budget(words(38)) == 38
    with pytest.raises(QueryTooLongError, match="^the query has 39 tokens; the model reads at most 38$"):
        lone.budget(words(39))
    colbert = PassagePlanner(tok, 40, pair=False, query_limit=5)
    assert colbert.budget(words(5)) == 38
    with pytest.raises(QueryTooLongError, match="^the query has 6 tokens; the model reads at most 5$"):
        colbert.budget(words(6))


def test_a_query_must_leave_room_for_document_text(tok):
    least = MIN_DOC_TOKENS + SAFETY_TOKENS
    planner = PassagePlanner(tok, 40)
    assert planner.budget(words(40 - 3 - least)) == least  # exactly enough
    with pytest.raises(QueryTooLongError, match=f"^the query has {40 - 3 - least + 1} tokens and leaves {least - 1} "
                                                "of the model's 40 for document text; shorten the query or raise "
                                                "max_length$"):
        planner.budget(words(40 - 3 - least + 1))
    with pytest.raises(QueryTooLongError, match="and leaves 0 of the model's 40"):
        planner.budget(words(60))


def test_a_document_of_exactly_the_budget_is_one_piece(tok):
    planner = PassagePlanner(tok, 30)
    budget = planner.budget("q")
    (fits,) = planner.plan("q", [words(budget)])
    assert fits.spans == [(0, len(words(budget)))] and not fits.split and not fits.truncated
    (over,) = planner.plan("q", [words(budget + 1)])
    assert over.split


def test_windows_of_one_token_words_are_exact(tok):
    text = words(40)  # 40 one-token words: word k is at characters [3k, 3k + 2)
    planner = PassagePlanner(tok, 3 + 1 + 18, overlap=4)  # budget 18, window 16, stride 16 - min(4, 8) = 12
    (p,) = planner.plan("q", [text])
    assert p.split and p.spans == [(0, 47), (36, 83), (72, 119)]  # tokens [0, 16), [12, 28), [24, 40)
    assert PassagePlanner(tok, 22, overlap=100).plan("q", [text])[0].spans[:2] == [(0, 47), (24, 71)]  # half at most


def test_windows_end_and_start_at_word_starts(tok):
    text = words(20, size=4)  # 20 words of 2 tokens: word k at characters [5k, 5k + 4), tokens 2k and 2k + 1
    planner = PassagePlanner(tok, 3 + 1 + 19, overlap=3)  # budget 19, window 17, stride 14
    (p,) = planner.plan("q", [text])
    # token 17 is inside word 8: the window ends at token 16; the next starts at 16 - 3 = 13, inside word 6,
    # so at token 12; it ends at 29, inside word 14, so at 28; the last starts at 25, so at 24
    assert p.spans == [(0, 39), (30, 69), (60, 99)]


def test_a_word_longer_than_the_slack_is_cut_where_the_window_ends(tok):
    text = "ab " + "x" * 60  # a one-token word, then one of 30 tokens
    (p,) = PassagePlanner(tok, 3 + 1 + 18, overlap=0).plan("q", [text])  # window 16, slack 4
    assert p.spans == [(0, 33), (33, 63)]  # cut at token 16, mid-word, not moved back past the slack


def test_a_token_of_no_word_is_a_boundary(tok):
    text = " ".join(["abab"] * 7 + ["ab", "#", "#"] + ["abab"] * 8)  # tokens 15 and 16 belong to no word
    (p,) = PassagePlanner(tok, 3 + 1 + 18, overlap=0).plan("q", [text])
    assert p.spans[0] == (0, 39)  # the window ends at token 16 as it is: two no-word tokens are not one word


def test_error_and_truncate_modes(tok):
    text = words(40)
    with pytest.raises(DocumentTooLongError, match="^document 1 has 40 tokens; 26 fit beside the query in the "
                                                   r"model's window of 30 \(use long_documents='passages' or "
                                                   r"'truncate'\)$") as err:
        PassagePlanner(tok, 30, mode="error").plan("q", ["ok", text])
    assert (err.value.index, err.value.tokens, err.value.limit) == (1, 40, 26)
    (cut,) = PassagePlanner(tok, 30, mode="truncate").plan("q", [text])
    assert cut.spans == [(0, len(text))] and cut.truncated and not cut.split
    with pytest.raises(ConfigError, match="^unknown long_documents mode 'chop'; choose one of passages, truncate, "
                                          "error$"):
        PassagePlanner(tok, 30, mode="chop")


def test_a_slow_tokenizer_is_refused(tok):
    class Slow(PieceTokenizer):
        is_fast = False

    with pytest.raises(ModelLoadError, match=r"^splitting long documents needs a fast \(Rust\) tokenizer; this model "
                                             "has a slow one$"):
        PassagePlanner(Slow(), 30)

    class Unknown:
        pass

    with pytest.raises(ModelLoadError):
        PassagePlanner(Unknown(), 30)


def test_defaults_and_tokenization_cache(tok):
    planner = PassagePlanner(tok, 30)
    assert (planner.mode, planner.overlap, planner.pair, planner.cache_size, planner.query_limit) == \
        ("passages", 32, True, 20_000, None)
    assert planner.special == 3 and PassagePlanner(tok, 30, pair=False).special == 2
    first = planner.tokenize(["ab cd", "# ef"])
    calls = tok.calls
    again = planner.tokenize(["# ef", "ab cd", "ab cd"])
    assert tok.calls == calls  # all cached
    offsets, word_ids = again[0]
    assert offsets.dtype == np.int32 and word_ids.dtype == np.int32 and offsets.shape == (2, 2)
    assert word_ids.tolist() == [-1, 1] and first[0][1].tolist() == [0, 1]
    assert offsets.tolist() == [[0, 1], [2, 4]]
    empty = planner.tokenize([""])[0][0]
    assert empty.shape == (0, 2)


@pytest.mark.parametrize("short, window, end", [
    # window 16, slack 4: a word from token 11 to 20 holds the boundary (16) five tokens in: cut there
    (11, 16, 33 + 10),
    # window 48, slack 6: a word from token 42 holds the boundary six tokens in: moved back to its start
    (42, 48, 3 * 41 + 2),
    # window 47, slack 5 (47 // 8): a word from token 41 holds it six tokens in: cut there
    (41, 47, 3 * 41 + 12),
])
def test_the_slack_decides_between_moving_back_to_a_word_start_and_cutting(tok, short, window, end):
    text = " ".join(["ab"] * short + ["x" * 20] + ["ab"] * 20)  # one-token words around a 10-token word
    (p,) = PassagePlanner(tok, 3 + 1 + window + SAFETY_TOKENS, overlap=0).plan("q", [text])
    assert p.spans[0] == (0, end)


def test_a_long_first_word_is_cut_where_the_window_ends(tok):
    text = "x" * 60 + " ab"  # word 0 has 30 tokens
    (p,) = PassagePlanner(tok, 3 + 1 + 18, overlap=0).plan("q", [text])
    assert p.spans[0] == (0, 32)  # token 16: cut, not moved back within word 0


@pytest.mark.parametrize(("word_ids", "expected"), [
    ([0, 1, 1, 1, 2], 1),  # back to the word start one past the previous start
    ([1, 1, 1, 1, 2], 3),  # the word began at the previous start itself: cut where it stands, never moved to it
    ([0, 0, 1, 1, 2], 2),  # a word start within the slack
])
def test_a_boundary_moves_back_to_a_word_start_but_never_to_the_previous_start(word_ids, expected):
    from rankrelay.rerankers.local.passages import _align

    assert _align(word_ids, 3, 0, slack=4) == expected
