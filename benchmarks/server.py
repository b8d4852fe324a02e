"""The rerank service under load from a second process on loopback (bounded request counts).

Throughput and p50/p95 latency at 1/8/32 concurrent clients for small (10 documents) and large
(100 documents) requests, with dynamic batching on and off; the service's overhead over calling the
library in-process at one client; and the server's memory over 10,000 cheap requests.

The model is MiniLM-L6 (the ms-marco-MiniLM-L-6-v2 architecture) built from the bundled
all-MiniLM-L6-v2 weights with a fresh head; ``--model PATH`` takes any cross-encoder.

    python benchmarks/server.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from overhead import build_minilm_cross_encoder  # noqa: E402

from rankrelay import load_reranker  # noqa: E402

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


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


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
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="cross-encoder path (default: MiniLM-L6 from the bundled weights)")
    parser.add_argument("--requests", type=int, default=96, help="requests per small-request row")
    parser.add_argument("--memory-requests", type=int, default=10_000)
    parser.add_argument("--lengths", choices=("uniform", "varied"), default="uniform",
                        help="document lengths: all 30 words, or log-normal like abstracts")
    args = parser.parse_args()
    global LENGTHS
    LENGTHS = args.lengths
    model = args.model or build_minilm_cross_encoder(Path(tempfile.gettempdir()) / "rankrelay-bench-minilm-ce")
    console = Console(width=140)

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


if __name__ == "__main__":
    main()
