"""DataCollector: sampling, partitions, and storage that is down or slow (bounded memory,
drops counted, offers never raise nor wait)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from shared.localhost.ports import free_ports
from shared.settings import TelemetrySettings
from shared.telemetry.collector import DataCollector, partition_path

BODY = b'{"data": [[1, 2, 3]]}'
ANSWER = b'{"predictions": [1]}'


class MemorySink:
    """A blob container kept in memory (our ``BlobSink`` seam)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def upload_blob(self, name: str, data: bytes, **kwargs: Any) -> None:
        self.blobs[name] = data


class BlockedSink:
    """Storage that hangs until released, then fails: uploads lag behind offers."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def upload_blob(self, name: str, data: bytes, **kwargs: Any) -> None:
        self.calls += 1
        self.release.wait(10)
        raise ConnectionError("storage is down")


def _offer(collector: DataCollector, request_id: str, body: bytes = BODY) -> bool:
    return collector.offer(
        deployment="blue",
        model="fraud:1",
        request_id=request_id,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        request=body,
        response=ANSWER,
    )


def test_partition_path_is_utc_hourly() -> None:
    assert partition_path("fraud", "blue", 1_700_000_000.0) == "fraud/blue/2023/11/14/22"


def test_sampled_records_are_uploaded_as_json_lines() -> None:
    sink = MemorySink()
    draws = iter([0.1, 0.9, 0.2, 0.3])
    collector = DataCollector(sink, rate=0.25, endpoint="fraud", draw=lambda: next(draws))
    kept = [_offer(collector, f"r{i}", b'{"data":\n [[1, 2, 3]]}') for i in range(4)]
    assert kept == [True, False, True, False]
    assert collector.flush(10)
    (name, data), = sink.blobs.items()  # fmt: skip
    hour = time.strftime("%Y/%m/%d/%H", time.gmtime())
    assert name.startswith(f"fraud/blue/{hour}/") and name.endswith(".jsonl")
    lines = data.decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["request_id"] for r in records] == ["r0", "r2"]
    assert records[0]["request"] == {"data": [[1, 2, 3]]}  # newline inside: one line still
    assert records[0]["response"] == {"predictions": [1]}
    assert records[0]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert (records[0]["endpoint"], records[0]["deployment"]) == ("fraud", "blue")
    stats = collector.stats()
    assert (stats.offered, stats.sampled, stats.written, stats.dropped) == (4, 2, 2, 0)
    assert stats.buffered_bytes == 0
    collector.close()


def test_binary_bodies_are_base64_and_missing_request_ids_generated() -> None:
    sink = MemorySink()
    collector = DataCollector(sink, rate=1.0)
    collector.offer(
        deployment="d", model="m", request_id="", trace_id="", request=b"\x00\x01",
        response=b"\xff", request_json=False, response_json=False,
    )  # fmt: skip
    collector.flush(10)
    (record,) = [json.loads(line) for data in sink.blobs.values() for line in data.splitlines()]
    assert (record["request_base64"], record["response_base64"]) == ("AAE=", "/w==")
    assert len(record["request_id"]) == 32
    assert next(iter(sink.blobs)).startswith("default/d/")
    collector.close()


def test_storage_down_drops_and_counts_with_bounded_memory() -> None:
    sink = BlockedSink()
    budget = 64 * 1024
    collector = DataCollector(sink, rate=1.0, max_queue_bytes=budget, flush_s=0.01)
    body = b'{"data": "' + b"x" * 1000 + b'"}'
    started = time.perf_counter()
    results = [_offer(collector, f"r{i}", body) for i in range(2000)]
    offer_s = (time.perf_counter() - started) / len(results)
    stats = collector.stats()
    assert stats.buffered_bytes <= budget  # memory bound while uploads hang
    assert stats.dropped == results.count(False) > 1500
    assert offer_s < 0.001  # offers never wait on storage
    sink.release.set()
    assert collector.flush(20)
    stats = collector.stats()
    assert stats.failed == stats.sampled and stats.written == 0
    assert stats.sampled + stats.dropped == 2000 and stats.buffered_bytes == 0
    collector.close()


def test_oversized_record_is_dropped() -> None:
    collector = DataCollector(MemorySink(), rate=1.0, max_record_bytes=512)
    assert not _offer(collector, "big", b"[" + b"1," * 400 + b"1]")
    assert collector.stats().dropped == 1
    collector.close()


def test_real_blob_client_to_a_dead_port_loses_records_without_raising() -> None:
    (port,) = free_ports(1)
    settings = TelemetrySettings.model_validate(
        {
            "collect_rate": 1.0,
            "collect_storage": (
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
                "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
                f"KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
            ),
            "collect_flush_s": 0.05,
        }
    )
    collector = DataCollector.from_settings(settings)
    assert all(_offer(collector, f"r{i}") for i in range(5))
    assert collector.flush(60)
    stats = collector.stats()
    assert (stats.failed, stats.written, stats.buffered_bytes) == (5, 0, 0)
    collector.close()
    assert not _offer(collector, "after-close")


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_collect_rate_out_of_range_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="collect_rate"):
        TelemetrySettings.model_validate({"collect_rate": rate})


class FlakySink:
    """Fails its first ``failures`` uploads, then keeps what it is given."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.blobs: dict[str, bytes] = {}

    def upload_blob(self, name: str, data: bytes, **kwargs: object) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError("storage down")
        self.blobs[name] = data


def test_a_failed_upload_pauses_uploads_then_they_resume() -> None:
    sink = FlakySink(failures=1)
    collector = DataCollector(sink, rate=1.0, flush_s=30, failure_pause_s=0.4)
    assert _offer(collector, "lost")
    assert collector.flush(10)
    failed_at = time.monotonic()
    assert (collector.stats().failed, sink.calls) == (1, 1)
    # paused: offers wait in the buffer, nothing is sent until the pause ends
    assert _offer(collector, "kept")
    assert not collector.flush(0.1) and sink.calls == 1
    assert collector.flush(10)
    assert time.monotonic() - failed_at >= 0.35
    stats = collector.stats()
    assert (stats.written, stats.failed, stats.dropped, sink.calls) == (1, 1, 0, 2)
    (data,) = sink.blobs.values()
    assert json.loads(data)["request_id"] == "kept"
    collector.close()
