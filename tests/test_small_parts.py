"""Small shared parts: the LRU's size check, the random baseline's seed, auto's guard handed to backends, the device
``auto`` picks, the simulation's number lists."""

import pytest
from conftest import raises_exactly

from rankrelay import ConfigError, Settings, load_reranker
from rankrelay.lru import LRU


@pytest.mark.parametrize("size", [-1, True, 1.5, "3"])
def test_an_lru_size_must_be_a_whole_number_at_least_zero(size):
    with raises_exactly(ValueError, f"max_size must be an int >= 0, got {size!r}"):
        LRU(size)


def test_an_lru_of_size_zero_keeps_nothing():
    cache = LRU(0)
    cache.put_many({"a": 1})
    assert cache.get_many(["a"]) == {} and len(cache) == 0


def test_the_random_baseline_without_a_seed_is_seed_zero_and_reproducible():
    docs = [f"d{i}" for i in range(20)]
    plain = [r.index for r in load_reranker("random").rerank("q", docs)]
    assert plain == [r.index for r in load_reranker("random:0").rerank("q", docs)]
    assert plain != [r.index for r in load_reranker("random:7").rerank("q", docs)]


def test_the_agreement_guard_of_runtime_auto_reaches_the_backends():
    options = Settings(runtime="auto", min_agreement=0.97).reranker_options()
    assert (options["runtime"], options["min_agreement"]) == ("auto", 0.97)


@pytest.mark.parametrize(("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"),
                                                       (False, False, "cpu")])
def test_device_auto_picks_cuda_then_mps_then_the_cpu(monkeypatch, cuda, mps, expected):
    import torch

    from rankrelay.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto") == expected


@pytest.mark.parametrize(("text", "expected"), [("1", [1]), ("20, 80,", [20, 80]), ("0,5", None), ("", None),
                                                (" , ", None), ("-3", None)])
def test_simulation_sizes_are_positive_whole_numbers(text, expected):
    from rankrelay.cli.experiment import _numbers

    if expected is not None:
        assert _numbers(text, "--impressions") == expected
    else:
        with raises_exactly(ConfigError, f"--impressions takes positive numbers, got {text!r}"):
            _numbers(text, "--impressions")


def test_a_missing_extra_names_its_package_the_extra_and_the_feature(tmp_path, monkeypatch):
    from rankrelay._optional import import_optional
    from rankrelay.errors import MissingDependencyError

    message = "the Qdrant retriever needs the optional package 'no_such_pkg_here': pip install 'rankrelay[qdrant]'"
    with raises_exactly(MissingDependencyError, message):
        import_optional("no_such_pkg_here", extra="qdrant", feature="the Qdrant retriever")
    with raises_exactly(MissingDependencyError, message.replace("'no_such_pkg_here'", "'qdrant-client'")):
        import_optional("no_such_pkg_here.sub", extra="qdrant", feature="the Qdrant retriever",
                        package="qdrant-client")
    (tmp_path / "half_installed.py").write_text("import no_such_dependency_of_it\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as err:  # a broken install is not a missing extra: its own error
        import_optional("half_installed", extra="x", feature="y")
    assert err.value.name == "no_such_dependency_of_it"


@pytest.mark.parametrize(("template", "message"), [
    ("{query} {when} {where}", "the user template uses when, where; it may use {documents}, {query}"),
    ("  ", "the user template must be non-empty text"),
])
def test_a_chat_template_names_the_fields_it_may_use(template, message):
    from rankrelay.rerankers.llm.chat import check_template

    with raises_exactly(ConfigError, message):
        check_template(template, {"query", "documents"}, "user")


def test_the_runtime_sample_is_short_and_long_texts_and_the_timing_set_three_lengths_of_passage():
    """What runtime='auto' checks agreement on (16 sentences and 14 six-sentence documents) and times speed on
    (the stall question over passages of 4, 9 and 19 sentences, 8 of each)."""
    from rankrelay.rerankers.local import sample

    queries, documents = sample.sample_pairs()
    assert documents == sample._documents() and documents[:16] == sample.SENTENCES
    assert [d.count(". ") + 1 for d in documents[16:]] == [6] * 14
    query, passages = sample.timing_pairs()
    assert query == queries[0] == "why does a wing stall at a high angle of attack"
    assert passages == sample._timing_documents()
    assert [p.count(". ") + 1 for p in passages] == [4] * 8 + [9] * 8 + [19] * 8


def test_progress_off_a_terminal_is_a_line_every_few_seconds_for_a_generator_too(caplog):
    import logging

    from rankrelay.progress import steps
    from rankrelay.testing import FakeClock

    clock = FakeClock(start=0.0)

    def work():
        for i in range(7):
            clock.sleep(2.0)
            yield i

    with caplog.at_level(logging.INFO, "rankrelay.progress"):
        assert list(steps(work(), "scoring", total=7, terminal=False, clock=clock)) == list(range(7))
    assert [r.getMessage() for r in caplog.records] == [
        "scoring: 3/7 (42%), 6 s", "scoring: 6/7 (85%), 12 s", "scoring: 7/7 (100%), 14 s"]


def test_the_commands_show_progress_off_a_terminal_unless_quiet():
    from rankrelay.cli.common import progress_shown

    assert progress_shown(quiet=False) and not progress_shown(quiet=True)


def test_billed_units_add_up_per_unit_in_place_keeping_whole_counts_whole():
    from rankrelay.billing import add_units

    total = {"search_units": 1}
    same = add_units(total, {"search_units": 2, "input_tokens": 7})
    assert same is total and total == {"search_units": 3, "input_tokens": 7}
    assert isinstance(total["search_units"], int) and add_units(total, {}) == {"search_units": 3, "input_tokens": 7}


def test_billed_units_are_priced_per_unit_and_an_unpriced_unit_costs_nothing():
    from rankrelay.billing import price

    assert price({"search_units": 3, "input_tokens": 1000}, {"search_units": 0.002, "input_tokens": 1e-6}) == \
        pytest.approx(0.007)
    assert price({"images": 5}, {"search_units": 0.002}) == 0.0 and isinstance(price({}, {}), float)
