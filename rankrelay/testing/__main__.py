"""``python -m rankrelay.testing`` (or ``rankrelay fake-api``): a fake upstream API for an application's tests.

One server on 127.0.0.1 speaks every rerank API's wire format at once (the route and the body choose: Cohere
``/v2/rerank``, TEI and Infinity ``/rerank``, Jina and Voyage ``/v1/rerank``, mixedbread ``/v1/reranking``,
Pinecone ``/rerank`` with its headers), or the OpenAI-compatible chat API with ``--chat``. The first line printed
is its URL; it serves until killed. ``--fault`` queues faults, one per request in order:

    python -m rankrelay.testing --key sk-test --port 8765 --fault 503:2,429:1,timeout:1,reset:1,malformed:1

Each item is ``KIND:COUNT``: an HTTP status (``429`` comes with ``Retry-After: 1``), ``timeout`` (the answer waits
``--timeout-s`` seconds, past a client's timeout), ``reset`` (the connection is closed unanswered) or
``malformed`` (a body cut off mid-way). Then every request is answered.
"""

from __future__ import annotations

import argparse
import sys
import threading

from rankrelay.testing.server import API_KEY, Fault


def faults(spec: str, timeout_s: float = 30.0) -> list[Fault]:
    """The faults of a ``--fault`` spec, in order.

    Example:
        >>> [(f.kind, f.status) for f in faults("503:2,reset:1")]
        [('status', 503), ('status', 503), ('reset', 500)]
    """
    out: list[Fault] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, _, count = item.partition(":")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"{item!r}: a fault is KIND:COUNT with a count of at least 1, e.g. 503:2")
        if kind.isdigit() and 400 <= int(kind) <= 599:
            headers = {"Retry-After": "1"} if kind == "429" else {}
            made = [Fault("status", int(kind), headers=dict(headers)) for _ in range(int(count))]
        elif kind == "timeout":
            made = [Fault("sleep", seconds=timeout_s) for _ in range(int(count))]
        elif kind in ("reset", "malformed"):
            made = [Fault(kind) for _ in range(int(count))]
        else:
            raise ValueError(f"{item!r}: unknown fault {kind!r}; use an HTTP status (400-599), timeout, reset or "
                             "malformed")
        out += made
    return out


EPILOG = """faults, one per request in order (then every request is answered):
  an HTTP status   e.g. 503:2 (429 comes with Retry-After: 1)
  timeout          the answer waits --timeout-s seconds, past a client's timeout
  reset            the connection is closed unanswered
  malformed        a body cut off mid-way

example:
  python -m rankrelay.testing --key sk-test --port 8765 --fault 503:2,429:1,timeout:1,reset:1

One server speaks every rerank API's wire format: Cohere /v2/rerank, TEI and Infinity /rerank, Jina and Voyage
/v1/rerank, mixedbread /v1/reranking, Pinecone /rerank (the route and the body choose)."""


def parser(prog: str = "python -m rankrelay.testing") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="A fake upstream API on 127.0.0.1 for an application's tests: prints its "
                                            "URL, then serves until killed.")
    p.add_argument("--key", default=API_KEY, help=f"the API key clients must send (default: {API_KEY})")
    p.add_argument("--no-auth", action="store_true", help="accept requests without a key")
    p.add_argument("--port", type=int, default=0, help="the port on 127.0.0.1 (default: a free one)")
    p.add_argument("--chat", action="store_true", help="the OpenAI-compatible chat API instead of the rerank APIs")
    p.add_argument("--fault", default="", metavar="KIND:COUNT,...", help="faults answered first, in order")
    p.add_argument("--timeout-s", type=float, default=30.0, help="how long a 'timeout' fault waits (default: 30)")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m rankrelay.testing") -> int:
    from rankrelay.testing import FakeChatAPI, FakeRerankAPI

    args = parser(prog).parse_args(argv)
    try:
        queued = faults(args.fault, args.timeout_s)
    except ValueError as exc:
        parser(prog).error(str(exc))
    kind = FakeChatAPI if args.chat else FakeRerankAPI
    server = kind(api_key=None if args.no_auth else args.key, port=args.port)
    server.faults = queued
    server.start()
    print(server.url, flush=True)  # noqa: T201 - the first line is what a parent process reads
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
