"""A real HTTP server on 127.0.0.1 that speaks Amazon Bedrock Agent Runtime's ``Rerank`` operation, SigV4 checked.

``POST /rerank`` (boto3's ``bedrock-agent-runtime`` client, ``endpoint_url`` pointed here): the query as
``queries[0].textQuery.text``, the documents as inline text sources, the model's ARN and ``numberOfResults`` in
``rerankingConfiguration``; answers ``results`` (``index``, ``relevanceScore``), best first, a page of
``page_size`` at a time with a ``nextToken`` when set. ``POST /model/<model id>/invoke`` (``bedrock-runtime``'s
``InvokeModel``) answers a Cohere Rerank model in Cohere's own JSON, as Cohere on Bedrock does. Each request's
SigV4 signature is computed again from the bytes sent with the server's credentials: a wrong secret or a changed
body is a 403 ``InvalidSignatureException``.
Errors carry ``x-amzn-ErrorType`` as Bedrock's do (:func:`throttling` is the 429 a busy model answers).

Example:
    >>> import os
    >>> from rankrelay import load_reranker
    >>> from rankrelay.testing.bedrock_api import AWS_KEY_ID, AWS_SECRET, FakeBedrockAPI
    >>> api = FakeBedrockAPI().start()
    >>> os.environ.update(AWS_ACCESS_KEY_ID=AWS_KEY_ID, AWS_SECRET_ACCESS_KEY=AWS_SECRET)
    >>> rr = load_reranker("bedrock:amazon.rerank-v1:0", region="us-west-2", endpoint_url=api.url)
    >>> rr.rerank("red apple", ["green pear", "red apple pie"]).indices
    [1, 0]
    >>> api.stop()
    >>> for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    ...     del os.environ[name]
"""

from __future__ import annotations

import re
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

from rankrelay.testing.rerank_api import relevance
from rankrelay.testing.server import FakeServer, Fault

AWS_KEY_ID = "AKIDRANKRELAYTEST"
AWS_SECRET = "rankrelay-test-secret-0123456789"
_INVOKE = re.compile(r"/model/([^/]+)/invoke")
_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                   r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})")


def throttling() -> Fault:
    """The 429 Bedrock answers a caller over its quota."""
    return Fault("status", 429, {"x-amzn-ErrorType": "ThrottlingException"},
                 body={"message": "Too many requests, please wait before trying again."})


class FakeBedrockAPI(FakeServer):
    """Bedrock Agent Runtime ``Rerank``; ``requests`` keep each body, ``faults`` is a FIFO, one per request."""

    def __init__(self, key_id: str = AWS_KEY_ID, secret: str = AWS_SECRET, page_size: int | None = None,
                 port: int = 0) -> None:
        super().__init__(api_key=None, port=port)  # the signature is checked in answer(), after the faults
        self.key_id, self.secret, self.page_size = key_id, secret, page_size
        self.invoked: list[str] = []  # the model of each InvokeModel call

    def signed(self, h: BaseHTTPRequestHandler) -> str | None:
        """Why the request's SigV4 signature is not this server's (None: it is)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        found = _AUTH.fullmatch(h.headers.get("Authorization", ""))
        if found is None:
            return "Missing Authentication Token"
        key_id, _, region, service, names, signature = found.groups()
        if key_id != self.key_id:
            return "The security token included in the request is invalid."
        request = AWSRequest(method=h.command, url=f"http://{h.headers['Host']}{h.path}",
                             data=getattr(h, "raw_body", b""),
                             headers={n: h.headers.get(n, "") for n in names.split(";")})
        request.context["timestamp"] = h.headers.get("X-Amz-Date", "")
        signer = SigV4Auth(Credentials(self.key_id, self.secret), service, region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        return None if expected == signature else "The request signature we calculated does not match"

    def answer(self, h: BaseHTTPRequestHandler, body: Any, fault: Fault | None) -> None:
        wrong = self.signed(h)
        if wrong is not None:
            return self.send(h, 403, {"message": wrong}, {"x-amzn-ErrorType": "InvalidSignatureException"})
        invoked = _INVOKE.fullmatch(h.path)
        if invoked is not None:
            return self.invoke(h, unquote(invoked.group(1)), body)
        if h.path != "/rerank":
            return self.send(h, 404, {"message": f"no route {h.path}"}, {"x-amzn-ErrorType": "UnknownOperation"})
        try:
            query = body["queries"][0]["textQuery"]["text"]
            texts = [s["inlineDocumentSource"]["textDocument"]["text"] for s in body["sources"]]
            config = body["rerankingConfiguration"]["bedrockRerankingConfiguration"]
            wanted = config["numberOfResults"]
            assert config["modelConfiguration"]["modelArn"].startswith("arn:aws:bedrock:")
        except (KeyError, IndexError, TypeError, AssertionError):
            return self.send(h, 400, {"message": "1 validation error detected"},
                             {"x-amzn-ErrorType": "ValidationException"})
        ranked = sorted(range(len(texts)), key=lambda i: -relevance(query, texts[i]))[:wanted]
        rows = [{"index": i, "relevanceScore": relevance(query, texts[i]) / (1 + relevance(query, texts[i]))}
                for i in ranked]
        start = int(str(body.get("nextToken", "p:0")).removeprefix("p:"))
        size = self.page_size or len(rows)
        page: dict[str, Any] = {"results": rows[start:start + size]}
        if start + size < len(rows):
            page["nextToken"] = f"p:{start + size}"
        return self.send(h, 200, page, {"x-amzn-RequestId": str(uuid.uuid4())})

    def invoke(self, h: BaseHTTPRequestHandler, model: str, body: Any) -> None:
        """Bedrock Runtime's ``InvokeModel`` of a Cohere Rerank model: Cohere's own JSON (``query``, ``documents``,
        ``top_n``, ``api_version``) in, Cohere's ``results`` (``index``, ``relevance_score``) out."""
        self.invoked.append(model)
        try:
            query, texts = body["query"], body["documents"]
            wanted = body.get("top_n", len(texts))
            assert body.get("api_version") == 2 and model.split("/")[-1].startswith("cohere.rerank")
            assert isinstance(query, str) and all(isinstance(t, str) for t in texts)
        except (KeyError, TypeError, AssertionError):
            return self.send(h, 400, {"message": "Malformed input request, please reformat your input and try again."},
                             {"x-amzn-ErrorType": "ValidationException"})
        ranked = sorted(range(len(texts)), key=lambda i: -relevance(query, texts[i]))[:wanted]
        rows = [{"index": i, "relevance_score": relevance(query, texts[i]) / (1 + relevance(query, texts[i]))}
                for i in ranked]
        return self.send(h, 200, {"id": str(uuid.uuid4()), "results": rows},
                         {"x-amzn-RequestId": str(uuid.uuid4())})
