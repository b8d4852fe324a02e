"""API backends against a local server that speaks Cohere's and TEI's wire formats.

1. Client overhead per call: rankrelay (Cohere SDK backend, TEI over httpx) against a bare httpx
   POST of the same body to the same server (and, for Cohere, the bare SDK call); p50/p95 ms and
   the ratio of medians. The server runs in a second process.
2. Throughput of ``arerank`` at 1/8/64 concurrent queries (a bounded number of requests).
3. Time to fall back to a local backend when the API refuses connections and when it hangs, with
   the breaker closed and open.

    python benchmarks/api_backends.py
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import subprocess
import sys
import time

import httpx
from rich.console import Console
from rich.table import Table

from rankrelay import FallbackReranker, load_reranker
from rankrelay.rerankers.base import BaseReranker, Scored
from rankrelay.testing import API_KEY, FakeRerankAPI, Fault, refused_url

QUERY = "boundary layer separation at the trailing edge"
DOCS = [f"document {i} about the boundary layer and flow number {i}" for i in range(10)]


class Overlap(BaseReranker):
    """A local stand-in that costs almost nothing, so fallback timings show the chain's own cost."""

    name = "local"

    def _score_batch(self, queries, documents):
        return [Scored([float(len(set(q.split()) & set(d.text.split()))) for d in docs])
                for q, docs in zip(queries, documents)], {}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def timed_ms(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


class ServerProcess:
    """The fake API in a second process, so client and server do not share a GIL (``--chat``: the
    OpenAI-compatible one)."""

    def __init__(self, *args: str) -> None:
        self.args = args

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "rankrelay.testing", *self.args], stdout=subprocess.PIPE,
                                     text=True)
        self.url = self.proc.stdout.readline().strip()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def overhead(api: ServerProcess, calls: int) -> list[tuple[str, float, float, float]]:
    import cohere as cohere_sdk

    rows = []
    cohere = load_reranker("cohere:rerank-v3.5", base_url=api.url, api_key=API_KEY)
    tei = load_reranker(f"tei:{api.url}", api_key=API_KEY)
    sdk = cohere_sdk.ClientV2(api_key=API_KEY, base_url=api.url)
    with httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}) as bare:
        bodies = {
            "/v2/rerank": {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS, "top_n": len(DOCS)},
            "/rerank": {"query": QUERY, "texts": DOCS, "raw_scores": True},
        }
        for name, rr, path in (("cohere (SDK)", cohere, "/v2/rerank"), ("tei (httpx)", tei, "/rerank")):
            def bare_call(path=path):
                bare.post(api.url + path, json=bodies[path]).json()

            def ours(rr=rr):
                rr.rerank(QUERY, DOCS)

            for fn in (bare_call, ours):  # warm connections
                fn()
            raw_ms, ours_ms = [], []
            for _ in range(calls):  # interleaved, one of each
                raw_ms += timed_ms(bare_call, 1)
                ours_ms += timed_ms(ours, 1)
            rows.append((f"{name}: bare httpx POST", statistics.median(raw_ms), pct(raw_ms, 95), 1.0))
            rows.append((f"{name}: rankrelay rerank", statistics.median(ours_ms), pct(ours_ms, 95),
                         statistics.median(ours_ms) / statistics.median(raw_ms)))
            if rr is cohere:
                def sdk_call():
                    sdk.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=len(DOCS),
                               request_options={"max_retries": 0})

                sdk_call()
                sdk_ms = timed_ms(sdk_call, calls)
                rows.append((f"{name}: bare SDK call", statistics.median(sdk_ms), pct(sdk_ms, 95),
                             statistics.median(sdk_ms) / statistics.median(raw_ms)))
    return rows


