"""What stands before the models, called as ASGI apps (no server, no model): limits at their exact edges, bearer
tokens, the body limit, the JSON-only rule, contained exceptions and clients that leave (what mutation testing
found unchecked: tests/mutation/run.py --only guards)."""

import asyncio
import json
import re

import pytest
from starlette.requests import Request

from rankrelay.config import Limits
from rankrelay.errors import ConfigError
from rankrelay.server.guards import (
    BearerAuth,
    BodyLimit,
    ClientGoneError,
    Contained,
    LimitExceededError,
    UnsupportedMediaError,
    check_api_keys,
    check_limits,
    error_response,
    json_only,
    unless_client_leaves,
)


def scope(path="/v2/rerank", method="POST", headers=(), kind="http"):
    return {"type": kind, "path": path, "method": method, "headers": list(headers), "query_string": b""}


async def call(app, request_scope, messages=({"type": "http.request", "body": b"{}", "more_body": False},)):
    """Run an ASGI app; the status, headers and body it sent."""
    queue = list(messages)
    sent: list[dict] = []

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(request_scope, receive, send)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return (start["status"] if start else None), dict(start["headers"]) if start else {}, body


class Echo:
    """An inner app that answers 200 with the body it read (it needs the scope, receive and send it was given)."""

    def __init__(self):
        self.calls = 0

    async def __call__(self, request_scope, receive, send):
        assert request_scope["type"] in ("http", "websocket") and callable(receive) and callable(send)
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def run(coro):
    return asyncio.run(coro)


# -- limits ------------------------------------------------------------------------------------------
def test_limits_hold_at_their_edge_and_refuse_one_past_it():
    limits = Limits(max_documents=2, max_query_chars=5, max_document_chars=3)
    check_limits(limits, "12345", ["abc", "xyz"])  # every limit exactly reached: fine
    with pytest.raises(LimitExceededError, match="^3 documents is over the limit of 2$"):
        check_limits(limits, "q", ["a", "b", "c"])
    with pytest.raises(LimitExceededError, match="^the query has 6 characters; the limit is 5$"):
        check_limits(limits, "123456", [])
    with pytest.raises(LimitExceededError, match="^document 1 has 4 characters; the limit is 3$"):
        check_limits(limits, "q", ["abc", "abcd"])
    check_limits(limits, "q")  # no documents at all: nothing to check


# -- keys and tokens ---------------------------------------------------------------------------------
def test_api_keys_are_their_utf8_bytes_and_blank_or_padded_ones_are_refused():
    assert check_api_keys(["k1", "clé"]) == [b"k1", "clé".encode()]
    with pytest.raises(ConfigError, match=r"^API key 2 of 3 is empty or blank \(an unset environment variable\?\): "
                                          r"give real keys, or --no-auth to serve without auth$"):
        check_api_keys(["a", " ", "b"])
    with pytest.raises(ConfigError, match="^API key 1 of 1 is empty"):
        check_api_keys([""])
    with pytest.raises(ConfigError, match="^API key 1 of 2 has leading or trailing whitespace, which no "
                                          "Authorization header can carry$"):
        check_api_keys(["k ", "b"])


@pytest.mark.parametrize(("header", "why"), [
    (None, "no api token: send 'Authorization: Bearer <key>'"),
    (b"Bearer k1", None),
    (b"bearer   k2  ", None),  # the scheme in any case, spaces around the token
    (b"BEARER k2", None),
    (b"Bearer", "no api token: send 'Authorization: Bearer <key>'"),
    (b"Bearer    ", "no api token: send 'Authorization: Bearer <key>'"),
    (b"Basic k1", "no api token: send 'Authorization: Bearer <key>'"),
    (b"Bearer k3", "invalid api token"),
    (b"Bearer k1k2", "invalid api token"),
])
def test_a_request_is_authorized_only_by_a_bearer_token_equal_to_a_key(header, why):
    auth = BearerAuth(Echo(), ["k1", "k2"], open_paths={"/health"})
    headers = [(b"accept", b"*/*")] + ([(b"authorization", header)] if header is not None else [])
    assert auth.refusal(scope(headers=headers)) == why


