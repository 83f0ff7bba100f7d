"""Run a local host beside other code: in a background thread, or as a child process.

``HostThread`` serves a ``LocalHost`` on its own event loop in this process (tests: the
test can look at the app's module state). ``HostProcess`` starts ``python -m
shared.localhost`` with its own environment and port and waits until its status endpoint
answers (a stack launcher starts one per deployment). Secrets (storage connection string,
keys) reach the child through its environment, not its command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from shared.localhost.host import LocalHost
from shared.localhost.http import STATUS_PATH
from shared.localhost.process import ChildProcess, StartStop
from shared.localhost.settings import LocalHostSettings

__all__ = ["HostProcess", "HostThread", "wait_for_http"]


def wait_for_http(
    url: str,
    *,
    timeout: float,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``url`` with GET until it answers 200.

    ``TimeoutError`` after ``timeout`` seconds; ``RuntimeError`` as soon as ``alive()``
    (e.g. "the child process runs") is false.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client(timeout=1.0) as client:
        while True:
            if alive is not None and not alive():
                raise RuntimeError(f"the process serving {url} exited ({last})")
            try:
                response = client.get(url)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return
                last = f"status {response.status_code}"
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{url} did not answer 200 within {timeout} s ({last})")
            time.sleep(interval)


class HostThread(StartStop):
    """A ``LocalHost`` served in a daemon thread with its own event loop::

    with HostThread(LocalHost(app)) as running:
        httpx.get(f"{running.base_url}/api/hello")
    """

    def __init__(self, host: LocalHost, *, bind: str = "127.0.0.1", port: int = 0) -> None:
        """``port`` 0 picks a free port (read it from ``port`` / ``base_url``)."""
        self.host = host
        self._bind = bind
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The bound port (after ``start``)."""
        if self._sock is None:
            raise RuntimeError("the host thread is not started")
        return int(self._sock.getsockname()[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://{self._bind}:{self.port}"

    def start(self, timeout: float = 15.0) -> HostThread:
        """Bind, start the thread, and return once the host accepts requests."""
        if self._thread is not None:
            raise RuntimeError("the host thread is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._bind, self._requested_port))
        self._sock = sock
        self._thread = threading.Thread(
            target=self._run, name=f"localhost-{self.port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise TimeoutError(f"the local host did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            raise RuntimeError(f"the local host failed to start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # handed to the thread that called start()
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        assert self._sock is not None
        await self.host.serve(sock=self._sock, on_ready=lambda _url: self._ready.set())

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the host down and join the thread (``TimeoutError`` if it hangs)."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop may have closed already
                loop.call_soon_threadsafe(self.host.request_stop)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"the local host thread did not stop within {timeout} s")
        self._thread = None


class HostProcess(ChildProcess):
    """``python -m shared.localhost`` as a child process, with its own environment."""

    def __init__(
        self,
        app: str,
        *,
        port: int,
        host: str = "127.0.0.1",
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        storage: str | None = None,
        host_json: Path | None = None,
        keys: Sequence[str] = (),
        master_key: str | None = None,
        max_body_bytes: int | None = None,
        host_id: str | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        """``env`` is added to this process's environment for the child; ``log_path``
        receives its output (default: inherited)."""
        self.app = app
        self.host = host
        self.port = port
        self.cwd = cwd
        self.log_path = log_path
        self._python = python
        self._extra = list(extra_args)
        self._host_json = host_json
        self._max_body_bytes = max_body_bytes
        self._host_id = host_id
        self._env = dict(env or {})
        prefix = "SCOREFN_LOCALHOST_"
        if storage is not None:
            self._env[f"{prefix}STORAGE"] = storage
        if keys:
            self._env[f"{prefix}KEYS"] = ",".join(keys)
        if master_key is not None:
            self._env[f"{prefix}MASTER_KEY"] = master_key
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The child's command line (no secrets on it)."""
        command = [
            self._python,
            "-m",
            "shared.localhost",
            "--app",
            self.app,
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        if self._host_json is not None:
            command += ["--host-json", str(self._host_json)]
        if self._max_body_bytes is not None:
            command += ["--max-body-bytes", str(self._max_body_bytes)]
        if self._host_id is not None:
            command += ["--host-id", self._host_id]
        return command + self._extra

    def start(self, timeout: float = 30.0) -> HostProcess:
        """Start the child and wait until ``GET /admin/host/status`` answers 200."""
        if self._process is not None:
            raise RuntimeError(f"the host process is already started (pid {self.pid})")
        environment = LocalHostSettings.environment()
        environment.update(self._env)
        output = None if self.log_path is None else self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
            )
        finally:
            if output is not None:
                output.close()
        try:
            wait_for_http(self.base_url + STATUS_PATH, timeout=timeout, alive=lambda: self.running)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise
        return self
