"""Per-deployment outcomes per time bucket: what the rollout gates are computed from.

A router instance counts, per (endpoint, deployment) and per bucket of ``bucket_s``
seconds: requests, errors (5xx answers, timeouts, unreachable), a latency histogram (log
buckets 25% wide, so p99s merge across instances) and mirrored copies compared with the
primary (``mirrored`` / ``agreed``). ``OutcomeCounter`` is the in-memory side (O(1) per
request); ``WindowStore`` writes each instance's buckets to table ``rolloutwindows``
(partition = endpoint, row = ``<bucket start, epoch s>-<deployment>-<instance>``; an
instance owns its rows, so a plain upsert) and sums every instance's buckets of a time
range for the controller.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from azure.core.exceptions import AzureError
from azure.data.tables import TableClient

from shared.errors import UpstreamError
from shared.rollout.tables import WINDOWS_TABLE, Tables

__all__ = ["Counts", "OutcomeCounter", "WindowStore", "latency_bin", "bin_upper_ms"]

_BINS: Final = 64
_BASE: Final = 1.25
_LOG_BASE: Final = math.log(_BASE)
_BATCH: Final = 100


def latency_bin(elapsed_s: float) -> int:
    """The histogram bin of a latency: bin ``i`` holds ``(1.25**(i-1), 1.25**i]`` ms."""
    ms = elapsed_s * 1000.0
    if ms <= 1.0:
        return 0
    return min(math.ceil(math.log(ms) / _LOG_BASE), _BINS - 1)


def bin_upper_ms(index: int) -> float:
    """The upper edge of bin ``index`` in ms."""
    return float(_BASE**index)


@dataclass(slots=True)
class Counts:
    """Outcomes of one deployment over some time."""

    requests: int = 0
    errors: int = 0
    hist: list[int] = field(default_factory=lambda: [0] * _BINS)
    mirrored: int = 0
    agreed: int = 0

    def add(self, other: Counts) -> None:
        """Add ``other``'s counts to these."""
        self.requests += other.requests
        self.errors += other.errors
        self.mirrored += other.mirrored
        self.agreed += other.agreed
        for i, c in enumerate(other.hist):
            if c:
                self.hist[i] += c

    @property
    def error_rate(self) -> float:
        """Errors per request (0 without requests)."""
        return self.errors / self.requests if self.requests else 0.0

    def quantile_ms(self, q: float) -> float:
        """The ``q`` quantile of latency in ms (a bin's upper edge; 0 without data)."""
        total = sum(self.hist)
        if not total:
            return 0.0
        rank = q * total
        seen = 0
        for i, c in enumerate(self.hist):
            seen += c
            if seen >= rank:
                return bin_upper_ms(i)
        return bin_upper_ms(_BINS - 1)

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "p99_ms": round(self.quantile_ms(0.99), 2),
            "mirrored": self.mirrored,
            "agreed": self.agreed,
        }


@dataclass(slots=True)
class _Open:
    start: int
    counts: Counts
    dirty: bool = True


