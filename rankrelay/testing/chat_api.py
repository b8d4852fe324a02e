"""A real OpenAI-compatible chat server on 127.0.0.1 (``POST /v1/chat/completions``), with scripted answers
and injected faults, for offline tests of the LLM rerankers (driven through the official ``openai`` SDK).

Without a scripted answer the server plays a small, predictable model that reads rankrelay's prompts
(and any prompt that keeps their shape):

- a prompt listing passages as ``[1] text`` lines after a ``Query: ...`` line gets a permutation,
  ``[3] > [1] > [2]``, ordered by :func:`~rankrelay.testing.relevance` (best first, ties by identifier);
- a request that asks for ``logprobs`` about one ``Passage: ...`` gets ``Yes`` or ``No`` with the top
  log-probabilities of both (unless the server is started with ``logprobs=False``, like servers that
  ignore the option);
- any other ``Query:``/``Passage:`` prompt gets a grade, the number of shared words capped at the scale's
  top (read from "0 to N" in the prompt).

``answers`` is a FIFO of scripted replies (garbage text, partial or repeated permutations) consumed one per
request before the oracle; ``faults`` work as for :class:`~rankrelay.testing.FakeRerankAPI` (429 with
Retry-After, 500, delays, resets, malformed bodies). Every request is recorded.

Example:
    >>> import openai
    >>> from rankrelay.testing import API_KEY, FakeChatAPI
    >>> api = FakeChatAPI().start()
    >>> client = openai.OpenAI(api_key=API_KEY, base_url=api.base_url, max_retries=0)
    >>> prompt = "Query: red apple\\n[1] green pear\\n[2] red apple pie"
    >>> client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}]
    ...                                ).choices[0].message.content
    '[2] > [1]'
    >>> client.close(); api.stop()
"""

from __future__ import annotations

import math
import re
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from rankrelay.testing.rerank_api import relevance
from rankrelay.testing.server import API_KEY, FakeServer, Fault

_QUERY = re.compile(r"^(?:Search )?Query:\s*(.*)$", re.M)
_PASSAGE_LINE = re.compile(r"^\[(\d+)\]\s?(.*)$", re.M)
_PASSAGE = re.compile(r"^(?:Passage|Document):\s*(.*)$", re.M | re.S)
_SCALE = re.compile(r"0 to (\d+)")


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class FakeChatAPI(FakeServer):
    """An OpenAI-compatible chat server.

    Args:
        api_key: the bearer token it asks for (None: no auth).
        logprobs: whether it returns log-probabilities when asked (False: it ignores the option).
    """

    def __init__(self, api_key: str | None = API_KEY, *, logprobs: bool = True, port: int = 0) -> None:
        super().__init__(api_key, port)
        self.logprobs = logprobs
        self.answers: list[str] = []

    @property
    def base_url(self) -> str:
        """What an OpenAI client's ``base_url`` is set to (the root plus ``/v1``)."""
        return self.url + "/v1"

    def prompts(self) -> list[str]:
        """The text of every message of every request so far, one string per request."""
        with self._lock:
            return ["\n".join(str(m.get("content", "")) for m in (r["body"] or {}).get("messages", []))
                    for r in self.requests]

    def answer(self, h: BaseHTTPRequestHandler, body: Any, fault: Fault | None) -> None:
        if not h.path.endswith("/chat/completions"):
            return self.send(h, 404, {"error": {"message": f"no route {h.path}", "type": "invalid_request_error"}})
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages or not isinstance(body.get("model"), str):
            return self.send(h, 400, {"error": {"message": "model and messages are required",
                                                "type": "invalid_request_error"}})
        prompt = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        with self._lock:
            scripted = self.answers.pop(0) if self.answers else None
        logprobs = None
        if scripted is not None:
            text = scripted
        elif body.get("logprobs") and _PASSAGE.search(prompt):
            text, logprobs = self._judge(prompt, int(body.get("top_logprobs") or 0))
            if not self.logprobs:
                logprobs = None
        elif _PASSAGE_LINE.search(prompt):
            text = self._permutation(prompt)
        else:
            text = self._grade(prompt)
        prompt_tokens, completion_tokens = _tokens(prompt) + 4 * len(messages), _tokens(text)
        self.send(h, 200, {
            "id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop", "logprobs": logprobs}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })

    # -- the oracle --------------------------------------------------------------------------
    @staticmethod
    def _query(prompt: str) -> str:
        found = _QUERY.search(prompt)
        return found.group(1) if found else ""

    def _permutation(self, prompt: str) -> str:
        query = self._query(prompt)
        passages = {int(n): text for n, text in _PASSAGE_LINE.findall(prompt)}
        order = sorted(passages, key=lambda n: (-relevance(query, passages[n]), n))
        return " > ".join(f"[{n}]" for n in order)

    def _passage(self, prompt: str) -> str:
        found = _PASSAGE.search(prompt)
        return found.group(1).split("\n")[0] if found else ""

    def _judge(self, prompt: str, top: int) -> tuple[str, dict[str, Any]]:
        p_yes = 1.0 / (1.0 + math.exp(-2.0 * (relevance(self._query(prompt), self._passage(prompt)) - 0.75)))
        pairs = sorted([("Yes", math.log(p_yes)), ("No", math.log1p(-p_yes))], key=lambda t: -t[1])
        tops = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in pairs][: max(top, 1)]
        first = pairs[0]
        return first[0], {"content": [{"token": first[0], "logprob": first[1], "bytes": list(first[0].encode()),
                                       "top_logprobs": tops}], "refusal": None}

    def _grade(self, prompt: str) -> str:
        scale = _SCALE.search(prompt)
        top = int(scale.group(1)) if scale else 3
        shared = set(self._query(prompt).lower().split()) & set(self._passage(prompt).lower().split())
        return str(min(top, len(shared)))
