"""The shared body of the fake servers: a threaded HTTP server on 127.0.0.1, a FIFO of injected faults,
every request recorded (for exact attempt counts), and the open connections counted.

A subclass answers a well-formed request in :meth:`FakeServer.answer`; the faults that look the same on
every API (a reset connection, a delay, an error status, a malformed body) are handled here.

Example:
    >>> from rankrelay.testing import FakeRerankAPI
    >>> api = FakeRerankAPI().start()
    >>> api.url.startswith("http://127.0.0.1:"), api.count()
    (True, 0)
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


@dataclass
class Fault:
    """One injected fault: ``kind`` is status, sleep, hold, reset, malformed, indices (rerank APIs only).

    ``headers`` are sent with the reply (a header set to None is left out, the ``x-request-id`` the server
    adds included). ``hold`` keeps the request open until the test sets ``release`` (or ``seconds`` pass); ``released``
    then says which: a test waits on an event, not on the wall clock.
    """

    kind: str
    status: int = 500
    headers: dict[str, str | None] = field(default_factory=dict)
    body: Any = None
    seconds: float = 0.0
    indices: str = "duplicate"
    release: threading.Event = field(default_factory=threading.Event)
    released: bool | None = None


class FakeServer:
    """Start with :meth:`start`; ``url`` is the root; ``faults`` is a FIFO consumed one per request."""

    #: the body of a reply cut off mid-way (for ``Fault("malformed")``)
    malformed_body = b'{"id": "x", "results": [{"index": 0, "relevance'
    #: the HTTP methods the API answers (others get 501 from the standard library)
    methods: tuple[str, ...] = ("POST",)

    def __init__(self, api_key: str | None = API_KEY, port: int = 0) -> None:
        self.api_key = api_key
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        self._connections = 0
        self._in_flight = 0
        #: the most requests the server was answering at once
        self.max_in_flight = 0
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

            def __getattr__(self, name: str) -> Any:
                if name.startswith("do_") and name[3:] in server.methods:
                    return self.serve
                raise AttributeError(name)

            def serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.raw_body = self.rfile.read(length)  # as sent (a signature covers these bytes)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = None
                with server._lock:
                    server.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                            "body": body, "time": time.monotonic()})
                    fault = server.faults.pop(0) if server.faults else None
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    server._handle(self, body, fault)
                finally:
                    with server._lock:
                        server._in_flight -= 1

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # resets and clients that hang up are injected on purpose

        self._server = Server(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Any:
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
    def send(handler: BaseHTTPRequestHandler, status: int, payload: Any,
             headers: dict[str, str | None] | None = None, raw: bytes | None = None) -> None:
        """Reply with a JSON body and an ``x-request-id``; ``headers`` add to or replace those (None: leave out)."""
        data = raw if raw is not None else json.dumps(payload).encode()
        given = {k.lower(): v for k, v in (headers or {}).items()}
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        if "x-request-id" not in given:
            handler.send_header("x-request-id", "req-" + uuid.uuid4().hex[:8])
        for k, v in (headers or {}).items():
            if v is not None:
                handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(data)

    def authorized(self, h: BaseHTTPRequestHandler) -> bool:
        """Does the request carry the key (``Authorization: Bearer``; subclasses may take another header)?"""
        return h.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _handle(self, h: BaseHTTPRequestHandler, body: Any, fault: Fault | None) -> None:
        if fault is not None and fault.kind == "reset":
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True
            return
        if fault is not None and fault.kind == "sleep":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "hold":
            fault.released = fault.release.wait(fault.seconds)
        if self.api_key is not None and not self.authorized(h):
            return self.send(h, 401, {"message": "invalid api token"})
        if fault is not None and fault.kind == "status":
            return self.send(h, fault.status, fault.body or {"message": f"injected {fault.status}"}, fault.headers)
        if fault is not None and fault.kind == "malformed":
            return self.send(h, 200, None, raw=self.malformed_body)
        self.answer(h, body, fault)

    def answer(self, h: BaseHTTPRequestHandler, body: Any, fault: Fault | None) -> None:
        """Answer a request that no fault took over (``fault`` may still shape the answer)."""
        raise NotImplementedError


def free_port() -> int:
    """A loopback port nothing listens on now (for a server started next, or for a refused connection)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return int(port)


def refused_url() -> str:
    """A loopback URL where nothing listens: connections to it are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


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
