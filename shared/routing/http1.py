"""A pooled HTTP/1.1 client for the router's hop: asyncio protocols + httptools' parser.

The hop is the router's whole cost beyond its own HTTP server: measured on one core,
httpx spent ~550 us of CPU per forwarded request (its pool scans every connection, and
asks each socket whether it is readable, per request), aiohttp ~63 us, and this client
~17 us, the parsing done by ``httptools`` (the C parser uvicorn serves with). It does
only what the hop needs: ``http://`` and ``https://`` URLs (TLS verified with the
system's CAs, as the Azure hop to a container app needs), a body sent with ``Content-Length``, the
answer read whole (``Content-Length`` or chunked), keep-alive connections reused most
recently used first, at most ``max_connections`` open at once. A request's deadline
(``timeout_s``) is one loop timer on its connection while a free slot and a pooled
connection are at hand (as they are under steady load), ``asyncio.timeout`` otherwise.

A kept-alive connection that the deployment closes (its idle timeout) leaves the pool
when its ``connection_lost`` fires; if one closes in the instant between being taken
from the pool and answering, with nothing received yet, the request is sent once more
on a new connection (what the hop sends is idempotent: scoring, metadata).

Failures are raised as ``ConnectFailed`` (no connection), ``ConnectionDropped`` (closed
before a whole answer) and ``MalformedAnswer`` (not HTTP); a deadline passed as
``TimeoutError`` (the connection is closed). ``shared.routing.forward`` maps them to
``shared.errors``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, cast
from urllib.parse import quote, urlsplit

import httptools

__all__ = [
    "ConnectFailed",
    "ConnectionDropped",
    "HttpAnswer",
    "Http1Client",
    "MalformedAnswer",
]

_URL_CACHE: Final = 1024
_PATH_SAFE: Final = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE: Final = _PATH_SAFE + "?"


class ConnectFailed(Exception):
    """No connection could be made (refused, unreachable, connect timeout)."""


class ConnectionDropped(Exception):
    """The connection closed before a whole answer arrived."""


class MalformedAnswer(Exception):
    """The peer answered something that is not HTTP/1.1."""


@dataclass(slots=True)  # not frozen: one per request, and a frozen __init__ costs 4x
class HttpAnswer:
    """Status, headers (names in lower case, repeated ones joined with ``, ``), body."""

    status: int
    headers: dict[str, str]
    body: bytes


Key = tuple[str, int, bool]
"""(host, port, TLS): connections are pooled per key."""


@dataclass(frozen=True, slots=True)
class _Target:
    key: Key
    head: bytes  # request line minus the method, and the Host header


@lru_cache(maxsize=_URL_CACHE)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"only http:// and https:// URLs are forwarded; got {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    # Percent-encode what may not travel raw (spaces, non-ASCII); existing escapes stay.
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path = f"{path}?{quote(parts.query, safe=_QUERY_SAFE)}"
    host = parts.netloc.rpartition("@")[2]
    head = f" {path} HTTP/1.1\r\nhost: {host}\r\n".encode("latin-1")
    return _Target((parts.hostname, port, tls), head)


def _headers(raw: list[list[bytes]]) -> dict[str, str]:
    headers = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in raw}
    if len(headers) == len(raw):
        return headers
    headers = {}  # a repeated header: its values joined, in order
    for n, v in raw:
        name, value = n.decode("latin-1").lower(), v.decode("latin-1")
        previous = headers.get(name)
        headers[name] = value if previous is None else f"{previous}, {value}"
    return headers


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, pool: Http1Client, key: Key) -> None:
        self._pool = pool
        self._key = key
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[HttpAnswer] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._raw: list[list[bytes]] = []
        self._body: list[bytes] = []
        self.received = False
        self.closed = False

    # ------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(MalformedAnswer(f"the answer is not valid HTTP/1.1 ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool._forget(self._key, self)
        self._fail(ConnectionDropped("the connection closed before a whole answer arrived"))

    # ------------------------------------------------------------- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        # A long header may come in pieces; a piece without a name continues the last.
        if name:
            self._raw.append([name, value])
        else:
            self._raw[-1][1] += value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        self._cancel_deadline()
        answer = HttpAnswer(
            self._parser.get_status_code(), _headers(self._raw), b"".join(self._body)
        )
        keep = self._parser.should_keep_alive()
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)
        if not keep:
            self.close()

    # ------------------------------------------------------------- use
    def send(self, request: bytes, deadline: float | None = None) -> asyncio.Future[HttpAnswer]:
        """Write ``request``; the future completes with the answer, or ``TimeoutError``
        (the connection closed) when the loop's clock reaches ``deadline``."""
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        if deadline is not None:
            self._deadline = loop.call_at(deadline, self._expire)
        self._raw = []
        self._body = []
        self.received = False
        self._transport.write(request)
        return waiter

    def close(self) -> None:
        """Close the connection (it will not be reused)."""
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        self._waiter = None
        self._cancel_deadline()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _expire(self) -> None:
        self._deadline = None
        self._fail(TimeoutError("the deadline passed before a whole answer arrived"))
        self.close()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class Http1Client:
    """Keep-alive connections per host and port; at most ``max_connections`` open.

    ``ssl_context`` verifies ``https://`` peers (default: the system's CAs).
    """

    def __init__(
        self, *, max_connections: int = 256, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._ssl = ssl_context
        self._idle: dict[Key, list[_Connection]] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._open: set[_Connection] = set()

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes,
        connect_timeout_s: float,
        timeout_s: float | None = None,
    ) -> HttpAnswer:
        """Send one request and return the whole answer; ``TimeoutError`` when it takes
        more than ``timeout_s`` (None: no deadline; a caller may also cancel: a cancelled
        request closes its connection)."""
        target = _target(url)
        lines = [method.encode("ascii"), target.head]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} holds a line break; it is not forwarded")
            line = f"{name}: {value}\r\n"
            try:
                lines.append(line.encode("latin-1"))
            except UnicodeEncodeError:  # as the local host writes such values
                lines.append(line.encode("utf-8"))
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(b"content-length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        lines.append(body)
        request = b"".join(lines)
        if timeout_s is None:
            return await self._exchange(target.key, request, connect_timeout_s, None)
        deadline = asyncio.get_running_loop().time() + timeout_s
        if self._slots.locked() or not self._idle.get(target.key):
            # Waiting for a slot or a new connection: the deadline covers the wait too.
            async with asyncio.timeout_at(deadline):
                return await self._exchange(target.key, request, connect_timeout_s, None)
        return await self._exchange(target.key, request, connect_timeout_s, deadline)

    async def _exchange(
        self, key: Key, request: bytes, connect_timeout_s: float, deadline: float | None
    ) -> HttpAnswer:
        """``request`` on a pooled (or new) connection; ``deadline``: the loop time at
        which the answer is given up (None: the caller bounds the time)."""
        async with self._slots:
            for attempt in range(2):
                connection, reused = await self._connection(key, connect_timeout_s)
                try:
                    answer = await connection.send(request, deadline)
                except ConnectionDropped:
                    # A pooled connection the peer closed just now: once more on a new one.
                    if reused and attempt == 0 and not connection.received:
                        continue
                    raise
                except BaseException:
                    connection.close()  # cancelled or failed mid-request: not reusable
                    raise
                if not connection.closed:
                    self._idle.setdefault(key, []).append(connection)
                return answer
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connection(self, key: Key, connect_timeout_s: float) -> tuple[_Connection, bool]:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection, True
        loop = asyncio.get_running_loop()
        host, port, tls = key
        context: ssl.SSLContext | None = None
        if tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(connect_timeout_s):  # the TLS handshake included
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, key),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if tls else None,
                )
        except TimeoutError as exc:
            raise ConnectFailed(f"connect timeout after {connect_timeout_s:g}s") from exc
        except OSError as exc:
            raise ConnectFailed(exc.strerror or str(exc) or type(exc).__name__) from exc
        self._open.add(connection)
        return connection, False

    def _forget(self, key: Key, connection: _Connection) -> None:
        self._open.discard(connection)
        idle = self._idle.get(key)
        if idle and connection in idle:
            idle.remove(connection)

    async def aclose(self) -> None:
        """Close every connection."""
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports call connection_lost
