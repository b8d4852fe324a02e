"""The rerank service under load from a second process on loopback (bounded request counts).

Throughput and p50/p95 latency at 1/8/32 concurrent clients for small (10 documents) and large
(100 documents) requests, with dynamic batching on and off; the service's overhead over calling the
library in-process at one client; and the server's memory over 10,000 cheap requests.

The soak (``--soak``, also part of a full run): 200 concurrent clients send 10,000 requests mixing a
cheap model, the cross-encoder, a slow model whose callers give up (client-side read timeouts, so the
connection goes away mid-request) and a stuck model the service answers 503 at its request timeout.
It checks that every answered request is correct and its own (each reply's documents carry the
request's tag), that ``/metrics`` counts exactly the requests sent, by model and status, and that the
server's memory stays flat (+-10 % between the first 1,000 requests and the end).

The model is MiniLM-L6 (the ms-marco-MiniLM-L-6-v2 architecture) built from the bundled
all-MiniLM-L6-v2 weights with a fresh head; ``--model PATH`` takes any cross-encoder.

    python benchmarks/server.py            # everything
    python benchmarks/server.py --soak     # the soak alone
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from overhead import build_minilm_cross_encoder  # noqa: E402

from rankrelay import load_reranker  # noqa: E402
from rankrelay.testing import free_port, wait_until_ready  # noqa: E402

WORDS = ("boundary layer flow wing lift drag pressure shock wave supersonic heat transfer plate "
         "turbulent laminar separation angle attack model theory experiment").split()


LENGTHS = "uniform"


def docs(n: int, seed: int) -> list[str]:
    """``n`` distinct documents (distinct, so that no deduplication shortens the work).

    ``uniform``: 30 words each; ``varied``: log-normal lengths (median 74 words, 8 to 300), like abstracts.
    """
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = 30 if LENGTHS == "uniform" else min(300, max(8, int(rng.lognormvariate(4.3, 0.6))))
        out.append(f"document {seed}-{i} " + " ".join(rng.choice(WORDS) for _ in range(words)))
    return out


class Service:
    def __init__(self, model: str, batching: bool) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "rankrelay.cli", "serve", "--no-auth", "--port", str(self.port),
               "--model", f"ce=cross-encoder:{model}?score_cache=off", "--model", "ref=identity",
               "--batching" if batching else "--no-batching"]
        # queueing 32 clients of long requests is what is measured here, not the 503 after the default timeout
        env = {**os.environ, "RANKRELAY_SERVICE__REQUEST_TIMEOUT": "3600"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        if not wait_until_ready(self.url, 120, self.proc):
            raise RuntimeError("the service did not become ready")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def load(url: str, model: str, clients: int, total: int, n_docs: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            start = time.perf_counter()
            reply = await http.post(f"{url}/v2/rerank", json={"model": model, "query": f"wing lift {i}",
                                                               "documents": docs(n_docs, i)})
            reply.raise_for_status()
            latencies.append((time.perf_counter() - start) * 1000)

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients + 4)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return total / elapsed, latencies


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


SOAK_MODELS = ("ref", "ce", "slow", "stuck")


def serve_soak(port: int, model: str) -> None:
    """The soak's server process: a cheap model, the cross-encoder, a slow one and a stuck one."""
    import uvicorn

    from rankrelay.config import Limits
    from rankrelay.rerankers.base import BaseReranker, Scored
    from rankrelay.server.app import create_app

    class Sleeping(BaseReranker):
        name = "sleeping"

        def __init__(self, seconds: float) -> None:
            super().__init__()
            self.seconds = seconds

        def _score_batch(self, queries, documents):  # type: ignore[no-untyped-def]
            time.sleep(self.seconds)
            return [Scored([float(len(d.text)) for d in docs]) for docs in documents], {}

    app = create_app({"ref": "identity", "ce": f"cross-encoder:{model}?score_cache=off&device=cpu",
                      "slow": Sleeping(0.2), "stuck": Sleeping(2.0)},
                     allow_unauthenticated=True, limits=Limits(request_timeout=1.0, max_queue=10_000))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", timeout_keep_alive=30)


def soak_plan(total: int) -> list[str]:
    """Which model each request asks: 70 % cheap, 10 % each of the cross-encoder, slow and stuck."""
    cycle = ["ref"] * 7 + ["ce", "slow", "stuck"]
    return [cycle[i % len(cycle)] for i in range(total)]


