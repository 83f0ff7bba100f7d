"""Azurite, the local Azure Storage emulator, as a child process or as an already-running one.

``AzuriteProcess`` starts ``node_modules/.bin/azurite`` directly (so its PID is Azurite's own),
waits for its blob, queue and table ports, and stops it with terminate → wait → kill.
``StorageEndpoints`` is the address of an Azurite (started here or elsewhere) and builds the
connection string for the standard development account. ``azurite()`` is a context manager
that reuses a running Azurite when given its connection string and starts one otherwise.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared.localhost.ports import free_ports, port_open, wait_for_port
from shared.localhost.process import ChildProcess, stop_process

__all__ = [
    "DEV_ACCOUNT_KEY",
    "DEV_ACCOUNT_NAME",
    "AzuriteProcess",
    "StorageEndpoints",
    "azurite",
    "find_azurite_binary",
]

DEV_ACCOUNT_NAME = "devstoreaccount1"
"""The account name every Azurite serves."""

DEV_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
"""The well-known (public) key of Azurite's development account."""

_DEFAULT_PORTS = (10000, 10001, 10002)


@dataclass(frozen=True, slots=True)
class StorageEndpoints:
    """Where an Azurite listens: one host, and a port each for blob, queue and table."""

    host: str = "127.0.0.1"
    blob_port: int = _DEFAULT_PORTS[0]
    queue_port: int = _DEFAULT_PORTS[1]
    table_port: int = _DEFAULT_PORTS[2]

    @property
    def connection_string(self) -> str:
        """Connection string for the development account on these endpoints."""
        base = f"http://{self.host}"
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={DEV_ACCOUNT_NAME};AccountKey={DEV_ACCOUNT_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/{DEV_ACCOUNT_NAME};"
            f"QueueEndpoint={base}:{self.queue_port}/{DEV_ACCOUNT_NAME};"
            f"TableEndpoint={base}:{self.table_port}/{DEV_ACCOUNT_NAME};"
        )

    @classmethod
    def from_connection_string(cls, connection_string: str) -> StorageEndpoints:
        """Read the endpoints of an Azurite connection string.

        ``UseDevelopmentStorage=true`` means the default ports on 127.0.0.1. Raises
        ``ValueError`` when an endpoint is missing or the three differ in host.
        """
        fields: dict[str, str] = {}
        for part in connection_string.split(";"):
            key, sep, value = part.partition("=")
            if sep:
                fields[key.strip().lower()] = value.strip()
        if fields.get("usedevelopmentstorage", "").lower() == "true":
            return cls()
        hosts: set[str] = set()
        ports: list[int] = []
        for service in ("blob", "queue", "table"):
            url = fields.get(f"{service}endpoint")
            if url is None:
                raise ValueError(
                    f"connection string has no {service.capitalize()}Endpoint; an Azurite "
                    "connection string names BlobEndpoint, QueueEndpoint and TableEndpoint"
                )
            parts = urlsplit(url)
            if parts.hostname is None or parts.port is None:
                raise ValueError(f"{service.capitalize()}Endpoint {url!r} has no host and port")
            hosts.add(parts.hostname)
            ports.append(parts.port)
        if len(hosts) != 1:
            raise ValueError(f"connection string endpoints name several hosts: {sorted(hosts)}")
        return cls(hosts.pop(), ports[0], ports[1], ports[2])

    @classmethod
    def on_free_ports(cls, host: str = "127.0.0.1") -> StorageEndpoints:
        """Endpoints on three ports that are free right now."""
        blob, queue, table = free_ports(3, host)
        return cls(host, blob, queue, table)

    def reachable(self, timeout: float = 0.5) -> bool:
        """Whether all three ports accept TCP connections."""
        return all(
            port_open(self.host, port, timeout)
            for port in (self.blob_port, self.queue_port, self.table_port)
        )


