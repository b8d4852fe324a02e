"""Every reranker behind one interface: the protocol, the backends and the registry that builds them.

Example:
    >>> from rankrelay.rerankers import load_reranker
    >>> load_reranker("minilm-l6", batch_size=16)
    <CrossEncoderReranker cross-encoder model='cross-encoder/ms-marco-MiniLM-L-6-v2'>
"""

from rankrelay.rerankers.base import BaseReranker, Reranker, Scored
from rankrelay.rerankers.compose.cascade import CascadeReranker
from rankrelay.rerankers.compose.fallback import FallbackReranker
from rankrelay.rerankers.compose.pool import PoolReranker
from rankrelay.rerankers.registry import (
    BackendInfo,
    backends,
    load_chain_item,
    load_reranker,
    load_settings,
    parse_spec,
    register,
    split_options,
    unregister,
)

__all__ = [
    "BackendInfo",
    "BaseReranker",
    "CascadeReranker",
    "FallbackReranker",
    "PoolReranker",
    "Reranker",
    "Scored",
    "backends",
    "load_chain_item",
    "load_reranker",
    "load_settings",
    "parse_spec",
    "register",
    "split_options",
    "unregister",
]
