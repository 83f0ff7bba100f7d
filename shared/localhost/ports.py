"""TCP ports on the loopback interface: find free ones, wait until one accepts connections."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

__all__ = ["free_ports", "port_open", "wait_for_port"]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct ports that were free on ``host`` a moment ago.

    The sockets are held open together while choosing, so the ports differ; a port can still
    be taken by someone else before the caller binds it.
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    *,
    timeout: float,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.05,
) -> None:
    """Block until ``host:port`` accepts connections.

    Raises ``TimeoutError`` after ``timeout`` seconds, or ``RuntimeError`` as soon as
    ``alive()`` (for example "the child process is still running") returns false.
    """
    deadline = time.monotonic() + timeout
    while not port_open(host, port):
        if alive is not None and not alive():
            raise RuntimeError(f"the process meant to listen on {host}:{port} has exited")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections within {timeout} s")
        time.sleep(interval)
