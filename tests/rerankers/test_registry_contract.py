"""The registry's contract, on backends that load nothing: what a spec means, where options and settings go,
and what each refusal says (what mutation testing found unchecked: tests/mutation/run.py --only registry)."""

import json

import pytest

from rankrelay import ConfigError, Settings, UnknownBackendError, load_reranker
from rankrelay.errors import AuthenticationError
from rankrelay.rerankers import backends, parse_spec, register
from rankrelay.rerankers.base import BaseReranker, Scored
from rankrelay.rerankers.compose.fallback import FallbackReranker
from rankrelay.rerankers.reference import IdentityReranker
from rankrelay.rerankers.registry import (
    BackendInfo,
    check_spec,
    load_chain_item,
    load_settings,
    split_options,
    unregister,
)


class Recorder(BaseReranker):
    """A backend that keeps the model and options it was built with."""

    name = "recorder"

    def __init__(self, model=None, **options):
        super().__init__(normalize=options.pop("normalize", "rank"))
        self.model, self.options = model, options

    def _score_batch(self, queries, documents):
        return [Scored([0.0] * len(d)) for d in documents], {}


@pytest.fixture
def recorder():
    register("recorder", Recorder, options={"normalize", "batch_size", "device", "color"}, description="records",
             extra="demo")
    yield
    unregister("recorder")


def test_a_registered_backend_is_listed_with_everything_it_was_given(recorder):
    [info] = [b for b in backends() if b.name == "recorder"]
    assert info == BackendInfo("recorder", Recorder, frozenset({"normalize", "batch_size", "device", "color"}),
                               "records", "demo")
    assert [b.name for b in backends()] == sorted(b.name for b in backends())
    unregister("recorder")
    assert "recorder" not in [b.name for b in backends()]
    unregister("recorder")  # a second time: nothing to remove, no error


@pytest.mark.parametrize("name", ["", "a:b"])
def test_a_backend_name_must_be_a_plain_word(name):
    with pytest.raises(ConfigError, match=f"^backend names cannot be empty or contain ':', got {name!r}$"):
        register(name, Recorder, options=set(), description="x")


@pytest.mark.parametrize(("spec", "expected"), [
    ("random", ("random", None, None)),
    ("random:", ("random", None, None)),
    ("random: 7 ", ("random", "7", None)),
    (" identity ", ("identity", None, None)),
])
def test_a_spec_splits_into_backend_and_model(spec, expected):
    assert parse_spec(spec) == expected


def test_options_after_a_question_mark_are_read_as_json_or_text():
    assert split_options("random:3?normalize=minmax&n=2&on=true&expr=a=b&&") == (
        "random:3", {"normalize": "minmax", "n": 2, "on": True, "expr": "a=b"})
    assert split_options("random:3?x=1?y") == ("random:3", {"x": "1?y"})  # the first '?' starts the options
    assert split_options("cascade:a?x=1>b@2") == ("cascade:a?x=1>b@2", {})  # a cascade's stages keep theirs
    with pytest.raises(ConfigError,
                       match=r"^spec options are key=value pairs after '\?', got 'flag' in 'random\?flag'$"):
        split_options("random?flag")
    with pytest.raises(ConfigError, match="got '=1'"):
        split_options("random?=1")


def test_check_spec_looks_into_lists_and_dicts_without_building_anything(recorder):
    check_spec(["random:1", {"spec": "identity"}, IdentityReranker(), "recorder:m?color=red"])
    for bad in (["identity", "nope"], {"spec": "nope"}, "nope?x=1"):
        with pytest.raises(UnknownBackendError, match="'nope'"):
            check_spec(bad)
    with pytest.raises(ConfigError, match="^a reranker spec is a string, a dict, a list or a Reranker, got int$"):
        check_spec(3)


def test_a_reranker_object_is_returned_as_it_is_and_takes_no_options():
    rr = IdentityReranker()
    assert load_reranker(rr) is rr and load_chain_item(rr) is rr
    with pytest.raises(ConfigError, match="^options cannot be applied to a reranker instance; configure it directly$"):
        load_reranker(rr, normalize="minmax")


