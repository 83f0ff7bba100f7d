"""setup_telemetry: off by default, exporters from settings, in-memory SDK exporters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from shared.settings import TelemetrySettings
from shared.telemetry.prometheus import scrape
from shared.telemetry.setup import setup_telemetry
from shared.telemetry.state import TELEMETRY
from shared.telemetry.tracing import (
    current_trace_id,
    current_traceparent,
    in_span,
    inject,
    span,
)


@pytest.fixture(autouse=True)
def _off() -> Iterator[None]:
    yield
    TELEMETRY.reset()


def _settings(**values: object) -> TelemetrySettings:
    return TelemetrySettings.model_validate(values)


def test_off_by_default_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SCOREFN_TELEMETRY_EXPORTER", "APPLICATIONINSIGHTS_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    handle = setup_telemetry(TelemetrySettings(), role="scoring")
    assert not handle.enabled
    assert (TELEMETRY.metrics, TELEMETRY.tracing, TELEMETRY.tracer) == (None, False, None)
    assert (TELEMETRY.prometheus, TELEMETRY.collector) == (None, None)
    with span("anything", {"a": 1}) as current:
        assert current is None
    headers: dict[str, str] = {}
    inject(headers)
    assert headers == {}
    assert current_traceparent() is None
    # The trace id still comes from a caller's traceparent (data collection records it).
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert current_trace_id({"traceparent": tp}) == "0af7651916cd43dd8448eb211c80319c"
    assert scrape() is None


def test_unknown_exporter_is_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(ValidationError) as info:
        _settings(exporter="prometheus,statsd")
    message = str(info.value)
    assert "unknown exporter(s) statsd" in message
    assert "none, console, otlp, prometheus, azure_monitor" in message


def test_azure_monitor_without_a_connection_string_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        _settings(exporter="azure_monitor")
    assert (
        "SCOREFN_TELEMETRY_EXPORTER names azure_monitor but APPLICATIONINSIGHTS_CONNECTION_STRING "
        "(the Application Insights resource's connection string) is not set"
    ) in str(info.value)


def test_in_span_is_false_under_an_unsampled_span() -> None:
    """Work inside a trace the sampler dropped takes the untraced fast path."""
    spans = InMemorySpanExporter()
    handle = setup_telemetry(_settings(sample_ratio=0.0), role="scoring", span_exporters=[spans])
    with span("dropped") as current:
        assert current is not None and not current.is_recording()
        assert not in_span()
    sampled = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with span("followed", carrier=sampled):  # a caller's sampled parent is followed
        assert in_span()
    handle.shutdown()


def test_exporter_list_is_normalised() -> None:
    assert _settings(exporter=" Prometheus , console").exporter == "prometheus,console"
    assert _settings(exporter="").exporter == "none"


def test_in_memory_exporters_get_spans_with_w3c_parent() -> None:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    handle = setup_telemetry(
        _settings(), role="router", span_exporters=[spans], metric_readers=[reader]
    )
    assert TELEMETRY.tracing and TELEMETRY.metrics is not None
    caller = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with span("outer", {"endpoint": "fraud"}, carrier=caller), span("inner") as inner:
        assert inner is not None
        headers: dict[str, str] = {}
        inject(headers)
        assert headers["traceparent"] == current_traceparent()
        assert current_trace_id() == "0af7651916cd43dd8448eb211c80319c"
    with pytest.raises(ZeroDivisionError), span("failing"):
        1 / 0  # noqa: B018
    handle.force_flush()
    got = {s.name: s for s in spans.get_finished_spans()}
    assert set(got) == {"outer", "inner", "failing"}
    outer, inner_span = got["outer"], got["inner"]
    assert outer.parent is not None and outer.parent.span_id == 0xB7AD6B7169203331
    assert inner_span.parent is not None and inner_span.parent.span_id == outer.context.span_id
    assert outer.attributes == {"endpoint": "fraud"}
    assert got["failing"].attributes == {"error.type": "ZeroDivisionError"}
    assert got["failing"].status.is_ok is False
    assert dict(outer.resource.attributes)["service.name"] == "scorefn-router"
    handle.shutdown()
    assert not TELEMETRY.tracing


def test_prometheus_exporter_serves_the_metrics_text() -> None:
    handle = setup_telemetry(_settings(exporter="prometheus"), role="scoring")
    assert TELEMETRY.metrics is not None and TELEMETRY.prometheus is not None
    assert not TELEMETRY.tracing  # prometheus is metrics only
    TELEMETRY.metrics.request("scoring", "fraud", "blue", "fraud:1", 200, 0.004)
    TELEMETRY.metrics.request("scoring", "fraud", "blue", "fraud:1", 200, 0.006)
    text = (scrape() or b"").decode()
    line = next(
        row for row in text.splitlines() if row.startswith("scorefn_request_duration_seconds_count")
    )
    assert 'deployment="blue"' in line and 'http_response_status_code="200"' in line
    assert line.endswith(" 2.0")
    handle.shutdown()
    assert scrape() is None


def test_console_exporter_writes_one_json_span_per_line(tmp_path: Path) -> None:
    out = tmp_path / "spans.jsonl"
    handle = setup_telemetry(
        _settings(exporter="console", console_path=str(out), export_interval_s=3600),
        role="scoring",
    )
    with span("a"), span("b"):
        pass
    handle.shutdown()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    spans = [r for r in rows if "name" in r and "context" in r]
    assert [s["name"] for s in spans] == ["b", "a"]
    assert spans[0]["parent_id"] == spans[1]["context"]["span_id"]


def test_prometheus_with_another_reader_serves_each_histogram_once() -> None:
    reader = InMemoryMetricReader()
    handle = setup_telemetry(_settings(exporter="prometheus"), role="scoring",
                             metric_readers=[reader])  # fmt: skip
    metrics = TELEMETRY.metrics
    assert metrics is not None
    for seconds in (0.0004, 0.003, 0.003, 7.0):
        metrics.request("scoring", "fraud", "blue", "fraud:1", 200, seconds)
    metrics.batch_sent("fraud:1", 3, 0.0002)
    metrics.jwks_fetch("ok")
    text = (scrape() or b"").decode()
    assert text.count("# TYPE scorefn_request_duration_seconds histogram") == 1
    assert text.count("# TYPE scorefn_batcher_batch_size histogram") == 1
    assert "scorefn_jwks_fetches_total" in text  # SDK-recorded metrics are served too
    buckets = {
        line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("scorefn_request_duration_seconds_bucket")
    }
    assert (buckets["0.0005"], buckets["0.005"], buckets["5.0"], buckets["+Inf"]) == (1, 3, 3, 4)
    # The in-memory reader got the same measurements through the SDK.
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        m.name: m.data.data_points
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    (point,) = points["scorefn.request.duration"]
    assert isinstance(point, HistogramDataPoint)
    assert point.count == 4 and point.sum == pytest.approx(7.0064)
    assert dict(point.attributes or {}) == {"role": "scoring", "endpoint": "fraud", "deployment": "blue",
                                      "model": "fraud:1", "http.response.status_code": 200}  # fmt: skip
    handle.shutdown()
