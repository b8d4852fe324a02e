"""rankrelay on Ray, against the same work in one process (one run, ratios; numbers for docs/scaling.md).

1. Per-request overhead of the Ray Serve path (proxy -> gateway -> models replica) over the single-process
   service on loopback: p50 at one client for a model that costs nothing (``identity``) and for the
   cross-encoder with 10 documents.
2. Batching inside a replica: rankrelay's dynamic batcher against Ray Serve's ``@serve.batch`` (16 clients
   of 10-document requests, where packing requests together matters).
3. Throughput of 100-document requests from 8 concurrent clients: single process, Ray Serve with 1 and with 2
   model replicas (each replica gets CPUs / replicas torch threads); pairs/s.
4. Batch reranking: ``run_batch`` in-process against Ray Data with one model per actor; pairs/s.

The model is MiniLM-L6 built from the bundled all-MiniLM-L6-v2 weights (see ``overhead.py``); the
services run as ``rankrelay serve [--ray]`` subprocesses, driven from this process with httpx.

    python benchmarks/scaling.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
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
from server import docs, free_port, load, pct  # noqa: E402

from rankrelay.testing import wait_until_ready  # noqa: E402

logger = logging.getLogger("benchmarks.scaling")
TARGETS = {"ray_overhead_ms": 10.0, "ray_data_ratio": 0.8}


class Served:
    """``rankrelay serve`` in a subprocess (``--ray`` with ``replicas`` when given), ready when /ready says so."""

    def __init__(self, model: str, replicas: int | None = None) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "rankrelay.cli", "serve", "--no-auth", "--port", str(self.port),
               "--model", f"ce=cross-encoder:{model}?score_cache=off", "--model", "ref=identity"]
        if replicas:
            cmd += ["--ray", "--replicas", str(replicas)]
        env = {**os.environ, "RANKRELAY_SERVICE__REQUEST_TIMEOUT": "3600", "RAY_DEDUP_LOGS": "0"}
        env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        if not wait_until_ready(self.url, 300, self.proc):
            self.stop()
            raise RuntimeError("the service did not become ready")

    def stop(self) -> None:
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
        ray_stop()


def ray_stop() -> None:
    """Stop every Ray process on this machine (what a served subprocess or a batch run started)."""
    subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True, check=False)


def sequential_p50(url: str, model: str, n_docs: int, total: int) -> float:
    with httpx.Client(timeout=300) as http:
        for i in range(5):  # warm: connections, caches
            http.post(f"{url}/v2/rerank", json={"model": model, "query": "warm", "documents": docs(n_docs, i)})
        times = []
        for i in range(total):
            start = time.perf_counter()
            http.post(f"{url}/v2/rerank", json={"model": model, "query": f"wing lift {i}",
                                                "documents": docs(n_docs, 1000 + i)}).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def batch_pairs_per_s(model: str, queries: int, per_query: int, use_ray: bool) -> float:
    """pairs/s of ``run_batch`` (model loading included; Ray itself is started before the clock)."""
    from rankrelay.batch import run_batch
    from rankrelay.distributed import start_ray

    folder = Path(tempfile.mkdtemp(prefix="rankrelay-scaling-"))
    path = folder / "candidates.jsonl"
    with path.open("w") as fh:
        for q in range(queries):
            for k, text in enumerate(docs(per_query, q)):
                fh.write(json.dumps({"query_id": f"q{q}", "query": f"boundary layer flow {q}", "doc_id": f"d{k}",
                                     "text": text}) + "\n")
    spec = f"cross-encoder:{model}?score_cache=off"
    if use_ray:
        start_ray()
    start = time.perf_counter()
    run_batch(path, spec, folder / "out", part_queries=4, use_ray=use_ray, actors=2 if use_ray else None)
    return queries * per_query / (time.perf_counter() - start)


def serve_batch_host() -> type:
    """A ``models`` replica that batches with Ray Serve's ``@serve.batch`` instead of rankrelay's batcher."""
    from ray import serve

    from rankrelay.distributed.serve import ModelHost

    class ServeBatchHost(ModelHost):
        async def rerank(self, name: str, query: str, documents: list, top_n: int | None):  # type: ignore[override]
            await self._start()
            res = await self._batched(name, query, documents)
            return res.top_k(top_n) if top_n else res

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
        async def _batched(self, names: list[str], queries: list[str], documents: list[list]) -> list:
            out: list = [None] * len(names)
            for model in set(names):
                picked = [i for i, n in enumerate(names) if n == model]
                results = await asyncio.to_thread(self.service.rerankers[model].rerank_batch,
                                                  [(queries[i], documents[i]) for i in picked])
                for i, res in zip(picked, results):
                    out[i] = res
            return out

    return ServeBatchHost


def batching_comparison(model: str, console: Console, clients: int, total: int, n_docs: int) -> None:
    """rankrelay's batcher in each replica against Ray Serve's @serve.batch, same app, same load."""
    import ray
    from ray import serve

    from rankrelay.config import Limits, Settings
    from rankrelay.distributed.serve import build_application
    from rankrelay.server.app import AppPlan

    rows = []
    for name, host, batching in (("rankrelay batcher", None, True), ("@serve.batch", serve_batch_host(), False)):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        plan = AppPlan({"ce": f"cross-encoder:{model}?score_cache=off", "ref": "identity"}, [], True,
                       Limits(batching=batching, request_timeout=3600), None, "hybrid", 100, Settings(device="cpu"))
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        extra = {"host": host} if host is not None else {}
        serve.run(build_application(plan, cpus_per_replica=2.0, **extra), name="rankrelay", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        asyncio.run(load(url, "ce", clients, 2 * clients, n_docs))  # warm
        rps, latencies = asyncio.run(load(url, "ce", clients, total, n_docs))
        rows.append((name, rps * n_docs, pct(latencies, 50), pct(latencies, 95)))
        serve.shutdown()
        ray.shutdown()
    table = Table(title=f"batching in the Ray Serve replica: {clients} clients x {n_docs}-document requests "
                        f"({total} requests), 1 replica")
    for col in ("batching", "pairs/s", "p50 ms", "p95 ms"):
        table.add_column(col, justify="right")
    for name, pairs, p50, p95 in rows:
        table.add_row(name, f"{pairs:.0f}", f"{p50:.0f}", f"{p95:.0f}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-queries", type=int, default=48, help="queries of 100 candidates in the batch run")
    parser.add_argument("--model", help="cross-encoder path (default: MiniLM-L6 from bundled weights)")
    parser.add_argument("--requests", type=int, default=48, help="100-document requests per throughput run")
    parser.add_argument("--batching-only", action="store_true", help="only the batcher vs @serve.batch run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = args.model or build_minilm_cross_encoder(Path(tempfile.gettempdir()) / "rankrelay-bench-minilm-ce")
    console = Console(width=150)
    batching_comparison(model, console, clients=16, total=160, n_docs=10)
    if args.batching_only:
        return

    overhead, throughput = {}, {}
    for name, replicas in (("single process", None), ("ray 1 replica", 1), ("ray 2 replicas", 2)):
        served = Served(model, replicas)
        try:
            if replicas in (None, 1):
                overhead[name] = (sequential_p50(served.url, "ref", 10, 200), sequential_p50(served.url, "ce", 10, 60))
            rps, latencies = asyncio.run(load(served.url, "ce", 8, args.requests, 100))
            throughput[name] = (rps * 100, pct(latencies, 50), pct(latencies, 95))
            logger.info("%s: %.0f pairs/s", name, rps * 100)
        finally:
            served.stop()

    table = Table(title="per-request p50 at one client (ms), loopback")
    for col in ("path", "identity, 10 docs", "MiniLM-L6, 10 docs"):
        table.add_column(col, justify="right")
    for name, (ref, ce) in overhead.items():
        table.add_row(name, f"{ref:.1f}", f"{ce:.1f}")
    extra = overhead["ray 1 replica"][0] - overhead["single process"][0]
    extra_ce = overhead["ray 1 replica"][1] - overhead["single process"][1]
    console.print(table)
    console.print(f"Ray Serve adds {extra:.1f} ms (identity) / {extra_ce:.1f} ms (MiniLM-L6) per request at p50 "
                  f"(target <= {TARGETS['ray_overhead_ms']:.0f} ms: "
                  f"{'ok' if max(extra, extra_ce) <= TARGETS['ray_overhead_ms'] else 'MISSED'})")

    table = Table(title=f"8 clients x 100-document requests ({args.requests} requests), MiniLM-L6")
    for col in ("path", "pairs/s", "p50 ms", "p95 ms", "vs single"):
        table.add_column(col, justify="right")
    base = throughput["single process"][0]
    for name, (pairs, p50, p95) in throughput.items():
        table.add_row(name, f"{pairs:.0f}", f"{p50:.0f}", f"{p95:.0f}", f"{pairs / base:.2f}")
    console.print(table)

    here = batch_pairs_per_s(model, args.batch_queries, 100, use_ray=False)
    on_ray = batch_pairs_per_s(model, args.batch_queries, 100, use_ray=True)
    import ray

    ray.shutdown()
    ratio = on_ray / here
    table = Table(title=f"batch reranking, {args.batch_queries} queries x 100 candidates (30 words), MiniLM-L6")
    for col in ("path", "pairs/s", "vs in-process"):
        table.add_column(col, justify="right")
    table.add_row("in-process", f"{here:.0f}", "1.00")
    table.add_row("Ray Data, 2 actors", f"{on_ray:.0f}", f"{ratio:.2f}")
    console.print(table)
    console.print(f"Ray Data / in-process: {ratio:.2f} (target >= {TARGETS['ray_data_ratio']}: "
                  f"{'ok' if ratio >= TARGETS['ray_data_ratio'] else 'MISSED'}); model loading counted on both sides")


if __name__ == "__main__":
    main()
