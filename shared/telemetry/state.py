"""The process's telemetry switches, read on the hot path: import nothing heavy here.

Code that records telemetry checks one attribute first::

    from shared.telemetry.state import TELEMETRY

    if TELEMETRY.metrics is not None:
        TELEMETRY.metrics.batch_sent(model, rows, waited)

With telemetry off (the default) ``metrics`` and ``collector`` are ``None`` and
``tracing`` is ``False``: the cost is one attribute read. ``setup_telemetry`` fills them
in once per process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer
    from prometheus_client import CollectorRegistry

    from shared.telemetry.collector import DataCollector
    from shared.telemetry.instruments import Instruments

__all__ = ["TELEMETRY", "TelemetryState"]


class TelemetryState:
    """What is switched on in this process."""

    __slots__ = ("collector", "endpoint", "metrics", "observing", "prometheus", "tracer", "tracing")

    def __init__(self) -> None:
        self.observing: bool = False
        """Whether anything below is on: the one check of request handlers."""
        self.endpoint: str = ""
        """The endpoint a scoring app serves (``SCOREFN_TELEMETRY_ENDPOINT``), for labels."""
        self.metrics: Instruments | None = None
        """The metric instruments, or None when no metrics exporter is configured."""
        self.tracing: bool = False
        """Whether spans are recorded and trace context is propagated."""
        self.tracer: Tracer | None = None
        """scorefn's tracer (set exactly when ``tracing`` is true)."""
        self.prometheus: CollectorRegistry | None = None
        """The registry the local host serves at ``GET /metrics`` (prometheus exporter)."""
        self.collector: DataCollector | None = None
        """The data collector, or None when ``collect_rate`` is 0."""

    def reset(self) -> None:
        """Everything off (tests; a process that shuts telemetry down)."""
        self.observing = False
        self.endpoint = ""
        self.metrics = None
        self.tracing = False
        self.tracer = None
        self.prometheus = None
        self.collector = None


TELEMETRY = TelemetryState()
"""The one state of this process."""
