"""The gateway's pool under load: replicas of the service in front of fake upstream deployments that enforce their
own rate limit, with and without the replicas sharing their limits through Redis; and what a pool adds to a call.

1. Replicas: ``--replicas`` ``rankrelay serve`` processes serve one pooled model (two deployments, each an
   upstream on 127.0.0.1 that answers 429 past ``--rpm`` requests in any 60 s, as a provider does; the identity
   model as the fallback). ``--requests`` requests are offered evenly over ``--seconds`` seconds, spread over the
   replicas. Counted per run: requests answered (target: all), the most any upstream received in a 60 s window
   (target: <= rpm), upstream 429s (target: 0), answers from the fallback. Run with Redis (``[service] state``)
   and without (each replica counts alone: the overshoot). Needs ``redis-server`` (``make redis``).
2. Overhead: p50 of ``pool.rerank`` (two identity deployments, ``least-busy``) against the identity model called
   directly, in-process, with the state in the process and in Redis (target: <= 2 ms); and through a running
   service with a client key (auth, rate and usage counted), the pool against the model served directly.
3. Budget: a client with ``budget = {usd = 0.01}`` on Cohere's list price, eight requests: served (target: 5),
   refused, sent upstream, and what ``/v1/usage`` counts (target: equal to what was sent).
4. Breakers: the replicas serve a chain (a Cohere upstream that answers 503 to everything, then the identity
   model); 30 requests in turn over them: the calls the failing upstream received (each replica counts its own
   consecutive failures, 3 open its breaker; with Redis the first to open it opens it for all: at most
   replicas x 2 + 1; each replica its own: 3 per replica).

    python benchmarks/gateway.py [--replicas 3] [--rpm 60] [--requests 300] [--seconds 60] [--parts budget,breakers]
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from experiments import serve_config
from rich.console import Console
from rich.table import Table

from rankrelay import load_reranker
from rankrelay.testing import API_KEY, FakeRerankAPI, Fault, free_port

DOCS = [f"document number {i} about wings and lift" for i in range(8)]


class LimitedAPI(FakeRerankAPI):
    """A fake Cohere upstream that keeps its own ``rpm`` as a provider does: a request past it in any 60 s is
    answered 429 with a Retry-After."""

    def __init__(self, rpm: int) -> None:
        super().__init__()
        self.rpm, self.accepted, self.refused = rpm, [], 0
        self._lock = threading.Lock()

    def answer(self, h, body, fault):  # type: ignore[no-untyped-def]
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self.accepted if t > now - 60.0]
            over = len(recent) >= self.rpm
            if over:
                self.refused += 1
            else:
                self.accepted.append(now)
        if over:
            return self.send(h, 429, {"message": "rate limit"}, headers={"Retry-After": str(int(recent[0] + 61 - now))})
        return super().answer(h, body, fault)

    def busiest_minute(self) -> int:
        return max((sum(1 for u in self.accepted if t <= u < t + 60.0) for t in self.accepted), default=0)


def redis_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (make redis)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def config(upstreams: list[LimitedAPI], state: str | None) -> str:
    deployments = ",\n".join(f'  {{ spec = "cohere:rerank-v3.5", name = "d{i}", base_url = "{u.url}", '
                              f'api_key = "{API_KEY}", rpm = {u.rpm} }}' for i, u in enumerate(upstreams))
    return f"""
device = "cpu"
[service]
allow_unauthenticated = true
{f'state = "{state}"' if state else ""}
[service.models.cohere]
spec = "pool"
fallback = ["identity"]
max_wait_s = 0
deployments = [
{deployments}
]
"""


@contextmanager
def service_replicas(n: int, shared: bool, config_of: Callable[[str | None], str]) -> Iterator[list[str]]:
    """``n`` ``rankrelay serve`` processes of ``config_of(redis URL or None)``, sharing a Redis of their own when
    ``shared``: their URLs, everything stopped and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="rankrelay-gateway-"))
    redis, url = redis_server(folder) if shared else (None, None)
    procs = []
    try:
        urls = []
        for i in range(n):
            (folder / str(i)).mkdir()
            proc, root = serve_config(folder / str(i), config_of(url))
            procs.append(proc)
            urls.append(root)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        if redis is not None:
            redis.terminate()
        shutil.rmtree(folder, ignore_errors=True)


