"""``python -m rankrelay.testing [--no-auth] [--chat]``: serve a fake API until killed; the URL is the first
line printed (the rerank APIs by default, the OpenAI-compatible chat API with ``--chat``)."""

from __future__ import annotations

import sys
import threading

from rankrelay.testing import API_KEY, FakeChatAPI, FakeRerankAPI


def main() -> None:  # pragma: no cover - exercised by the benchmarks
    kind = FakeChatAPI if "--chat" in sys.argv else FakeRerankAPI
    server = kind(api_key=None if "--no-auth" in sys.argv else API_KEY).start()
    print(server.url, flush=True)  # noqa: T201 - the parent process reads this line
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
