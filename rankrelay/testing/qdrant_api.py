"""A Qdrant server on 127.0.0.1: Qdrant's REST wire format in front of qdrant-client's own embedded engine.

What rankrelay's Qdrant retriever calls in server mode (collections, points upsert, scroll, grouped query)
goes over a real socket through the official client; requests are parsed with the client's own REST models
and answered in Qdrant's envelope (``{"result": ..., "status": "ok", "time": ...}``), errors as Qdrant
writes them (``{"status": {"error": ...}}``). The key goes in the ``api-key`` header; the data lives in
memory for as long as the server does, so a collection outlives the clients that built it.

Example:
    >>> from qdrant_client import QdrantClient
    >>> from rankrelay.testing import API_KEY
    >>> from rankrelay.testing.qdrant_api import FakeQdrantAPI
    >>> api = FakeQdrantAPI().start()
    >>> client = QdrantClient(url=api.url, api_key=API_KEY, https=False)
    >>> client.collection_exists("rankrelay")
    False
    >>> client.close(); api.stop()
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

from rankrelay._optional import import_optional
from rankrelay.testing.server import API_KEY, FakeServer, Fault

_COLLECTION = re.compile(r"^/collections/(?P<name>[^/]+)(?P<rest>/.*)?$")


class FakeQdrantAPI(FakeServer):
    """Start with :meth:`start`; ``faults`` is a FIFO consumed one per request, as for the rerank APIs."""

    methods = ("GET", "POST", "PUT", "PATCH", "DELETE")

    def __init__(self, api_key: str | None = API_KEY) -> None:
        super().__init__(api_key)
        qdrant_client = import_optional("qdrant_client", extra="qdrant", feature="the fake Qdrant server",
                                        package="qdrant-client")
        self.models = qdrant_client.http.models
        self.engine = qdrant_client.QdrantClient(":memory:")
        self._engine_lock = threading.Lock()  # the embedded engine is not made for concurrent writers

    def authorized(self, h: BaseHTTPRequestHandler) -> bool:
        return h.headers.get("api-key") == self.api_key

    def _handle(self, h: BaseHTTPRequestHandler, body: Any, fault: Fault | None) -> None:
        if self.api_key is not None and not self.authorized(h):  # Qdrant's own words and envelope
            return self.send(h, 401, {"status": {"error": "Must provide an API key or an Authorization bearer "
                                                          "token"}, "time": 0.0})
        super()._handle(h, body, fault)

    def answer(self, h: BaseHTTPRequestHandler, body: Any, fault: Fault | None) -> None:
        path = urlsplit(h.path).path
        try:
            with self._engine_lock:
                result = self._route(h.command, path, body)
        except LookupError as exc:
            return self.send(h, 404, {"status": {"error": f"Not found: {exc}"}, "time": 0.0})
        except ValueError as exc:  # pydantic's ValidationError is one
            return self.send(h, 400, {"status": {"error": f"Format error in JSON body: {exc}"}, "time": 0.0})
        if path == "/":
            return self.send(h, 200, result)
        return self.send(h, 200, {"result": _json(result), "status": "ok", "time": 0.0001})

    def _route(self, method: str, path: str, body: Any) -> Any:
        m, engine = self.models, self.engine
        if (method, path) == ("GET", "/"):
            return {"title": "qdrant - vector search engine", "version": version("qdrant-client"), "commit": None}
        if (method, path) == ("GET", "/collections"):
            return m.CollectionsResponse(collections=[m.CollectionDescription(name=c.name)
                                                      for c in engine.get_collections().collections])
        match = _COLLECTION.match(path)
        if match is None:
            raise LookupError(f"no route {method} {path}")
        name, rest = match["name"], match["rest"] or ""
        if (method, rest) == ("GET", "/exists"):
            return m.CollectionExistence(exists=engine.collection_exists(name))
        if (method, rest) == ("PUT", ""):
            req = m.CreateCollection.model_validate(body)
            return engine.create_collection(name, vectors_config=req.vectors, metadata=req.metadata)
        if not engine.collection_exists(name):
            raise LookupError(f"Collection `{name}` doesn't exist!")
        if (method, rest) == ("GET", ""):
            return engine.get_collection(name)
        if (method, rest) == ("DELETE", ""):
            return engine.delete_collection(name)
        if (method, rest) == ("PATCH", ""):
            return engine.update_collection(name, metadata=m.UpdateCollection.model_validate(body).metadata)
        if (method, rest) == ("PUT", "/points"):
            return engine.upsert(name, points=m.PointsList.model_validate(body).points)
        if (method, rest) == ("POST", "/points/scroll"):
            scroll = m.ScrollRequest.model_validate(body)
            points, offset = engine.scroll(name, scroll_filter=scroll.filter, limit=scroll.limit or 10,
                                           offset=scroll.offset, with_payload=scroll.with_payload,
                                           with_vectors=scroll.with_vector or False)
            return m.ScrollResult(points=points, next_page_offset=offset)
        if (method, rest) == ("POST", "/points/query/groups"):
            q = m.QueryGroupsRequest.model_validate(body)
            return engine.query_points_groups(name, group_by=q.group_by, query=q.query, using=q.using,
                                              query_filter=q.filter, limit=q.limit or 10,
                                              group_size=q.group_size or 3, with_payload=q.with_payload,
                                              with_vectors=q.with_vector or False)
        raise LookupError(f"no route {method} {path}")


def _json(value: Any) -> Any:
    """A REST model (or a plain value) as Qdrant writes it in JSON."""
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if dump is not None else value
