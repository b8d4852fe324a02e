"""LLM rerankers' client overhead against a local OpenAI-compatible server (a second process).

Per chat call, rankrelay against a bare ``openai`` SDK call carrying the same messages to the same
server (SDK retries off in both), interleaved one of each; p50/p95 ms and the ratio of medians
(target: <= 1.2). Three shapes:

1. listwise, 20 candidates (window 20: one call per rerank);
2. listwise, 100 candidates (window 20, step 10: 9 calls per rerank; compared per call);
3. pointwise, one document (one logprobs call per rerank).

    python benchmarks/llm_rerankers.py [--calls 200]
"""

from __future__ import annotations

import argparse
import logging
import statistics

import openai
from api_backends import ServerProcess, pct, timed_ms
from rich.console import Console
from rich.table import Table

from rankrelay import Document, load_reranker
from rankrelay.testing import API_KEY

QUERY = "boundary layer separation at the trailing edge"
DOCS = [f"document {i} about the boundary layer and flow number {i} " + "filler " * (i % 13) for i in range(100)]


def compare(name: str, bare, ours, calls: int, per_rerank: int) -> list[tuple[str, float, float, float]]:
    for fn in (bare, ours):  # warm connections
        fn()
    bare_ms, ours_ms = [], []
    for _ in range(calls):
        bare_ms += timed_ms(bare, per_rerank)
        ours_ms += [t / per_rerank for t in timed_ms(ours, 1)]
    ratio = statistics.median(ours_ms) / statistics.median(bare_ms)
    return [(f"{name}: bare SDK call", statistics.median(bare_ms), pct(bare_ms, 95), 1.0),
            (f"{name}: rankrelay, per call", statistics.median(ours_ms), pct(ours_ms, 95), ratio)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="reranks per shape (interleaved with bare calls)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with ServerProcess("--chat") as server:
        base = server.url + "/v1"
        sdk = openai.OpenAI(api_key=API_KEY, base_url=base, max_retries=0)
        listwise = load_reranker(f"llm:bench@{base}", api_key=API_KEY)
        pointwise = load_reranker(f"llm-pointwise:bench@{base}", api_key=API_KEY)
        # the messages rankrelay sends, so that both sides carry the same bytes
        plan = listwise._plan(QUERY, [Document(d) for d in DOCS[:20]])
        window = listwise._window(QUERY, plan.texts, 30.0)
        judge = pointwise._judge_request("logprobs", QUERY, DOCS[0], 30.0)

        def bare(request=window):
            sdk.chat.completions.create(**{k: v for k, v in request.items() if k != "timeout"})

        rows += compare("listwise, 20 docs", bare, lambda: listwise.rerank(QUERY, DOCS[:20]), args.calls, 1)
        rows += compare("listwise, 100 docs", bare, lambda: listwise.rerank(QUERY, DOCS), max(1, args.calls // 9), 9)
        rows += compare("pointwise, 1 doc", lambda: bare(judge), lambda: pointwise.rerank(QUERY, DOCS[:1]),
                        args.calls, 1)
        sdk.close()
        listwise.close()
        pointwise.close()
    table = Table(title="LLM rerankers: client overhead per chat call (local fake, second process)")
    for column in ("path", "p50 ms", "p95 ms", "p50 / bare SDK"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for name, p50, p95, ratio in rows:
        table.add_row(name, f"{p50:.2f}", f"{p95:.2f}", f"{ratio:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