def replicas_run(args: argparse.Namespace, shared: bool) -> dict[str, object]:
    upstreams = [LimitedAPI(args.rpm).start() for _ in range(2)]
    try:
        with service_replicas(args.replicas, shared, lambda url: config(upstreams, url)) as urls:
            statuses: list[int] = []

            def one(i: int) -> None:
                reply = httpx.post(f"{urls[i % len(urls)]}/v2/rerank", timeout=30,
                                   json={"model": "cohere", "query": f"wing lift {i}", "documents": DOCS})
                statuses.append(reply.status_code)

            start = time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                for i in range(args.requests):
                    time.sleep(max(0.0, start + i * args.seconds / args.requests - time.monotonic()))
                    pool.submit(one, i)
    finally:
        for u in upstreams:
            u.stop()
    served = sum(len(u.accepted) for u in upstreams)
    busiest = " / ".join(str(u.busiest_minute()) for u in upstreams)
    return {"state": "Redis" if shared else "each replica its own",
            "answered": f"{statuses.count(200)} / {args.requests}", "busiest minute per upstream": busiest,
            "sent upstream": served + sum(u.refused for u in upstreams),
            "upstream 429s": sum(u.refused for u in upstreams), "by the fallback": statuses.count(200) - served}


def chain_config(upstream: FakeRerankAPI, url: str | None) -> str:
    """A chain: the Cohere upstream (one attempt a request), then the identity model."""
    return f"""
device = "cpu"
[service]
allow_unauthenticated = true
{f'state = "{url}"' if url else ""}
[service.models]
cohere = [{{ spec = "cohere:rerank-v3.5", base_url = "{upstream.url}", api_key = "{API_KEY}", max_attempts = 1 }},
          "identity"]
"""


def breaker_run(replicas: int, shared: bool, requests: int = 30) -> dict[str, object]:
    """``replicas`` services serving a chain whose first backend always fails: what reached it."""
    upstream = FakeRerankAPI().start()
    upstream.faults = [Fault("status", 503)] * 10_000
    try:
        with service_replicas(replicas, shared, lambda url: chain_config(upstream, url)) as urls:
            statuses = [httpx.post(f"{urls[i % replicas]}/v2/rerank", timeout=30, json={
                "model": "cohere", "query": "wing lift", "documents": DOCS}).status_code for i in range(requests)]
        called = upstream.count("/v2/rerank")
    finally:
        upstream.stop()
    return {"state": "Redis" if shared else "each replica its own",
            "answered": f"{statuses.count(200)} / {requests}", "calls to the failing upstream": called}


def p50_ms(call, n: int = 2000) -> float:  # type: ignore[no-untyped-def]
    times = []
    for i in range(n + 100):
        start = time.perf_counter()
        call(i)
        if i >= 100:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def overhead() -> list[tuple[str, float]]:
    direct = load_reranker("identity")
    rows = [("identity, direct", p50_ms(lambda i: direct.rerank(f"q {i}", DOCS)))]
    pool = load_reranker({"spec": "pool", "deployments": [{"spec": "identity", "name": "a", "rpm": 10**9},
                                                          {"spec": "identity", "name": "b", "rpm": 10**9}]})
    rows.append(("pool of 2, state in the process", p50_ms(lambda i: pool.rerank(f"q {i}", DOCS))))
    folder = Path(tempfile.mkdtemp(prefix="rankrelay-gateway-"))
    redis, url = redis_server(folder)
    try:
        shared = load_reranker({"spec": "pool", "state": url, "deployments": [
            {"spec": "identity", "name": "a", "rpm": 10**9}, {"spec": "identity", "name": "b", "rpm": 10**9}]})
        rows.append(("pool of 2, state in Redis (127.0.0.1)", p50_ms(lambda i: shared.rerank(f"q {i}", DOCS))))
        shared.close()
    finally:
        redis.terminate()
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def budget_run() -> dict[str, object]:
    """One service, a client with ``budget = {usd = 0.01}`` on Cohere's list price ($2 per 1,000 searches), eight
    requests of three documents: what was served, refused, sent upstream, and what ``/v1/usage`` counts."""
    upstream = LimitedAPI(10**6).start()
    folder = Path(tempfile.mkdtemp(prefix="rankrelay-gateway-"))
    digest = hashlib.sha256(b"search-app-key").hexdigest()
    proc, url = serve_config(folder, f"""
device = "cpu"
[service]
api_keys = ["ops-key"]
[service.models]
cohere = {{ spec = "cohere:rerank-v3.5", base_url = "{upstream.url}", api_key = "{API_KEY}" }}
[service.clients.search-app]
key_sha256 = "{digest}"
budget = {{ usd = 0.01 }}
""")
    try:
        statuses = [httpx.post(f"{url}/v2/rerank", headers={"Authorization": "Bearer search-app-key"}, timeout=30,
                               json={"model": "cohere", "query": "wing lift", "documents": DOCS[:3]}).status_code
                    for _ in range(8)]
        usage = httpx.get(f"{url}/v1/usage", headers={"Authorization": "Bearer ops-key"}).json()
    finally:
        proc.terminate()
        proc.wait(30)
        upstream.stop()
        shutil.rmtree(folder, ignore_errors=True)
    (row,) = usage["rows"]
    return {"served": statuses.count(200), "refused (429)": statuses.count(429),
            "sent upstream": len(upstream.accepted),
            "/v1/usage requests": row["requests"], "billed search units": row["billed_units"].get("search_units", 0),
            "cost": f"${row['cost_usd']:g}", "budget spent": f"${usage['budgets']['search-app']['spent_usd']:g}"}