class OutcomeCounter:
    """This instance's outcomes, by endpoint, deployment and bucket (in memory)."""

    def __init__(self, bucket_s: int) -> None:
        self.bucket_s = max(int(bucket_s), 1)
        self._open: dict[str, dict[str, _Open]] = {}
        self._done: list[tuple[str, str, int, Counts]] = []

    def _counts(self, endpoint: str, deployment: str, now: float) -> Counts:
        start = int(now) // self.bucket_s * self.bucket_s
        deps = self._open.get(endpoint)
        if deps is None:
            deps = self._open[endpoint] = {}
        entry = deps.get(deployment)
        if entry is None:
            entry = deps[deployment] = _Open(start, Counts())
        elif entry.start != start:
            self._done.append((endpoint, deployment, entry.start, entry.counts))
            entry.start, entry.counts = start, Counts()
        entry.dirty = True
        return entry.counts

    def record(
        self, endpoint: str, deployment: str, *, error: bool, elapsed_s: float, now: float
    ) -> None:
        """Count one request answered (or failed) by ``deployment``."""
        counts = self._counts(endpoint, deployment, now)
        counts.requests += 1
        if error:
            counts.errors += 1
        counts.hist[latency_bin(elapsed_s)] += 1

    def mirrored(self, endpoint: str, deployment: str, *, agreed: bool, now: float) -> None:
        """Count one mirrored copy answered by ``deployment``."""
        counts = self._counts(endpoint, deployment, now)
        counts.mirrored += 1
        if agreed:
            counts.agreed += 1

    def restore(self, rows: list[tuple[str, str, int, Counts]], *, limit: int) -> int:
        """Put back rows a failed flush did not write, ahead of newer ones (a later row
        of the same bucket supersedes them when written together); beyond ``limit``
        rows waiting, the oldest are dropped: how many."""
        done = rows + self._done
        excess = max(len(done) - limit, 0)
        self._done = done[excess:]
        return excess

    @property
    def waiting(self) -> int:
        """Closed bucket rows waiting for a flush."""
        return len(self._done)

    def take(self) -> list[tuple[str, str, int, Counts]]:
        """Closed buckets (handed over, forgotten here) and copies of the open ones."""
        done, self._done = self._done, []
        for endpoint, deps in self._open.items():
            for deployment, entry in deps.items():
                if not entry.dirty:
                    continue
                entry.dirty = False
                c = entry.counts
                copy = Counts(c.requests, c.errors, list(c.hist), c.mirrored, c.agreed)
                done.append((endpoint, deployment, entry.start, copy))
        return done


def _encode_hist(hist: list[int]) -> str:
    return ",".join(f"{i}:{c}" for i, c in enumerate(hist) if c)


def _decode_hist(text: str) -> list[int]:
    hist = [0] * _BINS
    for part in text.split(","):
        if part:
            i, _, c = part.partition(":")
            hist[min(int(i), _BINS - 1)] += int(c)
    return hist


class WindowStore:
    """Writes an instance's buckets; sums all instances' buckets of a time range."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    @property
    def _table(self) -> TableClient:
        return self._tables.table(WINDOWS_TABLE)

    def write(self, instance: str, rows: Iterable[tuple[str, str, int, Counts]]) -> None:
        """Upsert this instance's bucket rows (their totals so far)."""
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        for endpoint, deployment, start, c in rows:
            rk = f"{start:010d}-{deployment}-{instance}"
            groups.setdefault(endpoint, {})[rk] = {
                "PartitionKey": endpoint, "RowKey": rk, "deployment": deployment,
                "start": start, "requests": c.requests, "errors": c.errors,
                "hist": _encode_hist(c.hist), "mirrored": c.mirrored, "agreed": c.agreed,
            }  # fmt: skip
        table = self._table
        try:
            for entities in groups.values():
                items = list(entities.values())
                for i in range(0, len(items), _BATCH):
                    table.submit_transaction([("upsert", e) for e in items[i : i + _BATCH]])
        except AzureError as exc:
            raise UpstreamError(f"rollout windows unavailable ({type(exc).__name__})") from exc

    def totals(self, endpoint: str, *, start: float, end: float) -> dict[str, Counts]:
        """Every instance's counts of buckets starting in ``[start, end)``, by deployment."""
        lo, hi = f"{math.ceil(start):010d}", f"{math.ceil(end):010d}"
        try:
            rows = self._table.query_entities(
                "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                parameters={"pk": endpoint, "lo": lo, "hi": hi},
            )
            result: dict[str, Counts] = {}
            for e in rows:
                counts = result.setdefault(str(e["deployment"]), Counts())
                counts.add(Counts(int(e["requests"]), int(e["errors"]),
                                  _decode_hist(str(e.get("hist", ""))),
                                  int(e.get("mirrored", 0)), int(e.get("agreed", 0))))  # fmt: skip
            return result
        except AzureError as exc:
            raise UpstreamError(f"rollout windows unavailable ({type(exc).__name__})") from exc


def merged(parts: Mapping[str, Counts]) -> Counts:
    """All deployments' counts together."""
    total = Counts()
    for c in parts.values():
        total.add(c)
    return total
