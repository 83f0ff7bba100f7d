"""``LocalHost``: serve a Python-v2-model ``FunctionApp`` the way the Functions host does.

One object per served app. At construction it indexes the app (one ``get_functions()``
call), builds the route table, the invokers and bindings (``registry``) and the ASGI app
(``http``). ``serve()`` runs uvicorn and the trigger listeners (``queues``, ``blobs``,
``timers``) on the current event loop until ``request_stop()`` (or SIGINT/SIGTERM when asked
to handle signals), then stops the listeners, waits for running invocations and closes the
storage clients. ``shared.localhost.runner`` runs a host in a thread or a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Generator, Mapping
from typing import Any, Protocol

import azure.functions as func
import uvicorn

from shared.localhost.auth import HostKeys
from shared.localhost.blobs import BlobListener
from shared.localhost.hostjson import HostConfig
from shared.localhost.http import FunctionsAsgiApp
from shared.localhost.http_protocol import CoalescingHttpToolsProtocol
from shared.localhost.index import FunctionDef, index_app, load_app
from shared.localhost.queues import QueueListener
from shared.localhost.registry import Registry, build_registry
from shared.localhost.settings import LocalHostSettings
from shared.localhost.storage import DEFAULT_CONNECTION, StorageAccounts
from shared.localhost.timers import TimerListener

__all__ = ["LocalHost", "default_host_id"]

logger = logging.getLogger("shared.localhost")


class _Listener(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the host decides when to stop, and does not
    re-raise the signal afterwards (so SIGTERM ends the process with status 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def default_host_id(app_spec: str) -> str:
    """A host id derived from ``module:attribute`` (lower case, dashes, ≤ 32 chars)."""
    cleaned = "".join(c if c.isalnum() else "-" for c in app_spec.lower()).strip("-")
    return (cleaned or "localhost")[:32].strip("-")


class LocalHost:
    """Serves one Function App: HTTP triggers over uvicorn, queue, blob and timer triggers
    by polling storage."""

    def __init__(
        self,
        app: func.FunctionApp,
        *,
        config: HostConfig | None = None,
        app_settings: Mapping[str, str] | None = None,
        keys: HostKeys | None = None,
        max_body_bytes: int | None = None,
        host_id: str = "localhost",
        blob_poll_interval: float = 1.0,
        shutdown_timeout: float = 10.0,
    ) -> None:
        """Index ``app`` and build everything served; ``ValueError`` on a configuration
        error. ``app_settings`` are the app's settings (connection strings) — by default
        none, so storage-bound functions need them passed in."""
        self.config = config or HostConfig()
        self.host_id = host_id
        self.keys = keys or HostKeys()
        self._settings = dict(app_settings or {})
        self._blob_poll_interval = blob_poll_interval
        self._shutdown_timeout = shutdown_timeout
        self.functions: tuple[FunctionDef, ...] = index_app(app)
        self.storage = StorageAccounts(self._settings)
        self.registry: Registry = build_registry(
            self.functions,
            config=self.config,
            app_settings=self._settings,
            storage=self.storage,
            on_queue_sent=self._queue_sent,
        )
        self.asgi_app = FunctionsAsgiApp(
            self.registry.routes,
            keys=self.keys,
            max_body_bytes=max_body_bytes,
            options=self.config.http,
            status=lambda: {"id": self.host_id, "functions": self._served_names()},
        )
        self._listeners: list[_Listener] = []
        self._queue_listeners: dict[tuple[str, str], list[QueueListener]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._server: _Server | None = None
        self._stop_requested = False
        self.base_url: str | None = None
        """``http://host:port`` once ``serve()`` has bound its socket."""

    @classmethod
    def from_settings(
        cls, settings: LocalHostSettings, app_settings: Mapping[str, str] | None = None
    ) -> LocalHost:
        """Import ``settings.app`` and read ``settings.host_json``. ``app_settings``
        defaults to the environment; ``settings.storage`` overrides AzureWebJobsStorage."""
        values = dict(LocalHostSettings.environment() if app_settings is None else app_settings)
        if settings.storage is not None:
            values[DEFAULT_CONNECTION] = settings.storage.get_secret_value()
        app = load_app(settings.app, settings.app_dir)
        return cls(
            app,
            config=HostConfig.load(settings.host_json),
            app_settings=values,
            keys=HostKeys.of(
                (key.get_secret_value() for key in settings.keys),
                settings.master_key.get_secret_value() if settings.master_key else None,
            ),
            max_body_bytes=settings.max_body_bytes,
            host_id=settings.host_id or default_host_id(settings.app),
            blob_poll_interval=settings.blob_poll_interval,
            shutdown_timeout=settings.shutdown_timeout,
        )

    def _served_names(self) -> list[str]:
        skipped = {item.name for item in self.registry.skipped}
        return [function.name for function in self.functions if function.name not in skipped]

    def describe(self) -> list[str]:
        """One line per function: trigger, route or queue/path/schedule."""
        return self.registry.describe(self.base_url or "")

    def _queue_sent(self, queue_name: str, connection: str | None) -> None:
        key = (self.storage.connection_string(connection), queue_name)
        for listener in self._queue_listeners.get(key, ()):
            listener.wake()

    async def start(self) -> None:
        """Start the queue, blob and timer listeners on the running loop."""
        if self._tasks:
            raise RuntimeError("the host is already started")
        registry = self.registry
        queues = self.config.queues
        self._listeners = []
        self._queue_listeners = {}
        for spec in registry.queues:
            listener = QueueListener(
                spec.invoker,
                storage=self.storage,
                connection=spec.connection,
                queue_name=spec.queue_name,
                options=queues,
                lease_seconds=self.config.function_timeout,
                shutdown_timeout=self._shutdown_timeout,
            )
            key = (self.storage.connection_string(spec.connection), spec.queue_name)
            self._queue_listeners.setdefault(key, []).append(listener)
            self._listeners.append(listener)
        for blob in registry.blobs:
            self._listeners.append(
                BlobListener(
                    blob.invoker,
                    storage=self.storage,
                    connection=blob.connection,
                    path=blob.path,
                    host_id=self.host_id,
                    max_dequeue_count=queues.max_dequeue_count,
                    parallelism=self.config.blobs.max_degree_of_parallelism,
                    poll_interval=self._blob_poll_interval,
                    message_encoding=queues.message_encoding,
                    annotation=blob.annotation,
                    source=blob.source,
                    shutdown_timeout=self._shutdown_timeout,
                )
            )
        for timer in registry.timers:
            self._listeners.append(
                TimerListener(
                    timer.invoker, schedule=timer.schedule, run_on_startup=timer.run_on_startup
                )
            )
        for each in self._listeners:
            task = asyncio.create_task(each.run())
            task.add_done_callback(_report_crash)
            self._tasks.append(task)

    async def stop(self) -> None:
        """Stop the listeners, wait for running invocations, close storage clients."""
        for listener in self._listeners:
            listener.stop()
        tasks, self._tasks = self._tasks, []
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._shutdown_timeout + 5)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        self._listeners = []
        self._queue_listeners = {}
        await self.storage.close()

    def request_stop(self) -> None:
        """Ask ``serve()`` to shut down; call on the host's event loop. A second call
        while shutting down stops waiting for open HTTP connections."""
        if self._server is not None:
            if self._server.should_exit:
                self._server.force_exit = True
            self._server.should_exit = True
        self._stop_requested = True

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 7071,
        sock: socket.socket | None = None,
        handle_signals: bool = False,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        """Serve HTTP on ``host:port`` (or the bound ``sock``; port 0 picks a free port) and
        run the trigger listeners, until ``request_stop()`` — or SIGINT/SIGTERM when
        ``handle_signals``. ``on_ready(base_url)`` is called once requests are accepted."""
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        bound_host, bound_port = sock.getsockname()[:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        server = _Server(
            uvicorn.Config(
                self.asgi_app,
                lifespan="off",
                log_config=None,
                access_log=False,
                ws="none",
                http=CoalescingHttpToolsProtocol,  # a response's head and body in one write
                timeout_graceful_shutdown=max(1, round(self._shutdown_timeout)),
            )
        )
        self._server = server
        loop = asyncio.get_running_loop()
        if handle_signals:
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(number, self.request_stop)
        try:
            if self._stop_requested:
                return
            await self.start()
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not serving.done():
                await asyncio.sleep(0.01)
            if server.started:
                logger.info("Functions served at %s:", self.base_url)
                for line in self.describe():
                    logger.info("    %s", line)
                if on_ready is not None:
                    on_ready(self.base_url)
            await serving
        finally:
            if handle_signals:
                for number in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(number)
            await self.stop()
            sock.close()
            self._server = None


def _report_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("A trigger listener stopped with an error", exc_info=task.exception())
