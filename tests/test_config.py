import pytest

from rankrelay import ConfigError, Settings
from rankrelay.rerankers import load_settings


def test_with_no_configuration_the_default_reranker_is_the_minilm_preset_and_loads_nothing_early():
    from rankrelay import PRESETS, load_reranker

    rr = load_reranker()  # nothing in the environment, no .env, no config file (see conftest)
    assert rr.name == "cross-encoder" and rr.model == PRESETS["minilm-l6"].model
    assert {k: rr.describe()[k] for k in ("device", "batch_size", "normalize", "long_documents")} == {
        "device": "auto", "batch_size": 32, "normalize": "rank", "long_documents": "passages"}
    assert len(rr.rerank("a query", [])) == 0 and rr._encoder is None  # an empty list needs no model


def test_a_setting_reaches_only_the_backends_that_take_it(monkeypatch):
    from rankrelay import load_reranker

    monkeypatch.setenv("RANKRELAY_BATCH_SIZE", "7")
    monkeypatch.setenv("RANKRELAY_NORMALIZE", "minmax")
    assert load_reranker("minilm-l6").batch_size == 7
    ref = load_reranker("identity")  # takes normalize, not batch_size: no error, the one it takes applies
    assert ref.rerank("q", ["a", "b"]).normalization == "minmax"


def test_environment(monkeypatch):
    monkeypatch.setenv("RANKRELAY_BACKEND", "bge-base")
    monkeypatch.setenv("RANKRELAY_BATCH_SIZE", "8")
    monkeypatch.setenv("RANKRELAY_MODEL_OPTIONS", '{"backend": "onnx"}')
    monkeypatch.setenv("RANKRELAY_COHERE_API_KEY", "sk-secret")
    s = Settings()
    assert s.backend == "bge-base" and s.batch_size == 8 and s.model_options == {"backend": "onnx"}
    assert s.cohere_api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(s) and "sk-secret" not in str(s.model_dump())
    assert s.reranker_options()["backend"] == "onnx"


def test_dotenv_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("RANKRELAY_NORMALIZE=minmax\nRANKRELAY_TOP_N=5\nUNRELATED=1\n")
    s = Settings()
    assert s.normalize == "minmax" and s.top_n == 5


def test_toml_config_file_and_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "rankrelay.toml"
    cfg.write_text('backend = "bge-large"\nbatch_size = 4\ndevice = "cpu"\n[model_options]\nrevision = "main"\n')
    s = Settings.from_file(cfg)
    assert (s.backend, s.batch_size, s.device, s.model_options) == ("bge-large", 4, "cpu", {"revision": "main"})
    monkeypatch.setenv("RANKRELAY_CONFIG", str(cfg))
    monkeypatch.setenv("RANKRELAY_BATCH_SIZE", "16")
    s = Settings()
    assert s.backend == "bge-large" and s.batch_size == 16  # environment beats the file
    assert Settings(batch_size=2).batch_size == 2  # keyword beats everything


@pytest.mark.parametrize(
    "env, value",
    [
        ("RANKRELAY_BATCH_SIZE", "0"),
        ("RANKRELAY_NORMALIZE", "softmax"),
        ("RANKRELAY_DEVICE", "gpu"),
        ("RANKRELAY_LONG_DOCUMENTS", "chop"),
    ],
)
def test_bad_values_are_config_errors(monkeypatch, env, value):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=env.removeprefix("RANKRELAY_").lower()):
        load_settings()


def test_missing_or_bad_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text('batch_sise = 4\n')
    with pytest.raises(ConfigError, match="batch_sise"):
        load_settings(str(bad))


def test_service_settings_from_file_and_nested_environment(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text('[service]\nmax_documents = 10\n'
                      '[service.models]\nfast = "identity"\nsafe = ["random", "identity"]\n')
    monkeypatch.setenv("RANKRELAY_SERVICE__API_KEYS", '["k-secret"]')
    s = load_settings(str(config))
    assert s.service.models == {"fast": "identity", "safe": ["random", "identity"]}
    assert s.service.limits().max_documents == 10 and s.service.limits().request_timeout == 60.0
    assert [k.get_secret_value() for k in s.service.api_keys] == ["k-secret"]
    assert "k-secret" not in repr(s)
    config.write_text("[service]\nmax_docs = 10\n")
    with pytest.raises(ConfigError, match="max_docs"):
        load_settings(str(config))


def test_toml_syntax_error_is_a_config_error_naming_file_and_line(tmp_path):
    cfg = tmp_path / "broken.toml"
    cfg.write_text('backend = "minilm-l6"\nbatch_size = = 4\n')
    with pytest.raises(ConfigError, match=r"broken\.toml is not valid TOML: .*line 2"):
        load_settings(str(cfg))
