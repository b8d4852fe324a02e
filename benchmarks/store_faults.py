"""The stateful parts of the service under faults and at size, measured on a real served process.

1. Report at size: ``GET /v1/experiments/{name}`` on a store of ``--impressions`` impressions (30 % with feedback):
   p50 of 20 sequential calls, the server's RSS growth over them, and 8 concurrent calls (targets: <= 200 ms p50,
   <= +20 MB, 8 concurrent <= 1 s total). The old path (every kept impression loaded and analysed) is timed
   in-process on the same store for comparison.
2. PostgreSQL restarted under load: 4 clients send experiment requests and feedback for ``--seconds`` seconds;
   the database is stopped for ``--down`` seconds in the middle. Counted: 500s (target 0), impressions answered
   ``recorded`` or ``buffered`` that are not in the store afterwards (target 0), and how long after the database
   came back feedback was accepted again (target <= 5 s). Needs Debian's PostgreSQL (``make postgres``).
3. Slow clients: 200 connections that never finish their headers, against the default header deadline (10 s):
   how long until the server closed all of them, and a normal client's p50 meanwhile.

    python benchmarks/store_faults.py [--impressions 300000] [--seconds 40] [--down 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from experiments import rss_mb, serve_config
from rich.console import Console
from rich.table import Table

from rankrelay.experiments.store import Impression, SQLiteStore
from rankrelay.experiments.totals import summary, totals_of

DOCS = [f"document number {i} about wings and lift" for i in range(8)]


def summarise(name: str, arms: list[str], method: str, impressions: list[Impression]) -> dict[str, object]:
    """The report the way it was made before running totals: every impression read and counted."""
    return summary(name, arms, method, totals_of((i.method, len(i.arms), i.teams, i.excluded, i.clicked)
                                                 for i in impressions))


def serve(folder: Path, store: str, **service: object) -> tuple[subprocess.Popen[bytes], str]:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in service.items())
    return serve_config(folder, f"""
