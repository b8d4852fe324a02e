"""Capturing served answers for `rankrelay distill`: off by default, sampled by query, text only when asked, written
by a thread of its own (a stalled writer drops and counts, the request never waits)."""

import json
import logging
import os
import threading

import pytest
from serving import running

pytest.importorskip("fastapi", reason="the server extra is not installed")

from rankrelay import load_reranker  # noqa: E402
from rankrelay.errors import ConfigError  # noqa: E402
from rankrelay.hashing import unit_interval  # noqa: E402
from rankrelay.server.app import create_app  # noqa: E402
from rankrelay.server.capture import Capture, split_captures  # noqa: E402
from rankrelay.training.queries import read_capture  # noqa: E402

KEY = "service-key"
DOCS = ["the wing lift and air flow", "paris is the capital of france", "boundary layer separation on the wing"]
QUERIES = [f"question {i} about wings" for i in range(40)]


def test_a_served_model_captures_a_sampled_share_of_its_queries_through_the_cohere_sdk(tmp_path):
    import cohere

    text, bare = tmp_path / "text.jsonl", tmp_path / "bare.jsonl"
    app = create_app({"ref": {"spec": "identity", "capture": str(text), "sample": 0.5, "store_text": True},
                      "plain": {"spec": "identity", "capture": str(bare)}, "off": "identity"}, api_keys=[KEY])
    with running(app) as (url, _):
        client = cohere.ClientV2(api_key=KEY, base_url=url)
        for q in QUERIES:
            client.rerank(model="ref", query=q, documents=DOCS)
        client.rerank(model="ref", query=QUERIES[0], documents=DOCS, top_n=1)
        client.rerank(model="plain", query="a plain question", documents=[{"text": d} for d in DOCS])
        client.rerank(model="off", query="not kept", documents=DOCS)
    kept = [q for q in QUERIES if unit_interval(f"capture:{q}") < 0.5]
    assert 10 <= len(kept) <= 30  # the share, chosen by the query: its repeats are kept too
    rows = [json.loads(line) for line in text.read_text().splitlines()]
    assert [r["query"] for r in rows] == kept + ([QUERIES[0]] if QUERIES[0] in kept else [])
    expected = load_reranker("identity").rerank(kept[0], DOCS)
    first = rows[0]
    assert first["model"] == "ref" and first["backend"] == "identity" and first["documents"] == DOCS
    assert first["scores"] == [r.score for r in sorted(expected.results, key=lambda r: r.index)]
    assert "top_n" not in first
    if QUERIES[0] in kept:
        assert rows[-1]["top_n"] == 1 and len(rows[-1]["scores"]) == 1
    assert read_capture(text) == {f"capture:{i + 1}": q for i, q in enumerate(kept)}  # distill's input
    (plain,) = [json.loads(line) for line in bare.read_text().splitlines()]
    assert "query" not in plain and "documents" not in plain and len(plain["scores"]) == 3
    assert plain["query_sha256"] == __import__("hashlib").sha256(b"a plain question").hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.jsonl", "text.jsonl"]


def test_capture_options_are_checked_before_anything_loads(tmp_path):
    with pytest.raises(ConfigError, match="sample and store_text need capture"):
        create_app({"ref": {"spec": "identity", "sample": 0.1}}, api_keys=[KEY])
    for bad in (0, 1.5, True, "half"):
        with pytest.raises(ConfigError, match=r"service.models.ref.sample must be in \(0, 1\]"):
            split_captures({"ref": {"spec": "identity", "capture": "c.jsonl", "sample": bad}})
    plain, options = split_captures({"ref": {"spec": "identity", "capture": "c.jsonl"}, "chain": ["identity"]})
    assert plain == {"ref": {"spec": "identity"}, "chain": ["identity"]}
    assert options == {"ref": {"path": "c.jsonl", "sample": 1.0, "store_text": False}}
    with pytest.raises(ConfigError, match=r"service.models.ref.sample must be in \(0, 1\], got 0"):
        Capture("ref", tmp_path / "c.jsonl", sample=0)


def test_a_stalled_writer_drops_and_counts_while_requests_go_on(tmp_path, caplog):
    """The capture file is a pipe nobody reads yet: the writer thread blocks opening it; offers queue up to the
    limit, then are dropped and counted; once read, what was queued is written."""
    caplog.set_level(logging.WARNING, logger="rankrelay.server.capture")
    pipe = tmp_path / "capture.pipe"
    os.mkfifo(pipe)
    capture = Capture("ref", pipe, sample=1.0, store_text=True, max_queue=3)
    answer = load_reranker("identity").rerank("wings", DOCS)
    kept = [capture.offer(f"q{i}", answer) for i in range(5)]  # returns at once: the writer is stuck
    assert kept == [True, True, True, False, False]
    assert capture.stats() == {"kept": 3, "written": 0, "dropped": 2}
    assert "capture of ref is behind: 1 answers dropped so far" in caplog.text
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(open(pipe, encoding="utf-8").read().splitlines()))
    reader.start()
    capture.close()
    reader.join(5)
    assert [json.loads(line)["query"] for line in lines] == ["q0", "q1", "q2"]
    assert capture.stats() == {"kept": 3, "written": 3, "dropped": 2}


def test_a_full_disk_drops_and_counts_lines_and_says_why(caplog):
    """/dev/full takes no byte (ENOSPC): each line is counted dropped, with a warning; requests are not touched."""
    caplog.set_level(logging.WARNING, logger="rankrelay.server.capture")
    capture = Capture("ref", "/dev/full", sample=1.0)
    answer = load_reranker("identity").rerank("wings", DOCS)
    assert [capture.offer(f"q{i}", answer) for i in range(3)] == [True, True, True]
    capture.close()
    assert capture.stats() == {"kept": 3, "written": 0, "dropped": 3}
    assert "capture of ref could not write /dev/full" in caplog.text and "No space left" in caplog.text
