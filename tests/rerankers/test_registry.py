import pytest

from rankrelay import PRESETS, ConfigError, Settings, UnknownBackendError, load_reranker
from rankrelay.rerankers import backends, parse_spec, register
from rankrelay.rerankers.base import BaseReranker, Scored
from rankrelay.rerankers.local.cross_encoder import CrossEncoderReranker
from rankrelay.rerankers.local.prompted import PromptedReranker


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("minilm-l6", ("cross-encoder", "cross-encoder/ms-marco-MiniLM-L-6-v2", "minilm-l6")),
        ("minilm-l12", ("cross-encoder", "cross-encoder/ms-marco-MiniLM-L-12-v2", "minilm-l12")),
        ("bge-base", ("cross-encoder", "BAAI/bge-reranker-base", "bge-base")),
        ("bge-large", ("cross-encoder", "BAAI/bge-reranker-large", "bge-large")),
        ("cross-encoder:/models/my-ce", ("cross-encoder", "/models/my-ce", None)),
        ("cross-encoder:org/model", ("cross-encoder", "org/model", None)),
        ("bi-encoder:all-minilm-l6", ("bi-encoder", "all-minilm-l6", None)),
        ("bi-encoder", ("bi-encoder", None, None)),
    ],
)
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


def test_presets_are_cheap_to_construct_and_carry_their_settings():
    for name, preset in PRESETS.items():
        rr = load_reranker(name)
        if preset.backend == "cross-encoder":
            assert isinstance(rr, CrossEncoderReranker) and rr.activation == "sigmoid"
        else:  # a language-model family, prompted as its card says
            assert isinstance(rr, PromptedReranker) and rr.family.name == preset.backend == rr.name
        assert rr.model == preset.model and rr.preset == name and rr.relevance == "sigmoid"
        assert rr._encoder is None  # nothing loaded yet
        assert preset.params and preset.max_length >= 512


@pytest.mark.parametrize("spec", ["nope", "cohere-typo:rerank", "BAAI/bge-reranker-base"])
def test_unknown_backend_lists_what_is_known(spec):
    with pytest.raises(UnknownBackendError) as err:
        load_reranker(spec)
    msg = str(err.value)
    assert spec in msg and "minilm-l6" in msg and "cross-encoder" in msg
    if "/" in spec:
        assert f"cross-encoder:{spec}" in msg


def test_unknown_option_names_the_option():
    with pytest.raises(ConfigError, match="temperature"):
        load_reranker("minilm-l6", temperature=0.5)


def test_non_string_spec():
    with pytest.raises(ConfigError):
        load_reranker(42)  # type: ignore[arg-type]


def test_options_become_backend_settings():
    rr = load_reranker("cross-encoder:/some/model", batch_size=16, normalize="minmax", device="cpu",
                       long_documents="error", max_length=256, backend="onnx")
    assert (rr.batch_size, rr.normalize, rr.device, rr.long_documents, rr.max_length) == (
        16, "minmax", "cpu", "error", 256)
    assert rr.model_options == {"backend": "onnx"}


def test_settings_supply_the_default_backend_and_options(monkeypatch, tiny_ce_path):
    monkeypatch.setenv("RANKRELAY_BACKEND", f"cross-encoder:{tiny_ce_path}")
    monkeypatch.setenv("RANKRELAY_BATCH_SIZE", "4")
    monkeypatch.setenv("RANKRELAY_NORMALIZE", "sigmoid")
    monkeypatch.setenv("RANKRELAY_DEVICE", "cpu")
    rr = load_reranker()
    assert rr.model == tiny_ce_path and rr.batch_size == 4 and rr.normalize == "sigmoid"
    assert load_reranker(batch_size=2).batch_size == 2  # explicit beats settings
    res = rr.rerank("wing", ["a wing", "a cat"])
    assert res.normalization == "sigmoid" and len(res) == 2
    explicit = load_reranker(settings=Settings(backend="bge-base", batch_size=3))
    assert explicit.model == "BAAI/bge-reranker-base" and explicit.batch_size == 3


def test_register_a_custom_backend():
    class Length(BaseReranker):
        name = "length"

        def _score_batch(self, queries, documents):
            return [Scored([float(len(d.text)) for d in docs]) for docs in documents], {}

    register("length", lambda model, **opts: Length(**opts), options={"normalize"}, description="by length")
    try:
        rr = load_reranker("length", normalize="none")
        assert rr.rerank("q", ["aa", "a", "aaa"]).indices == [2, 0, 1]
        assert "length" in [b.name for b in backends()]
        with pytest.raises(ConfigError):
            register("bad:name", lambda model: None, options=set(), description="")
    finally:
        from rankrelay.rerankers import unregister

        unregister("length")


