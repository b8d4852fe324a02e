"""A real HTTP server on 127.0.0.1 that speaks Google's Vertex AI Ranking API, each request's JWT checked.

``POST /v1/projects/<project>/locations/<location>/rankingConfigs/<config>:rank`` (the Discovery Engine SDK's REST
transport, ``api_endpoint`` pointed here): ``query``, ``records`` (``id``, ``content``, ``title``), ``topN``,
``model``; answers ``records`` (``id``, ``score``), best first; more than 200 records is a 400
``INVALID_ARGUMENT``, as Google's is. Every request needs a bearer token this server can check: the JWT that the
SDK (google-auth) signs with the service account's key, which :meth:`FakeVertexAPI.service_account_file` writes
for ``GOOGLE_APPLICATION_CREDENTIALS``; another key's JWT is a 401. Errors are Google's JSON (:func:`google_error`).

Example:
    >>> import os, tempfile
    >>> from rankrelay import load_reranker
    >>> from rankrelay.testing.vertex_api import FakeVertexAPI
    >>> api = FakeVertexAPI().start()
    >>> os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = api.service_account_file(tempfile.mkdtemp())
    >>> rr = load_reranker("vertex", project="demo", endpoint_url=api.url)
    >>> rr.rerank("red apple", ["green pear", "red apple pie"]).indices
    [1, 0]
    >>> api.stop()
    >>> del os.environ["GOOGLE_APPLICATION_CREDENTIALS"]
"""

from __future__ import annotations

import base64
import json
import re
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from rankrelay.testing.rerank_api import relevance
from rankrelay.testing.server import FakeServer, Fault

_RANK = re.compile(r"/v1/projects/[^/]+/locations/[^/]+/rankingConfigs/[^/:]+:rank(\?.*)?")
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
#: the most records one rank request takes
MAX_RECORDS = 200


def google_error(status: int, message: str, headers: dict[str, str | None] | None = None) -> Fault:
    """A fault answered as Google's APIs answer errors: ``{"error": {"code", "message", "status"}}``."""
    return Fault("status", status, headers or {},
                 body={"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}})


def _b64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class FakeVertexAPI(FakeServer):
    """The Ranking API; ``requests`` keep each body, ``faults`` is a FIFO, one per request."""

    def __init__(self, port: int = 0) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        super().__init__(api_key=None, port=port)  # tokens are checked in answer(), after the faults
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._private_pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()).decode()
        self.client_email = "rankrelay-test@demo.iam.gserviceaccount.com"

    # -- credential files ---------------------------------------------------------------------------
    def service_account_file(self, folder: str | Path) -> str:
        """A service account's key file whose key this server knows (the SDK signs its own JWT with it)."""
        path = Path(folder) / "service-account.json"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "demo", "private_key_id": "rankrelay-test-key",
            "private_key": self._private_pem, "client_email": self.client_email, "client_id": "1",
            "token_uri": f"{self.url}/token"}))  # (never called: the SDK's service accounts sign their own JWT)
        return str(path)

    # -- tokens -------------------------------------------------------------------------------------
    def _signed_by_the_service_account(self, token: str) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        parts = token.split(".")
        if len(parts) != 3:
            return False
        try:
            self._key.public_key().verify(_b64(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(),
                                          hashes.SHA256())
            return bool(json.loads(_b64(parts[1])).get("iss") == self.client_email)
        except (InvalidSignature, ValueError):
            return False

    def authorized(self, h: BaseHTTPRequestHandler) -> bool:
        scheme, _, token = (h.headers.get("Authorization") or "").partition(" ")
        return scheme == "Bearer" and self._signed_by_the_service_account(token)

    # -- the Ranking API ----------------------------------------------------------------------------
    def answer(self, h: BaseHTTPRequestHandler, body: Any, fault: Fault | None) -> None:
        if not self.authorized(h):
            return self._error(h, 401, "Request had invalid authentication credentials.")
        if not _RANK.fullmatch(h.path):
            return self._error(h, 404, f"no route {h.path}")
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(body.get("query"), str) or not isinstance(records, list) or not records:
            return self._error(h, 400, "query and records are required")
        if len(records) > MAX_RECORDS:
            return self._error(h, 400, f"at most {MAX_RECORDS} records can be ranked; got {len(records)}")
        scored = [(r.get("id"), relevance(body["query"], r.get("content", "")) / (
            1 + relevance(body["query"], r.get("content", "")))) for r in records]
        scored.sort(key=lambda pair: -pair[1])
        if isinstance(body.get("topN"), int) and body["topN"] > 0:
            scored = scored[:body["topN"]]
        return self.send(h, 200, {"records": [{"id": i, "score": s} for i, s in scored]})

    def _error(self, h: BaseHTTPRequestHandler, status: int, message: str) -> None:
        fault = google_error(status, message)
        return self.send(h, status, fault.body)
