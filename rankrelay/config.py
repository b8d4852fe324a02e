"""Settings (environment ``RANKRELAY_*``, ``.env``, a TOML file) and the model presets.

Precedence, highest first: keyword arguments, environment, ``.env``, the config file named by
``RANKRELAY_CONFIG`` (or :meth:`Settings.from_file`).

Example:
    >>> from rankrelay.config import PRESETS, Settings
    >>> PRESETS["minilm-l6"].model
    'cross-encoder/ms-marco-MiniLM-L-6-v2'
    >>> Settings(backend="bge-base", batch_size=8).batch_size
    8
"""

from __future__ import annotations

import contextvars
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rankrelay.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Preset:
    """A named model with the settings it was trained for.

    ``activation`` maps the raw score (a logit) to a probability; rankrelay keeps the raw logit as
    ``score`` so scores never saturate, and ``normalize="sigmoid"`` applies the activation.
    """

    name: str
    backend: str
    model: str
    max_length: int
    activation: str
    description: str
    #: nDCG@10 on TREC DL 2019 (passages) as its authors published it (sbert.net's table); None: not published
    dl19_ndcg10: float | None = None
    #: parameters as its model card states them
    params: str | None = None


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tinybert-l2", "cross-encoder", "cross-encoder/ms-marco-TinyBERT-L2-v2", 512, "sigmoid",
               "MS MARCO TinyBERT, 2 layers x 128 (4M params): the fastest English tier", 69.84, params="4M"),
        Preset("minilm-l2", "cross-encoder", "cross-encoder/ms-marco-MiniLM-L2-v2", 512, "sigmoid",
               "MS MARCO MiniLM, 2 layers (15M params): fast English tier", 71.01, params="15M"),
        Preset("minilm-l4", "cross-encoder", "cross-encoder/ms-marco-MiniLM-L4-v2", 512, "sigmoid",
               "MS MARCO MiniLM, 4 layers (19M params): English", 73.04, params="19M"),
        Preset("minilm-l6", "cross-encoder", "cross-encoder/ms-marco-MiniLM-L-6-v2", 512, "sigmoid",
               "MS MARCO MiniLM, 6 layers (22M params): fast English reranker", 74.30, params="22M"),
        Preset("minilm-l12", "cross-encoder", "cross-encoder/ms-marco-MiniLM-L-12-v2", 512, "sigmoid",
               "MS MARCO MiniLM, 12 layers (33M params): English, more accurate", 74.31, params="33M"),
        Preset("bge-base", "cross-encoder", "BAAI/bge-reranker-base", 512, "sigmoid",
               "BGE reranker base (XLM-RoBERTa, 278M params): English and Chinese", params="278M"),
        Preset("bge-large", "cross-encoder", "BAAI/bge-reranker-large", 512, "sigmoid",
               "BGE reranker large (XLM-RoBERTa, 560M params): English and Chinese", params="560M"),
        Preset("bge-reranker-v2-m3", "cross-encoder", "BAAI/bge-reranker-v2-m3", 8192, "sigmoid",
               "BGE reranker v2 m3 (XLM-RoBERTa, 568M params, 8k tokens): multilingual", params="568M"),
        Preset("gte-reranker-modernbert", "cross-encoder", "Alibaba-NLP/gte-reranker-modernbert-base", 8192,
               "sigmoid", "GTE reranker (ModernBERT, 149M params, 8k tokens): English, long documents", params="149M"),
        Preset("qwen3-reranker-0.6b", "qwen3-reranker", "Qwen/Qwen3-Reranker-0.6B", 8192, "sigmoid",
               "Qwen3-Reranker 0.6B (causal LM, yes/no; 32k context, 8k used): multilingual, takes an instruction",
               params="0.6B"),
        Preset("qwen3-reranker-4b", "qwen3-reranker", "Qwen/Qwen3-Reranker-4B", 8192, "sigmoid",
               "Qwen3-Reranker 4B (causal LM, yes/no; 32k context, 8k used): multilingual, takes an instruction",
               params="4B"),
        Preset("qwen3-reranker-8b", "qwen3-reranker", "Qwen/Qwen3-Reranker-8B", 8192, "sigmoid",
               "Qwen3-Reranker 8B (causal LM, yes/no; 32k context, 8k used): multilingual, takes an instruction",
               params="8B"),
        Preset("mxbai-rerank-base-v2", "mxbai-rerank-v2", "mixedbread-ai/mxbai-rerank-base-v2", 8192, "sigmoid",
               "mxbai-rerank base v2 (Qwen2.5 causal LM, 0.5B params, 8k tokens): multilingual, optional instruction",
               params="0.5B"),
        Preset("mxbai-rerank-large-v2", "mxbai-rerank-v2", "mixedbread-ai/mxbai-rerank-large-v2", 8192, "sigmoid",
               "mxbai-rerank large v2 (Qwen2.5 causal LM, 1.5B params, 8k tokens): multilingual, optional "
               "instruction", params="1.5B"),
        Preset("bge-reranker-v2-gemma", "bge-reranker-gemma", "BAAI/bge-reranker-v2-gemma", 1024, "sigmoid",
               "BGE reranker v2 gemma (Gemma causal LM, 2.5B params; its card scores 1,024 tokens): multilingual",
               params="2.5B"),
        Preset("monot5-base", "monot5", "castorini/monot5-base-msmarco", 512, "sigmoid",
               "monoT5 base (T5 seq2seq, 220M params, true/false): English, MS MARCO", params="220M"),
        Preset("monot5-large", "monot5", "castorini/monot5-large-msmarco", 512, "sigmoid",
               "monoT5 large (T5 seq2seq, 770M params, true/false): English, MS MARCO", params="770M"),
        Preset("monot5-3b", "monot5", "castorini/monot5-3b-msmarco", 512, "sigmoid",
               "monoT5 3B (T5 seq2seq, 2.9B params, true/false): English, MS MARCO", params="3B"),
    )
}
"""The presets by name: the published tiers, fastest first (docs/s on a V100 in sbert.net's table: 9000, 4100,
2500, 1800, 960), then the BGE rerankers, the long-context encoders, and the language-model families (scored from
their answer token; :mod:`rankrelay.rerankers.local.prompt_families`)."""


