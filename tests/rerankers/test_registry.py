import pytest

from rankrelay import PRESETS, ConfigError, Settings, UnknownBackendError, load_reranker
from rankrelay.rerankers import backends, parse_spec, register
from rankrelay.rerankers.base import BaseReranker, Scored
from rankrelay.rerankers.cross_encoder import CrossEncoderReranker


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
        assert isinstance(rr, CrossEncoderReranker)
        assert rr.model == preset.model and rr.preset == name and rr.activation == "sigmoid"
        assert rr._encoder is None  # nothing loaded yet


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
