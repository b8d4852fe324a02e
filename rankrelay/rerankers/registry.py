"""The backend registry (name -> factory) and :func:`load_reranker`.

A spec is a preset name (``minilm-l6``), a profile (``balanced``), ``backend:model``
(``cross-encoder:/path/to/model``, ``bi-encoder:all-minilm-l6``), a bare backend name, a TOML settings file
(``tuned.toml``: its ``backend`` or ``fallback``, with its settings), or an object that already is a
:class:`Reranker`; options may follow a ``?`` (``minilm-l6?runtime=openvino&batch_size=16``).

Example:
    >>> from rankrelay.rerankers.registry import load_reranker
    >>> load_reranker("minilm-l6", batch_size=16)
    <CrossEncoderReranker cross-encoder model='cross-encoder/ms-marco-MiniLM-L-6-v2'>
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from rankrelay.config import PRESETS, PROFILES, Settings
from rankrelay.errors import UNAVAILABLE, ConfigError, UnknownBackendError
from rankrelay.rerankers import reference
from rankrelay.rerankers.base import Reranker
from rankrelay.rerankers.hosted import bedrock, cohere, http, vertex
from rankrelay.rerankers.hosted.api import API_OPTIONS
from rankrelay.rerankers.llm import listwise as llm_listwise
from rankrelay.rerankers.llm import pointwise as llm_pointwise
from rankrelay.rerankers.llm.chat import LLM_OPTIONS
from rankrelay.rerankers.local import bi_encoder, colbert, cross_encoder, prompted
from rankrelay.rerankers.local.model import LOCAL_OPTIONS
from rankrelay.rerankers.local.prompt_families import FAMILIES


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """A registered backend: ``factory(model_or_None, **options)`` builds it."""

    name: str
    factory: Callable[..., Reranker]
    options: frozenset[str]
    description: str
    extra: str | None = None


_REGISTRY: dict[str, BackendInfo] = {}


def register(
    name: str,
    factory: Callable[..., Reranker],
    *,
    options: frozenset[str] | set[str],
    description: str,
    extra: str | None = None,
) -> None:
    """Add (or replace) a backend under ``name``; ``options`` are the keyword options it takes."""
    if ":" in name or not name:
        raise ConfigError(f"backend names cannot be empty or contain ':', got {name!r}")
    _REGISTRY[name] = BackendInfo(name, factory, frozenset(options), description, extra)


def unregister(name: str) -> None:
    """Remove a backend added with :func:`register` (a no-op when there is none)."""
    _REGISTRY.pop(name, None)


def backends() -> list[BackendInfo]:
    """Registered backends, by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def known_names() -> list[str]:
    """What a spec may start with: registered backends, presets and profiles."""
    return [*_REGISTRY, *PRESETS, *PROFILES]


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """Split a spec into ``(backend, model, preset)`` (a profile is a ``cascade``, or its one tier's preset);
    raise :class:`UnknownBackendError`."""
    spec = spec.strip()
    if spec in PROFILES:
        tiers = PROFILES[spec].tiers
        return ("cascade", None, None) if len(tiers) > 1 else parse_spec(tiers[0])
    if spec in PRESETS:
        return PRESETS[spec].backend, PRESETS[spec].model, spec
    name, sep, rest = spec.partition(":")
    if name in _REGISTRY:
        return name, (rest.strip() or None) if sep else None, None
    raise UnknownBackendError(spec, known_names())


def split_options(spec: str) -> tuple[str, dict[str, Any]]:
    """``backend:model?key=value&key=value`` -> the spec and its options (values read as JSON when they
    parse, e.g. numbers and booleans, else as text). A cascade's options stay with its stages."""
    if "?" not in spec or spec.strip().startswith("cascade:"):
        return spec, {}
    base, _, query = spec.partition("?")
    options: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"spec options are key=value pairs after '?', got {part!r} in {spec!r}")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return base, options