def find_azurite_binary(start: Path | None = None) -> Path | None:
    """Find ``node_modules/.bin/azurite`` in ``start`` (default: cwd) or a parent directory,
    then next to this project; ``None`` when there is none."""
    here = Path(__file__).resolve().parents[2]
    roots = [(start or Path.cwd()).resolve()]
    for root in (*roots, here):
        for directory in (root, *root.parents):
            candidate = directory / "node_modules" / ".bin" / "azurite"
            if candidate.exists():
                return candidate
    return None


class AzuriteProcess(ChildProcess):
    """An Azurite child process serving blob, queue and table on 127.0.0.1.

    Use as a context manager, or call ``start()`` and ``stop()``::

        with AzuriteProcess(tmp_path) as storage:
            client = QueueServiceClient.from_connection_string(storage.connection_string)
    """

    def __init__(
        self,
        location: Path,
        *,
        endpoints: StorageEndpoints | None = None,
        binary: Path | None = None,
    ) -> None:
        """``location`` holds Azurite's data and its log (``azurite.log``); ``endpoints``
        defaults to three free ports; ``binary`` defaults to ``find_azurite_binary()``."""
        self.location = location
        self.endpoints = endpoints or StorageEndpoints.on_free_ports()
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        """Connection string for this Azurite's development account."""
        return self.endpoints.connection_string

    @property
    def log_path(self) -> Path:
        """File receiving Azurite's standard output and error."""
        return self.location / "azurite.log"

    def command(self) -> list[str]:
        """The command line that starts Azurite."""
        binary = self._binary or find_azurite_binary()
        if binary is None:
            raise FileNotFoundError(
                "node_modules/.bin/azurite was not found; run `npm install` in the project root"
            )
        ends = self.endpoints
        return [
            str(binary),
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--location",
            str(self.location),
            "--blobHost",
            ends.host,
            "--queueHost",
            ends.host,
            "--tableHost",
            ends.host,
            "--blobPort",
            str(ends.blob_port),
            "--queuePort",
            str(ends.queue_port),
            "--tablePort",
            str(ends.table_port),
        ]

    def start(self, timeout: float = 30.0) -> AzuriteProcess:
        """Start Azurite and wait until its three ports accept connections.

        Raises ``RuntimeError`` (with the end of Azurite's log) when it exits early, and
        ``TimeoutError`` when the ports stay closed for ``timeout`` seconds.
        """
        if self._process is not None:
            raise RuntimeError(f"Azurite is already started (pid {self._process.pid})")
        command = self.command()
        self.location.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            for port in (
                self.endpoints.blob_port,
                self.endpoints.queue_port,
                self.endpoints.table_port,
            ):
                wait_for_port(
                    self.endpoints.host, port, timeout=timeout, alive=lambda: self.running
                )
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"Azurite did not start: {exc}; log:\n{self._log_tail()}") from exc
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate Azurite, wait up to ``timeout`` seconds, then kill it. Idempotent: the
        process is forgotten, so a later ``start()`` launches a new one."""
        process, self._process = self._process, None
        return None if process is None else stop_process(process, timeout)

    def _log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def azurite(
    location: Path | None = None,
    *,
    connection_string: str | None = None,
    binary: Path | None = None,
    timeout: float = 30.0,
) -> Iterator[StorageEndpoints]:
    """Yield the endpoints of a running Azurite.

    With ``connection_string``, an Azurite already listening there is reused (and left
    running); ``ConnectionError`` if it does not answer. Otherwise one is started on free
    ports with its data in ``location`` (a temporary directory by default) and stopped on exit.
    """
    if connection_string is not None:
        endpoints = StorageEndpoints.from_connection_string(connection_string)
        if not endpoints.reachable():
            raise ConnectionError(
                f"no Azurite answers on {endpoints.host} ports {endpoints.blob_port}, "
                f"{endpoints.queue_port}, {endpoints.table_port}"
            )
        yield endpoints
        return
    with contextlib.ExitStack() as stack:
        if location is None:
            location = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="azurite-")))
        process = AzuriteProcess(location, binary=binary).start(timeout)
        stack.callback(process.stop)
        yield process.endpoints
