"""A real HTTP server on 127.0.0.1 that speaks the rerank APIs' wire formats, with injected faults.

For offline tests of applications that use rankrelay's API backends (and for rankrelay's own tests
and benchmarks): no mocks, the real SDK or httpx talks to a real socket.

Routes: Cohere ``POST /v2/rerank``; TEI ``POST /rerank`` (``texts``); Infinity ``POST /rerank``
(``documents``); Jina and Voyage ``POST /v1/rerank`` (Voyage asks with ``top_k``, answers ``data``).
Each request pops the next fault, if any: an HTTP status with headers, a delay, a connection reset,
a malformed body, or broken indices. Every request is recorded for exact attempt counts.

Example:
    >>> from rankrelay import load_reranker
    >>> from rankrelay.testing import API_KEY, FakeRerankAPI, Fault
    >>> api = FakeRerankAPI().start()
    >>> api.faults = [Fault("status", 503)]
    >>> rr = load_reranker(f"tei:{api.url}", api_key=API_KEY)
    >>> rr.rerank("red apple", ["green pear", "red apple pie"]).indices, api.count()
    ([1, 0], 2)
    >>> api.stop()
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "test-key-123"


def relevance(query: str, document: str) -> float:
    """The server's scoring: shared words, ties broken towards shorter documents."""
    q = set(query.lower().split())
    words = document.lower().split()
    return float(len(q & set(words))) + 1.0 / (2 + len(words))


@dataclass
class Fault:
    """One injected fault: ``kind`` is status, sleep, reset, malformed, indices."""

    kind: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    seconds: float = 0.0
    indices: str = "duplicate"


class FakeRerankAPI:
    """Start with :meth:`start`; ``url`` is the root; ``faults`` is a FIFO consumed one per request."""

    def __init__(self, api_key: str | None = API_KEY) -> None:
        self.api_key = api_key
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        self._connections = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once, no 40 ms delayed-ACK stalls

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._connections += 1

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    with server._lock:
                        server._connections -= 1

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = None
                with server._lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                            "time": time.monotonic()})
                    fault = server.faults.pop(0) if server.faults else None
                server.handle(self, body, fault)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # resets and clients that hang up are injected on purpose

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeRerankAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def open_connections(self) -> int:
        """Client connections open now (a client that closes its pool brings this to 0)."""
        with self._lock:
            return self._connections

    def wait_connections(self, count: int = 0, seconds: float = 3.0) -> bool:
        """Wait until ``count`` client connections are open (the server sees a close a moment after the
        client makes it); False if that does not happen within ``seconds``."""
        end = time.monotonic() + seconds
        while self.open_connections() != count:
            if time.monotonic() >= end:
                return False
            time.sleep(0.01)
        return True

    def count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if path is None or r["path"] == path)

    # -- replies ---------------------------------------------------------------------------
    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("x-request-id", "req-" + uuid.uuid4().hex[:8])
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(data)

    def handle(self, h: BaseHTTPRequestHandler, body: Any, fault: Fault | None) -> None:
        if fault is not None and fault.kind == "reset":
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True
            return
        if fault is not None and fault.kind == "sleep":
            time.sleep(fault.seconds)
        if self.api_key is not None and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._send(h, 401, {"message": "invalid api token"})
        if fault is not None and fault.kind == "status":
            return self._send(h, fault.status, fault.body or {"message": f"injected {fault.status}"}, fault.headers)
        if fault is not None and fault.kind == "malformed":
            return self._send(h, 200, None, raw=b'{"id": "x", "results": [{"index": 0, "relevance')
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return self._send(h, 400, {"message": "invalid request: query is required"})
        texts = body.get("texts") if "texts" in body else body.get("documents")
        if not isinstance(texts, list) or not texts:
            return self._send(h, 400, {"message": "invalid request: documents must be a non-empty list"})
        texts = [t if isinstance(t, str) else t.get("text", "") for t in texts]
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
        path = h.path
        if path == "/v2/rerank":
            return self._send(h, 200, {"id": str(uuid.uuid4()), "results": rows,
                                       "meta": {"api_version": {"version": "2"},
                                                "billed_units": {"search_units": 1}}})
        if path == "/rerank" and "texts" in body:  # TEI: a bare list of {index, score}
            return self._send(h, 200, [{"index": r["index"], "score": r["relevance_score"]} for r in rows])
        if path == "/rerank":  # Infinity
            return self._send(h, 200, {"object": "rerank", "id": str(uuid.uuid4()), "results": rows,
                                       "model": body.get("model"), "usage": {"total_tokens": 10}})
        if path == "/v1/rerank" and "top_k" in body:  # Voyage
            return self._send(h, 200, {"object": "list", "data": rows, "model": body.get("model"),
                                       "usage": {"total_tokens": 10}})
        if path == "/v1/rerank":  # Jina
            return self._send(h, 200, {"model": body.get("model"), "results": rows, "usage": {"total_tokens": 10}})
        return self._send(h, 404, {"message": f"no route {path}"})


def refused_url() -> str:
    """A loopback URL where nothing listens: connections to it are refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def wait_until_ready(url: str, seconds: float = 60.0, process: Any = None) -> bool:
    """Poll ``url + "/ready"`` until it answers 200 (True), ``process`` (a ``subprocess.Popen``) exits, or
    ``seconds`` pass (False): for a service started in another process."""
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


def main() -> None:  # pragma: no cover - exercised by benchmarks/api_backends.py
    """Serve until killed: ``python -m rankrelay.testing [--no-auth]`` prints the URL on its first line."""
    import sys

    server = FakeRerankAPI(api_key=None if "--no-auth" in sys.argv else API_KEY).start()
    print(server.url, flush=True)  # noqa: T201 - the parent process reads this line
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":  # pragma: no cover
    main()

