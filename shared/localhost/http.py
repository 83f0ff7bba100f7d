"""HTTP triggers as one ASGI application (served by uvicorn).

Per request: one route-table match (``routes``), the ``authLevel`` key check (``auth``), the
body read under the size limit, a real ``azure.functions.HttpRequest``, the invocation, and
the returned ``azure.functions.HttpResponse`` (or ``str``) written back. Nothing is compiled
or looked up by function name per request.

Errors are JSON ``{"error": "..."}``: 404 when no function serves the method and path (as in
Azure Functions, a path served only for other methods is 404 too, not 405), 401 for a
missing or wrong key, 413 for a body over the limit (from ``Content-Length`` before reading,
or while reading a body sent without it), 429 over host.json ``maxOutstandingRequests``, and
500 when the function raises (the exception is logged; the host keeps serving).

``GET /admin/host/status`` answers ``{"state": "Running", ...}`` for readiness checks; it
needs no key. ``GET /metrics`` is the Prometheus scrape of the served app's process when
its telemetry exporter is ``prometheus`` (``shared.telemetry``); otherwise a route like
any other.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import azure.functions as func
from starlette.types import Message, Receive, Scope, Send

from shared.errors import PayloadTooLargeError
from shared.localhost.auth import KEY_HEADER, KEY_QUERY_PARAMETER, HostKeys
from shared.localhost.hostjson import HttpOptions
from shared.localhost.invocation import Invoker
from shared.localhost.routes import RouteTable
from shared.telemetry.prometheus import CONTENT_TYPE, METRICS_PATH, scrape
from shared.telemetry.state import TELEMETRY

__all__ = ["STATUS_PATH", "FunctionsAsgiApp", "HttpFunction"]

STATUS_PATH = "/admin/host/status"
"""Path of the host status endpoint (readiness)."""

_JSON = (b"content-type", b"application/json")
_REASON = "This function was programmatically called via the host APIs."
_NO_BODY_STATUSES = frozenset({204, 304}) | frozenset(range(100, 200))
_DROPPED_HEADERS = frozenset({"content-length", "transfer-encoding"})


@dataclass(frozen=True, slots=True)
class HttpFunction:
    """What a route leads to: the function's invoker and its ``authLevel``."""

    name: str
    invoker: Invoker
    auth_level: str

    def __str__(self) -> str:
        return self.name


class _BodyTooLarge(Exception):
    def __init__(self, error: PayloadTooLargeError) -> None:
        self.error = error


class _Disconnected(Exception):
    pass