async def throughput(api: ServerProcess, total: int) -> list[tuple[str, int, float, float]]:
    rows = []
    for spec in ("cohere:rerank-v3.5", f"tei:{api.url}"):
        rr = load_reranker(spec, base_url=api.url, api_key=API_KEY) if spec.startswith("cohere") else \
            load_reranker(spec, api_key=API_KEY)
        for concurrency in (1, 8, 64):
            limit = asyncio.Semaphore(concurrency)
            latencies: list[float] = []

            async def one():
                async with limit:
                    start = time.perf_counter()
                    await rr.arerank(QUERY, DOCS)
                    latencies.append((time.perf_counter() - start) * 1000)

            await one()
            latencies.clear()
            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(total)))
            elapsed = time.perf_counter() - start
            rows.append((spec.split(":")[0], concurrency, total / elapsed, pct(latencies, 50)))
    return rows


def fallback_times(api: FakeRerankAPI, calls: int) -> list[tuple[str, float, float]]:
    local = Overlap()
    rows = [("local backend alone", *_stats(timed_ms(lambda: local.rerank(QUERY, DOCS), calls)))]
    for label, url, opts in (
        ("API refuses connections, 1 attempt", refused_url(), {"max_attempts": 1}),
        ("API refuses connections, 3 attempts", refused_url(), {"max_attempts": 3}),
    ):
        chain = FallbackReranker([{"spec": f"tei:{url}", **opts}, local], failure_threshold=10**6)
        rows.append((label + ", breaker closed", *_stats(timed_ms(lambda: chain.rerank(QUERY, DOCS), calls))))
    chain = FallbackReranker([{"spec": f"tei:{refused_url()}", "max_attempts": 1}, local], failure_threshold=1,
                             reset_timeout=3600)
    chain.rerank(QUERY, DOCS)  # opens the breaker
    rows.append(("API down, breaker open (skipped)", *_stats(timed_ms(lambda: chain.rerank(QUERY, DOCS), calls))))
    api.faults = [Fault("sleep", seconds=5.0)] * 6
    hang = FallbackReranker([{"spec": f"tei:{api.url}", "api_key": API_KEY, "timeout": 0.5, "deadline": 1.0,
                              "max_attempts": 3}, local], failure_threshold=10**6)
    rows.append(("API hangs, deadline 1.0 s, timeout 0.5 s", *_stats(timed_ms(lambda: hang.rerank(QUERY, DOCS), 2))))
    api.faults = []
    return rows


def _stats(ms: list[float]) -> tuple[float, float]:
    return statistics.median(ms), pct(ms, 95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="calls per overhead/fallback row")
    parser.add_argument("--total", type=int, default=256, help="requests per throughput row")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    console = Console(width=140)
    with ServerProcess() as remote:
        table = Table(title=f"client overhead per call, {len(DOCS)} documents (server in a second process)")
        for col in ("client", "p50 ms", "p95 ms", "ratio vs bare httpx (p50)"):
            table.add_column(col, justify="right")
        for name, p50, p95, ratio in overhead(remote, args.calls):
            table.add_row(name, f"{p50:.2f}", f"{p95:.2f}", f"{ratio:.2f}")
        console.print(table)

        table = Table(title=f"arerank throughput, {args.total} requests of {len(DOCS)} documents")
        for col in ("backend", "concurrent", "requests/s", "p50 ms"):
            table.add_column(col, justify="right")
        for name, conc, rps, p50 in asyncio.run(throughput(remote, args.total)):
            table.add_row(name, str(conc), f"{rps:.0f}", f"{p50:.1f}")
        console.print(table)

    api = FakeRerankAPI().start()  # in process: the hang test sets its faults
    try:
        table = Table(title="time to serve through a fallback chain (API first, local next)")
        for col in ("situation", "p50 ms", "p95 ms"):
            table.add_column(col, justify="right")
        for label, p50, p95 in fallback_times(api, min(args.calls, 50)):
            table.add_row(label, f"{p50:.2f}", f"{p95:.2f}")
        console.print(table)
    finally:
        api.stop()


if __name__ == "__main__":
    main()
