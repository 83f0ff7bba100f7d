"""The Prometheus scrape answer of this process (exporter ``prometheus``).

The local host serves it at ``GET /metrics`` (``shared.localhost.http``) when
``TELEMETRY.prometheus`` holds a registry; otherwise that path is an ordinary route.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.telemetry.state import TELEMETRY

__all__ = ["CONTENT_TYPE", "METRICS_PATH", "scrape"]

METRICS_PATH: Final = "/metrics"
"""Path of the scrape endpoint on each local host."""
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
"""Content type of the text exposition format."""


def scrape() -> bytes | None:
    """The metrics in the Prometheus text format; None when the exporter is off."""
    registry = TELEMETRY.prometheus
    if registry is None:
        return None
    return generate_latest(registry)
