"""What the LLM rerankers share: an OpenAI-compatible chat client, prompt templates, token budgets, usage.

:class:`ChatReranker` talks to any server that speaks OpenAI's chat completions (OpenAI, vLLM, Ollama,
LM Studio, TGI, LiteLLM ...) through the official ``openai`` SDK, on rankrelay's pooled clients, with the
SDK's own retries off so that the one :class:`~rankrelay.rerankers.hosted.retry.RetryPolicy` is the only one.
Documents are cut to ``max_doc_tokens`` (``truncated`` is set on them) and the prompt is checked against
``context_window`` before anything is sent. Token usage is summed into ``res.info["billed_units"]``
(``prompt_tokens``, ``completion_tokens``) and priced with ``prices`` (default: ``Settings.prices``) in
``res.info["cost_usd"]``. Prompts hold only the templates, the query and the documents, never a key.

Tokens are counted with a Hugging Face tokenizer when ``tokenizer`` names one (a local path or a cached
id), else estimated as one token per four characters (OpenAI's rule of thumb for English).

Example:
    >>> from rankrelay.rerankers.llm.chat import TokenBudget, parse_llm_spec
    >>> parse_llm_spec("qwen2.5:7b@http://127.0.0.1:11434/v1")
    ('qwen2.5:7b', 'http://127.0.0.1:11434/v1')
    >>> TokenBudget().fit("one two three four five six", 4)  # about 4 characters a token
    ('one two three', True)
"""

from __future__ import annotations

import json
import logging
import math
import re
import string
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from rankrelay._optional import import_optional
from rankrelay.billing import price
from rankrelay.errors import (
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadResponseError,
    ConfigError,
    positive_int,
)
from rankrelay.redact import MIN_SCRUBBED
from rankrelay.rerankers.hosted.api import ApiReranker, error_for_status, secret

logger = logging.getLogger(__name__)

DEFAULT_URL = "https://api.openai.com/v1"
KEY_ENV = ("RANKRELAY_LLM_API_KEY", "OPENAI_API_KEY")
#: options every LLM backend takes (besides the API ones)
LLM_OPTIONS = frozenset({"context_window", "max_doc_tokens", "tokenizer", "temperature", "prices", "system_prompt",
                         "prompt", "max_tokens"})
#: tokens a chat message costs beyond its text (role and separators), per message
MESSAGE_TOKENS = 8
#: what a local server that asks for no key gets from the SDK, which insists on one
NO_KEY = "unused"


def _sdk() -> Any:
    return import_optional("openai", extra="llm", feature="the LLM rerankers")


def parse_llm_spec(rest: str | None) -> tuple[str | None, str | None]:
    """``(model, base_url)`` from ``model@base_url`` or ``model`` (the URL is None then: the default)."""
    if rest is None:
        return None, None
    model, at, url = rest.rpartition("@") if "@" in rest else (rest, "", "")
    if at and not url.strip():
        raise ConfigError(f"the LLM spec {rest!r} has an empty URL after '@' (e.g. gpt-4o-mini@http://host:8000/v1)")
    return model.strip(), (url.strip() or None)


_THINKING = re.compile(r"<think>.*?(?:</think>|\Z)", re.S | re.I)


def strip_reasoning(text: str) -> str:
    """``text`` without ``<think>...</think>`` blocks (and an unclosed one cut off by the token limit), which
    reasoning models (Qwen3, DeepSeek-R1 on vLLM or Ollama) write before their answer."""
    return _THINKING.sub("", text).strip()