def test_an_object_that_looks_like_a_reranker_is_told_what_it_lacks():
    class Half:
        name = "half"

        def rerank(self, query, documents):
            return []

        def close(self):
            pass

    with pytest.raises(ConfigError, match=r"^Half is not a Reranker: it lacks arerank, rerank_batch, warm_up "
                                          r"\(subclass rankrelay.rerankers.base.SingleQuery"):
        load_reranker(Half())
    with pytest.raises(ConfigError, match="^a reranker spec is a string, a dict, a list or a Reranker, got float$"):
        load_reranker(1.5)


def test_dict_options_spec_options_and_keyword_options_merge_in_that_order(recorder):
    rr = load_reranker({"spec": "recorder:m?color=red&batch_size=2", "color": "blue"}, device="cpu",
                       settings=Settings(batch_size=7))
    assert (rr.model, rr.options) == ("m", {"color": "blue", "batch_size": 2, "device": "cpu"})
    default = load_reranker("recorder", settings=Settings(batch_size=7, device="cpu"))
    assert default.model is None and default.options == {"batch_size": 7, "device": "cpu"}  # only what it takes
    with pytest.raises(ConfigError, match=r"^a reranker given as a dict needs a 'spec' string, got \{'spec': 3\}$"):
        load_reranker({"spec": 3})


def test_an_unknown_option_is_named_with_what_the_backend_takes(recorder):
    with pytest.raises(ConfigError, match=r"^unknown option\(s\) for backend 'recorder': size, weight; it takes: "
                                          r"batch_size, color, device, normalize$"):
        load_reranker("recorder", weight=1, size=2)


def test_no_spec_means_the_settings_chain_else_the_settings_backend(recorder):
    chain = load_reranker(settings=Settings(fallback=["recorder:a", "identity"], batch_size=5))
    assert isinstance(chain, FallbackReranker) and chain.backends[0].options["batch_size"] == 5
    assert [type(b).__name__ for b in chain.backends] == ["Recorder", "IdentityReranker"]
    single = load_reranker(settings=Settings(backend=" recorder:b "))
    assert isinstance(single, Recorder) and single.model == "b"


def test_a_list_is_a_chain_whose_stages_take_the_settings_and_whose_options_go_to_the_chain(recorder):
    own = IdentityReranker()
    chain = load_reranker(["recorder:a", {"spec": "recorder:b", "color": "red"}, own], settings=Settings(batch_size=3),
                          normalize="minmax", failure_threshold=2)
    assert isinstance(chain, FallbackReranker) and chain.name == "fallback"
    assert chain.normalize == "minmax" and chain.breakers[0].failure_threshold == 2
    first, second, third = chain.backends
    assert (first.model, first.options) == ("a", {"batch_size": 3, "device": "auto"})
    assert (second.model, second.options) == ("b", {"batch_size": 3, "device": "auto", "color": "red"})
    assert third is own


