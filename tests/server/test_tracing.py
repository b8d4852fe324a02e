"""Request ids on every answer and log line; OpenTelemetry spans from the request down to each backend attempt."""

import logging
import subprocess
import sys

import httpx
import pytest
from serving import running

from rankrelay.server.app import create_app
from rankrelay.testing import refused_url
from rankrelay.tracing import RequestIdFilter

KEY = "trace-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DOCS = ["lift and drag", "stall angle", "flaps down"]
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def served(tiny_ce_path):
    app = create_app({"chain": [f"tei:{refused_url()}", "identity"], "tiny": f"cross-encoder:{tiny_ce_path}"},
                     api_keys=[KEY])
    with running(app) as (url, _):
        yield url


def test_a_request_continues_the_callers_trace_down_to_each_attempt_of_a_chain(served, spans):
    spans.clear()
    headers = {**AUTH, "traceparent": f"00-{PARENT_TRACE}-00f067aa0ba902b7-01"}
    res = httpx.post(f"{served}/v2/rerank", headers=headers, json={"model": "chain", "query": "q", "documents": DOCS})
    assert res.status_code == 200
    by_name = {}
    for s in spans.get_finished_spans():
        by_name.setdefault(s.name, []).append(s)
    (request,) = by_name["rankrelay.request"]
    assert format(request.context.trace_id, "032x") == PARENT_TRACE  # W3C trace context taken from the request
    assert request.attributes["rankrelay.request_id"] == res.headers["x-request-id"]
    (rerank,) = by_name["rankrelay.rerank"]
    assert rerank.attributes["rankrelay.model"] == "chain" and rerank.attributes["rankrelay.served_by"] == "identity"
    parents = {s.context.span_id: s.parent.span_id if s.parent else None for s in spans.get_finished_spans()}

    def ancestors(s):
        up, found = parents.get(s.context.span_id), []
        while up is not None:
            found.append(up)
            up = parents.get(up)
        return found

    assert request.context.span_id in ancestors(rerank)  # (FastAPI's own span may sit between them)
    attempts = {s.attributes["rankrelay.backend"]: s for s in by_name["rankrelay.backend"]}
    assert len(attempts) == 2 and "identity" in attempts  # the API's attempt, then the local one
    failed = next(s for name, s in attempts.items() if name.startswith("tei"))
    assert not failed.status.is_ok and attempts["identity"].status.is_ok
    assert all(s.parent.span_id == rerank.context.span_id for s in attempts.values())  # each attempt under it


def test_a_batched_local_model_reports_its_queue_and_model_time(served, spans):
    spans.clear()
    assert httpx.post(f"{served}/v2/rerank", headers=AUTH,
                      json={"model": "tiny", "query": "q", "documents": DOCS}).status_code == 200
    (batch,) = [s for s in spans.get_finished_spans() if s.name == "rankrelay.batch"]
    assert batch.attributes["rankrelay.documents"] == 3
    assert batch.attributes["rankrelay.model_ms"] > 0 and batch.attributes["rankrelay.queue_ms"] >= 0


def test_the_request_id_is_echoed_made_when_missing_or_unsafe_and_on_every_answer(served):
    given = httpx.get(f"{served}/health", headers={"X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = httpx.get(f"{served}/health")
    assert len(made.headers["x-request-id"]) == 32
    for unsafe in ("a b", "x" * 129, "id\u00e9"):
        answer = httpx.get(f"{served}/health", headers={"X-Request-Id": unsafe.encode("utf-8")})
        assert answer.headers["x-request-id"] != unsafe and len(answer.headers["x-request-id"]) == 32
    refused = httpx.post(f"{served}/v2/rerank", headers={"X-Request-Id": "r-401"}, json={})
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "r-401"


def test_log_lines_carry_the_request_id(tmp_path, caplog):
    app = create_app({"down": f"tei:{refused_url()}"}, api_keys=[KEY])
    caplog.handler.addFilter(RequestIdFilter())
    with running(app) as (url, _), caplog.at_level(logging.WARNING):
        res = httpx.post(f"{url}/v2/rerank", headers={**AUTH, "X-Request-Id": "failing-1"},
                         json={"query": "q", "documents": DOCS})
    assert res.status_code == 503
    failed = [r for r in caplog.records if r.name == "rankrelay.server.routes"]
    assert failed and all(r.request_id == "failing-1" for r in failed)


def test_without_opentelemetry_the_library_imports_none_of_it_and_answers_the_same():
    """The library's own paths (the service needs FastAPI, which itself requires opentelemetry-api)."""
    script = """
import sys
sys.modules["opentelemetry"] = None  # as if the extra were not installed
from rankrelay import load_reranker
from rankrelay.tracing import tracer
chain = load_reranker(["identity", "random"])
res = chain.rerank("q", ["a", "b", "c"])
assert [r.index for r in res] == [0, 1, 2] and tracer() is None
loaded = [m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v is not None]
assert loaded == [], loaded
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_a_failing_span_records_the_error_type_but_never_its_message(spans):
    from rankrelay.tracing import span

    spans.clear()
    with pytest.raises(ValueError), span("rankrelay.example"):
        raise ValueError("the provider echoed the query: my secret medical question")
    (finished,) = spans.get_finished_spans()
    assert finished.status.status_code.name == "ERROR" and finished.status.description == "ValueError"
    assert [dict(e.attributes) for e in finished.events] == [{"exception.type": "ValueError"}]
    assert "medical" not in str([e.attributes for e in finished.events]) + str(finished.attributes)


def test_span_attributes_leave_out_what_is_unknown(spans):
    from rankrelay.tracing import set_attributes, span

    spans.clear()
    with span("rankrelay.example", documents=3, model=None) as current:
        set_attributes(current, served_by="identity", impression=None)
    (finished,) = spans.get_finished_spans()
    assert dict(finished.attributes) == {"rankrelay.documents": 3, "rankrelay.served_by": "identity"}


def test_the_tracer_is_rankrelays_at_its_installed_version_and_looked_up_once(spans, monkeypatch):
    """A span carries rankrelay's name and release as its instrumentation scope; whether OpenTelemetry is there is
    checked on the first call only (a span costs a function call, not an import lookup)."""
    import importlib.util
    from importlib.metadata import version

    from rankrelay import tracing

    monkeypatch.setattr(tracing, "_tracer", None)
    monkeypatch.setattr(tracing, "_checked", False)
    lookups = []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: lookups.append(name) or real(name, *a))
    first = tracing.tracer()
    assert tracing.tracer() is first and tracing.tracer() is first
    assert lookups == ["opentelemetry"]
    spans.clear()
    with tracing.span("rankrelay.example"):
        pass
    (finished,) = spans.get_finished_spans()
    scope = finished.instrumentation_scope
    assert (scope.name, scope.version) == ("rankrelay", version("rankrelay"))
