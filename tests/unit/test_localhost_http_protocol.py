"""uvicorn with ``CoalescingHttpToolsProtocol``: a real server on 127.0.0.1, raw sockets.

Each answer's head and body leave in one write, so the first read after the socket turns
readable holds the whole answer; a ``HEAD`` answer (no body write follows the head) and a
``100 Continue`` (sent while the request body is awaited) still leave at once.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from shared.localhost.http_protocol import CoalescingHttpToolsProtocol
from shared.localhost.ports import free_ports


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    answer = b'{"echo": "' + body + b'"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    (number,) = free_ports(1)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=number, lifespan="off", log_config=None,
        access_log=False, http=CoalescingHttpToolsProtocol,
    )  # fmt: skip
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield number
    server.should_exit = True
    await serving


def _first_read(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request``; the bytes of the first read once the socket is readable."""
    sock.sendall(request)
    sock.settimeout(5)
    return sock.recv(65536)


async def test_head_and_body_arrive_in_one_read_on_a_kept_alive_connection(port: int) -> None:
    def exchange() -> list[bytes]:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return [
                _first_read(sock, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nab"),
                _first_read(sock, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nc"),
            ]

    first, second = await asyncio.to_thread(exchange)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert first.endswith(b'\r\n\r\n{"echo": "ab"}')
    assert second.startswith(b"HTTP/1.1 200 OK\r\n")
    assert second.endswith(b'\r\n\r\n{"echo": "c"}')


async def test_a_head_answer_without_a_body_write_still_leaves(port: int) -> None:
    def exchange() -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            return _first_read(sock, b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n")

    answer = await asyncio.to_thread(exchange)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\n")  # the head only
    assert b"content-length: 12" in answer


async def test_100_continue_leaves_while_the_body_is_awaited(port: int) -> None:
    def exchange() -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            interim = _first_read(
                sock,
                b"POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n",
            )
            return interim, _first_read(sock, b"ok")

    interim, answer = await asyncio.to_thread(exchange)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b'{"echo": "ok"}')