@dataclass(frozen=True, slots=True)
class Profile:
    """A named speed/quality trade-off: the first tier orders every candidate, the next reorders its best ``keep``.

    Load it like a preset (``load_reranker("balanced")``, ``backend = "balanced"``); options given with it
    (``device``, ``batch_size``, ...) go to every tier; ``keep``, ``cost_share`` and ``min_keep`` to the cascade
    (a ``keep`` given alone is fixed: the profile's cost target is then off).
    """

    name: str
    tiers: tuple[str, ...]
    keep: int | None
    description: str
    #: the cascade's cost target: a share of the strong tier over every candidate on torch fp32 (keep_plan)
    cost_share: float | None = None
    #: the fewest the strong tier reorders under the cost target
    min_keep: int | None = None

    def spec(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """What :func:`~rankrelay.load_reranker` builds: one tier, or a cascade of two."""
        stage_options = dict(options or {})
        keep = stage_options.pop("keep", None)
        plan = {"cost_share": stage_options.pop("cost_share", self.cost_share if keep is None else None),
                "min_keep": stage_options.pop("min_keep", self.min_keep if keep is None else None)}
        stages = [{"spec": tier, **stage_options} for tier in self.tiers]
        if len(stages) == 1:
            return stages[0]
        return {"spec": "cascade", "cheap": stages[0], "strong": stages[1], "keep": self.keep if keep is None else keep,
                **{k: v for k, v in plan.items() if v is not None}}


#: What each profile is, in one place (``rankrelay models`` shows it). The tiers' published DL19 nDCG@10:
#: tinybert-l2 69.84, minilm-l6 74.30, minilm-l12 74.31; a cascade's quality is near its strong tier's when the
#: cheap tier keeps the strong tier's top 10 inside ``keep`` (benchmarks/tiers.py measures it on real data).
#: ``balanced`` promises a speed, a fifth of minilm-l6's cost over every candidate (on torch fp32): where this CPU
#: runs minilm-l6 no faster than torch (no VNNI, no bf16 units) it reorders fewer than 20, never under 10.
PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("fast", ("tinybert-l2",), None, "tinybert-l2 over every candidate"),
        Profile("balanced", ("tinybert-l2", "minilm-l6"), 20,
                "tinybert-l2 over every candidate, minilm-l6 over its best 10-20 (at a fifth of minilm-l6's cost)",
                cost_share=0.2, min_keep=10),
        Profile("best", ("minilm-l6", "minilm-l12"), 30, "minilm-l6 over every candidate, minilm-l12 over its best 30"),
    )
}