def test_spec_options_after_a_question_mark(tiny_ce_path):
    from rankrelay import ConfigError, load_reranker
    from rankrelay.rerankers import split_options

    assert split_options("minilm-l6?runtime=onnx&batch_size=16&normalize=sigmoid") == (
        "minilm-l6", {"runtime": "onnx", "batch_size": 16, "normalize": "sigmoid"})
    assert split_options("cascade:a?x=1>b@3") == ("cascade:a?x=1>b@3", {})  # a cascade's stages keep theirs
    rr = load_reranker(f"cross-encoder:{tiny_ce_path}?batch_size=3&device=cpu", batch_size=5)
    assert rr.batch_size == 5 and rr.device == "cpu"  # keyword options win over the spec's
    with pytest.raises(ConfigError, match="key=value"):
        load_reranker("minilm-l6?runtime")
    with pytest.raises(ConfigError, match="unknown option"):
        load_reranker("minilm-l6?bogus=1")


# -- tiers and profiles (#26) ----------------------------------------------------------------------
def test_the_published_tiers_are_presets_with_their_published_quality():
    tiers = ["tinybert-l2", "minilm-l2", "minilm-l4", "minilm-l6", "minilm-l12"]
    assert [PRESETS[t].model.rsplit("/", 1)[1] for t in tiers] == [
        "ms-marco-TinyBERT-L2-v2", "ms-marco-MiniLM-L2-v2", "ms-marco-MiniLM-L4-v2", "ms-marco-MiniLM-L-6-v2",
        "ms-marco-MiniLM-L-12-v2"]
    quality = [PRESETS[t].dl19_ndcg10 for t in tiers]
    assert quality == sorted(quality) and quality[0] == 69.84 and quality[-1] == 74.31  # sbert.net's table


@pytest.mark.parametrize(("name", "cheap", "strong", "keep"), [
    ("balanced", "ms-marco-TinyBERT-L2-v2", "ms-marco-MiniLM-L-6-v2", 20),
    ("best", "ms-marco-MiniLM-L-6-v2", "ms-marco-MiniLM-L-12-v2", 30),
])
def test_a_profile_is_a_cascade_over_tiers_and_its_options_reach_every_tier(name, cheap, strong, keep):
    from rankrelay.rerankers.compose.cascade import CascadeReranker

    rr = load_reranker(name, device="cpu", batch_size=8)
    assert isinstance(rr, CascadeReranker) and rr.keep == keep
    assert rr.cheap.model.endswith(cheap) and rr.strong.model.endswith(strong)
    assert all((stage.device, stage.batch_size, stage.preset is not None) == ("cpu", 8, True)
               for stage in (rr.cheap, rr.strong))
    assert load_reranker(name, keep=5).keep == 5


def test_the_fast_profile_is_one_tier_and_profiles_are_settings_backends():
    fast = load_reranker("fast", batch_size=4)
    assert isinstance(fast, CrossEncoderReranker) and fast.preset == "tinybert-l2" and fast.batch_size == 4
    assert load_reranker(settings=Settings(backend="balanced")).keep == 20
    assert parse_spec("balanced") == ("cascade", None, None) and parse_spec("fast")[2] == "tinybert-l2"


def test_an_unknown_profile_lists_the_known_ones():
    with pytest.raises(UnknownBackendError, match=r"unknown backend, preset or profile 'balance'; known: .*balanced, "
                                                  r".*best, .*fast, .*tinybert-l2"):
        load_reranker("balance")


def test_a_profile_reranks_with_its_tiers(monkeypatch, tiny_ce_path, tiny_ce2_path):
    from rankrelay.config import Preset

    for tier, path in (("tinybert-l2", tiny_ce_path), ("minilm-l6", tiny_ce2_path)):
        monkeypatch.setitem(PRESETS, tier, Preset(tier, "cross-encoder", path, 512, "sigmoid", "tiny"))
    docs = [f"wing lift document {i} about air flow and stall" for i in range(8)]
    res = load_reranker("balanced", device="cpu", keep=3).rerank("why does a wing stall", docs)
    strong = load_reranker(f"cross-encoder:{tiny_ce2_path}", device="cpu").rerank("why does a wing stall",
                                                                                 [docs[i] for i in res.indices[:3]])
    assert [r.stage for r in res][:3] == [res[0].stage] * 3 and res[3].stage != res[0].stage
    assert [res.indices[:3][i] for i in strong.indices] == res.indices[:3]  # the strong tier ordered the head
    assert sorted(res.indices) == list(range(8))
