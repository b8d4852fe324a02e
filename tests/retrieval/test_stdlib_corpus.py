"""The demo's default corpus: standard-library docstrings read with ast (nothing imported), split into passages
with unique, stable ids."""

import sysconfig

import pytest

from rankrelay.retrieval.stdlib_corpus import _passages, stdlib_passages

MODULE = '''"""A module about wings.

It has two paragraphs."""
open(__file__ + ".ran", "w").close()  # importing this module would leave a file


class Wing:
    """A wing makes lift."""

    def stall(self):
        """Past the critical angle of attack the flow separates."""

    def _private(self):
        """Never listed."""


class Tail:
    def stall(self):
        """A tail stalls too."""


if True:
    def span():
        """The first span."""
else:
    def span():
        """The other span."""


class _Hidden:
    def shown(self):
        """Inside a private class: not listed."""
'''


@pytest.fixture
def fake_stdlib(tmp_path, monkeypatch):
    root = tmp_path / "lib"
    (root / "aero").mkdir(parents=True)
    (root / "aero" / "__init__.py").write_text('"""The aero package joins wings and tails together."""\n')
    (root / "aero" / "wing.py").write_text(MODULE)
    (root / "aero" / "_internal.py").write_text('"""A private module: skipped."""\n')
    (root / "aero" / "broken.py").write_text('"""Not Python at all."""\ndef (:\n')
    for skipped in ("test", "site-packages", "__pycache__"):
        (root / skipped).mkdir()
        (root / skipped / "mod.py").write_text('"""Skipped folder."""\n')
    paths = sysconfig.get_paths()
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {**paths, "stdlib": str(root)})
    return root


def test_passages_pack_whole_paragraphs_cut_long_ones_and_drop_short_leftovers():
    text = "one two three\n\nfour five\n\n" + " ".join(f"w{i}" for i in range(7)) + "\n\nend"
    assert list(_passages(text, max_words=5, min_words=2)) == [
        "one two three four five", "w0 w1 w2 w3 w4", "w5 w6 end"]
    assert list(_passages("a b c", max_words=5, min_words=4)) == []  # under min_words: no passage
    assert list(_passages("", max_words=5, min_words=0)) == [""]


def test_docstrings_are_read_without_importing_and_named_by_their_parents(fake_stdlib):
    docs = stdlib_passages(min_words=1)
    ids = [d.id for d in docs]
    assert ids == ["aero:0", "aero.wing:0", "aero.wing.Wing:0", "aero.wing.Wing.stall:0", "aero.wing.Tail.stall:0",
                   "aero.wing.span:0", "aero.wing.span~2:0"]
    assert docs[1].text == "A module about wings. It has two paragraphs."
    assert docs[3].metadata == {"module": "aero.wing", "object": "aero.wing.Wing.stall"}
    assert not list(fake_stdlib.rglob("*.ran"))  # nothing ran
    assert [d.id for d in stdlib_passages(limit=3, min_words=1)] == ids[:3]
    assert [d.id for d in stdlib_passages(min_words=5)] == ["aero:0", "aero.wing:0", "aero.wing.Wing.stall:0"]


def test_the_installed_standard_library_gives_unique_ids_within_the_word_limits():
    docs = stdlib_passages(limit=None)
    assert len(docs) > 1000 and len({d.id for d in docs}) == len(docs)
    assert all(12 <= len(d.text.split()) <= 100 for d in docs)
    assert {"json", "collections", "pathlib"} <= {d.metadata["module"] for d in docs}