def service_overhead(n: int = 1000) -> list[tuple[str, float]]:
    """p50 of ``POST /v2/rerank`` through one service with a client key (auth, rate, usage counted): the identity
    model served directly, and as a pool of two identity deployments."""
    folder = Path(tempfile.mkdtemp(prefix="rankrelay-gateway-"))
    digest = hashlib.sha256(b"app-key").hexdigest()
    proc, url = serve_config(folder, f"""
device = "cpu"
[service]
batching = false
[service.models]
direct = "identity"
pooled = {{ spec = "pool", deployments = [{{ spec = "identity", name = "a" }}, {{ spec = "identity", name = "b" }}] }}
[service.clients.app]
key_sha256 = "{digest}"
rpm = 1000000
""")
    rows = []
    try:
        with httpx.Client(base_url=url, timeout=30, headers={"Authorization": "Bearer app-key"}) as http:
            for model in ("direct", "pooled"):
                rows.append((f"service, {model}", p50_ms(lambda i, m=model: http.post(  # type: ignore[misc]
                    "/v2/rerank", json={"model": m, "query": f"q {i}", "documents": DOCS}).raise_for_status(), n)))
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--rpm", type=int, default=60)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--parts", default="replicas,overhead,budget,breakers",
                        help="which runs, comma-separated (default: all)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    console = Console()
    flags = sorted({f for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
                    for f in line.split()[2:] if f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")})
    console.print(f"{platform.processor() or platform.machine()}, flags: {' '.join(flags)}")
    if "replicas" in parts:
        rows = [replicas_run(args, shared=True), replicas_run(args, shared=False)]
        console.print(records(f"{args.replicas} replicas, 2 upstreams at rpm = {args.rpm}, {args.requests} requests "
                              f"in {args.seconds:g} s", rows))
    if "overhead" in parts:
        console.print(latencies("what a pool adds to a call (in-process, p50 of 2,000)", "over direct, ms", overhead()))
        console.print(latencies("through the service (HTTP on 127.0.0.1, a client key, usage counted; p50 of 1,000)",
                                "pool over direct, ms", service_overhead()))
    if "budget" in parts:
        console.print(records("a client with budget = {usd = 0.01} on $2 per 1,000 searches, 8 requests",
                              [budget_run()]))
    if "breakers" in parts:
        console.print(records(f"{args.replicas} replicas serving \\[a failing Cohere API, identity], 30 requests",
                              [breaker_run(args.replicas, shared=True), breaker_run(args.replicas, shared=False)]))


def records(title: str, rows: list[dict[str, object]]) -> Table:
    """Rows of the same keys as a table, a column per key."""
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    return table


def latencies(title: str, over: str, measured: list[tuple[str, float]]) -> Table:
    """p50s, each against the first."""
    table = Table(title=title)
    table.add_column("call")
    table.add_column("p50 ms", justify="right")
    table.add_column(over, justify="right")
    for name, ms in measured:
        table.add_row(name, f"{ms:.3f}", f"{ms - measured[0][1]:+.3f}")
    return table

if __name__ == "__main__":
    main()