class TokenBudget:
    """Counts tokens and cuts text to a number of them (at a word boundary where the estimate is used).

    Args:
        tokenizer: a Hugging Face tokenizer id or path (local files only), or None for ``len(text) / 4``.
    """

    def __init__(self, tokenizer: str | None = None) -> None:
        self.name = tokenizer
        self._tok: Any = None
        if tokenizer is not None:
            transformers = import_optional("transformers", extra="local", feature="counting tokens exactly")
            try:
                self._tok = transformers.AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
            except OSError as exc:
                raise ConfigError(f"tokenizer {tokenizer!r} is not a local path or a cached model: {exc}") from None

    def count(self, text: str) -> int:
        """Tokens in ``text``."""
        if self._tok is not None:
            return len(self._tok(text, add_special_tokens=False)["input_ids"])
        return math.ceil(len(text) / 4)

    def fit(self, text: str, limit: int) -> tuple[str, bool]:
        """``text`` cut to at most ``limit`` tokens, and whether it was cut."""
        if self._tok is not None:
            ids = self._tok(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= limit:
                return text, False
            return self._tok.decode(ids[:limit]), True
        if len(text) <= 4 * limit:
            return text, False
        cut = text[: 4 * limit]
        space = cut.rfind(" ")
        return (cut[:space] if space > 0 else cut).rstrip(), True


def check_template(template: str, fields: set[str], what: str) -> str:
    """``template`` if every ``{placeholder}`` in it is one of ``fields``, else a :class:`ConfigError`."""
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(f"the {what} template must be non-empty text")
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"the {what} template is not a format string: {exc}") from None
    unknown = used - fields
    if unknown:
        raise ConfigError(f"the {what} template uses {', '.join(sorted(unknown))}; it may use "
                          f"{', '.join('{' + f + '}' for f in sorted(fields))}")
    return template


def one_line(text: str) -> str:
    """``text`` with runs of whitespace (newlines too) made one space, for a prompt line."""
    return " ".join(text.split())


