"""The rerank service (FastAPI + uvicorn): Cohere- and TEI-compatible endpoints with dynamic batching.

Example::

    rankrelay serve --model fast=minilm-l6 --api-key "$KEY" --port 8000
"""
