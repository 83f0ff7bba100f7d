"""``setup_telemetry``: configure traces, metrics and data collection once per process.

Exporters (``SCOREFN_TELEMETRY_EXPORTER``, comma-separated):

* ``none`` (default): nothing is installed; instrumented code pays one flag check.
* ``console``: spans and metrics as one JSON document per line, to ``console_path`` or
  stdout (spans written as they end; metrics every ``export_interval_s``).
* ``otlp``: OTLP/HTTP (protobuf) to ``otlp_endpoint`` (an OpenTelemetry Collector, Jaeger,
  Grafana Alloy, ...).
* ``prometheus``: metrics only, kept in a registry that the local host serves at
  ``GET /metrics`` (``shared.telemetry.prometheus``).
* ``azure_monitor``: Application Insights; also switched on by
  ``APPLICATIONINSIGHTS_CONNECTION_STRING`` (Bicep sets it with
  ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``: the exporters authenticate with the app's
  managed identity, as local auth is disabled on the workspace).

Providers are this process's own (not the OpenTelemetry globals, which can be set only
once): scorefn's code uses ``TELEMETRY.tracer`` and ``TELEMETRY.metrics``. Tests pass
in-memory exporters and readers through ``span_exporters`` / ``metric_readers``.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final

from shared.settings import TelemetrySettings
from shared.telemetry.state import TELEMETRY

if TYPE_CHECKING:  # the SDK is imported only when telemetry is switched on
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricReader,
        MetricsData,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SimpleSpanProcessor,
        SpanExporter,
    )


__all__ = ["Telemetry", "parse_exporters", "setup_telemetry"]

_EXIT_FLUSH_S = 5.0
"""How long the exit hook waits for the data collector's last upload."""

log = logging.getLogger(__name__)

SCOPE: Final = "scorefn"
"""Instrumentation scope of every scorefn span and metric."""


def parse_exporters(text: str) -> frozenset[str]:
    """``'prometheus,console'`` (validated by ``TelemetrySettings``) -> the set, without
    ``none``."""
    return frozenset(p.strip() for p in text.split(",") if p.strip()) - {"none"}


@dataclass
class Telemetry:
    """What ``setup_telemetry`` installed; ``shutdown()`` flushes and switches it off."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    _files: list[IO[str]] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        """Whether anything is exported or collected."""
        return (
            self.tracer_provider is not None
            or self.meter_provider is not None
            or TELEMETRY.collector is not None
        )

    def force_flush(self) -> None:
        """Export what is pending now (tests, before a process exits)."""
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush()
        if self.meter_provider is not None:
            self.meter_provider.force_flush()

    def shutdown(self) -> None:
        """Flush and stop exporters and the collector; telemetry is off afterwards."""
        collector = TELEMETRY.collector
        if collector is not None:
            # before reset: its last upload still counts records on the meter provider
            collector.close()
        TELEMETRY.reset()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        for file in self._files:
            file.close()
        self._files.clear()


def _span_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def _metrics_line(data: MetricsData) -> str:
    return data.to_json(indent=None) + "\n"


def _azure_credential() -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def setup_telemetry(
    settings: TelemetrySettings,
    *,
    role: str,
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Configure this process's telemetry from ``settings``; ``role`` names the process
    (router, scoring, all) in ``service.name``. With nothing configured, installs
    nothing. Calling it again replaces the previous configuration (shut that down first
    to flush it)."""
    exporters = parse_exporters(settings.exporter)
    if settings.applicationinsights_connection_string:
        exporters |= {"azure_monitor"}
    handle = Telemetry()
    TELEMETRY.reset()
    if exporters or span_exporters or metric_readers:
        from opentelemetry.sdk.resources import Resource

        resource = Resource.create(
            {
                "service.name": settings.service_name or f"scorefn-{role}",
                "service.namespace": "scorefn",
                "scorefn.role": role,
            }
        )
        _traces(settings, exporters, span_exporters, resource, handle)
        _metrics(settings, exporters, metric_readers, resource, handle)
    if settings.collect_rate > 0 and role in ("scoring", "all"):
        from shared.telemetry.collector import DataCollector

        TELEMETRY.collector = collector = DataCollector.from_settings(settings)
        # its thread is a daemon: upload what is buffered when the process exits normally
        # (the trace and metric providers flush themselves at exit)
        atexit.register(collector.close, _EXIT_FLUSH_S)
    TELEMETRY.endpoint = settings.endpoint
    TELEMETRY.observing = handle.enabled
    if handle.enabled:
        log.info(
            "telemetry on: exporters %s, data collection %s",
            ",".join(sorted(exporters)) or "(in-process)",
            f"{settings.collect_rate:g}" if TELEMETRY.collector is not None else "off",
        )
    return handle


