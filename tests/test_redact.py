"""Secrets are redacted wherever a spec is shown (#25)."""

import pytest

from rankrelay.redact import redact_spec, remember, scrub


@pytest.mark.parametrize(("spec", "shown"), [
    ("cohere-http:m@http://h:1?api_key=sk-1&timeout=5", "cohere-http:m@http://h:1?api_key=***&timeout=5"),
    ("tei:http://h:1?timeout=5&API_KEY=abc", "tei:http://h:1?timeout=5&API_KEY=***"),
    ("tei:http://user:pass@h:1", "tei:http://***@h:1"),
    ("llm:qwen@http://h:1/v1", "llm:qwen@http://h:1/v1"),
    ("cascade:identity>tei:http://h?token=t1@30", "cascade:identity>tei:http://h?token=***@30"),
    (["identity", {"spec": "jina:m", "api_key": "k2", "timeout": 3}],
     ["identity", {"spec": "jina:m", "api_key": "***", "timeout": 3}]),
])
def test_a_spec_is_shown_with_its_key_redacted(spec, shown):
    assert redact_spec(spec) == shown


def test_a_remembered_key_is_scrubbed_from_any_text_and_a_dummy_one_is_not():
    remember("sk-remembered-0123456789")
    remember("x")
    assert scrub("401 for sk-remembered-0123456789, x marks") == "401 for ***, x marks"
