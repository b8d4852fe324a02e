"""A real HTTP server on 127.0.0.1 that speaks the rerank APIs' wire formats, with injected faults.

Routes: Cohere ``POST /v2/rerank``; TEI ``POST /rerank`` (``texts``); Infinity ``POST /rerank``
(``documents``); Pinecone ``POST /rerank`` (``Api-Key`` and ``X-Pinecone-Api-Version`` headers, documents as
``{"text": ...}``, answers ``data``); Jina and Voyage ``POST /v1/rerank`` (Voyage asks with ``top_k``,
answers ``data``); mixedbread ``POST /v1/reranking`` (``input``, ``top_k``, answers ``data``); NVIDIA NIM
``POST /v1/ranking`` (``query.text``, ``passages[].text``, a ``model``; answers ``rankings[].logit``); vLLM
``POST /v1/rerank`` (Cohere-shaped, no ``return_documents``; answers ``results`` with each ``document``) and
``POST /score`` (``text_1``, ``text_2``; answers ``data`` in input order). Each request
pops the next fault, if any: an HTTP status with headers, a delay, a connection reset, a malformed body, or
broken indices.

Example:
    >>> from rankrelay import load_reranker
    >>> from rankrelay.testing import API_KEY, FakeRerankAPI
    >>> api = FakeRerankAPI().start()
    >>> rr = load_reranker(f"pinecone:bge-reranker-v2-m3@{api.url}", api_key=API_KEY)
    >>> res = rr.rerank("red apple", ["green pear", "red apple pie"])
    >>> res.indices, res.info["billed_units"], api.requests[0]["headers"]["Api-Key"] == API_KEY
    ([1, 0], {'rerank_units': 1}, True)
    >>> api.stop()
"""

from __future__ import annotations

import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from rankrelay.testing.server import FakeServer, Fault


def relevance(query: str, document: str) -> float:
    """The server's scoring: shared words, ties broken towards shorter documents."""
    q = set(query.lower().split())
    words = document.lower().split()
    return float(len(q & set(words))) + 1.0 / (2 + len(words))


def _text(item: Any) -> str:
    return item if isinstance(item, str) else item.get("text", "") if isinstance(item, dict) else ""


class FakeRerankAPI(FakeServer):
    """The rerank APIs; start with :meth:`start`, ``faults`` is a FIFO consumed one per request."""

    def authorized(self, h: BaseHTTPRequestHandler) -> bool:
        if h.headers.get("X-Pinecone-Api-Version") is not None:
            return h.headers.get("Api-Key") == self.api_key
        return super().authorized(h)

    def answer(self, h: BaseHTTPRequestHandler, body: Any, fault: Fault | None) -> None:
        if isinstance(body, dict) and h.path == "/v1/ranking":  # NVIDIA NIM: validated as NIM does (422)
            if not isinstance(body.get("model"), str) or body.get("truncate", "NONE") not in ("NONE", "END"):
                return self.send(h, 422, {"detail": [{"loc": ["body", "model"], "msg": "Field required"}]})
            query = body.get("query")
            body = {"query": query.get("text") if isinstance(query, dict) else None, "documents": body.get("passages")}
        elif isinstance(body, dict) and h.path == "/score":  # vLLM's score API
            body = {"query": body.get("text_1"), "documents": body.get("text_2"), "model": body.get("model")}
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return self.send(h, 400, {"message": "invalid request: query is required"})
        texts = body.get("texts") if "texts" in body else body.get("input") if "input" in body else body.get(
            "documents")
        if not isinstance(texts, list) or not texts:
            return self.send(h, 400, {"message": "invalid request: documents must be a non-empty list"})
        texts = [_text(t) for t in texts]
        ranked = sorted(range(len(texts)), key=lambda i: -relevance(body["query"], texts[i]))
        top = body.get("top_k") if "top_k" in body else body.get("top_n")
        if isinstance(top, int):
            ranked = ranked[:top]
        rows = [{"index": i, "relevance_score": relevance(body["query"], texts[i])} for i in ranked]
        if fault is not None and fault.kind == "indices":
            if fault.indices == "duplicate" and len(rows) > 1:
                rows[-1]["index"] = rows[0]["index"]
            elif fault.indices == "out_of_range":
                rows[0]["index"] = len(texts) + 3
            elif fault.indices == "missing":
                rows = rows[:-1]
        scored: list[dict[str, Any]] = [{"index": r["index"], "score": r["relevance_score"]} for r in rows]
        path = h.path
        if path == "/v1/ranking":
            return self.send(h, 200, {"rankings": [{"index": r["index"], "logit": r["score"]} for r in scored]})
        if path == "/score":  # one score per pair, in the input's order
            return self.send(h, 200, {"id": f"score-{uuid.uuid4().hex}", "object": "list", "created": 0,
                                      "model": body.get("model"), "usage": {"prompt_tokens": 10, "total_tokens": 10},
                                      "data": [{"index": r["index"], "object": "score", "score": r["score"]}
                                               for r in sorted(scored, key=lambda r: r["index"])]})
        if path == "/v2/rerank":
            return self.send(h, 200, {"id": str(uuid.uuid4()), "results": rows,
                                      "meta": {"api_version": {"version": "2"},
                                               "billed_units": {"search_units": 1}}})
        if path == "/rerank" and h.headers.get("X-Pinecone-Api-Version") is not None:  # Pinecone
            if body.get("return_documents", True):
                for r in scored:
                    r["document"] = {"text": texts[r["index"]]}
            return self.send(h, 200, {"model": body.get("model"), "data": scored, "usage": {"rerank_units": 1}})
        if path == "/rerank" and "texts" in body:  # TEI: a bare list of {index, score}
            return self.send(h, 200, scored)
        if path == "/rerank":  # Infinity
            return self.send(h, 200, {"object": "rerank", "id": str(uuid.uuid4()), "results": rows,
                                      "model": body.get("model"), "usage": {"total_tokens": 10}})
        if path == "/v1/reranking":  # mixedbread
            for r in scored:
                r["object"] = "rank_result"
                if body.get("return_input"):
                    r["input"] = texts[r["index"]]
            return self.send(h, 200, {"object": "list", "model": body.get("model"), "data": scored,
                                      "top_k": body.get("top_k"), "return_input": bool(body.get("return_input")),
                                      "usage": {"prompt_tokens": 10, "total_tokens": 10}})
        if path == "/v1/rerank" and "top_k" in body:  # Voyage
            return self.send(h, 200, {"object": "list", "data": rows, "model": body.get("model"),
                                      "usage": {"total_tokens": 10}})
        if path == "/v1/rerank" and "return_documents" in body:  # Jina
            return self.send(h, 200, {"model": body.get("model"), "results": rows, "usage": {"total_tokens": 10}})
        if path == "/v1/rerank":  # vLLM: each result carries its document
            return self.send(h, 200, {"id": f"rerank-{uuid.uuid4().hex}", "model": body.get("model"),
                                      "usage": {"total_tokens": 10},
                                      "results": [{**r, "document": {"text": texts[int(r["index"])]}} for r in rows]})
        return self.send(h, 404, {"message": f"no route {path}"})