def check_spec(spec: Any) -> None:
    """Raise :class:`UnknownBackendError` (or :class:`ConfigError`) for a spec that names nothing known, without
    building anything (a cheap check before work that a typo would waste)."""
    if isinstance(spec, (list, tuple)):
        for item in spec:
            check_spec(item)
    elif isinstance(spec, dict):
        check_spec(spec.get("spec"))
    elif isinstance(spec, str) and spec.strip().endswith(".toml"):
        settings = load_settings(spec.strip())
        check_spec(settings.fallback or settings.backend)
    elif isinstance(spec, str):
        parse_spec(split_options(spec)[0])
    elif not isinstance(spec, Reranker):
        raise ConfigError(f"a reranker spec is a string, a dict, a list or a Reranker, got {type(spec).__name__}")


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Read :class:`Settings`, turning validation problems into :class:`ConfigError`."""
    try:
        return Settings.from_file(config_file, **overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {settings_problems(exc)}") from None


def settings_problems(exc: ValidationError) -> str:
    """Each problem of a settings validation error on one line of text: the field, what is wrong, the value
    given, and for a choice the one probably meant (not pydantic's raw report).

    Example:
        >>> try:
        ...     Settings(normalize="sigmod")
        ... except ValidationError as exc:
        ...     print(settings_problems(exc))
        normalize: 'sigmod' is not one of rank, sigmoid, minmax, zscore, none, calibrated; did you mean 'sigmoid'?
    """
    problems = []
    for error in exc.errors():  # pydantic's details always carry loc, msg, type and input
        where = ".".join(str(part) for part in error["loc"]) or "settings"  # () when the whole model is wrong
        given = error["input"]
        if error["type"] == "literal_error":
            choices = re.findall(r"'([^']*)'", str(error["ctx"]["expected"]))
            close = difflib.get_close_matches(str(given), choices)
            problems.append(f"{where}: {given!r} is not one of {', '.join(choices)}"
                            + (f"; did you mean {close[0]!r}?" if close else ""))
        else:
            problems.append(f"{where}: {error['msg']} (got {given!r})")
    return "; ".join(problems)


def load_chain_item(item: Any, settings: Settings | None = None) -> Reranker:
    """A chain or cascade stage: a spec string, a ``{"spec": ..., **options}`` dict or a :class:`Reranker`
    (what :func:`load_reranker` takes, but no list: a stage is one reranker)."""
    return load_reranker(item, settings=settings)


def load_reranker(
    spec: str | Reranker | list[Any] | tuple[Any, ...] | dict[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    **options: Any,
) -> Reranker:
    """Build a reranker from a spec, with defaults from :class:`Settings`.

    Args:
        spec: preset, ``backend:model``, a ``{"spec": ..., **options}`` dict, a :class:`Reranker`
            (returned as is), a list (a fallback chain of specs, rerankers or such dicts; ``options`` go
            to the :class:`FallbackReranker`), or None for ``settings.fallback`` when set, else
            ``settings.backend``.
        settings: defaults for options not given here (default: ``Settings()`` from env, ``.env``
            and the config file).
        **options: backend options (``device``, ``batch_size``, ``max_length``, ``normalize``,
            ``long_documents``, ...) and model kwargs for sentence-transformers.

    Raises:
        UnknownBackendError: the spec names nothing known (the message lists what is).
        ConfigError: an option the backend does not take, or a bad value.
    """
    if isinstance(spec, Reranker) and not isinstance(spec, str):
        if options:
            raise ConfigError("options cannot be applied to a reranker instance; configure it directly")
        return spec
    if isinstance(spec, (list, tuple)):
        return _build("fallback", None, None, {"chain": _chain_items(spec, settings), **options}, defaults=None)
    if isinstance(spec, dict):
        options = {**{k: v for k, v in spec.items() if k != "spec"}, **options}
        named = spec.get("spec")
        if not isinstance(named, str):
            raise ConfigError(f"a reranker given as a dict needs a 'spec' string, got {spec!r}")
        spec = named
    if spec is not None and not isinstance(spec, str):
        missing = [m for m in ("arerank", "close", "name", "rerank", "rerank_batch", "warm_up")
                   if not hasattr(spec, m)]
        if hasattr(spec, "rerank") and missing:
            raise ConfigError(f"{type(spec).__name__} is not a Reranker: it lacks {', '.join(missing)} "
                              "(subclass rankrelay.rerankers.base.SingleQuery for no-op lifetime members)")
        raise ConfigError(f"a reranker spec is a string, a dict, a list or a Reranker, got {type(spec).__name__}")
    if spec is not None and spec.strip().endswith(".toml"):  # a profile written by 'rankrelay tune' (or by hand)
        return load_reranker(None, settings=load_settings(spec.strip()), **options)
    if spec is not None:
        spec, spec_options = split_options(spec)
        options = {**spec_options, **options}
    if settings is None:
        settings = load_settings()
    if spec is None and settings.fallback:
        return _build("fallback", None, None, {"chain": _chain_items(settings.fallback, settings), **options},
                      defaults=None)
    if spec is None:  # the settings' backend may carry options too ("minilm-l6?runtime=openvino")
        spec, spec_options = split_options(settings.backend)
        options = {**spec_options, **options}
    spec = spec.strip()
    if spec in PROFILES:
        return load_reranker(PROFILES[spec].spec(options), settings=settings)
    backend, model, preset = parse_spec(spec)
    if backend == "cascade":
        model, options = _cascade_stages(model, options, settings)
    return _build(backend, model, preset, options, defaults=settings)


#: A cascade's cheap stage that is the input order itself (the retriever's ranking in a two-stage search).
FIRST_STAGE = "first-stage"
#: Candidates a cascade's strong stage reorders unless told.
DEFAULT_KEEP = 30


def parse_cascade(spec: str) -> tuple[str, str, int]:
    """Split ``<cheap>><strong>@<keep>`` (keep optional) into its parts."""
    body, at, keep_text = spec.rpartition("@")
    if not at or not keep_text.strip().isdigit():
        body, keep = spec, DEFAULT_KEEP
    else:
        keep = int(keep_text)
    parts = body.split(">")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ConfigError(f"a cascade spec is cascade:<cheap>><strong>@<keep>, got 'cascade:{spec}'")
    return parts[0].strip(), parts[1].strip(), keep


def _cascade_stages(rest: str | None, options: dict[str, Any],
                    settings: Settings) -> tuple[str | None, dict[str, Any]]:
    """A cascade's spec and options with its stages built with ``settings``, as a chain's are (stages from its
    spec, ``<cheap>><strong>@<keep>``, or its ``cheap``/``strong`` options; both: left for the factory to refuse)."""
    if rest and ("cheap" in options or "strong" in options):
        return rest, options
    options = dict(options)
    if rest:
        cheap, strong, keep = parse_cascade(rest)
        options = {**options, "cheap": cheap, "strong": strong, "keep": options.get("keep", keep)}
    for part in ("cheap", "strong"):
        stage = options.get(part)
        if stage is not None and stage != FIRST_STAGE:
            options[part] = load_chain_item(stage, settings)
    return None, options


def _chain_items(items: Any, settings: Settings | None) -> list[Any]:
    """A chain's stages built with ``settings``; one that lacks credentials, weights or its package is passed on as
    given, for the chain to mark unavailable with its reason (or, ``strict``, to raise)."""
    out = []
    for item in items:
        try:
            out.append(load_chain_item(item, settings))
        except UNAVAILABLE:
            out.append(item)
    return out


def _build(backend: str, model: str | None, preset: str | None, options: dict[str, Any], *,
           defaults: Settings | None) -> Reranker:
    """The registered factory of ``backend`` with ``options`` over ``defaults``' options for it (a chain's
    stages already have theirs, so it takes none)."""
    info = _REGISTRY[backend]  # parse_spec checked the name
    unknown = set(options) - info.options
    if unknown:
        raise ConfigError(
            f"unknown option(s) for backend {backend!r}: {', '.join(sorted(unknown))}; "
            f"it takes: {', '.join(sorted(info.options))}"
        )
    merged = {} if defaults is None else {
        k: v for k, v in defaults.reranker_options(backend).items() if k in info.options}
    merged.update(options)
    if preset is not None:
        by_family = cross_encoder.from_preset if backend == "cross-encoder" else prompted.from_preset
        return by_family(preset, **merged)
    return info.factory(model, **merged)


register(
    "cross-encoder",
    cross_encoder.from_spec,
    options=LOCAL_OPTIONS | {"activation"},
    description="local sentence-transformers CrossEncoder (any HF id or local path)",
    extra="local",
)
for _family in FAMILIES.values():
    register(
        _family.name,
        prompted.factory(_family.name),
        options=LOCAL_OPTIONS | ({"instruction"} if _family.takes_instruction else set()),
        description=f"a {_family.kind} language model scored from its answer token, prompted as its card says "
                    f"({_family.name}:<id or path>)",
        extra="local",
    )
register(
    "cohere",
    cohere.from_spec,
    options=API_OPTIONS | {"max_tokens_per_doc"},
    description="Cohere Rerank through the official SDK (cohere:rerank-v3.5)",
    extra="cohere",
)
register(
    "bedrock",
    bedrock.from_spec,
    options=API_OPTIONS | {"region", "endpoint_url", "additional_fields", "api"},
    description="Amazon Bedrock Rerank through boto3 (bedrock:amazon.rerank-v1:0, bedrock:cohere.rerank-v3-5:0)",
    extra="bedrock",
)
register(
    "vertex",
    vertex.from_spec,
    options=API_OPTIONS | {"project", "location", "endpoint_url", "ranking_config"},
    description="Google's Vertex AI Ranking API through google-cloud-discoveryengine (vertex, "
                "vertex:semantic-ranker-fast@latest)",
    extra="vertex",
)
for _provider, _about in (
    ("cohere-http", "Cohere's /v2/rerank JSON over httpx (cohere-http:model@url)"),
    ("tei", "Hugging Face text-embeddings-inference /rerank (tei:http://host:port)"),
    ("jina", "Jina /v1/rerank (jina:jina-reranker-v2-base-multilingual)"),
    ("voyage", "Voyage /v1/rerank (voyage:rerank-2)"),
    ("infinity", "Infinity /rerank, Cohere-shaped (infinity:model@http://host:port)"),
    ("mixedbread", "mixedbread /v1/reranking (mixedbread:mixedbread-ai/mxbai-rerank-large-v2)"),
    ("pinecone", "Pinecone inference /rerank (pinecone:bge-reranker-v2-m3)"),
    ("nim", "NVIDIA NIM /v1/ranking (nim:nvidia/llama-3.2-nv-rerankqa-1b-v2@http://host:8000)"),
    ("vllm", "vLLM /v1/rerank (vllm:BAAI/bge-reranker-v2-m3@http://host:8000)"),
    ("vllm-score", "vLLM /score, one score per pair (vllm-score:BAAI/bge-reranker-v2-m3@http://host:8000)"),
):
    register(_provider, http.factory(_provider), options=API_OPTIONS, description=_about)
register("identity", reference.identity_from_spec, options={"normalize"},
         description="reference: keeps the first-stage order")
register("random", reference.random_from_spec, options={"normalize"},
         description="reference: seeded random order (random:<seed>)")
register(
    "bi-encoder",
    bi_encoder.from_spec,
    options=LOCAL_OPTIONS | {"cache_size"},
    description="cosine similarity of sentence-transformers embeddings (e.g. bi-encoder:all-minilm-l6)",
    extra="local",
)
register(
    "colbert",
    colbert.from_spec,
    options=LOCAL_OPTIONS | {"cache_size"},
    description="late interaction (ColBERT MaxSim over token embeddings; colbert:colbert-ir/colbertv2.0)",
    extra="local",
)
register(
    "llm",
    llm_listwise.from_spec,
    options=(API_OPTIONS - {"chunk_size"}) | LLM_OPTIONS | {"window", "step", "passes"},
    description="listwise (RankGPT) reranking by an OpenAI-compatible chat model (llm:model@http://host/v1)",
    extra="llm",
)
register(
    "llm-pointwise",
    llm_pointwise.from_spec,
    options=(API_OPTIONS - {"chunk_size"}) | LLM_OPTIONS | {"judge", "max_grade", "grade_prompt"},
    description="one Yes/No or graded judgement per document by an OpenAI-compatible chat model",
    extra="llm",
)
