"""uvicorn's httptools protocol, with each response leaving in one write.

uvicorn writes a response's status line and headers, then its body, as two
``transport.write`` calls: two ``send`` system calls and two TCP segments on a
keep-alive connection, and often two wake-ups of the peer (the router's hop client, a
load generator). Measured on one core, the second write costs a few microseconds of CPU
on each side per response. ``CoalescingHttpToolsProtocol`` hands uvicorn a transport that
holds the first write of a loop iteration and sends it together with the next one (the
body, written in the same step of the same task) or, when none comes (a ``HEAD``
answer, ``100 Continue``), at the end of that loop iteration. Order is kept: every write
of the connection goes through it, and ``close`` sends what is held first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol"]


class _CoalescingTransport:
    """A transport whose writes within one loop iteration leave as one."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hold ``data`` until the next write or the end of this loop iteration."""
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._held = None
            self._transport.write(held + data)

    def writelines(self, list_of_data: Any) -> None:
        """As ``write`` of the pieces joined."""
        self.write(b"".join(list_of_data))

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():  # the peer may have gone meanwhile
                self._transport.write(held)

    def close(self) -> None:
        """Send what is held, then close."""
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol writing each response's head and body at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Serve the connection through a coalescing transport."""
        coalescing: Any = _CoalescingTransport(
            transport,  # type: ignore[arg-type]
            asyncio.get_running_loop(),
        )
        super().connection_made(coalescing)