def scrape(url: str) -> dict[tuple[str, str, str], float]:
    """``rankrelay_requests_total`` of the service: (endpoint, model, status) -> count."""
    import re

    counts = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        m = re.match(r'rankrelay_requests_total\{endpoint="([^"]*)",model="([^"]*)",status="(\d+)"\} (\S+)', line)
        if m:
            counts[(m[1], m[2], m[3])] = float(m[4])
    return counts


async def soak_load(url: str, plan: list[str], clients: int, rss: Any) -> dict[str, Any]:
    """Send ``plan``; return outcomes per model, wrong answers and RSS checkpoints."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(plan)):
        queue.put_nowait(i)
    outcomes: dict[tuple[str, str], int] = {}
    wrong: list[str] = []
    checkpoints: dict[int, float] = {}
    done = 0
    cheap = httpx.Timeout(30.0)
    give_up = httpx.Timeout(30.0, read=0.05)  # the request is sent in full; the caller stops waiting

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal done
        while not queue.empty():
            i = queue.get_nowait()
            model = plan[i]
            tag = f"r{i}x"
            texts = [f"{tag} {w} {j}" for j, w in enumerate(docs(4, i)[0].split()[:5])]
            try:
                reply = await http.post(f"{url}/v2/rerank", timeout=give_up if model == "slow" else cheap,
                                        json={"model": model, "query": f"wing {tag}", "documents": texts,
                                              "return_documents": True})
                key = str(reply.status_code)
                if reply.status_code == 200:
                    got = [r["document"]["text"] for r in reply.json()["results"]]
                    if sorted(got) != sorted(texts):
                        wrong.append(f"request {i} ({model}) got documents that are not its own")
            except httpx.ReadTimeout:
                key = "gave up"
            outcomes[(model, key)] = outcomes.get((model, key), 0) + 1
            done += 1
            if done % max(1, len(plan) // 5) == 0 or done == len(plan):
                checkpoints[done] = rss()

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients + 8)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return {"outcomes": outcomes, "wrong": wrong, "rss": checkpoints, "seconds": elapsed}


def soak(model: str, console: Console, total: int = 10_000, clients: int = 200, warmup: int = 2_000) -> bool:
    """Run the soak against a fresh server process; print what it found; True when every target holds.

    First ``warmup`` requests: 3/4 to the cross-encoder, then the mix. A fresh process grows while oneDNN
    caches kernels for each new (batch, length) shape and the passage planner's tokenization LRU fills
    (both bounded); measured from a cold start that growth would read as a leak (it levels off after
    about 1,200 cross-encoder requests on this machine)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-soak", str(port), "--model", model],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the soak server did not become ready")
            time.sleep(0.2)
        service = Service.__new__(Service)
        service.proc = proc
        if warmup:
            warm = ["ce"] * (3 * warmup // 4) + soak_plan(warmup // 4)
            asyncio.run(soak_load(url, warm, clients, service.rss_mb))
            time.sleep(2.5)
        before = scrape(url)
        plan = soak_plan(total)
        result = asyncio.run(soak_load(url, plan, clients, service.rss_mb))
        time.sleep(2.5)  # requests whose callers gave up finish on the server; then it is quiet
        after = scrape(url)
        counts = {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    table = Table(title=f"soak: {total:,} requests from {clients} concurrent clients after {warmup:,} to warm up "
                        f"({result['seconds']:.0f} s, {total / result['seconds']:.0f} req/s)")
    for col in ("model", "sent", "client saw", "/metrics (status: count)", "equal"):
        table.add_column(col, justify="right")
    all_equal = True
    for name in SOAK_MODELS:
        sent = plan.count(name)
        seen = {k: v for (m, k), v in result["outcomes"].items() if m == name}
        counted = {s: int(v) for (e, m, s), v in counts.items() if e == "/v2/rerank" and m == name}
        equal = sum(counted.values()) == sent
        all_equal &= equal
        table.add_row(name, str(sent), ", ".join(f"{k}: {v}" for k, v in sorted(seen.items())),
                      ", ".join(f"{k}: {v}" for k, v in sorted(counted.items())), "yes" if equal else "NO")
    console.print(table)
    rss = result["rss"]
    first, last = rss[min(rss)], rss[max(rss)]  # after the first fifth, and at the end
    growth = (last - first) / first
    summary = Table(title="soak targets")
    for col in ("measure", "value", "target"):
        summary.add_column(col)
    summary.add_row("answers that were not the request's own", str(len(result["wrong"])), "0")
    summary.add_row("/metrics count == requests sent, every model", "yes" if all_equal else "NO", "yes")
    summary.add_row("server RSS at " + " / ".join(f"{n:,}" for n in sorted(rss)) + " requests",
                    " / ".join(f"{rss[n]:.0f} MB" for n in sorted(rss)) + f" ({growth:+.1%} after the first fifth)",
                    "+-10%")
    console.print(summary)
    for line in result["wrong"][:5]:
        console.print(line)
    return not result["wrong"] and all_equal and abs(growth) <= 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="cross-encoder path (default: MiniLM-L6 from the bundled weights)")
    parser.add_argument("--requests", type=int, default=96, help="requests per small-request row")
    parser.add_argument("--memory-requests", type=int, default=10_000)
    parser.add_argument("--lengths", choices=("uniform", "varied"), default="uniform",
                        help="document lengths: all 30 words, or log-normal like abstracts")
    parser.add_argument("--soak", action="store_true", help="run only the soak")
    parser.add_argument("--soak-requests", type=int, default=10_000)
    parser.add_argument("--soak-warmup", type=int, default=2_000, help="requests of the mix before measuring")
    parser.add_argument("--serve-soak", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global LENGTHS
    LENGTHS = args.lengths
    model = args.model or build_minilm_cross_encoder(Path(tempfile.gettempdir()) / "rankrelay-bench-minilm-ce")
    if args.serve_soak:
        return serve_soak(args.serve_soak, model)
    console = Console(width=140)
    if args.soak:
        sys.exit(0 if soak(model, console, args.soak_requests, warmup=args.soak_warmup) else 1)

    table = Table(title=f"rerank service, loopback, load from a second process (MiniLM-L6, CPU, {LENGTHS} lengths)")
    for col in ("batching", "docs/request", "clients", "requests", "req/s", "p50 ms", "p95 ms"):
        table.add_column(col, justify="right")
    throughput: dict[tuple[bool, int, int], float] = {}
    p50_one: dict[bool, float] = {}
    for batching in (True, False):
        service = Service(model, batching)
        try:
            for n_docs, total_base in ((10, args.requests), (100, max(8, args.requests // 8))):
                for clients in (1, 8, 32):
                    total = max(total_base, clients)
                    asyncio.run(load(service.url, "ce", 1, 2, n_docs))  # warm
                    rps, lat = asyncio.run(load(service.url, "ce", clients, total, n_docs))
                    throughput[(batching, n_docs, clients)] = rps
                    if n_docs == 10 and clients == 1:
                        p50_one[batching] = statistics.median(lat)
                    table.add_row("on" if batching else "off", str(n_docs), str(clients), str(total), f"{rps:.1f}",
                                  f"{statistics.median(lat):.1f}", f"{pct(lat, 95):.1f}")
                    console.log(f"batching={batching} docs={n_docs} clients={clients}: {rps:.2f} req/s")
            if batching:
                before = service.rss_mb()
                asyncio.run(load(service.url, "ref", 16, args.memory_requests, 10))
                after = service.rss_mb()
        finally:
            service.stop()
    console.print(table)

    local = load_reranker(f"cross-encoder:{model}", device="cpu", score_cache="off")
    local.warm_up()
    in_process = []
    for i in range(30):
        start = time.perf_counter()
        local.rerank(f"wing lift {i}", docs(10, i))
        in_process.append((time.perf_counter() - start) * 1000)
    lib = statistics.median(in_process)
    summary = Table(title="targets")
    for col in ("measure", "value", "target"):
        summary.add_column(col)
    ratio = throughput[(True, 10, 32)] / throughput[(False, 10, 32)]
    summary.add_row("batching on / off, 32 clients, 10 docs (req/s)", f"{ratio:.2f}x", ">= 1.5x")
    summary.add_row("service p50 - in-process p50, 1 client, 10 docs (batching on)",
                    f"{p50_one[True] - lib:.1f} ms (in-process {lib:.1f} ms)", "<= 5 ms")
    summary.add_row("service p50 - in-process p50, 1 client, 10 docs (batching off)",
                    f"{p50_one[False] - lib:.1f} ms", "")
    summary.add_row(f"server RSS before / after {args.memory_requests:,} requests",
                    f"{before:.0f} MB / {after:.0f} MB ({(after - before) / before:+.1%})", "+-10%")
    console.print(summary)
    soak(model, console, args.soak_requests, warmup=args.soak_warmup)


if __name__ == "__main__":
    main()
