"""Rerank APIs over httpx: TEI, Jina, Voyage, Infinity, mixedbread, Pinecone, NVIDIA NIM, vLLM and Cohere's own
JSON (also Cohere on Azure AI Foundry: ``cohere-http:model@https://<endpoint>.models.ai.azure.com``).

Each provider is a small :class:`Adapter` (path, request body, reply parser, how the key is sent, extra
headers, the most documents one request may carry). Spec forms:
``tei:http://host:8080``, ``jina:jina-reranker-v2-base-multilingual`` (default URL) or
``jina:jina-reranker-v2-base-multilingual@https://api.jina.ai``.

Example:
    >>> from rankrelay.rerankers.hosted.http import HttpReranker
    >>> rr = HttpReranker("tei", base_url="http://127.0.0.1:8080")
    >>> rr.name, rr.endpoint
    ('tei', 'http://127.0.0.1:8080/rerank')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from rankrelay.errors import BadResponseError, ConfigError
from rankrelay.rerankers.hosted.api import ApiReranker, Reply, error_for_status, secret


def _cohere_body(query: str, texts: list[str], model: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query, "documents": texts, "top_n": len(texts)}
    if model:
        body["model"] = model
    return body


def _results(data: Any, key: str = "results", score: str = "relevance_score") -> list[tuple[Any, Any]]:
    rows = data.get(key) if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"no '{key}' list in the reply")
    return [(r.get("index"), r.get(score)) if isinstance(r, dict) else (None, None) for r in rows]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


#: the Pinecone API version rankrelay speaks (sent as X-Pinecone-Api-Version)
PINECONE_API_VERSION = "2025-10"


def _billed(data: Any) -> dict[str, float]:
    """Billed units from ``meta.billed_units`` and ``usage``; a part of the wrong shape (``"meta": "oops"``)
    bills nothing rather than failing a reply whose scores are fine."""

    def mapping(value: Any) -> dict[str, Any]:
        return value if isinstance(value, dict) else {}

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    data = mapping(data)
    units = mapping(mapping(data.get("meta")).get("billed_units"))
    usage = mapping(data.get("usage"))
    out = {str(k): v for k, v in units.items() if number(v)}
    if number(usage.get("total_tokens")):
        out["tokens"] = usage["total_tokens"]
    if number(usage.get("rerank_units")):
        out["rerank_units"] = usage["rerank_units"]
    return out


@dataclass(frozen=True, slots=True)
class Adapter:
    """How one provider's rerank endpoint speaks."""

    name: str
    path: str
    default_url: str | None
    build: Callable[[str, list[str], str | None], dict[str, Any]]
    parse: Callable[[Any], list[tuple[Any, Any]]]
    env_keys: tuple[str, ...] = ()
    auth: Callable[[str], dict[str, str]] = _bearer
    headers: tuple[tuple[str, str], ...] = ()
    max_documents: int | None = None
    default_model: str | None = None
    #: how its scores read as the service's ``relevance_score``: ``unit`` (already 0-1) or ``sigmoid`` (logits)
    relevance: str = "unit"
    #: a spec to show when the provider needs a model in every request and none was given
    model_example: str | None = None


ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in (
        Adapter("cohere-http", "/v2/rerank", "https://api.cohere.com", _cohere_body, _results,
                ("CO_API_KEY", "COHERE_API_KEY")),
        Adapter("tei", "/rerank", None,
                lambda q, t, m: {"query": q, "texts": t, "raw_scores": True, "return_text": False,
                                 "truncate": False},
                lambda d: [(r.get("index"), r.get("score")) if isinstance(r, dict) else (None, None)
                           for r in d] if isinstance(d, list) else _results(d),
                relevance="sigmoid"),  # asked for raw scores: logits
        Adapter("jina", "/v1/rerank", "https://api.jina.ai",
                lambda q, t, m: {**_cohere_body(q, t, m), "return_documents": False}, _results, ("JINA_API_KEY",)),
        Adapter("voyage", "/v1/rerank", "https://api.voyageai.com",
                lambda q, t, m: {"query": q, "documents": t, "model": m, "top_k": len(t),
                                 "return_documents": False, "truncation": False},
                lambda d: _results(d, "data"), ("VOYAGE_API_KEY",),
                model_example="voyage:rerank-2@https://api.voyageai.com"),
        Adapter("infinity", "/rerank", None,
                lambda q, t, m: {**_cohere_body(q, t, m), "return_documents": False}, _results),
        Adapter("mixedbread", "/v1/reranking", "https://api.mixedbread.com",
                lambda q, t, m: {"model": m, "query": q, "input": t, "top_k": len(t), "return_input": False},
                lambda d: _results(d, "data", "score"), ("MXBAI_API_KEY",), max_documents=1000,
                default_model="mixedbread-ai/mxbai-rerank-large-v2"),
        # NIM answers logits; "truncate": "NONE" makes an over-long passage an error, never a silent cut
        Adapter("nim", "/v1/ranking", None,
                lambda q, t, m: {"model": m, "query": {"text": q}, "passages": [{"text": x} for x in t],
                                 "truncate": "NONE"},
                lambda d: _results(d, "rankings", "logit"), ("NVIDIA_API_KEY",), relevance="sigmoid",
                model_example="nim:nvidia/llama-3.2-nv-rerankqa-1b-v2@http://127.0.0.1:8000"),
        Adapter("vllm", "/v1/rerank", None, _cohere_body, _results, ("VLLM_API_KEY",),
                model_example="vllm:BAAI/bge-reranker-v2-m3@http://127.0.0.1:8000"),
        Adapter("vllm-score", "/score", None,
                lambda q, t, m: {"model": m, "text_1": q, "text_2": t},
                lambda d: _results(d, "data", "score"), ("VLLM_API_KEY",),
                model_example="vllm-score:BAAI/bge-reranker-v2-m3@http://127.0.0.1:8000"),
        Adapter("pinecone", "/rerank", "https://api.pinecone.io",
                lambda q, t, m: {"model": m, "query": q, "documents": [{"text": x} for x in t], "top_n": len(t),
                                 "return_documents": False},
                lambda d: _results(d, "data", "score"), ("PINECONE_API_KEY",), auth=lambda key: {"Api-Key": key},
                headers=(("X-Pinecone-Api-Version", PINECONE_API_VERSION),), max_documents=100,
                default_model="bge-reranker-v2-m3"),
    )
}



