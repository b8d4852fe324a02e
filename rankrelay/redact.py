"""Secrets kept out of what rankrelay shows and writes: specs, URLs, messages and log lines.

A key given in a spec (``cohere-http:m@URL?api_key=...``), in a URL's user part, or as an option, is
replaced by ``***`` wherever the spec is shown (reports, run names, job records, run files, logs). Every
key rankrelay resolves is also remembered (:func:`remember`) so that a provider's error message that echoes
it is scrubbed (:func:`scrub`) before it reaches an exception or a log line.

Example:
    >>> from rankrelay.redact import redact_spec
    >>> redact_spec("cohere-http:rerank-v3.5@http://127.0.0.1:8080?api_key=sk-live-123&timeout=5")
    'cohere-http:rerank-v3.5@http://127.0.0.1:8080?api_key=***&timeout=5'
    >>> redact_spec({"spec": "jina:m", "api_key": "sk-live-123"})
    {'spec': 'jina:m', 'api_key': '***'}
"""

from __future__ import annotations

import re
import threading
from typing import Any

#: options whose values are secrets
SECRET_OPTIONS = frozenset({"api_key", "apikey", "key", "token", "password", "secret", "access_token"})
#: a remembered key shorter than this is not scrubbed by substring (a local server's dummy ``x`` or ``none``)
MIN_SCRUBBED = 8
MASK = "***"

_OPTION = re.compile(r"(?i)([?&;](?:" + "|".join(sorted(SECRET_OPTIONS)) + r")=)([^&>@\s,]*)")
_USERINFO = re.compile(r"(://)[^/@\s?#>]+@")
_known: set[str] = set()
_lock = threading.Lock()


def is_secret_option(name: str) -> bool:
    """Is ``name`` an option that carries a secret (``api_key``, ``token``, ...)?"""
    return name.lower() in SECRET_OPTIONS or name.lower().endswith(("_api_key", "_token", "_secret"))


def redact_spec(spec: Any) -> Any:
    """``spec`` (a string, a ``{"spec": ...}`` dict, or a list of them) with every secret replaced by ``***``."""
    if isinstance(spec, str):
        return scrub(_USERINFO.sub(r"\1" + MASK + "@", _OPTION.sub(r"\1" + MASK, spec)))
    if isinstance(spec, dict):
        return {k: MASK if is_secret_option(str(k)) and v else redact_spec(v) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return type(spec)(redact_spec(item) for item in spec)
    return spec


def remember(key: str | None) -> None:
    """Remember a key in use, so that :func:`scrub` removes it from any text."""
    if key and len(key) >= MIN_SCRUBBED:
        with _lock:
            _known.add(key)


def scrub(text: str) -> str:
    """``text`` with every remembered key replaced by ``***``."""
    for key in tuple(_known):
        if key in text:
            text = text.replace(key, MASK)
    return text