def test_open_paths_other_scopes_and_no_keys_need_no_token_and_every_other_path_does():
    auth = BearerAuth(Echo(), ["k1"], open_paths={"/health"})
    assert auth.refusal(scope(path="/health")) is None
    for path in ("/v1/experiments/any-name", "/health/", "/HEALTH", "/unknown"):  # a route added later too
        assert auth.refusal(scope(path=path)) == "no api token: send 'Authorization: Bearer <key>'"
    assert auth.refusal(scope(kind="lifespan")) is None
    assert BearerAuth(Echo(), [], open_paths={"/health"}).refusal(scope()) is None


def test_a_refused_request_is_a_401_that_never_reaches_the_app():
    inner = Echo()
    auth = BearerAuth(inner, ["k1"], open_paths={"/health"})
    status, headers, body = run(call(auth, scope(headers=[(b"authorization", b"Bearer nope")])))
    assert (status, json.loads(body), inner.calls) == (401, {"message": "invalid api token"}, 0)
    assert headers[b"www-authenticate"] == b"Bearer"
    status, _, body = run(call(auth, scope(headers=[(b"authorization", b"Bearer k1")])))
    assert (status, body, inner.calls) == (200, b"{}", 1)


# -- body limit --------------------------------------------------------------------------------------
def test_a_body_at_the_limit_passes_unchanged_and_one_byte_more_is_a_413():
    inner = Echo()
    limit = BodyLimit(inner, 10)
    parts = [{"type": "http.request", "body": b"12345", "more_body": True},
             {"type": "http.request", "body": b"67890", "more_body": False}]
    assert run(call(limit, scope(), parts))[::2] == (200, b"1234567890")  # chunks handed on as they came
    over = [{"type": "http.request", "body": b"123456", "more_body": True},
            {"type": "http.request", "body": b"78901", "more_body": False}]
    status, _, body = run(call(limit, scope(), over))
    assert (status, json.loads(body)) == (413, {"message": "request body is over the limit of 10 bytes"})
    assert inner.calls == 1


def test_a_declared_length_over_the_limit_is_refused_before_reading_and_a_false_one_does_not_help():
    inner = Echo()
    limit = BodyLimit(inner, 10)
    status, _, body = run(call(limit, scope(headers=[(b"content-length", b"11")])))
    assert (status, json.loads(body)) == (413, {"message": "request body of 11 bytes is over the limit of 10"})
    lying = [{"type": "http.request", "body": b"x" * 11, "more_body": False}]
    assert run(call(limit, scope(headers=[(b"content-length", b"3")]), lying))[0] == 413
    assert run(call(limit, scope(headers=[(b"content-length", b"10")])))[0] == 200
    assert run(call(limit, scope(headers=[(b"content-length", b"ten")])))[0] == 200  # not a number: bytes decide
    assert inner.calls == 2


def test_a_body_that_pauses_past_the_deadline_is_a_408_that_closes_the_connection():
    inner = Echo()

    async def stalls_after_the_first_chunk(app):
        sent: list[dict] = []
        first = [{"type": "http.request", "body": b"12", "more_body": True}]

        async def receive():
            if first:
                return first.pop()
            await asyncio.Event().wait()  # the client never sends the rest

        async def send(message):
            sent.append(message)

        await asyncio.wait_for(app(scope(), receive, send), 5)  # a hang guard, not a timing
        start = next(m for m in sent if m["type"] == "http.response.start")
        return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])

    status, headers, body = run(stalls_after_the_first_chunk(BodyLimit(inner, 10, timeout_s=0.05)))
    assert (status, headers[b"connection"], json.loads(body)) == (
        408, b"close", {"message": "the request body did not arrive within 0.05 s"})
    assert inner.calls == 0
    assert BodyLimit(inner, 10).timeout_s == 30.0


def test_after_the_replayed_body_the_app_reads_the_client_itself():
    seen = []

    async def listens(request_scope, receive, send):
        seen.append(await receive())
        seen.append(await receive())  # past the body: the real channel (here, the client leaving)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    assert run(call(BodyLimit(listens, 10), scope()))[0] == 204
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"]


