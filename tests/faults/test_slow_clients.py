"""Slow clients against the real server: connections whose headers never finish are answered 408 and closed after
the header deadline, a body that stops short of its Content-Length after the body deadline, and the service answers
others meanwhile."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from serving import running

from rankrelay.config import Limits
from rankrelay.server.app import create_app

KEY = "slow-key"


def app(**limits):
    return create_app({"first": "identity"}, api_keys=[KEY], limits=Limits(**limits))


def open_raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture(params=["httptools", "h11"])
def http(request):
    """uvicorn's two HTTP implementations, each with the header deadline."""
    from rankrelay.server.protocol import deadline_protocol

    return lambda seconds: deadline_protocol(seconds, request.param)


def parse(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a raw HTTP/1.1 answer, read by h11 (a real parser)."""
    import h11

    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.receive_data(reply)
    response = conn.next_event()
    body = b""
    while isinstance(event := conn.next_event(), h11.Data):
        body += event.data
    return response.status_code, {k.decode(): v.decode() for k, v in response.headers}, body


def test_200_connections_that_never_finish_their_headers_are_closed_and_others_are_answered_meanwhile(http):
    with running(app(), http=http(1.0)) as (url, _):
        slow = []
        for _ in range(200):
            sock = open_raw(url)
            sock.sendall(b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and nothing more
            slow.append(sock)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            answer = http.post("/v2/rerank", json={"query": "q", "documents": ["a", "b"]})
            assert answer.status_code == 200  # the service answers others while they hang
        replies = [read_all(sock) for sock in slow]  # returns once the server closes each one
        assert len(set(replies)) == 1
        status, headers, body = parse(replies[0])
        assert (status, headers["content-type"], headers["connection"]) == (408, "application/json", "close")
        assert headers["content-length"] == str(len(body))
        assert json.loads(body) == {"message": "the request's headers did not arrive within 1 s"}
        for sock in slow:
            sock.close()


def test_a_connection_that_sends_nothing_is_closed_after_the_header_deadline(http):
    with running(app(), http=http(0.5)) as (url, _):
        sock = open_raw(url)
        assert read_all(sock).startswith(b"HTTP/1.1 408")
        sock.close()


def test_a_kept_alive_connection_is_not_cut_by_the_header_deadline_between_requests(http):
    with running(app(), http=http(0.5)) as (url, _), \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        first = http.post("/v2/rerank", json={"query": "q", "documents": ["a"]})
        time.sleep(1.0)  # idle on the kept-alive connection: the keep-alive timeout governs it, not the header one
        second = http.post("/v2/rerank", json={"query": "q", "documents": ["a"]})
        assert first.status_code == second.status_code == 200


def test_a_body_that_stops_short_of_its_content_length_is_answered_408_and_closed():
    with running(app(body_timeout_s=0.5)) as (url, _):
        sock = open_raw(url)
        sock.sendall(b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\": ")
        reply = read_all(sock)
        sock.close()
    assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in reply
    assert b"connection: close" in reply.lower()


def test_a_second_request_on_a_kept_alive_connection_gets_its_own_header_deadline(http):
    with running(app(), http=http(0.5)) as (url, _):
        sock = open_raw(url)
        body = b'{"query": "q", "documents": ["a"]}'
        sock.sendall(b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
        first = b""
        while b'"results"' not in first:
            first += sock.recv(65536)
        sock.sendall(b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\n")  # the next request's headers never finish
        rest = read_all(sock)
        sock.close()
    assert first.startswith(b"HTTP/1.1 200") and parse(rest)[0] == 408


def test_headers_trickled_a_byte_at_a_time_are_still_cut_at_the_deadline(http):
    """A slowloris client that keeps sending a byte now and then does not restart the deadline."""
    import select

    with running(app(), http=http(0.5)) as (url, _):
        sock = open_raw(url)
        sent = 0
        for byte in (b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100)[:100]:
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # closed by the server
                break
            sent += 1
            if select.select([sock], [], [], 0.1)[0]:
                break
        reply = read_all(sock)
        sock.close()
    assert parse(reply)[0] == 408 and sent < 100  # cut while still trickling (100 bytes take 10 s)


def test_the_protocol_is_the_asked_implementation_and_auto_follows_what_is_installed(monkeypatch):
    import importlib.util

    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from rankrelay.errors import ConfigError
    from rankrelay.server.protocol import deadline_protocol

    assert issubclass(deadline_protocol(1, "httptools"), HttpToolsProtocol)
    assert issubclass(deadline_protocol(1, "h11"), H11Protocol)
    assert issubclass(deadline_protocol(1), HttpToolsProtocol)  # installed here (uvicorn[standard])
    assert deadline_protocol(2.5).header_timeout_s == 2.5
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "httptools" else real(name, *a))
    assert issubclass(deadline_protocol(1), H11Protocol) and not issubclass(deadline_protocol(1), HttpToolsProtocol)
    with pytest.raises(ConfigError, match="http must be 'auto', 'httptools' or 'h11', got 'AUTO'"):
        deadline_protocol(1, "AUTO")
