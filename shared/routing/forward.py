"""Forwarding to deployments over one pooled HTTP/1.1 client per process.

The client (``shared.routing.http1``) is created lazily, on the event loop that first
uses it (its connections belong to one loop), with keep-alive pooling, a connect timeout
short enough to fail over quickly and an overall deadline. Only end-to-end headers that
matter to scoring are forwarded, plus the hop's own ``Authorization`` (a token of the
router's identity from ``shared.auth.hop_tokens``, never the caller's); the answer comes
back with the deployment's status, body and headers, minus hop-by-hop ones.

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

from shared.auth.hop_tokens import HopTokens
from shared.errors import DeadlineExceededError, UpstreamError
from shared.routing.http1 import ConnectFailed, ConnectionDropped, Http1Client, MalformedAnswer
from shared.telemetry.state import TELEMETRY
from shared.telemetry.tracing import inject

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


@dataclass(slots=True)  # not frozen: one per request, and a frozen __init__ costs 4x
class Forwarded:
    """A deployment's answer (header names in lower case). Not changed once made."""

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
        hop_tokens: HopTokens | None = None,
    ) -> None:
        """``hop_tokens``: the router's own token, sent as ``Authorization`` on every
        request (hop authentication); None sends none."""
        self.hop_tokens = hop_tokens
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._max_connections = max_connections
        self._client: Http1Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> Http1Client:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = Http1Client(max_connections=self._max_connections)
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
        """Send one request to ``url`` (a deployment's), return its answer; ``headers``
        have lower-case names (as ``RoutedRequest`` holds them).

        The caller's ``Authorization`` is never forwarded; the hop carries the router's
        own token when ``hop_tokens`` is set (``UpstreamError`` if none can be had).
        """
        sent = {k: v for k, v in headers.items() if k in FORWARDED_REQUEST_HEADERS}
        if self.hop_tokens is not None:
            sent["authorization"] = await self.hop_tokens.authorization()
        if TELEMETRY.tracing:  # the current span's traceparent (shared.telemetry)
            inject(sent)
        start = time.perf_counter()
        try:
            answer = await self._http().request(
                method,
                url,
                headers=sent,
                body=body,
                connect_timeout_s=self._connect_timeout_s,
                timeout_s=self._timeout_s if timeout_s is None else timeout_s,
            )
        except ConnectFailed as exc:
            raise Unreachable(deployment, str(exc)) from exc
        except ConnectionDropped as exc:
            raise Unreachable(deployment, str(exc)) from exc
        except TimeoutError as exc:
            raise DeadlineExceededError(
                f"deployment {deployment!r} did not answer within the deadline"
            ) from exc
        except MalformedAnswer as exc:
            raise UpstreamError(f"deployment {deployment!r} failed ({exc})") from exc
        except OSError as exc:  # a write failing on a reset connection
            raise Unreachable(deployment, exc.strerror or type(exc).__name__) from exc
        kept = {k: v for k, v in answer.headers.items() if k not in _DROPPED_RESPONSE_HEADERS}
        return Forwarded(deployment, answer.status, kept, answer.body, time.perf_counter() - start)