class HttpReranker(ApiReranker):
    """A rerank HTTP API reached with httpx (pooled sync and async clients).

    Args:
        provider: one of ``cohere-http``, ``tei``, ``jina``, ``voyage``, ``infinity``, ``mixedbread``,
            ``nim`` (``/v1/ranking``), ``vllm`` (``/v1/rerank``), ``vllm-score`` (``/score``), ``pinecone``.
        model: the provider's model name (TEI serves one model and needs none; mixedbread and Pinecone
            default to ``mixedbread-ai/mxbai-rerank-large-v2`` and ``bge-reranker-v2-m3``).
        base_url: server root (default: the provider's public API, where it has one).
        api_key: the key (else the provider's usual environment variable); a bearer token, or Pinecone's
            ``Api-Key`` header.
        **options: see :class:`~rankrelay.rerankers.hosted.api.ApiReranker`; ``chunk_size`` is capped at what the
            provider takes in one request (Pinecone: 100 documents, mixedbread: 1000).
    """

    def __init__(
        self,
        provider: str,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | SecretStr | None = None,
        **options: Any,
    ) -> None:
        if provider not in ADAPTERS:
            raise ConfigError(f"unknown HTTP provider {provider!r}; choose one of {', '.join(ADAPTERS)}")
        adapter = ADAPTERS[provider]
        super().__init__(model or adapter.default_model, **options)
        self.adapter = adapter
        if adapter.max_documents is not None:
            self.chunk_size = min(self.chunk_size, adapter.max_documents)
        self.name = provider
        self.relevance = adapter.relevance
        base = base_url or self.adapter.default_url
        if not base:
            raise ConfigError(f"{provider} needs a base URL, e.g. '{provider}:http://127.0.0.1:8080'")
        if adapter.model_example and not model:
            raise ConfigError(f"{provider} needs a model, e.g. '{adapter.model_example}'")
        self.base_url = base.rstrip("/")
        self._api_key = secret(api_key, *self.adapter.env_keys)

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot serve, by cheap checks (no request): the provider's public API without a key."""
        if self._api_key is None and self.adapter.env_keys and self.base_url == self.adapter.default_url:
            return f"no {self.name} API key: set {' or '.join(self.adapter.env_keys)}"
        return None

    @property
    def endpoint(self) -> str:
        """The full URL requests go to."""
        return self.base_url + self.adapter.path

    def _headers(self) -> dict[str, str]:
        headers = {**super()._headers(), **dict(self.adapter.headers)}
        if self._api_key is not None:
            headers.update(self.adapter.auth(self._api_key.get_secret_value()))
        return headers

    def _request_timeout(self, timeout: float) -> Any:
        import httpx

        return httpx.Timeout(timeout, connect=min(self.connect_timeout, timeout))

    def _reply(self, response: Any) -> Reply:
        request_id = response.headers.get("x-request-id")
        if response.status_code >= 300:
            raise error_for_status(self.name, response.status_code, response.content, response.headers, request_id)
        try:
            data = response.json()
            pairs = self.adapter.parse(data)
        except ValueError as exc:
            raise BadResponseError(f"{self.name}: malformed reply ({exc})", backend=self.name,
                                   request_id=request_id) from None
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            request_id = request_id or data["id"]
        return Reply(pairs, request_id, _billed(data))

    def _send(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        return client.post(self.endpoint, json=self.adapter.build(query, texts, self.model),
                           timeout=self._request_timeout(timeout))

    async def _asend(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        return await client.post(self.endpoint, json=self.adapter.build(query, texts, self.model),
                                 timeout=self._request_timeout(timeout))


def parse_http_spec(rest: str | None) -> tuple[str | None, str | None]:
    """``(model, base_url)`` from the part after ``provider:`` (``model``, ``url`` or ``model@url``)."""
    if not rest:
        return None, None
    if "@" in rest:
        model, _, url = rest.partition("@")
        return model or None, url or None
    if rest.startswith(("http://", "https://")):
        return None, rest
    return rest, None


def factory(provider: str) -> Callable[..., HttpReranker]:
    """Registry factory for one provider."""

    def build(rest: str | None, **options: Any) -> HttpReranker:
        model, url = parse_http_spec(rest)
        options.setdefault("base_url", url)
        return HttpReranker(provider, model, **options)

    return build

