"""Google's Vertex AI Ranking API (Discovery Engine ``rankingConfigs.rank``) through the official
``google-cloud-discoveryengine`` SDK.

``vertex:<model>`` (default ``semantic-ranker-default@latest``) sends the documents as records (``id`` = the
position, ``content`` = the text) to ``projects/<project>/locations/<location>/rankingConfigs/default_ranking_config``
and reads each record's score (0 to 1). Credentials come from Application Default Credentials (google-auth:
``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth application-default login``, the metadata server); rankrelay
never reads or stores them. The SDK's retries are off: rankrelay's one retry policy retries 429, 5xx and timeouts.
The API takes at most 200 records a request; Google bills a query per 100 records: ``res.info["billed_units"]
["queries"]``.

Example:
    >>> from rankrelay.rerankers.hosted.vertex import VertexReranker
    >>> rr = VertexReranker(project="my-project")
    >>> rr.model, rr.ranking_config
    ('semantic-ranker-default@latest', 'projects/my-project/locations/global/rankingConfigs/default_ranking_config')
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from typing import Any

from rankrelay._optional import import_optional
from rankrelay.errors import AuthenticationError, BackendTimeoutError, BackendUnavailableError, ConfigError
from rankrelay.rerankers.hosted.api import ApiReranker, Reply, error_for_status

#: the model used when the spec names none
DEFAULT_MODEL = "semantic-ranker-default@latest"
#: the most records one rank request takes
MAX_RECORDS = 200
#: records Google bills as one query (a longer list is several)
RECORDS_PER_QUERY = 100


def _sdk() -> Any:
    return import_optional("google.cloud.discoveryengine_v1", extra="vertex", feature="the Vertex AI backend",
                           package="google-cloud-discoveryengine")


def _google_message(response: Any, fallback: str) -> dict[str, str]:
    """Google's own words (``error.message`` of the reply), not the SDK's copy prefixed with the URL."""
    try:
        message = response.json()["error"]["message"]
    except Exception:  # not JSON, another shape, no reply at all
        return {"message": fallback}
    return {"message": message if isinstance(message, str) else fallback}


class VertexReranker(ApiReranker):
    """The Vertex AI Ranking API via ``discoveryengine_v1.RankServiceClient`` (REST transport).

    Args:
        model: the ranking model (``semantic-ranker-default@latest``, ``semantic-ranker-fast@latest``, ...).
        project: the Google Cloud project (else ``GOOGLE_CLOUD_PROJECT``, else ``GCLOUD_PROJECT``; none: a
            :class:`ConfigError`, before any call).
        location: where the ranking config lives (``global`` by default).
        endpoint_url: another endpoint (a regional one, a test server); default: Google's.
        ranking_config: the config's id (``default_ranking_config``).
        **options: see :class:`~rankrelay.rerankers.hosted.api.ApiReranker`; ``chunk_size`` is capped at 200.
    """

    name = "vertex"
    relevance = "unit"

    def __init__(self, model: str | None = None, *, project: str | None = None, location: str = "global",
                 endpoint_url: str | None = None, ranking_config: str = "default_ranking_config",
                 **options: Any) -> None:
        super().__init__(model or DEFAULT_MODEL, **options)
        self.chunk_size = min(self.chunk_size, MAX_RECORDS)
        self.project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")
        if not self.project:
            raise ConfigError("vertex needs a Google Cloud project: project='my-project', or GOOGLE_CLOUD_PROJECT")
        self.location, self.endpoint_url = location, endpoint_url
        self.ranking_config = f"projects/{self.project}/locations/{location}/rankingConfigs/{ranking_config}"
        self._sdk_client: Any = None
        self._sdk_lock = threading.Lock()

    def _sync_client(self) -> Any:
        """One SDK client for sync and async calls (async ones run in a thread); no httpx pool is opened."""
        with self._sdk_lock:
            if self._sdk_client is None:
                sdk = _sdk()
                try:  # (an api_endpoint of None is Google's)
                    self._sdk_client = sdk.RankServiceClient(transport="rest",
                                                             client_options={"api_endpoint": self.endpoint_url})
                except Exception as exc:
                    raise self._error(exc) from exc
            return self._sdk_client

    def _aclient(self) -> Any:
        return self._sync_client()

    def _send(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        sdk = _sdk()
        request = sdk.RankRequest(ranking_config=self.ranking_config, model=self.model, query=query,
                                  records=[sdk.RankingRecord(id=str(i), content=t) for i, t in enumerate(texts)],
                                  top_n=len(texts), ignore_record_details_in_response=True)
        return client.rank(request=request, retry=None, timeout=timeout), len(texts)

    async def _asend(self, client: Any, query: str, texts: list[str], timeout: float) -> Any:
        return await asyncio.to_thread(self._send, client, query, texts, timeout)

    def _reply(self, raw: Any) -> Reply:
        response, n = raw
        pairs = [(int(r.id), r.score) for r in response.records]  # (an id that is not a position: unreadable)
        return Reply(pairs, None, {"queries": math.ceil(n / RECORDS_PER_QUERY)})

    def _error(self, exc: Exception) -> Exception:
        import requests
        from google.api_core import exceptions as gx
        from google.auth import exceptions as auth_errors

        if isinstance(exc, gx.GoogleAPICallError) and exc.code is not None:  # (the REST transport keeps the reply)
            return error_for_status(self.name, int(exc.code), _google_message(exc.response, exc.message),
                                    exc.response.headers)  # (Retry-After, where sent)
        if isinstance(exc, auth_errors.DefaultCredentialsError):
            return AuthenticationError(f"{self.name}: no Google credentials ({exc}): set "
                                       "GOOGLE_APPLICATION_CREDENTIALS or run 'gcloud auth application-default "
                                       "login'", backend=self.name)  # (never retried: an AuthenticationError)
        if isinstance(exc, auth_errors.RefreshError):  # (a revoked user's login, a refused token)
            return AuthenticationError(f"{self.name}: the credentials were refused ({exc})", backend=self.name)
        if isinstance(exc, auth_errors.TransportError):  # (the token endpoint out of reach)
            return BackendUnavailableError(f"{self.name}: no token: {exc}", backend=self.name)
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return BackendTimeoutError(f"{self.name}: no reply in time ({type(exc).__name__})", backend=self.name)
        if isinstance(exc, requests.exceptions.RequestException):  # refused, reset, a connect timeout
            return BackendUnavailableError(f"{self.name}: {type(exc).__name__}: {exc}", backend=self.name)
        return exc

    def close(self) -> None:
        """Close the SDK client's connections (a later call opens a new client)."""
        with self._sdk_lock:
            client, self._sdk_client = self._sdk_client, None
        if client is not None:
            client.transport.close()

    async def aclose(self) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "project": self.project, "location": self.location,
                "endpoint_url": self.endpoint_url}


def from_spec(model: str | None, **options: Any) -> VertexReranker:
    """Registry factory: ``vertex:<model>`` (or bare ``vertex``, the default model)."""
    return VertexReranker(model, **options)