def test_a_chain_passes_on_a_backend_it_cannot_build_unless_strict(monkeypatch):
    for key in ("CO_API_KEY", "COHERE_API_KEY", "RANKRELAY_COHERE_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    chain = load_reranker(["cohere:rerank-v3.5", "identity"])
    assert [p["available"] for p in chain.availability()] == [False, True]
    assert "no Cohere API key" in chain.availability()[0]["reason"]
    with pytest.raises(AuthenticationError, match="no Cohere API key"):
        load_reranker(["cohere:rerank-v3.5", "identity"], strict=True)
    with pytest.raises(AuthenticationError, match="no Cohere API key"):
        load_reranker(settings=Settings(fallback=["cohere:rerank-v3.5", "identity"]), strict=True)


def test_settings_come_from_the_file_named_and_bad_values_are_a_config_error(tmp_path):
    from rankrelay.rerankers.registry import load_settings

    path = tmp_path / "s.toml"
    path.write_text('backend = "identity"\nbatch_size = 4\n')
    settings = load_settings(str(path), batch_size=9)
    assert (settings.backend, settings.batch_size) == ("identity", 9)  # keyword overrides beat the file
    with pytest.raises(ConfigError, match=r"(?s)^invalid settings: .*batch_size"):
        load_settings(None, batch_size=0)


def test_the_cohere_key_in_settings_reaches_the_cohere_backend_only(monkeypatch):
    for key in ("CO_API_KEY", "COHERE_API_KEY", "RANKRELAY_COHERE_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings(cohere_api_key="sk-settings")
    assert load_reranker("cohere:rerank-v3.5", settings=settings).name == "cohere"
    with pytest.raises(AuthenticationError):
        load_reranker("cohere:rerank-v3.5", settings=Settings())


def test_a_toml_file_is_a_spec_with_its_own_settings(recorder, tmp_path):
    path = tmp_path / "tuned.toml"
    path.write_text('backend = "recorder:m?color=red"\nbatch_size = 6\n')
    rr = load_reranker(f" {path} ", device="cpu")
    assert isinstance(rr, Recorder) and rr.options == {"color": "red", "batch_size": 6, "device": "cpu"}
    check_spec(str(path))
    chain = tmp_path / "chain.toml"
    chain.write_text('backend = "identity"\nfallback = ["recorder:a", "identity"]\n')
    assert isinstance(load_reranker(str(chain)), FallbackReranker)
    bad = tmp_path / "bad.toml"
    bad.write_text('backend = "identity"\nfallback = ["nope"]\n')
    with pytest.raises(UnknownBackendError, match="'nope'"):
        check_spec(str(bad))
    bad.write_text('backend = "nope"\n')
    with pytest.raises(UnknownBackendError, match="'nope'"):
        check_spec(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_reranker(str(tmp_path / "missing.toml"))


def test_a_profile_takes_the_settings_given(monkeypatch):
    rr = load_reranker("balanced", settings=Settings(batch_size=5, device="cpu"))
    assert (rr.cheap.batch_size, rr.strong.batch_size, rr.cheap.device) == (5, 5, "cpu")


def test_a_cascade_builds_its_stages_with_the_settings_given(recorder):
    settings = Settings(batch_size=4, device="cpu")
    for spec in ("cascade:recorder:a>recorder:b@3", {"spec": "cascade", "cheap": "recorder:a", "strong": "recorder:b",
                                                    "keep": 3}):
        rr = load_reranker(spec, settings=settings)
        assert rr.keep == 3 and rr.cheap.options == rr.strong.options == {"batch_size": 4, "device": "cpu"}
    assert load_reranker("cascade:first-stage>recorder:b@2", settings=settings, keep=5).keep == 5
    for stage in ("cheap", "strong"):
        with pytest.raises(ConfigError, match="not both"):
            load_reranker("cascade:identity>identity@2", **{stage: "identity"})


@pytest.mark.parametrize(("settings", "message"), [
    ({"normalize": "sigmod"}, "normalize: 'sigmod' is not one of rank, sigmoid, minmax, zscore, none, calibrated; "
                              "did you mean 'sigmoid'?"),
    ({"normalize": "xyz"}, "normalize: 'xyz' is not one of rank, sigmoid, minmax, zscore, none, calibrated"),
    ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1 (got 0)"),
    ({"batch_size": 0, "normalize": "minmx"}, "batch_size: Input should be greater than or equal to 1 (got 0); "
                                              "normalize: 'minmx' is not one of rank, sigmoid, minmax, zscore, none, "
                                              "calibrated; did you mean 'minmax'?"),
    ({"service": {"api_keys": 5}}, "service.api_keys: Input should be a valid list (got 5)"),
])
def test_invalid_settings_are_one_line_naming_the_field_the_value_and_the_choice_meant(settings, message, tmp_path):
    config = tmp_path / "rankrelay.toml"
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items() if not isinstance(v, dict))
                      + "".join(f"[{k}]\n" + "".join(f"{a} = {json.dumps(b)}\n" for a, b in v.items())
                                for k, v in settings.items() if isinstance(v, dict)))
    with pytest.raises(ConfigError) as err:
        load_settings(str(config))
    assert str(err.value) == f"invalid settings: {message}"
    assert "pydantic" not in str(err.value)


def test_a_problem_of_the_whole_settings_is_named_settings():
    from pydantic import ValidationError

    from rankrelay.rerankers.registry import settings_problems

    exc = ValidationError.from_exception_data("Settings", [
        {"type": "value_error", "loc": (), "input": {"a": 1}, "ctx": {"error": ValueError("two chains")}}])
    assert settings_problems(exc) == "settings: Value error, two chains (got {'a': 1})"
