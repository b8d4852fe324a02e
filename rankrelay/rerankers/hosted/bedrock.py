"""Amazon Bedrock's ``Rerank`` API (Amazon Rerank, Cohere Rerank on Bedrock) through the official ``boto3`` SDK.

``bedrock:<model id or ARN>`` calls the Bedrock Agent Runtime ``Rerank`` operation with the documents inline;
with ``api="invoke"`` a Cohere Rerank model is called through Bedrock Runtime's ``InvokeModel`` in Cohere's own
JSON (where an account or region reaches the model only that way, or a provisioned-throughput ARN is used).
Credentials and region come from the standard AWS chain (environment, ``~/.aws``, an instance role), signed with
SigV4 by botocore; rankrelay never reads or stores them. botocore's own retries are off (one attempt per call):
rankrelay's one retry policy retries throttling (``ThrottlingException``, HTTP 429, a :class:`RateLimitError`),
5xx and timeouts. Bedrock bills a query per 100 documents (a longer list counts as several): ``res.info
["billed_units"]["queries"]``.

Example:
    >>> from rankrelay.rerankers.hosted.bedrock import BedrockReranker, model_arn
    >>> model_arn("amazon.rerank-v1:0", "us-west-2")
    'arn:aws:bedrock:us-west-2::foundation-model/amazon.rerank-v1:0'
    >>> BedrockReranker("cohere.rerank-v3-5:0", region="eu-central-1").name
    'bedrock'
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.errors import (
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadResponseError,
    ConfigError,
)
from rankrelay.rerankers.hosted.api import ApiReranker, Reply, error_for_status

#: documents Bedrock bills as one query (a longer list is several)
DOCUMENTS_PER_QUERY = 100
#: the most documents one Rerank request takes
MAX_DOCUMENTS = 1000
#: how a model is called: the Agent Runtime's Rerank operation, or the Runtime's InvokeModel (Cohere models)
APIS = {"rerank": "bedrock-agent-runtime", "invoke": "bedrock-runtime"}


def _boto3() -> Any:
    return import_optional("boto3", extra="bedrock", feature="the Bedrock backend")


def model_arn(model: str, region: str) -> str:
    """The foundation model's ARN in ``region`` (an ARN is kept as it is)."""
    return model if model.startswith("arn:") else f"arn:aws:bedrock:{region}::foundation-model/{model}"


