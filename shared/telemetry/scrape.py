"""Reading Prometheus scrapes back: samples, sums by label, histogram quantiles.

Used by ``scorefn stats`` and by tests that compare metric values with the requests sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared.errors import UpstreamError

__all__ = ["Sample", "fetch", "histogram_quantile", "parse", "total"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample line: full name (``..._count``, ``..._bucket``, ``..._total``), labels,
    value."""

    name: str
    labels: Mapping[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """Every sample of a text-format scrape."""
    return [
        Sample(s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def fetch(base_url: str, *, timeout: float = 5.0) -> list[Sample]:
    """Scrape ``<base_url>/metrics``; ``UpstreamError`` naming the URL when it cannot
    (host down, or its telemetry exporter is not ``prometheus``)."""
    url = base_url.rstrip("/") + "/metrics"
    try:
        response = httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{url}: {type(exc).__name__} ({exc})") from exc
    if response.status_code != 200:
        raise UpstreamError(
            f"{url} answered {response.status_code}; is the host's "
            "SCOREFN_TELEMETRY_EXPORTER set to prometheus?"
        )
    return parse(response.text)


def _matches(sample: Sample, labels: Mapping[str, str]) -> bool:
    return all(sample.labels.get(k) == v for k, v in labels.items())


def total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples if s.name == name and _matches(s, labels))


def histogram_quantile(
    samples: Iterable[Sample], name: str, q: float, **labels: str
) -> float | None:
    """The ``q`` quantile of histogram ``name`` (its ``_bucket`` samples summed over the
    other labels), interpolated within its bucket as Prometheus does; None if empty."""
    buckets: dict[float, float] = {}
    for s in samples:
        if s.name == f"{name}_bucket" and _matches(s, labels):
            bound = float(s.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + s.value
    if not buckets:
        return None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for bound in bounds:
        cumulative = buckets[bound]
        if cumulative >= rank:
            if math.isinf(bound):
                return lower  # the highest finite bound: all Prometheus can say
            inside = cumulative - below
            share = (rank - below) / inside if inside > 0 else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, cumulative
    return lower
