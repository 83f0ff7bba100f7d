"""The parts of host.json the local host honours, parsed once and validated.

Honoured: ``extensions.http`` (``routePrefix``, ``maxConcurrentRequests``,
``maxOutstandingRequests``, ``customHeaders``), ``extensions.queues`` (``batchSize``,
``newBatchThreshold``, ``maxDequeueCount``, ``visibilityTimeout``, ``maxPollingInterval``,
``messageEncoding``), ``extensions.blobs.maxDegreeOfParallelism`` and ``functionTimeout``.
Everything else (logging, extension bundles, telemetry) is accepted and ignored. Defaults are
those of the Functions host.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BlobOptions",
    "HostConfig",
    "HttpOptions",
    "QueueOptions",
    "parse_timespan",
]

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?$")


def parse_timespan(text: str) -> float:
    """Seconds in a .NET TimeSpan such as ``00:00:30``, ``00:00:00.5`` or ``1.02:00:00``."""
    match = _TIMESPAN.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a TimeSpan; expected [d.]hh:mm:ss[.fffffff]")
    days, hours, minutes, seconds, fraction = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """``extensions.http``: where HTTP functions live and how many requests run at once."""

    route_prefix: str = "api"
    """Path prefix of every HTTP function route ('' for none)."""
    max_concurrent_requests: int | None = None
    """Requests that run functions at once; ``None`` is unbounded (-1 in host.json)."""
    max_outstanding_requests: int | None = None
    """Requests admitted (running or waiting); more get 429. ``None`` is unbounded."""
    custom_headers: Mapping[str, str] = field(default_factory=dict)
    """Headers added to every HTTP response."""


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """``extensions.queues``: how queue triggers fetch, retry and dead-letter messages."""

    batch_size: int = 16
    """Messages fetched per poll (1..32)."""
    new_batch_threshold: int | None = None
    """Fetch again when this many or fewer are running; default ``batch_size // 2``."""
    max_dequeue_count: int = 5
    """Attempts before a message goes to ``<queue>-poison``."""
    visibility_timeout: float = 0.0
    """Seconds a failed message stays invisible before its next attempt."""
    max_polling_interval: float = 60.0
    """Longest wait between polls of an empty queue, in seconds (at least 0.1)."""
    message_encoding: str = "base64"
    """``base64`` (message text is base64 of the body) or ``none`` (the text is the body)."""

    @property
    def fetch_threshold(self) -> int:
        """The effective ``newBatchThreshold``."""
        if self.new_batch_threshold is not None:
            return self.new_batch_threshold
        return self.batch_size // 2


@dataclass(frozen=True, slots=True)
class BlobOptions:
    """``extensions.blobs``."""

    max_degree_of_parallelism: int = 8
    """Blob trigger invocations that run at once, per function."""


@dataclass(frozen=True, slots=True)
class HostConfig:
    """The host.json settings the local host uses."""

    http: HttpOptions = field(default_factory=HttpOptions)
    queues: QueueOptions = field(default_factory=QueueOptions)
    blobs: BlobOptions = field(default_factory=BlobOptions)
    function_timeout: float = 300.0
    """``functionTimeout`` in seconds; queue messages are leased for this long."""

    @classmethod
    def load(cls, path: Path) -> HostConfig:
        """Read host.json at ``path``; a missing file gives the defaults."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            return cls()
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(document).__name__}")
        return cls.from_dict(document, source=str(path))

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], *, source: str = "host.json") -> HostConfig:
        """Build from a parsed host.json; ``ValueError`` names the field, value and range."""
        reader = _Reader(source)
        extensions = reader.section(document, "extensions", "")
        http = reader.section(extensions, "http", "extensions")
        queues = reader.section(extensions, "queues", "extensions")
        blobs = reader.section(extensions, "blobs", "extensions")
        prefix = reader.string(http, "routePrefix", "extensions.http", "api").strip("/")
        headers = reader.section(http, "customHeaders", "extensions.http")
        batch_size = reader.integer(queues, "batchSize", "extensions.queues", 16, 1, 32)
        encoding = reader.string(queues, "messageEncoding", "extensions.queues", "base64")
        if encoding.lower() not in ("base64", "none"):
            raise ValueError(
                f"{source}: extensions.queues.messageEncoding is {encoding!r}; "
                "allowed: 'base64', 'none'"
            )
        return cls(
            http=HttpOptions(
                route_prefix=prefix,
                max_concurrent_requests=reader.limit(
                    http, "maxConcurrentRequests", "extensions.http"
                ),
                max_outstanding_requests=reader.limit(
                    http, "maxOutstandingRequests", "extensions.http"
                ),
                custom_headers={str(k): str(v) for k, v in headers.items()},
            ),
            queues=QueueOptions(
                batch_size=batch_size,
                new_batch_threshold=reader.optional_integer(
                    queues, "newBatchThreshold", "extensions.queues", 0, 10_000
                ),
                max_dequeue_count=reader.integer(
                    queues, "maxDequeueCount", "extensions.queues", 5, 1, 10_000
                ),
                visibility_timeout=reader.seconds(
                    queues, "visibilityTimeout", "extensions.queues", 0.0, 0.0
                ),
                max_polling_interval=reader.seconds(
                    queues, "maxPollingInterval", "extensions.queues", 60.0, 0.1
                ),
                message_encoding=encoding.lower(),
            ),
            blobs=BlobOptions(
                max_degree_of_parallelism=reader.integer(
                    blobs, "maxDegreeOfParallelism", "extensions.blobs", 8, 1, 10_000
                )
            ),
            function_timeout=reader.seconds(document, "functionTimeout", "", 300.0, 1.0),
        )


@dataclass(frozen=True, slots=True)
class _Reader:
    """Typed reads from host.json sections with errors that name the field."""

    source: str

    def _where(self, parent: str, key: str) -> str:
        return f"{self.source}: {parent + '.' if parent else ''}{key}"

    def section(self, node: Mapping[str, Any], key: str, parent: str) -> Mapping[str, Any]:
        value = node.get(key, {})
        if not isinstance(value, dict):
            raise ValueError(f"{self._where(parent, key)} is {value!r}; expected an object")
        return value

    def string(self, node: Mapping[str, Any], key: str, parent: str, default: str) -> str:
        value = node.get(key, default)
        if not isinstance(value, str):
            raise ValueError(f"{self._where(parent, key)} is {value!r}; expected a string")
        return value

    def integer(
        self, node: Mapping[str, Any], key: str, parent: str, default: int, low: int, high: int
    ) -> int:
        value = node.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(
                f"{self._where(parent, key)} is {value!r}; expected an integer in {low}..{high}"
            )
        return value

    def optional_integer(
        self, node: Mapping[str, Any], key: str, parent: str, low: int, high: int
    ) -> int | None:
        if node.get(key) is None:
            return None
        return self.integer(node, key, parent, 0, low, high)

    def limit(self, node: Mapping[str, Any], key: str, parent: str) -> int | None:
        value = node.get(key, -1)
        if value == -1:
            return None
        return self.integer(node, key, parent, -1, 1, 1_000_000)

    def seconds(
        self, node: Mapping[str, Any], key: str, parent: str, default: float, low: float
    ) -> float:
        value = node.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ValueError(f"{self._where(parent, key)} is {value!r}; expected a TimeSpan")
        try:
            seconds = parse_timespan(value)
        except ValueError as exc:
            raise ValueError(f"{self._where(parent, key)}: {exc}") from exc
        if seconds < low:
            raise ValueError(
                f"{self._where(parent, key)} is {value!r}; the least allowed is {low} s"
            )
        return seconds
