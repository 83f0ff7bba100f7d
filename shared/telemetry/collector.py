"""Data collection (Azure ML's data collector): a sampled share of scoring requests'
inputs and outputs, written to blob storage as JSON Lines for drift analysis.

``DataCollector.offer`` runs on the request path and only draws, measures and appends to
an in-memory buffer under a lock; it never raises and never waits on storage. A
background thread uploads the buffer every ``flush_s`` seconds (sooner when it holds a
quarter of its byte budget) as new blobs::

    <container>/<endpoint>/<deployment>/yyyy/mm/dd/hh/<mmss>-<uuid>.jsonl

one JSON object per line: ``time`` (UTC ISO 8601), ``endpoint``, ``deployment``,
``model``, ``request_id``, ``trace_id``, ``request`` and ``response`` (the JSON bodies as
sent; non-JSON bodies as ``request_base64`` / ``response_base64``).

Memory is bounded by ``max_queue_bytes``: a record that does not fit (storage slow or
down, so uploads lag) is dropped and counted, as is a record over ``max_record_bytes``
and every record of an upload that failed. After a failed upload the uploader pauses
(``failure_pause_s``, doubling on each further failure up to 30 s, back to none after a
success) rather than building a client and failing again at every flush; records offered
meanwhile wait in the same bounded buffer. Counts are in ``stats()``
and the ``scorefn.datacollection.records`` metric.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from shared.settings import TelemetrySettings
from shared.telemetry.state import TELEMETRY

__all__ = ["CollectorStats", "DataCollector", "partition_path"]

log = logging.getLogger(__name__)


class BlobSink(Protocol):
    """Where batches of records go (an ``azure.storage.blob.ContainerClient``)."""

    def upload_blob(self, name: str, data: bytes, **kwargs: Any) -> Any: ...


@dataclass
class CollectorStats:
    """Counters of one collector (records)."""

    offered: int = 0
    """Requests that reached ``offer`` (sampled or not)."""
    sampled: int = 0
    """Records taken into the buffer."""
    written: int = 0
    """Records uploaded."""
    dropped: int = 0
    """Records not kept: buffer full, or record too large."""
    failed: int = 0
    """Records lost because their upload failed."""
    buffered_bytes: int = 0
    """Bytes waiting for upload now."""


def partition_path(endpoint: str, deployment: str, when: float) -> str:
    """``<endpoint>/<deployment>/yyyy/mm/dd/hh`` of the UTC time ``when`` (epoch s)."""
    stamp = datetime.fromtimestamp(when, UTC)
    return f"{endpoint}/{deployment}/{stamp:%Y/%m/%d/%H}"


def _body(name: str, data: bytes, json: bool) -> tuple[str, Any]:
    if json:
        # Raw newlines in valid JSON are whitespace: flatten them to keep one record a line.
        return name, orjson.Fragment(data.replace(b"\r", b" ").replace(b"\n", b" "))
    return f"{name}_base64", base64.b64encode(data).decode("ascii")


class _Record:
    __slots__ = (
        "deployment", "model", "request", "request_id", "request_json", "response",
        "response_json", "size", "trace_id", "when",
    )  # fmt: skip

    def __init__(
        self,
        when: float,
        deployment: str,
        model: str,
        request_id: str,
        trace_id: str,
        request: bytes,
        request_json: bool,
        response: bytes,
        response_json: bool,
    ) -> None:
        self.when = when
        self.deployment = deployment
        self.model = model
        self.request_id = request_id
        self.trace_id = trace_id
        self.request = request
        self.request_json = request_json
        self.response = response
        self.response_json = response_json
        self.size = len(request) + len(response) + 256


class DataCollector:
    """Samples scoring requests into a bounded buffer; a thread uploads it to blobs."""

    def __init__(
        self,
        sink: BlobSink | Callable[[], BlobSink],
        *,
        rate: float,
        endpoint: str = "default",
        max_queue_bytes: int = 64 * 1024 * 1024,
        max_record_bytes: int = 1024 * 1024,
        flush_s: float = 5.0,
        failure_pause_s: float = 1.0,
        draw: Callable[[], float] = random.random,
    ) -> None:
        """``sink``: the container client, or a function creating it on first upload."""
        self.rate = rate
        self.endpoint = endpoint
        self.max_queue_bytes = max_queue_bytes
        self.max_record_bytes = max_record_bytes
        self.flush_s = flush_s
        self.failure_pause_s = failure_pause_s
        self._pause_s = 0.0
        self._paused_until = 0.0
        self._sink_source = sink
        self._sink: BlobSink | None = None
        self._draw = draw
        self._lock = threading.Lock()
        self._buffer: list[_Record] = []
        self._stats = CollectorStats()
        self._wake = threading.Event()
        self._closed = False
        # flush(): a request number; the uploader reports the last request whose records
        # its finished pass included, so a flush never returns before its upload
        self._passes = threading.Condition()
        self._requested = 0
        self._served = 0
        self._thread = threading.Thread(target=self._run, name="data-collector", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: TelemetrySettings) -> DataCollector:
        """A collector writing to ``collect_container`` of ``collect_storage`` (or of
        ``collect_blobs_url``, reached with a managed identity)."""

        def container() -> BlobSink:
            from azure.core.exceptions import ResourceExistsError
            from azure.storage.blob import ExponentialRetry

            from shared.storage_clients import StorageClients

            # One quick retry (the storage default waits 15 s first): records that cannot
            # be written are counted lost, and the buffer bounds memory meanwhile.
            client = StorageClients.for_collector(settings).container(
                settings.collect_container,
                retry_policy=ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=1),
                connection_timeout=5,
                read_timeout=30,
            )
            with contextlib.suppress(ResourceExistsError):
                client.create_container()
            return client

        return cls(
            container,
            rate=settings.collect_rate,
            endpoint=settings.endpoint or "default",
            max_queue_bytes=settings.collect_max_queue_bytes,
            max_record_bytes=settings.collect_max_record_bytes,
            flush_s=settings.collect_flush_s,
        )

    # ------------------------------------------------------------------ request path
    def offer(
        self,
        *,
        deployment: str,
        model: str,
        request_id: str,
        trace_id: str,
        request: bytes,
        response: bytes,
        request_json: bool = True,
        response_json: bool = True,
    ) -> bool:
        """Maybe keep one request's input and output; True if kept. Never raises."""
        try:
            stats = self._stats
            stats.offered += 1
            if self._closed or self._draw() >= self.rate:
                return False
            record = _Record(
                time.time(),
                deployment,
                model,
                request_id or uuid.uuid4().hex,
                trace_id,
                request,
                request_json,
                response,
                response_json,
            )
            with self._lock:
                if (
                    record.size > self.max_record_bytes
                    or stats.buffered_bytes + record.size > self.max_queue_bytes
                ):
                    stats.dropped += 1
                    kept = False
                else:
                    self._buffer.append(record)
                    stats.buffered_bytes += record.size
                    stats.sampled += 1
                    kept = True
                    if stats.buffered_bytes * 4 >= self.max_queue_bytes:
                        self._wake.set()
            if not kept and TELEMETRY.metrics is not None:
                TELEMETRY.metrics.collection("dropped")
            return kept
        except Exception:  # data collection never fails a request
            log.debug("record not collected", exc_info=True)
            return False

    # ------------------------------------------------------------------ background
    def stats(self) -> CollectorStats:
        """A copy of the counters."""
        with self._lock:
            s = self._stats
            return CollectorStats(
                s.offered, s.sampled, s.written, s.dropped, s.failed, s.buffered_bytes
            )

    def flush(self, timeout: float = 30.0) -> bool:
        """Upload what is buffered now and wait for it (tests, shutdown); True if the
        uploader went idle within ``timeout``."""
        with self._passes:
            self._requested += 1
            wanted = self._requested
        self._wake.set()
        with self._passes:
            return self._passes.wait_for(
                lambda: self._served >= wanted or not self._thread.is_alive(), timeout
            )

    def close(self, timeout: float = 30.0) -> None:
        """Upload what is buffered, stop the thread; later offers are not kept."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            with self._passes:
                serving = self._requested  # flushes asked before this pass takes the buffer
            while not self._closed and time.monotonic() < self._paused_until:
                time.sleep(max(0.0, min(0.25, self._paused_until - time.monotonic())))
            with self._lock:
                batch, self._buffer = self._buffer, []
            if batch:
                self._upload(batch)
            with self._passes:
                self._served = serving
                self._passes.notify_all()
            if self._closed:
                with self._lock:
                    if not self._buffer:
                        return

    def _upload(self, batch: list[_Record]) -> None:
        groups: dict[str, list[_Record]] = {}
        for record in batch:
            groups.setdefault(
                partition_path(self.endpoint, record.deployment, record.when), []
            ).append(record)
        failed_now = False
        for folder, records in groups.items():
            if failed_now:  # an earlier group of this batch failed just now: paused
                self._count(records, "failed")
                continue
            try:
                if self._sink is None:
                    source = self._sink_source
                    self._sink = source() if callable(source) else source
                data = b"".join(self._line(r) for r in records)
                stamp = datetime.fromtimestamp(records[0].when, UTC)
                name = f"{folder}/{stamp:%M%S}-{uuid.uuid4().hex}.jsonl"
                self._sink.upload_blob(name, data, overwrite=False)
                outcome = "written"
                self._pause_s = 0.0
                self._paused_until = 0.0
            except Exception as exc:  # storage down: drop and count, pause, keep serving
                self._pause_s = min(max(2 * self._pause_s, self.failure_pause_s), 30.0)
                self._paused_until = time.monotonic() + self._pause_s
                log.warning(
                    "data collection: %d record(s) lost, paused %.0f s: %s",
                    len(records), self._pause_s, exc,
                )  # fmt: skip
                outcome = "failed"
                failed_now = True
            self._count(records, outcome)

    def _count(self, records: list[_Record], outcome: str) -> None:
        size = sum(r.size for r in records)
        with self._lock:
            self._stats.buffered_bytes -= size
            if outcome == "written":
                self._stats.written += len(records)
            else:
                self._stats.failed += len(records)
        if TELEMETRY.metrics is not None:
            TELEMETRY.metrics.collection(outcome, len(records))

    def _line(self, record: _Record) -> bytes:
        request_key, request = _body("request", record.request, record.request_json)
        response_key, response = _body("response", record.response, record.response_json)
        document = {
            "time": datetime.fromtimestamp(record.when, UTC).isoformat(),
            "endpoint": self.endpoint,
            "deployment": record.deployment,
            "model": record.model,
            "request_id": record.request_id,
            "trace_id": record.trace_id,
            request_key: request,
            response_key: response,
        }
        return orjson.dumps(document) + b"\n"