class ChatReranker(ApiReranker):
    """Base of the LLM rerankers: the chat client, templates, token budget and usage.

    Args:
        model: the server's model name.
        base_url: the OpenAI-compatible root, with ``/v1`` (default ``https://api.openai.com/v1``).
        api_key: the key (else ``RANKRELAY_LLM_API_KEY`` or ``OPENAI_API_KEY``; a local server needs none).
        context_window: the model's context in tokens; prompts are checked against it before sending.
        max_doc_tokens: each document is cut to this many tokens (marked ``truncated``).
        tokenizer: a Hugging Face tokenizer id or path for exact counts (default: an estimate).
        temperature: sampling temperature (0: as deterministic as the server allows).
        prices: dollars per ``prompt_tokens`` / ``completion_tokens`` (default: ``Settings.prices``).
        system_prompt: the system message (None: the backend's default; "" sends none).
        prompt: the user message template (None: the backend's default).
        max_tokens: tokens the answer may take (None: what the answer needs; give a reasoning model room to
            think, and the context check counts it).
        **options: see :class:`~rankrelay.rerankers.hosted.api.ApiReranker`.
    """

    default_system = ""
    default_prompt = ""
    prompt_fields: set[str] = set()

    def __init__(
        self,
        model: str | None,
        *,
        base_url: str | None = None,
        api_key: str | SecretStr | None = None,
        context_window: int = 8192,
        max_doc_tokens: int = 300,
        tokenizer: str | None = None,
        temperature: float = 0.0,
        prices: Mapping[str, float] | None = None,
        system_prompt: str | None = None,
        prompt: str | None = None,
        max_tokens: int | None = None,
        **options: Any,
    ) -> None:
        if not model or not model.strip():
            raise ConfigError(f"the {self.name} backend needs a model name, e.g. '{self.name}:gpt-4o-mini' or "
                              f"'{self.name}:qwen2.5:7b@http://127.0.0.1:11434/v1'")
        if base_url is not None and not base_url.strip():
            raise ConfigError(f"the {self.name} backend got an empty base URL")
        options.setdefault("chunk_size", 1)
        super().__init__(model.strip(), **options)
        self.context_window = positive_int(context_window, "context_window", ConfigError)
        self.max_doc_tokens = positive_int(max_doc_tokens, "max_doc_tokens", ConfigError)
        self.max_tokens = None if max_tokens is None else positive_int(max_tokens, "max_tokens", ConfigError)
        self.temperature = float(temperature)
        self.base_url = (base_url or DEFAULT_URL).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"the {self.name} base URL must start with http:// or https://, got {self.base_url!r}")
        self._api_key = secret(api_key, *KEY_ENV)
        if self._api_key is None and self.base_url == DEFAULT_URL:
            raise AuthenticationError(f"no API key for {DEFAULT_URL}: set OPENAI_API_KEY, or pass api_key= in Python",
                                      backend=self.name, retryable=False)
        self.prices = dict(prices) if prices is not None else None
        self.budget = TokenBudget(tokenizer)
        self.system_prompt = self.default_system if system_prompt is None else system_prompt
        self.prompt = self._template(self.default_prompt if prompt is None else prompt, "prompt")
        if self.system_prompt:
            self._template(self.system_prompt, "system prompt")
        _sdk()  # a missing SDK is a clear error now, not at the first call

    def _template(self, template: str, what: str) -> str:
        """``template`` checked: known placeholders only (:func:`check_template`), and no API key in it."""
        check_template(template, self.prompt_fields, what)
        key = self._api_key.get_secret_value() if self._api_key is not None else None
        if key and len(key) >= MIN_SCRUBBED and key in template:  # a local server's dummy key ("x") is no secret
            raise ConfigError(f"the {self.name} {what} template contains the API key; prompts never carry keys")
        return template

    # -- the SDK on rankrelay's pooled clients -------------------------------------------------
    def _httpx(self) -> Any:
        """The HTTP library the installed SDK is built on (``httpx2`` from openai 3, else ``httpx``)."""
        import importlib

        base = importlib.import_module("openai._base_client")
        return getattr(base, "httpx2", None) or base.httpx

    def _wrap(self, http: Any, *, asynchronous: bool) -> Any:
        sdk = _sdk()
        cls = sdk.AsyncOpenAI if asynchronous else sdk.OpenAI
        key = self._api_key.get_secret_value() if self._api_key is not None else NO_KEY
        return cls(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.policy.timeout,
                   http_client=http)

    def _error(self, exc: Exception) -> Exception:
        sdk = _sdk()
        if isinstance(exc, sdk.APIStatusError):
            return error_for_status(self.name, exc.status_code, exc.body if exc.body is not None else exc.message,
                                    exc.response.headers, getattr(exc, "request_id", None))
        if isinstance(exc, sdk.APITimeoutError):
            return BackendTimeoutError(f"{self.name}: no reply in time", backend=self.name)
        if isinstance(exc, sdk.APIConnectionError):
            return BackendUnavailableError(f"{self.name}: cannot reach {self.base_url}: {exc}", backend=self.name)
        if isinstance(exc, (sdk.APIResponseValidationError, json.JSONDecodeError, ValueError, TypeError, KeyError)):
            return BadResponseError(f"{self.name}: malformed reply ({type(exc).__name__}: {exc})", backend=self.name)
        return super()._error(exc)

    def _messages(self, **fields: Any) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system_prompt.format(**fields)}] if self.system_prompt else []
        return [*messages, {"role": "user", "content": self.prompt.format(**fields)}]

    def _request(self, messages: list[dict[str, str]], max_tokens: int, timeout: float, **extra: Any) -> dict[str, Any]:
        return {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": max_tokens, "timeout": timeout, **extra}

    def _text(self, response: Any) -> str:
        """The answer's text without reasoning blocks; a reply without choices is a :class:`BadResponseError`."""
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise BadResponseError(f"{self.name}: reply has no choices", backend=self.name) from None
        return strip_reasoning(content) if isinstance(content, str) else ""

    @staticmethod
    def usage(response: Any) -> dict[str, float]:
        """``prompt_tokens`` and ``completion_tokens`` the server reports (none when it reports nothing)."""
        usage = getattr(response, "usage", None)
        out: dict[str, float] = {}
        for unit in ("prompt_tokens", "completion_tokens"):
            value = getattr(usage, unit, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[unit] = value
        return out

    def cost(self, billed: Mapping[str, float]) -> float:
        """Dollars for ``billed`` at this backend's prices."""
        if self.prices is None:
            from rankrelay.config import Settings

            self.prices = dict(Settings().prices)
        return price(billed, self.prices)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_url": self.base_url, "context_window": self.context_window,
                "max_doc_tokens": self.max_doc_tokens, "tokenizer": self.budget.name or "estimate (4 chars/token)"}
