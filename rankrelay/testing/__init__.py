"""Real HTTP servers on 127.0.0.1 that speak the hosted APIs' wire formats, with injected faults.

For offline tests of applications that use rankrelay's API backends (and for rankrelay's own tests and
benchmarks): no mocks, the real SDK or httpx talks to a real socket. :class:`FakeRerankAPI` speaks the
rerank APIs (Cohere, TEI, Infinity, Jina, Voyage, mixedbread, Pinecone, NIM, vLLM); :class:`FakeBedrockAPI`
Amazon Bedrock's Rerank (SigV4 checked); :class:`FakeVertexAPI` Google's Vertex AI Ranking API (its JWT
checked); :class:`FakeChatAPI` speaks
OpenAI's chat completions for the LLM rerankers; :class:`FakeQdrantAPI` is a Qdrant server (its REST
API in front of qdrant-client's embedded engine). ``python -m rankrelay.testing [--chat] [--no-auth]``
serves one from another process.

Example:
    >>> from rankrelay import load_reranker
    >>> from rankrelay.testing import API_KEY, FakeRerankAPI, Fault
    >>> api = FakeRerankAPI().start()
    >>> api.faults = [Fault("status", 503)]
    >>> rr = load_reranker(f"tei:{api.url}", api_key=API_KEY)
    >>> rr.rerank("red apple", ["green pear", "red apple pie"]).indices, api.count()
    ([1, 0], 2)
    >>> api.stop()
"""

from rankrelay.testing.bedrock_api import FakeBedrockAPI
from rankrelay.testing.chat_api import FakeChatAPI
from rankrelay.testing.clock import FakeClock
from rankrelay.testing.qdrant_api import FakeQdrantAPI
from rankrelay.testing.rerank_api import FakeRerankAPI, relevance
from rankrelay.testing.server import API_KEY, FakeServer, Fault, free_port, refused_url, wait_until_ready
from rankrelay.testing.vertex_api import FakeVertexAPI

__all__ = ["API_KEY", "FakeBedrockAPI", "FakeChatAPI", "FakeClock", "FakeQdrantAPI", "FakeRerankAPI", "FakeServer",
           "FakeVertexAPI", "Fault", "free_port", "refused_url", "relevance", "wait_until_ready"]
