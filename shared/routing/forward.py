"""Forwarding to deployments over one pooled ``httpx.AsyncClient`` per process.

The client is created lazily, on the event loop that first uses it (an ``AsyncClient``
belongs to one loop), with keep-alive pooling, a connect timeout short enough to fail
over quickly and an overall deadline. Only end-to-end headers that matter to scoring are
forwarded; the answer comes back with the deployment's status, body and headers, minus
hop-by-hop ones.

Transport failures are translated once, here: a deployment that cannot be reached (or
drops the connection before answering) raises ``Unreachable`` (the router may fail over:
scoring is idempotent), a deadline ``DeadlineExceededError``, anything else
``UpstreamError``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import httpx

from shared.errors import DeadlineExceededError, UpstreamError

__all__ = ["FORWARDED_REQUEST_HEADERS", "Forwarded", "Forwarder", "Unreachable"]

FORWARDED_REQUEST_HEADERS: Final = frozenset(
    {
        "accept",
        "content-type",
        "inference-header-content-length",
        "x-request-id",
        "x-model",
        "traceparent",
        "tracestate",
    }
)
"""Request headers passed on to the deployment (lower case); nothing else is."""

_DROPPED_RESPONSE_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",  # the body is handed on decoded
        "date",
        "server",
        "upgrade",
        "proxy-authenticate",
        "trailer",
    }
)


class Unreachable(UpstreamError):
    """The deployment could not be reached, or closed the connection without answering."""

    def __init__(self, deployment: str, reason: str) -> None:
        self.deployment = deployment
        super().__init__(f"deployment {deployment!r} could not be reached ({reason})")


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A deployment's answer."""

    deployment: str
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_s: float


class Forwarder:
    """Sends requests to deployments over one pooled HTTP client."""

    def __init__(
        self,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 2.0,
        max_connections: int = 256,
    ) -> None:
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # trust_env=False: proxies from the environment must not capture the hop.
            self._client = httpx.AsyncClient(
                timeout=self._timeout, limits=self._limits, trust_env=False
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the pooled client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(
        self,
        deployment: str,
        url: str,
        *,
        method: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout_s: float | None = None,
    ) -> Forwarded:
        """Send one request to ``url`` (a deployment's), return its answer."""
        sent = {k: v for k, v in headers.items() if k.lower() in FORWARDED_REQUEST_HEADERS}
        timeout = (
            self._timeout
            if timeout_s is None
            else httpx.Timeout(timeout_s, connect=self._timeout.connect)
        )
        start = time.perf_counter()
        try:
            response = await self._http().request(
                method, url, headers=sent, content=body or None, timeout=timeout
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            raise Unreachable(deployment, type(exc).__name__) from exc
        except httpx.TimeoutException as exc:
            raise DeadlineExceededError(
                f"deployment {deployment!r} did not answer within the deadline"
            ) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"deployment {deployment!r} failed ({type(exc).__name__})") from exc
        elapsed = time.perf_counter() - start
        kept = {
            k: v for k, v in response.headers.items() if k.lower() not in _DROPPED_RESPONSE_HEADERS
        }
        return Forwarded(deployment, response.status_code, kept, response.content, elapsed)
