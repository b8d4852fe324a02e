"""Serve an ASGI app on a real loopback socket for a test (uvicorn in a thread)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from polling import until


@contextmanager
def running(app: Any, **config: Any) -> Iterator[tuple[str, Any]]:
    """Serve ``app`` with uvicorn on a random loopback port; yields the root URL and the server.

    Idle connections are kept as long as ``rankrelay serve`` keeps them (uvicorn's own 5 s would close a pooled
    connection while a client, slowed by a loaded machine, picks it up: a ReadError no user of the service sees).
    """
    import uvicorn

    from rankrelay.config import ServiceSettings
    from rankrelay.server.protocol import deadline_protocol

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config.setdefault("timeout_keep_alive", ServiceSettings.model_fields["keep_alive_s"].default)
    config.setdefault("http", deadline_protocol(config.pop("header_timeout_s", 10.0)))  # as `rankrelay serve` runs
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    until(lambda: server.started, "the server started", seconds=30, every=0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(20)
