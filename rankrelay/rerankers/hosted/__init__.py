"""Hosted rerank APIs: Cohere through its SDK, the Cohere-shaped HTTP APIs (TEI, Jina, Voyage, ...) over httpx,
the shared client machinery (:mod:`.api`) and the one retry policy (:mod:`.retry`).
"""