class FunctionsAsgiApp:
    """ASGI application serving a Function App's HTTP triggers."""

    def __init__(
        self,
        routes: RouteTable[HttpFunction],
        *,
        keys: HostKeys | None = None,
        max_body_bytes: int | None = None,
        options: HttpOptions | None = None,
        status: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        """``status()`` supplies extra fields of the status endpoint's answer."""
        options = options or HttpOptions()
        self.routes = routes
        self._keys = keys or HostKeys()
        self._max_body = max_body_bytes
        self._outstanding_limit = options.max_outstanding_requests
        self._outstanding = 0
        concurrent = options.max_concurrent_requests
        self._concurrency = asyncio.Semaphore(concurrent) if concurrent else None
        self._extra_headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in options.custom_headers.items()
        ]
        self._status = status
        self._started = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1000})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        if path == STATUS_PATH and method in ("GET", "HEAD"):
            await self._send_status(send)
            return
        if path == METRICS_PATH and method == "GET" and TELEMETRY.prometheus is not None:
            await self._send_metrics(send)
            return
        found = self.routes.match(method, path)
        if found is None:
            await self._error(send, 404, f"no function matches {method} {path}")
            return
        route, route_values = found
        target = route.target
        raw = scope["headers"]
        headers = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in raw}
        if len(headers) != len(raw):  # a repeated header: join its values
            headers = _joined_headers(raw)
        query: bytes = scope["query_string"]
        params = _query_params(query) if query else {}
        if self._keys.enforced and not self._keys.allows(
            target.auth_level, headers.get(KEY_HEADER) or params.get(KEY_QUERY_PARAMETER)
        ):
            key = "the master key" if target.auth_level != "function" else "a function key"
            await self._error(
                send,
                401,
                f"function {target.name} requires {key} in the {KEY_HEADER} header "
                f"or the {KEY_QUERY_PARAMETER} query parameter",
            )
            return
        limit = self._outstanding_limit
        if limit is not None and self._outstanding >= limit:
            await self._error(
                send,
                429,
                f"the host has {self._outstanding} outstanding requests; the limit "
                f"(host.json extensions.http.maxOutstandingRequests) is {limit}",
            )
            return
        self._outstanding += 1
        try:
            try:
                body = await self._read_body(receive, headers.get("content-length"))
            except _BodyTooLarge as too_large:
                await self._error(send, 413, str(too_large.error))
                return
            except ValueError as exc:
                await self._error(send, 400, str(exc))
                return
            except _Disconnected:
                return
            request = func.HttpRequest(
                method,
                _url(scope, headers, query),
                headers=headers,
                params=params,
                route_params=route_values,
                body=body,
            )
            invoker = target.invoker
            data: dict[str, Any] = {}
            if invoker.uses_binding_data:
                data.update((key.lower(), value) for key, value in route_values.items())
                data["query"] = params
            trace_parent = headers.get("traceparent", "")
            if self._concurrency is None:
                outcome = await invoker.invoke(
                    request, data, reason=_REASON, trace_parent=trace_parent
                )
            else:
                async with self._concurrency:
                    outcome = await invoker.invoke(
                        request, data, reason=_REASON, trace_parent=trace_parent
                    )
        finally:
            self._outstanding -= 1
        if outcome.error is not None:
            error = outcome.error
            await self._error(
                send, 500, f"function {target.name} raised {type(error).__name__}: {error}"
            )
            return
        await self._respond(send, target.name, outcome.value)

    async def _read_body(self, receive: Receive, content_length: str | None) -> bytes:
        limit = self._max_body
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                raise ValueError(f"Content-Length {content_length!r} is not a number") from None
            if limit is not None and declared > limit:
                raise _BodyTooLarge(PayloadTooLargeError(declared, limit))
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if limit is not None and len(body) > limit:
                raise _BodyTooLarge(PayloadTooLargeError(len(body), limit))
            return body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if limit is not None and size > limit:
                # Without Content-Length the full size is unknown: report what has arrived.
                raise _BodyTooLarge(PayloadTooLargeError(size, limit))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _respond(self, send: Send, name: str, value: Any) -> None:
        if isinstance(value, func.HttpResponse):
            status = value.status_code
            body = value.get_body() or b""
            raw_headers: list[tuple[bytes, bytes]] = []
            has_type = False
            for header, header_value in value.headers.items():
                lower = header.lower()
                if lower in _DROPPED_HEADERS:
                    continue
                has_type = has_type or lower == "content-type"
                try:  # inline rather than _header_bytes: this runs per header per response
                    encoded = header_value.encode("latin-1")
                except UnicodeEncodeError:
                    encoded = header_value.encode("utf-8")
                raw_headers.append((lower.encode("latin-1"), encoded))
            if not has_type:
                mimetype = value.mimetype
                content_type = (
                    f"{mimetype}; charset={value.charset}"
                    if mimetype.startswith("text/")
                    else mimetype
                )
                raw_headers.append((b"content-type", _header_bytes(content_type)))
        elif isinstance(value, str):
            status, body = 200, value.encode("utf-8")
            raw_headers = [(b"content-type", b"text/plain; charset=utf-8")]
        elif value is None:
            status, body, raw_headers = 204, b"", []
        else:
            await self._error(
                send,
                500,
                f"function {name} returned {type(value).__name__}; an HTTP function returns "
                "azure.functions.HttpResponse, str or None",
            )
            return
        if status in _NO_BODY_STATUSES:
            body = b""
        else:
            raw_headers.append((b"content-length", str(len(body)).encode("latin-1")))
        await self._send(send, status, raw_headers, body)

    async def _send(
        self, send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        if self._extra_headers:
            present = {name for name, _ in headers}
            headers.extend(item for item in self._extra_headers if item[0] not in present)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send: Send, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode("utf-8")
        headers = [_JSON, (b"content-length", str(len(body)).encode("latin-1"))]
        await self._send(send, status, headers, body)

    async def _send_metrics(self, send: Send) -> None:
        """The Prometheus scrape (exporter ``prometheus``); needs no key, like status."""
        body = scrape() or b""
        headers = [
            (b"content-type", CONTENT_TYPE.encode("latin-1")),
            (b"content-length", str(len(body)).encode("latin-1")),
        ]
        await self._send(send, 200, headers, body)

    async def _send_status(self, send: Send) -> None:
        document: dict[str, Any] = {
            "state": "Running",
            "processUptime": int((time.monotonic() - self._started) * 1000),
        }
        if self._status is not None:
            document.update(self._status())
        body = json.dumps(document).encode("utf-8")
        headers = [_JSON, (b"content-length", str(len(body)).encode("latin-1"))]
        await self._send(send, 200, headers, body)


def _joined_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        previous = headers.get(name)
        headers[name] = value if previous is None else f"{previous}, {value}"
    return headers


def _query_params(query: bytes) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        previous = params.get(name)
        # Repeated names are joined with ',' as ASP.NET's StringValues prints them.
        params[name] = value if previous is None else f"{previous},{value}"
    return params


def _url(scope: Scope, headers: Mapping[str, str], query: bytes) -> str:
    host = headers.get("host")
    if host is None:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    raw_path: bytes | None = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope["path"]
    url = f"{scope.get('scheme', 'http')}://{host}{path}"
    return f"{url}?{query.decode('latin-1')}" if query else url


def _header_bytes(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
