"""What every framework adapter shares: how the reranker is given, the extra named when a framework is
missing, and the keys a reranked document gains."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from rankrelay import MissingDependencyError, UnknownBackendError, load_reranker
from rankrelay.integrations.common import RERANK_KEYS, rerank_metadata, scored
from rankrelay.rerankers.compose.fallback import FallbackReranker
from rankrelay.scoring import sigmoid


@pytest.mark.parametrize("module, framework, extra", [("langchain", "langchain_core", "langchain"),
                                                      ("llamaindex", "llama_index.core", "llamaindex"),
                                                      ("haystack", "haystack", "haystack")])
def test_a_missing_framework_names_the_extra(monkeypatch, module, framework, extra):
    monkeypatch.setitem(sys.modules, framework, None)
    monkeypatch.delitem(sys.modules, f"rankrelay.integrations.{module}", raising=False)
    with pytest.raises(MissingDependencyError, match=rf"rankrelay\[{extra}\]"):
        importlib.import_module(f"rankrelay.integrations.{module}")


def test_the_reranker_as_spec_dict_chain_or_object(tiny_ce):  # what every adapter's `reranker` takes
    assert load_reranker("identity").name == "identity"
    assert load_reranker({"spec": "random:3", "normalize": "minmax"}).normalize == "minmax"
    chain = load_reranker(["tei:http://127.0.0.1:9", "identity"])
    assert isinstance(chain, FallbackReranker) and [r.name for r in chain.backends] == ["tei", "identity"]
    assert load_reranker(tiny_ce) is tiny_ce
    with pytest.raises(UnknownBackendError, match="nosuch"):
        load_reranker("nosuch:model")


def test_the_keys_a_document_gains_are_json(tiny_ce):
    result = tiny_ce.rerank("wing stall", ["the wing stalls", "paris"])
    for ranked, score in scored(result):
        meta = rerank_metadata(ranked, result, score)
        assert meta["relevance_score"] == pytest.approx(sigmoid(ranked.score))  # a cross-encoder's activation
        assert tuple(meta) == RERANK_KEYS and json.loads(json.dumps(meta)) == meta
        assert meta["rerank_rank"] == ranked.rank and meta["rerank_backend"] == "cross-encoder"
