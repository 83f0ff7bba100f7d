"""The router's HTTP/1.1 client against real servers on 127.0.0.1 (asyncio servers that
answer exactly the bytes each test needs: keep-alive, chunked, close, garbage, silence)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.localhost.ports import free_ports
from shared.routing.http1 import ConnectFailed, ConnectionDropped, Http1Client, MalformedAnswer

Reply = Callable[[bytes, int], Awaitable[bytes | None]]
"""(request bytes, connection number) -> the answer to write, or None to close."""


class RawServer:
    """Reads one request head (+ Content-Length body) at a time, answers with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self, tls: ssl.SSLContext | None = None) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = await self.reply(request, number)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + extra
        + b"content-length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


@pytest.fixture
async def client() -> AsyncIterator[Http1Client]:
    c = Http1Client(max_connections=4)
    yield c
    await c.aclose()


async def _request(client: Http1Client, url: str, body: bytes = b"{}") -> tuple[int, dict[str, str], bytes]:
    answer = await client.request(
        "POST", url + "/api/score?x=1", headers={"content-type": "application/json"},
        body=body, connect_timeout_s=2,
    )  # fmt: skip
    return answer.status, answer.headers, answer.body


async def test_keep_alive_reuses_one_connection_and_sends_what_was_asked(
    client: Http1Client,
) -> None:
    async def reply(request: bytes, n: int) -> bytes:
        return ok(extra=b"set-cookie: a=1\r\nset-cookie: b=2\r\nX-Deployment: blue\r\n")

    server = await RawServer(reply).start()
    for _ in range(3):
        status, headers, body = await _request(client, server.url, b'{"data":[[1]]}')
        assert (status, body) == (200, b'{"ok":true}')
        assert headers["set-cookie"] == "a=1, b=2"  # repeated headers joined, names lower
        assert headers["x-deployment"] == "blue"
    assert server.connections == 1
    port = server.url.rsplit(":", 1)[1]
    assert server.requests[0] == (
        b"POST /api/score?x=1 HTTP/1.1\r\nhost: 127.0.0.1:" + port.encode()
        + b"\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n"
        + b'{"data":[[1]]}'
    )  # fmt: skip
    await server.stop()


async def test_a_chunked_answer_is_read_whole(client: Http1Client) -> None:
    async def reply(request: bytes, n: int) -> bytes:
        return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"

    server = await RawServer(reply).start()
    status, headers, body = await _request(client, server.url)
    assert (status, body, headers["transfer-encoding"]) == (200, b"abcde", "chunked")
    await server.stop()


async def test_connection_close_and_idle_closes_are_not_reused(client: Http1Client) -> None:
    async def reply(request: bytes, n: int) -> bytes:
        return ok(extra=b"connection: close\r\n")

    server = await RawServer(reply).start()
    for _ in range(3):
        assert (await _request(client, server.url))[0] == 200
    assert server.connections == 3  # a new connection each time, no failure
    await server.stop()


async def test_a_pooled_connection_closed_by_the_peer_is_retried_once_on_a_new_one(
    client: Http1Client,
) -> None:
    async def reply(request: bytes, n: int) -> bytes | None:
        # The first connection answers once, then closes on the next request without
        # answering (as a server whose keep-alive timeout fired at that instant).
        if n == 1 and len(server.requests) > 1:
            return None
        return ok()

    server = await RawServer(reply).start()
    assert (await _request(client, server.url))[0] == 200
    assert (await _request(client, server.url))[0] == 200
    assert server.connections == 2
    await server.stop()


async def test_a_peer_that_closes_without_answering_is_connection_dropped(
    client: Http1Client,
) -> None:
    async def reply(request: bytes, n: int) -> None:
        return None

    server = await RawServer(reply).start()
    with pytest.raises(ConnectionDropped, match="closed before a whole answer arrived"):
        await _request(client, server.url)
    await server.stop()


async def test_garbage_is_a_malformed_answer(client: Http1Client) -> None:
    async def reply(request: bytes, n: int) -> bytes:
        return b"SSH-2.0-OpenSSH_9.6\r\n\r\n"

    server = await RawServer(reply).start()
    with pytest.raises(MalformedAnswer) as caught:
        await _request(client, server.url)
    assert str(caught.value).startswith("the answer is not valid HTTP/1.1 (")
    await server.stop()


async def test_refused_connections_and_bad_urls(client: Http1Client) -> None:
    (port,) = free_ports(1)
    with pytest.raises(ConnectFailed) as refused:
        await _request(client, f"http://127.0.0.1:{port}")
    # asyncio's own loop and uvloop word the OS error differently.
    assert str(refused.value) in (
        "Connection refused", f"Connect call failed ('127.0.0.1', {port})"
    )  # fmt: skip
    with pytest.raises(ValueError) as bad:
        await _request(client, "ftp://x")
    assert str(bad.value) == "only http:// and https:// URLs are forwarded; got 'ftp://x/api/score?x=1'"


async def test_a_deadline_closes_the_connection(client: Http1Client) -> None:
    async def reply(request: bytes, n: int) -> bytes:
        if n == 1:
            await asyncio.sleep(5)
        return ok()

    server = await RawServer(reply).start()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await _request(client, server.url)
    assert (await _request(client, server.url))[0] == 200  # on a new connection
    assert server.connections == 2
    await server.stop()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


async def test_https_is_verified_against_the_trusted_cas(tmp_path: Path) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)

    async def reply(request: bytes, n: int) -> bytes:
        return ok()

    server = await RawServer(reply).start(tls=server_tls)
    trusting = Http1Client(ssl_context=ssl.create_default_context(cafile=str(cert_file)))
    try:
        for _ in range(2):
            assert (await _request(trusting, server.url))[0] == 200
        assert server.connections == 1  # kept alive over TLS too
    finally:
        await trusting.aclose()
    system_cas = Http1Client()  # the default: the system's CAs, which never signed this
    try:
        with pytest.raises(ConnectFailed) as caught:
            await _request(system_cas, server.url)
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    finally:
        await system_cas.aclose()
    await server.stop()


async def test_timeout_s_bounds_new_and_pooled_connections_alike(client: Http1Client) -> None:
    # Request 2 comes on a pooled connection (the deadline is a loop timer there), request
    # 4 on a new one (the deadline covers the connect too): both are given up and their
    # connections closed; the pool carries on with fresh ones.
    async def reply(request: bytes, n: int) -> bytes:
        if b"slow" in request:
            await asyncio.sleep(5)
        return ok()

    server = await RawServer(reply).start()

    async def call(path: str, timeout_s: float) -> int:
        answer = await client.request(
            "POST", server.url + path, headers={}, body=b"{}", connect_timeout_s=2,
            timeout_s=timeout_s,
        )  # fmt: skip
        return answer.status

    assert await call("/fast", 2) == 200
    loop = asyncio.get_running_loop()
    for expected_connections in (1, 2):
        started = loop.time()
        with pytest.raises(TimeoutError):
            await call("/slow", 0.2)
        assert 0.15 < loop.time() - started < 1.5
        assert server.connections == expected_connections
    assert await call("/fast", 2) == 200
    assert server.connections == 3
    await server.stop()
