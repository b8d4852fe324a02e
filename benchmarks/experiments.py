"""Online experiments in the service, measured from a second process on loopback.

1. Overhead: p50 latency of an experiment (team-draft over a bi-encoder and ``identity``) beyond the slower of
   its two arms served alone, one client, sequential requests of 20 documents (target: <= 5 ms).
2. Soak: 200 concurrent clients send 10,000 requests to an experiment and feedback for each answer; the store
   must hold exactly 10,000 impressions and 10,000 feedback rows, with no error answered, and the server's
   memory must stay flat (+-10 % between the first 1,000 requests and the end).

The service runs from a config file (``rankrelay serve --config``) with the store in SQLite (WAL).

    python benchmarks/experiments.py [--requests 300] [--soak-requests 10000] [--clients 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from rankrelay.experiments.store import SQLiteStore
from rankrelay.testing import free_port, wait_until_ready

DOCS = [f"document {i} about boundary layer flow over a wing at angle of attack {i}" for i in range(20)]


def start(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    return serve_config(folder, f"""
device = "cpu"
[service]
allow_unauthenticated = true
experiment_store = "{folder / 'exp.db'}"
[service.models]
bi = "bi-encoder:all-minilm-l6"
first = "identity"
shuffled = "random"
[service.experiments.ab]
arms = ["bi", "first"]
[service.experiments.cheap]
arms = ["first", "shuffled"]
""")


def serve_config(folder: Path, config_text: str) -> tuple[subprocess.Popen[bytes], str]:
    """``rankrelay serve --config`` on ``config_text`` in a process of its own (its log in ``server.log``); the
    process and its root URL once it is ready."""
    config = folder / "service.toml"
    config.write_text(config_text)
    port = free_port()
    with (folder / "server.log").open("ab") as log:  # the server writes to its own copy of the handle
        proc = subprocess.Popen([sys.executable, "-m", "rankrelay.cli", "serve", "--config", str(config), "--port",
                                 str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if not wait_until_ready(url, 180, proc):
        raise RuntimeError(f"the service did not become ready (see {folder / 'server.log'})")
    return proc, url


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def p50_ms(url: str, model: str, n: int) -> float:
    times = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(n + 20):
            start = time.perf_counter()
            http.post("/v2/rerank", json={"model": model, "query": f"{model} wing lift {i}", "documents": DOCS})\
                .raise_for_status()
            if i >= 20:  # the first 20 warm up; each row's queries are its own (no score-cache hits)
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def soak(url: str, total: int, clients: int, pid: int) -> dict[str, float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    errors: list[str] = []
    rss: dict[str, float] = {}
    done = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal done
        while not queue.empty():
            i = queue.get_nowait()
            try:
                answer = await http.post("/v2/rerank", json={"model": "cheap", "query": f"q {i}",
                                                             "documents": DOCS[:8]})
                if answer.status_code != 200:
                    errors.append(f"rerank {answer.status_code}: {answer.text[:80]}")
                    continue
                fb = await http.post("/v1/feedback", json={"id": answer.json()["id"], "clicked": [i % 8]})
                if fb.status_code != 200:
                    errors.append(f"feedback {fb.status_code}: {fb.text[:80]}")
            except httpx.TransportError as exc:  # counted, not fatal: the table says how many and the first
                errors.append(f"{type(exc).__name__}: {exc} (request {i})")
                continue
            done += 1
            if done == 1000:
                rss["first_1000"] = rss_mb(pid)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    rss["end"] = rss_mb(pid)
    return {"errors": len(errors), "first_error": errors[0] if errors else "", "seconds": elapsed, **rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per overhead row")
    parser.add_argument("--soak-requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=200)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start(Path(tmp))
        try:
            p50 = {m: p50_ms(url, m, args.requests) for m in ("bi", "first", "ab")}
            soaked = asyncio.run(soak(url, args.soak_requests, args.clients, proc.pid))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            tail = (Path(tmp) / "server.log").read_text(errors="replace").splitlines()[-15:]
            print("server log (last lines):", *tail, sep="\n  ", file=sys.stderr)
        counts = SQLiteStore(str(Path(tmp) / "exp.db")).counts()
    table = Table(title=f"experiment overhead: p50 of {args.requests} sequential requests (20 documents)")
    for column in ("served", "p50 ms"):
        table.add_column(column)
    for model, value in p50.items():
        table.add_row({"bi": "bi-encoder alone", "first": "identity alone", "ab": "experiment (team-draft of both)"}
                      [model], f"{value:.2f}")
    console.print(table)
    overhead = p50["ab"] - max(p50["bi"], p50["first"])
    growth = soaked["end"] / soaked["first_1000"] - 1
    kept = counts["impressions"] - args.requests - 20  # the overhead rows' experiment requests were kept too
    summary = Table(title=f"soak: {args.soak_requests:,} requests + feedback from {args.clients} clients "
                          f"({soaked['seconds']:.0f} s)")
    for column in ("target", "measured", "holds"):
        summary.add_column(column)
    rows = [("overhead beyond the slower arm <= 5 ms p50", f"{overhead:.2f} ms", overhead <= 5),
            ("impressions stored = requests sent", f"{kept:,} / {args.soak_requests:,}", kept == args.soak_requests),
            ("feedback stored = requests sent", f"{counts['feedback']:,}", counts["feedback"] == args.soak_requests),
            ("no error answered", f"{soaked['errors']:.0f} {soaked['first_error']}", soaked["errors"] == 0),
            ("memory flat (+-10 %)", f"{soaked['first_1000']:.0f} -> {soaked['end']:.0f} MB", abs(growth) <= 0.10)]
    for target, measured, holds in rows:
        summary.add_row(target, measured, "yes" if holds else "NO")
    console.print(summary)


if __name__ == "__main__":
    main()