device = "cpu"
[service]
allow_unauthenticated = true
experiment_store = "{store}"
{extra}[service.models]
first = "identity"
shuffled = "random"
[service.experiments.ab]
arms = ["first", "shuffled"]
""")


def fill(path: Path, n: int) -> float:
    """``n`` impressions of ``ab`` (30 % with feedback) written in bulk; the store builds its totals at open."""
    start = time.perf_counter()
    SQLiteStore(str(path)).close()  # the schema
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM experiment_totals")
        now = time.time() - n
        rows, feedback = [], []
        for i in range(n):
            teams = [(i + k) % 2 for k in range(8)]
            rows.append((f"imp-{i}", "ab", "team-draft", '["first", "shuffled"]', json.dumps(teams), 0, now + i))
            if i % 10 < 3:
                feedback.append((f"imp-{i}", json.dumps([i % 8]), None, None, now + i))
        db.executemany("INSERT INTO impressions (id, experiment, method, arms, teams, excluded, created) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO feedback VALUES (?, ?, ?, ?, ?)", feedback)
    SQLiteStore(str(path)).close()  # rebuilds the totals of a store written without them
    return time.perf_counter() - start


def report_at_size(folder: Path, n: int) -> dict[str, float]:
    path = folder / "big.db"
    filled = fill(path, n)
    store = SQLiteStore(str(path))
    summarise("ab", ["first", "shuffled"], "team-draft", [])  # scipy imported before the clock starts
    t0 = time.perf_counter()
    old = summarise("ab", ["first", "shuffled"], "team-draft", store.impressions("ab"))
    old_s = time.perf_counter() - t0
    store.close()
    proc, url = serve(folder, str(path), experiment_max_impressions=n * 2)
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            http.get("/v1/experiments/ab").raise_for_status()
            before = rss_mb(proc.pid)
            times = []
            for _ in range(20):
                t0 = time.perf_counter()
                body = http.get("/v1/experiments/ab").json()
                times.append(time.perf_counter() - t0)
            after = rss_mb(proc.pid)
        assert body["impressions"] == old["impressions"] and body["preferences"] == old["preferences"]

        async def concurrent() -> float:
            async with httpx.AsyncClient(base_url=url, timeout=120) as client:
                t0 = time.perf_counter()
                await asyncio.gather(*(client.get("/v1/experiments/ab") for _ in range(8)))
                return time.perf_counter() - t0

        eight = asyncio.run(concurrent())
    finally:
        proc.terminate()
        proc.wait(30)
    return {"fill_s": filled, "old_s": old_s, "p50_ms": statistics.median(times) * 1000,
            "rss_growth_mb": after - before, "eight_s": eight}


def postgres_restart(folder: Path, seconds: float, down: float) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import PostgresServer  # the tests' throwaway cluster, which can be stopped and started

    server = PostgresServer()
    try:
        where = server.database("bench")
        proc, url = serve(folder, where)
        answers: list[tuple[int, str, str]] = []
        statuses: list[int] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/v2/rerank", json={"model": "ab", "query": "lift", "documents": DOCS})
                    answers.append((r.status_code, r.json().get("id", ""), r.headers.get("X-Impression-Recorded", "")))
                    if r.status_code == 200:
                        statuses.append(http.post("/v1/feedback", json={"id": r.json()["id"], "clicked": [0]})
                                        .status_code)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep((seconds - down) / 2)
        server.stop()
        time.sleep(down)
        server.start()
        back = time.monotonic()
        recovered = None
        with httpx.Client(base_url=url, timeout=30) as http:
            while recovered is None and time.monotonic() - back < 60:
                r = http.post("/v2/rerank", json={"model": "ab", "query": "q", "documents": DOCS})
                if http.post("/v1/feedback", json={"id": r.json()["id"], "clicked": [1]}).status_code == 200:
                    recovered = time.monotonic() - back
                else:
                    time.sleep(0.1)
        time.sleep(max(0.0, (seconds - down) / 2 - (time.monotonic() - back)))
        stop.set()
        for t in threads:
            t.join(60)
        proc.terminate()
        proc.wait(30)
        import psycopg

        with psycopg.connect(where) as conn:
            kept = {row[0] for row in conn.execute("SELECT id FROM impressions")}
        acknowledged = [i for s, i, rec in answers if s == 200 and rec in ("recorded", "buffered")]
        return {"requests": len(answers), "feedback": len(statuses),
                "errors_500": sum(s == 500 for s, _, _ in answers) + statuses.count(500),
                "buffered": sum(rec == "buffered" for _, _, rec in answers),
                "lost": sum(rec == "lost" for _, _, rec in answers),
                "acknowledged_missing": sum(i not in kept for i in acknowledged),
                "feedback_503": statuses.count(503),
                "recovered_s": recovered if recovered is not None else float("nan")}
    finally:
        server.close()


def slowloris(folder: Path, connections: int) -> dict[str, float]:
    proc, url = serve(folder, str(folder / "slow.db"))
    try:
        port = int(url.rsplit(":", 1)[1])
        socks = []
        t0 = time.monotonic()
        for _ in range(connections):
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            s.sendall(b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(s)
        times = []
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(50):
                t1 = time.perf_counter()
                http.post("/v2/rerank", json={"model": "first", "query": "q", "documents": DOCS}).raise_for_status()
                times.append(time.perf_counter() - t1)
        for s in socks:
            while s.recv(65536):
                pass
        closed = time.monotonic() - t0
        for s in socks:
            s.close()
    finally:
        proc.terminate()
        proc.wait(30)
    return {"connections": connections, "all_closed_s": closed, "p50_meanwhile_ms": statistics.median(times) * 1000}


def pairs(title: str, values: dict[str, float]) -> Table:
    table = Table(title=title)
    table.add_column("measured")
    table.add_column("value", justify="right")
    for name, value in values.items():
        table.add_row(name, f"{value:.2f}" if isinstance(value, float) else str(value))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--impressions", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--down", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--skip", nargs="*", default=[], choices=["report", "postgres", "slowloris"])
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix=f"store-faults-{uuid.uuid4().hex[:6]}-") as tmp:
        folder = Path(tmp)
        if "report" not in args.skip:
            r = report_at_size(folder, args.impressions)
            table = Table(title=f"report at {args.impressions:,} impressions (SQLite)")
            for column in ("store filled", "old path (load all)", "p50 per report", "RSS growth (20 calls)",
                           "8 concurrent"):
                table.add_column(column)
            table.add_row(f"{r['fill_s']:.1f} s", f"{r['old_s'] * 1000:.0f} ms", f"{r['p50_ms']:.1f} ms",
                          f"{r['rss_growth_mb']:+.1f} MB", f"{r['eight_s'] * 1000:.0f} ms")
            console.print(table)
        if "postgres" not in args.skip:
            p = postgres_restart(folder, args.seconds, args.down)
            console.print(pairs(f"PostgreSQL stopped for {args.down:g} s of {args.seconds:g} s, 4 clients", p))
        if "slowloris" not in args.skip:
            s = slowloris(folder, args.connections)
            console.print(pairs("slow clients (header deadline 10 s)", s))


if __name__ == "__main__":
    main()