class BedrockReranker(ApiReranker):
    """Bedrock Agent Runtime ``Rerank`` via ``boto3.client("bedrock-agent-runtime")``.

    Args:
        model: a model id (``amazon.rerank-v1:0``, ``cohere.rerank-v3-5:0``) or a model ARN.
        region: the AWS region (else ``AWS_REGION``, ``AWS_DEFAULT_REGION`` or the AWS config's).
        endpoint_url: another endpoint (a VPC endpoint, a test server).
        additional_fields: ``additionalModelRequestFields`` of the model (Cohere's ``max_tokens_per_doc``); with
            ``api="invoke"``, fields added to Cohere's request body.
        api: ``rerank`` (the Agent Runtime's Rerank operation) or ``invoke`` (``InvokeModel`` of a Cohere Rerank
            model: its id, or an ARN such as a provisioned throughput's).
        **options: see :class:`~rankrelay.rerankers.hosted.api.ApiReranker`; ``chunk_size`` is capped at 1000.
    """

    name = "bedrock"
    relevance = "unit"

    def __init__(self, model: str | None = None, *, region: str | None = None, endpoint_url: str | None = None,
                 additional_fields: dict[str, Any] | None = None, api: str = "rerank", **options: Any) -> None:
        if not model:
            raise ConfigError("bedrock needs a model id or ARN, e.g. 'bedrock:amazon.rerank-v1:0'")
        if api not in APIS:
            raise ConfigError(f"bedrock: api must be one of {', '.join(APIS)}, got {api!r}")
        if api == "invoke" and "cohere.rerank" not in model:
            raise ConfigError(f"bedrock: api='invoke' speaks Cohere Rerank's body (cohere.rerank-*), not {model!r}'s: "
                              "use the Rerank API (api='rerank')")
        self.api = api
        super().__init__(model, **options)
        self.chunk_size = min(self.chunk_size, MAX_DOCUMENTS)
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or \
            _boto3().session.Session().region_name
        if not self.region:
            raise ConfigError("bedrock needs a region: region='us-west-2', or AWS_REGION / AWS_DEFAULT_REGION")
        self.endpoint_url = endpoint_url
        self.additional_fields = dict(additional_fields or {})
        self.arn = model_arn(model, self.region)
        self._boto: Any = None
        self._boto_lock = threading.Lock()

    def _sync_client(self) -> Any:
        """One boto3 client for sync and async calls (its calls are thread-safe; async ones run in a thread);
        no httpx pool is opened: boto3 keeps its own connections."""
        with self._boto_lock:
            if self._boto is None:
                from botocore.config import Config

                config = Config(retries={"total_max_attempts": 1, "mode": "standard"},  # ours are the retries
                                read_timeout=self.policy.timeout, connect_timeout=self.connect_timeout,
                                max_pool_connections=max(10, self.max_concurrency))
                # a session of its own: the credential chain is read when this reranker first calls, not
                # whenever boto3's process-wide default session first did
                self._boto = _boto3().session.Session().client(
                    APIS[self.api], region_name=self.region, endpoint_url=self.endpoint_url, config=config)
            return self._boto

    def _request(self, query: str, texts: list[str]) -> dict[str, Any]:
        model: dict[str, Any] = {"modelArn": self.arn}
        if self.additional_fields:
            model["additionalModelRequestFields"] = self.additional_fields
        return {
            "queries": [{"type": "TEXT", "textQuery": {"text": query}}],
            "sources": [{"type": "INLINE", "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": t}}}
                        for t in texts],
            "rerankingConfiguration": {"type": "BEDROCK_RERANKING_MODEL", "bedrockRerankingConfiguration": {
                "numberOfResults": len(texts), "modelConfiguration": model}},
        }

    def _send(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        """Every page of the answer (``nextToken``) and the number of documents asked about."""
        if self.api == "invoke":
            return [self._invoke(client, query, texts)], len(texts)
        request = self._request(query, texts)
        pages = [client.rerank(**request)]
        while pages[-1].get("nextToken"):
            pages.append(client.rerank(**request, nextToken=pages[-1]["nextToken"]))
        return pages, len(texts)

    def _invoke(self, client: Any, query: str, texts: list[str]) -> dict[str, Any]:
        """``InvokeModel`` with Cohere's body; its ``results`` as a Rerank page (``index``, ``relevanceScore``)."""
        body = {"query": query, "documents": texts, "top_n": len(texts), "api_version": 2, **self.additional_fields}
        reply = client.invoke_model(modelId=self.model, body=json.dumps(body), contentType="application/json",
                                    accept="application/json")
        try:
            data = json.loads(reply["body"].read())
        except ValueError:
            raise BadResponseError(f"{self.name}: malformed reply (not JSON)", backend=self.name) from None
        results = data.get("results") if isinstance(data, dict) else None
        page: dict[str, Any] = {"ResponseMetadata": reply.get("ResponseMetadata", {})}
        if isinstance(results, list) and all(isinstance(r, dict) for r in results):
            page["results"] = [{"index": r.get("index"), "relevanceScore": r.get("relevance_score")} for r in results]
        return page

    async def _asend(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        return await asyncio.to_thread(self._send, client, query, texts, timeout)

    def _reply(self, raw: Any) -> Reply:
        pages, n = raw
        pairs: list[tuple[Any, Any]] = []
        for page in pages:
            results = page.get("results")
            if not isinstance(results, list):
                raise BadResponseError(f"{self.name}: reply has no results list", backend=self.name)
            pairs += [(r.get("index"), r.get("relevanceScore")) for r in results]
        request_id = pages[0].get("ResponseMetadata", {}).get("RequestId")
        return Reply(pairs, request_id, {"queries": math.ceil(n / DOCUMENTS_PER_QUERY)})

    def _error(self, exc: Exception) -> Exception:
        from botocore import exceptions as bx

        if isinstance(exc, bx.ClientError):
            meta = exc.response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode") or 0
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code == "ThrottlingException":
                status = 429
            return error_for_status(self.name, status, {"message": f"{code}: {error.get('Message', '')}"},
                                    meta.get("HTTPHeaders"), meta.get("RequestId"))
        if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
            return AuthenticationError(f"{self.name}: no AWS credentials ({exc}): set AWS_ACCESS_KEY_ID and "
                                       "AWS_SECRET_ACCESS_KEY, a profile, or a role", backend=self.name,
                                       retryable=False)
        if isinstance(exc, bx.ReadTimeoutError):
            return BackendTimeoutError(f"{self.name}: no reply in time ({type(exc).__name__})", backend=self.name)
        if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.ConnectTimeoutError)):
            return BackendUnavailableError(f"{self.name}: {type(exc).__name__}: {exc}", backend=self.name)
        if isinstance(exc, bx.ResponseParserError):
            return BadResponseError(f"{self.name}: malformed reply ({type(exc).__name__})", backend=self.name)
        return super()._error(exc)

    def _aclient(self) -> Any:
        return self._sync_client()

    def close(self) -> None:
        """Close the boto3 client's connections (a later call opens a new client)."""
        with self._boto_lock:
            boto, self._boto = self._boto, None
        if boto is not None:
            boto.close()

    async def aclose(self) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "region": self.region, "endpoint_url": self.endpoint_url, "api": self.api}


def from_spec(model: str | None, **options: Any) -> BedrockReranker:
    """Registry factory: ``bedrock:<model id or ARN>``."""
    return BedrockReranker(model, **options)