class Limits(BaseModel):
    """The service's request limits (413/422 beyond them), batching knobs and request timeout."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(4 * 2**20, ge=1, description="largest request body")
    body_timeout_s: float = Field(30.0, gt=0, description="seconds a client may pause while sending a body; "
                                  "a slower one is answered 408 and closed")
    max_documents: int = Field(1000, ge=1, description="documents per request")
    max_document_chars: int = Field(100_000, ge=1, description="characters per document")
    max_query_chars: int = Field(4096, ge=1, description="characters per query")
    max_batch_docs: int = Field(256, ge=1, description="documents per shared forward pass")
    max_wait_ms: float = Field(0.0, ge=0, description="how long an idle model waits for more requests")
    max_queue: int = Field(256, ge=1, description="requests waiting per model before 429")
    request_timeout: float = Field(60.0, gt=0, description="seconds before a request is answered 503")
    batching: bool = Field(True, description="pack concurrent requests into shared forward passes")
    budget_ms: float | None = Field(None, gt=0, description="latency budget of each request: a local model "
                                    "reranks the head that fits (requests are then not packed together)")
    relevance: Literal["score", "rank"] = Field(
        "score", description="Cohere's relevance_score: 'score', a per-document score in [0, 1] comparable across "
                             "queries (Cohere's contract), or 'rank', the rank position (the top one is 1.0)")


class ExperimentSettings(BaseModel):
    """``[service.experiments.<name>]``: an online experiment between served models."""

    model_config = ConfigDict(extra="forbid")

    arms: list[str] = Field(description="names under [service.models]; the answer merges their rankings")
    method: str = Field("team-draft", description="team-draft (two arms), multileave (two or more) or split "
                                                   "(each request to one arm, the classic A/B test)")


class BudgetSettings(BaseModel):
    """A client's ``budget``: dollars it may spend on priced models each UTC day, month or in total."""

    model_config = ConfigDict(extra="forbid")

    usd: float = Field(gt=0, description="dollars per period")
    per: Literal["day", "month", "total"] = Field("day", description="the period: a UTC day, a month, or in total")