def test_gets_heads_and_other_scopes_pass_the_body_limit_untouched():
    inner = Echo()
    limit = BodyLimit(inner, 1)
    big = [{"type": "http.request", "body": b"xyz", "more_body": False}]
    for request_scope in (scope(method="GET"), scope(method="HEAD")):
        assert run(call(limit, request_scope, big))[::2] == (200, b"xyz")
    assert run(call(limit, scope(kind="websocket"), big))[::2] == (200, b"xyz")
    disconnect = [{"type": "http.disconnect"}]  # the client left before the body: handed on, not read as a body
    assert run(call(limit, scope(), disconnect))[::2] == (200, b"")
    assert inner.calls == 4


# -- JSON only, errors, contained exceptions ---------------------------------------------------------
def request(method="POST", content_type=None):
    headers = [(b"content-type", content_type.encode())] if content_type is not None else []
    return Request(scope(method=method, headers=headers))


@pytest.mark.parametrize("declared", [None, "application/json", "Application/JSON; charset=utf-8",
                                      "application/json; charset=utf-8; q=1", "application/vnd.api+json"])
def test_json_and_an_absent_type_are_accepted(declared):
    json_only(request(content_type=declared))


@pytest.mark.parametrize(("declared", "named"), [("text/plain", "'text/plain'"), ("", "'(empty)'"),
                                                 ("application/jsonp", "'application/jsonp'")])
def test_a_body_declared_as_anything_else_is_refused_naming_it(declared, named):
    with pytest.raises(UnsupportedMediaError, match=rf"^the body must be JSON \(Content-Type: application/json\), "
                                                    rf"not {re.escape(named)}$"):
        json_only(request(content_type=declared))
    json_only(request(method="GET", content_type=declared))  # only a POST has a body to check


def test_an_error_body_is_ascii_json_with_the_status_and_headers():
    response = error_response(429, "slow down \ud800 ünï", {"Retry-After": "2"})
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    assert response.body == b'{"message":"slow down \\ud800 \\u00fcn\\u00ef"}'


def test_an_exception_before_the_answer_is_a_500_and_after_it_is_raised():
    async def fails_early(request_scope, receive, send):
        raise RuntimeError("boom")

    async def fails_late(request_scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("late")

    status, _, body = run(call(Contained(fails_early), scope()))
    assert (status, json.loads(body)) == (500, {"message": "internal error"})
    with pytest.raises(RuntimeError, match="late"):
        run(call(Contained(fails_late), scope()))
    with pytest.raises(RuntimeError, match="boom"):  # lifespan and other scopes are not answered here
        run(call(Contained(fails_early), scope(kind="lifespan")))
    assert run(call(Contained(Echo()), scope()))[::2] == (200, b"{}")
    assert run(call(Contained(Echo()), scope(kind="websocket")))[::2] == (200, b"{}")  # handed on as it came


# -- a client that leaves ----------------------------------------------------------------------------
def test_work_that_finishes_first_is_returned_and_a_client_that_leaves_first_cancels_it():
    async def main():
        left = asyncio.Event()

        async def receive():
            await left.wait()
            return {"type": "http.disconnect"}

        req = Request(scope(), receive)
        assert await unless_client_leaves(req, asyncio.sleep(0, result="done")) == "done"
        cancelled = asyncio.Event()

        async def slow():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        left.set()
        with pytest.raises(ClientGoneError, match="^the client closed the connection before the answer was ready$"):
            await unless_client_leaves(req, slow())
        assert cancelled.is_set()

    run(main())


def test_other_messages_while_waiting_do_not_count_as_leaving():
    async def main():
        messages = [{"type": "http.request", "body": b"", "more_body": False}]
        ready = asyncio.Event()

        async def receive():
            if messages:
                return messages.pop(0)
            ready.set()
            await asyncio.Event().wait()

        async def work():
            await ready.wait()  # the extra message was read and ignored; the client is still there
            return 7

        assert await unless_client_leaves(Request(scope(), receive), work()) == 7

    run(main())


def test_a_body_message_without_more_body_is_the_whole_body():
    async def main():
        inner = Echo()
        client_stays = asyncio.Event()  # never set: the client keeps the connection open
        messages = [{"type": "http.request", "body": b"abc"}]  # ASGI: an absent more_body means False
        sent = []

        async def receive():
            if messages:
                return messages.pop(0)
            await client_stays.wait()

        async def send(message):
            sent.append(message)

        await asyncio.wait_for(BodyLimit(inner, 10)(scope(), receive, send), 30)  # a hang guard, not a timing
        return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")

    assert run(main()) == b"abc"