def _console_out(settings: TelemetrySettings, handle: Telemetry) -> IO[str]:
    if not settings.console_path:
        import sys

        return sys.stdout
    # Line-buffered append: several processes may share the file, one JSON per line.
    out = open(settings.console_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    handle._files.append(out)
    return out


def _traces(
    settings: TelemetrySettings,
    exporters: frozenset[str],
    extra: Sequence[SpanExporter],
    resource: Resource,
    handle: Telemetry,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    processors: list[SimpleSpanProcessor | BatchSpanProcessor] = [
        SimpleSpanProcessor(e) for e in extra
    ]
    if "console" in exporters:
        out = _console_out(settings, handle)
        processors.append(SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=_span_line)))
    if "otlp" in exporters:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        processors.append(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if "azure_monitor" in exporters:
        from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter

        processors.append(
            BatchSpanProcessor(
                AzureMonitorTraceExporter(
                    connection_string=settings.applicationinsights_connection_string,
                    credential=_azure_credential(),
                )
            )
        )
    if not processors:
        return
    provider = TracerProvider(
        resource=resource,
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        shutdown_on_exit=True,
    )
    for processor in processors:
        provider.add_span_processor(processor)
    handle.tracer_provider = provider
    TELEMETRY.tracer = provider.get_tracer(SCOPE)
    TELEMETRY.tracing = True


def _metrics(
    settings: TelemetrySettings,
    exporters: frozenset[str],
    extra: Sequence[MetricReader],
    resource: Resource,
    handle: Telemetry,
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )

    from shared.telemetry.instruments import Instruments

    readers: list[MetricReader] = list(extra)
    interval_ms = settings.export_interval_s * 1000
    if "console" in exporters:
        out = _console_out(settings, handle)
        readers.append(
            PeriodicExportingMetricReader(
                ConsoleMetricExporter(out=out, formatter=_metrics_line),
                export_interval_millis=interval_ms,
            )
        )
    if "otlp" in exporters:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/metrics"
        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=endpoint), export_interval_millis=interval_ms
            )
        )
    if "azure_monitor" in exporters:
        from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter

        readers.append(
            PeriodicExportingMetricReader(
                AzureMonitorMetricExporter(
                    connection_string=settings.applicationinsights_connection_string,
                    credential=_azure_credential(),
                ),
                export_interval_millis=interval_ms,
            )
        )
    served = None
    fast = sdk_hot = False
    if "prometheus" in exporters:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        # The scrape serves the hot-path histograms from shared.telemetry.fast; the SDK
        # records them only when another metrics exporter needs them.
        fast = True
        sdk_hot = bool(readers)
        sdk_registry = CollectorRegistry()
        readers.append(PrometheusMetricReader(registry=sdk_registry))
        served = CollectorRegistry()
    if not readers:
        return
    provider = MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=True)
    handle.meter_provider = provider
    instruments = Instruments(provider.get_meter(SCOPE), fast=fast, sdk_hot=sdk_hot)
    if served is not None:
        from shared.telemetry.fast import Filtered

        assert instruments.fast is not None
        served.register(instruments.fast)
        served.register(Filtered(sdk_registry, instruments.fast.names))
        TELEMETRY.prometheus = served
    TELEMETRY.metrics = instruments