class ClientSettings(BaseModel):
    """``[service.clients.<name>]``: an application with keys of its own, the models it may call and its rate."""

    model_config = ConfigDict(extra="forbid")

    key_sha256: list[str] = Field(default_factory=list, description="the hex SHA-256 of each of its keys (several "
                                  "while one is rotated out): the key itself is never in the file")
    key_env: list[str] = Field(default_factory=list, description="environment variables holding its keys")
    models: list[str] | None = Field(None, description="the served names it may call (default: every one); any "
                                     "other is answered 404, as a model that is not served")
    rpm: int | None = Field(None, ge=1, description="requests a minute (any 60 s); over it: 429 with Retry-After")
    budget: BudgetSettings | None = Field(None, description="dollars it may spend on priced models; over it: 429 "
                                          "naming the budget (unpriced models stay allowed)")

    @field_validator("key_sha256", "key_env", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ServiceSettings(Limits):
    """``[service]`` in the config file: served models, keys, the search index and limits.

    ``models`` maps a name to a spec or a fallback chain (a list, best first); the first is the default.
    """

    models: dict[str, str | list[str | dict[str, Any]] | dict[str, Any]] = Field(default_factory=dict)
    api_keys: list[SecretStr] = Field(default_factory=list, description="accepted bearer tokens")
    state: SecretStr | None = Field(None, description="redis:// URL of the state replicas share (each pool's rate "
                                    "limits, cooldowns and open breakers; the clients' rates, usage and budgets); "
                                    "without it, each process keeps its own")
    allow_unauthenticated: bool = Field(False, description="serve without keys (must be explicit)")
    strict: bool = Field(False, description="a chain's backend without credentials or weights stops the service "
                                            "from starting (default: it is marked unavailable, the chain serves "
                                            "from the next)")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    keep_alive_s: int = Field(75, ge=1, description="seconds an idle client connection is kept open; longer "
                                "than a client's or load balancer's own idle timeout, so that neither sends a "
                                "request on a connection the server is closing (uvicorn's default is 5 s)")
    index: str | None = Field(None, description="a folder made by 'rankrelay index'; enables POST /search")
    retriever: Literal["dense", "bm25", "hybrid"] = "hybrid"
    retrieve_k: int = Field(100, ge=1, description="first-stage depth of /search")
    clients: dict[str, ClientSettings] = Field(default_factory=dict, description="applications with keys of "
                                               "their own (api_keys stay: an admin client that may call everything)")
    experiments: dict[str, ExperimentSettings] = Field(
        default_factory=dict, description="served names that interleave (or split) several served models")
    experiment_store: str = Field("experiments.db", description="where impressions and feedback are kept: a "
                                  "SQLite file, or a postgresql:// URL for several replicas")
    store_text: bool = Field(False, description="keep each impression's query and shown documents' text")
    experiment_max_age_days: float | None = Field(90.0, gt=0, description="impressions older are deleted")
    experiment_max_impressions: int | None = Field(1_000_000, ge=1, description="only the newest are kept")
    store_strict: bool = Field(True, description="an experiment store that cannot be opened stops the service "
                               "from starting (false: it starts without it, says so in /ready, and keeps trying)")
    store_buffer: int = Field(10_000, ge=0, description="impressions held in memory while the experiment store "
                              "is away, written when it is back; past it they are counted lost")
    measure_at_start: bool = Field(True, description="runtime='auto': a local model this machine never measured "
                                   "is measured before /ready says ready (false: ready at once, serving on torch "
                                   "while it is measured in the background; /ready lists it under measuring)")
    header_timeout_s: float = Field(10.0, gt=0, description="seconds a client has to send a request's line and "
                                    "headers; a slower one is answered 408 and closed")

    def limits(self) -> Limits:
        """Only the limits and batching knobs."""
        return Limits(**{k: getattr(self, k) for k in Limits.model_fields})


_config_file: contextvars.ContextVar[str | None] = contextvars.ContextVar("rankrelay_config", default=None)


class Settings(BaseSettings):
    """Every rankrelay setting; read from keyword arguments, environment, ``.env`` and a TOML file."""

    model_config = SettingsConfigDict(
        env_prefix="RANKRELAY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",  # a shared .env may hold other programs' variables; the TOML file is checked
        env_nested_delimiter="__",  # RANKRELAY_SERVICE__API_KEYS='["key"]'
        validate_default=True,
    )

    backend: str = Field("minilm-l6", description="backend spec: a preset, a profile (fast, balanced, best), or "
                                                   "'name:model'")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    batch_size: int = Field(32, ge=1, description="pairs per forward pass")
    max_length: int | None = Field(None, ge=8, description="model window in tokens (default: the model's)")
    normalize: Literal["rank", "sigmoid", "minmax", "zscore", "none", "calibrated"] = "rank"
    top_n: int | None = Field(None, ge=1, description="default number of results kept")
    long_documents: Literal["passages", "truncate", "error"] = "passages"
    passage_overlap: int = Field(32, ge=0, description="tokens shared by consecutive passages")
    model_options: dict[str, Any] = Field(
        default_factory=dict, description="passed through to sentence-transformers, e.g. {backend='onnx'}"
    )
    hub_timeout: float = Field(5.0, gt=0, description="seconds to wait for the Hugging Face Hub")
    runtime: Literal["auto", "torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8"] = Field(
        "auto", description="where local models run: auto (the fastest that agrees with torch here, measured once "
                            "per model and machine) or a named runtime (converted once, cached under cache_dir)"
    )
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="torch runtime precision (fp16/bf16: CUDA, or bf16 on a CPU with bf16 units)")
    min_agreement: float = Field(0.9, ge=0, le=1,
                                 description="top-10 overlap with torch an int8 or bf16 runtime needs")
    auto_measure: Literal["background", "now"] = Field(
        "background", description="runtime=auto on a model never measured here: serve on torch at once and measure "
                                  "in a low-priority child process (background), or measure inside the first load")
    cache_dir: str | None = Field(None, description="converted models (default ~/.cache/rankrelay)")
    score_cache: str = Field("memory", description="memory, off, or a directory shared by processes")
    score_cache_size: int = Field(100_000, ge=1, description="entries of the in-memory score cache")
    timeout: float = Field(30.0, gt=0, description="API read timeout in seconds")
    connect_timeout: float = Field(5.0, gt=0, description="API connect timeout in seconds")
    cohere_api_key: SecretStr | None = Field(None, description="Cohere API key")
    max_attempts: int = Field(3, ge=1, description="API attempts per request (1 = no retry)")
    deadline: float | None = Field(None, gt=0, description="seconds for all attempts of one API request")
    chunk_size: int = Field(1000, ge=1, description="documents per API request")
    prices: dict[str, float] = Field(
        default_factory=lambda: {"search_units": 0.002},
        description="dollars per billed unit for cost estimates (Cohere Rerank: $2 per 1,000 searches; LLM "
                    "rerankers bill prompt_tokens and completion_tokens, unpriced unless set here)",
    )
    model_prices: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="dollars per billed unit of each backend, by `name:model` pattern "
        "(`\"bedrock:amazon.rerank-v1:0\" = {queries = 0.001}`), before the list prices: usage and budgets")
    fallback: list[str | dict[str, Any]] = Field(
        default_factory=list, description="a fallback chain, best first; used when no spec is given"
    )
    service: ServiceSettings = Field(default_factory=ServiceSettings, description="the rerank service")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        from rankrelay.devices import check_device

        return check_device(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings, dotenv_settings]
        path = _config_file.get() or os.environ.get("RANKRELAY_CONFIG")
        if path:
            if Path(path).is_dir():
                raise ConfigError(f"config file {path!r} is a folder; name a TOML file")
            if not Path(path).is_file():
                raise ConfigError(f"config file {path!r} does not exist")
            try:
                toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
            except tomllib.TOMLDecodeError as exc:  # the message names the line and column
                raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
            except UnicodeDecodeError as exc:
                raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}): not a TOML file") from None
            except OSError as exc:
                raise ConfigError(f"config file {path} cannot be read: {exc}") from None
            unknown = sorted(set(toml.toml_data) - set(settings_cls.model_fields))
            if unknown:
                raise ConfigError(
                    f"unknown setting(s) in {path}: {', '.join(unknown)}; "
                    f"known: {', '.join(settings_cls.model_fields)}"
                )
            sources.append(toml)
        return (*sources, file_secret_settings)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None, **overrides: Any) -> Settings:
        """Settings with ``path`` (TOML) as the config file; ``None`` means ``RANKRELAY_CONFIG``."""
        token = _config_file.set(os.fspath(path) if path is not None else None)
        try:
            return cls(**overrides)
        finally:
            _config_file.reset(token)

    def reranker_options(self, backend: str | None = None) -> dict[str, Any]:
        """Options for :func:`rankrelay.load_reranker`; each backend takes the ones it knows.

        The Cohere key goes to the Cohere backends only, never to another provider.
        """
        options: dict[str, Any] = {
            "device": self.device,
            "batch_size": self.batch_size,
            "normalize": self.normalize,
            "long_documents": self.long_documents,
            "passage_overlap": self.passage_overlap,
            "hub_timeout": self.hub_timeout,
            "runtime": self.runtime,
            "precision": self.precision,
            "min_agreement": self.min_agreement,
            "auto_measure": self.auto_measure,
            "score_cache": self.score_cache,
            "score_cache_size": self.score_cache_size,
            "timeout": self.timeout,
            "connect_timeout": self.connect_timeout,
            "max_attempts": self.max_attempts,
            "chunk_size": self.chunk_size,
            "prices": dict(self.prices),
        }
        if self.deadline is not None:
            options["deadline"] = self.deadline
        if self.max_length is not None:
            options["max_length"] = self.max_length
        if self.cache_dir is not None:
            options["cache_dir"] = self.cache_dir
        if self.cohere_api_key is not None and backend in ("cohere", "cohere-http"):
            options["api_key"] = self.cohere_api_key
        return {**options, **self.model_options}
