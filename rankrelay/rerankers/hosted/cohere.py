"""Cohere Rerank through the official ``cohere`` SDK (5.18 up to 7.x).

The SDK's own retries are off on every call (``max_retries=0``), so rankrelay's one retry policy
is the only one. ``base_url`` points the SDK at any Cohere-compatible server.

Example:
    >>> from rankrelay.rerankers.hosted.cohere import CohereReranker
    >>> rr = CohereReranker("rerank-v3.5", api_key="sk-test", base_url="http://127.0.0.1:9")
    >>> rr.name, rr.model, "sk-test" in repr(rr.describe())
    ('cohere', 'rerank-v3.5', False)
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from pydantic import SecretStr

from rankrelay._optional import import_optional
from rankrelay.errors import AuthenticationError, BadResponseError
from rankrelay.rerankers.hosted.api import ApiReranker, Reply, error_for_status, secret

DEFAULT_MODEL = "rerank-v3.5"
DEFAULT_URL = "https://api.cohere.com"
KEY_ENV = ("RANKRELAY_COHERE_API_KEY", "CO_API_KEY", "COHERE_API_KEY")


def _sdk() -> Any:
    return import_optional("cohere", extra="cohere", feature="the Cohere backend")


class CohereReranker(ApiReranker):
    """Cohere's ``/v2/rerank`` via ``cohere.ClientV2`` / ``AsyncClientV2``.

    Args:
        model: Cohere model name (default ``rerank-v3.5``).
        api_key: the key (else ``RANKRELAY_COHERE_API_KEY``, ``CO_API_KEY``, ``COHERE_API_KEY``).
        base_url: server root (default ``https://api.cohere.com``).
        max_tokens_per_doc: Cohere's own per-document token cap (None: the API default).
        **options: see :class:`~rankrelay.rerankers.hosted.api.ApiReranker`.
    """

    name = "cohere"
    relevance = "unit"

    def __init__(
        self,
        model: str | None = None,
        *,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        max_tokens_per_doc: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model or DEFAULT_MODEL, **options)
        self._api_key = secret(api_key, *KEY_ENV)
        if self._api_key is None:
            raise AuthenticationError(
                "no Cohere API key: set RANKRELAY_COHERE_API_KEY (or CO_API_KEY), or pass api_key= in Python",
                backend=self.name, retryable=False,
            )
        self.base_url = (base_url or DEFAULT_URL).rstrip("/")
        self.max_tokens_per_doc = max_tokens_per_doc
        _sdk()  # a missing SDK is a clear error now, not at the first call

    def _wrap(self, http: Any, *, asynchronous: bool) -> Any:
        """The SDK client on our pooled httpx client (so ``close()`` closes what the SDK used)."""
        cls = _sdk().AsyncClientV2 if asynchronous else _sdk().ClientV2
        kwargs: dict[str, Any] = {
            "api_key": self._api_key.get_secret_value() if self._api_key else None,
            "base_url": self.base_url,
            "timeout": self.policy.timeout,
            "httpx_client": http,
        }
        if "max_retries" in inspect.signature(cls.__init__).parameters:  # 7.x; 5.x has no such argument
            kwargs["max_retries"] = 0
        return cls(**kwargs)

    def _kwargs(self, query: str, texts: list[str], timeout: float) -> dict[str, Any]:
        from cohere.core.request_options import RequestOptions

        options: dict[str, Any] = {"max_retries": 0}
        if "timeout" in RequestOptions.__annotations__:
            options["timeout"] = timeout
        else:  # cohere 5.x: typed as int, but handed to httpx as is, so a float keeps the deadline exact
            options["timeout_in_seconds"] = timeout
        kwargs: dict[str, Any] = {
            "model": self.model, "query": query, "documents": texts, "top_n": len(texts),
            "request_options": options,
        }
        if self.max_tokens_per_doc is not None:
            kwargs["max_tokens_per_doc"] = self.max_tokens_per_doc
        return kwargs

    def _reply(self, response: Any) -> Reply:
        results = getattr(response, "results", None)
        if not isinstance(results, list):
            raise BadResponseError(f"{self.name}: reply has no results list", backend=self.name)
        pairs = [(getattr(r, "index", None), getattr(r, "relevance_score", None)) for r in results]
        billed: dict[str, float] = {}
        units = getattr(getattr(response, "meta", None), "billed_units", None)
        search_units = getattr(units, "search_units", None)
        if isinstance(search_units, (int, float)):
            billed["search_units"] = search_units
        request_id = getattr(response, "id", None)
        return Reply(pairs, request_id if isinstance(request_id, str) else None, billed)

    def _error(self, exc: Exception) -> Exception:
        from cohere.core.api_error import ApiError

        if isinstance(exc, ApiError):
            status = exc.status_code or 0
            if 200 <= status < 300:
                return BadResponseError(f"{self.name}: malformed reply: {str(exc.body)[:200]}", backend=self.name)
            return error_for_status(self.name, status, exc.body, getattr(exc, "headers", None))
        mapped = super()._error(exc)
        if mapped is exc and isinstance(exc, (json.JSONDecodeError, ValueError, TypeError, KeyError)):
            return BadResponseError(f"{self.name}: malformed reply ({type(exc).__name__}: {exc})", backend=self.name)
        return mapped

    def _send(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        return client.rerank(**self._kwargs(query, texts, timeout))

    async def _asend(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        return await client.rerank(**self._kwargs(query, texts, timeout))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_url": self.base_url}


def from_spec(model: str | None, **options: Any) -> CohereReranker:
    """Registry factory: ``cohere:<model>``."""
    return CohereReranker(model, **options)
