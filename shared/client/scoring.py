"""``ScoringClient``: score through an endpoint's router URL, with Entra tokens or a key.

    client = ScoringClient("https://<router>/api/endpoints/fraud",
                           DefaultAzureCredential(), scope="api://scorefn-fraud/.default")
    client.score({"input_data": {"columns": [...], "data": [[...]]}}).body["predictions"]

Any azure-identity ``TokenCredential`` works (``get_token(scope)`` is called per request;
azure-identity caches tokens itself). Error answers are translated once, here, into the
``shared.errors`` class their status stands for (401 ``AuthenticationError``, 403
``PermissionDeniedError``, 404 ``NotFoundError``, 429 ``OverloadedError``, ...), with the
server's message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import orjson
from azure.core.credentials import TokenCredential

from shared.errors import (
    AuthenticationError,
    DeadlineExceededError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    PermissionDeniedError,
    RequestError,
    ScorefnError,
    UpstreamError,
)

__all__ = ["Scored", "ScoringClient"]


@dataclass(frozen=True, slots=True)
class Scored:
    """An answer: the JSON body, the deployment that produced it, the request id."""

    body: Any
    deployment: str | None
    request_id: str | None


class ScoringClient:
    """A client of one endpoint (``endpoint_url`` ends in ``/api/endpoints/<name>``).

    Pass ``credential`` and ``scope`` for Entra auth, or ``key`` for key auth, or neither
    for an endpoint with auth mode ``none``.
    """

    def __init__(
        self,
        endpoint_url: str,
        credential: TokenCredential | None = None,
        *,
        key: str | None = None,
        scope: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        if credential is not None and key is not None:
            raise ValueError("pass a credential or a key, not both")
        if credential is not None and not scope:
            raise ValueError("a credential needs scope, e.g. 'api://scorefn-fraud/.default'")
        self.endpoint_url = endpoint_url.rstrip("/")
        self._credential = credential
        self._key = key
        self._scope = scope
        self._http = httpx.Client(timeout=timeout_s, trust_env=False)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> ScoringClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _headers(self, deployment: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._credential is not None:
            assert self._scope is not None
            headers["Authorization"] = f"Bearer {self._credential.get_token(self._scope).token}"
        elif self._key is not None:
            headers["Authorization"] = f"Bearer {self._key}"
        if deployment:
            headers["x-deployment"] = deployment
        return headers

    def _post(self, path: str, payload: Any, deployment: str | None, **params: str) -> Scored:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        try:
            response = self._http.post(
                f"{self.endpoint_url}/{path}",
                content=body,
                headers=self._headers(deployment),
                params=params or None,
            )
        except httpx.TimeoutException as exc:
            raise DeadlineExceededError(f"{self.endpoint_url} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"{self.endpoint_url} could not be reached ({type(exc).__name__})"
            ) from exc
        if response.status_code >= 400:
            raise _error(response)
        try:
            parsed = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"{self.endpoint_url} answered with a non-JSON body") from exc
        return Scored(
            parsed, response.headers.get("x-deployment"), response.headers.get("x-request-id")
        )

    def score(
        self, data: Mapping[str, Any] | bytes, *, model: str | None = None,
        deployment: str | None = None,
    ) -> Scored:  # fmt: skip
        """POST ``/score`` with an Azure ML / TF-Serving payload; ``model`` is
        ``name[:version]``; ``deployment`` pins one."""
        params = {"model": model} if model else {}
        return self._post("score", data, deployment, **params)

    def infer(
        self,
        model: str,
        inputs: Sequence[Mapping[str, Any]],
        *,
        version: str | None = None,
        outputs: Sequence[str] = (),
        deployment: str | None = None,
    ) -> Scored:
        """POST ``/v2/models/{model}[/versions/{version}]/infer`` with JSON tensors."""
        path = f"v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        payload: dict[str, Any] = {"inputs": [dict(i) for i in inputs]}
        if outputs:
            payload["outputs"] = [{"name": name} for name in outputs]
        return self._post(path, payload, deployment)


_BY_STATUS: dict[int, type[ScorefnError]] = {
    400: RequestError,
    404: NotFoundError,
    413: RequestError,
    502: UpstreamError,
    503: NotReadyError,
    504: DeadlineExceededError,
}


def _error(response: httpx.Response) -> ScorefnError:
    try:
        message = str(orjson.loads(response.content)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = response.text[:200] or f"HTTP {response.status_code}"
    status = response.status_code
    if status == 401:
        return AuthenticationError(message)
    if status == 403:
        return PermissionDeniedError(message)
    if status == 429:
        return OverloadedError(message, float(response.headers.get("retry-after", "1") or 1))
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls(message)
    return ScorefnError(f"HTTP {status}: {message}")
