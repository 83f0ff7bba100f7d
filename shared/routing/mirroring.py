"""Mirrored (shadow) traffic: copies sent in the background, their outcomes counted.

``MirrorDispatcher.submit`` starts a copy as an asyncio task and returns at once; the
caller's response never waits for it. At most ``max_in_flight`` copies run at a time:
a copy over the limit is dropped and counted, so a slow or dead mirror costs the router
bounded memory and nothing else. Each copy's status, latency and whether its body equals
the primary's are kept per (endpoint, deployment) in ``MirrorStats``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from shared.routing.forward import Forwarded
from shared.routing.mirror import same_body
from shared.telemetry.state import TELEMETRY

__all__ = ["MirrorDispatcher", "MirrorStats"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MirrorStats:
    """Counters of the copies mirrored to one deployment of one endpoint."""

    sent: int = 0
    """Copies started."""
    dropped: int = 0
    """Copies not sent because ``max_in_flight`` copies were already running."""
    completed: int = 0
    """Copies that got an HTTP answer (any status)."""
    failed: int = 0
    """Copies that got no answer (unreachable, timed out)."""
    statuses: dict[str, int] = field(default_factory=dict)
    """Answers by HTTP status."""
    matched: int = 0
    """Answers whose status and body equal the primary's."""
    mismatched: int = 0
    """Answers that differ from the primary's."""
    latency_total_s: float = 0.0
    latency_max_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The counters as a JSON-ready object (mean and max latency in ms)."""
        mean = self.latency_total_s / self.completed if self.completed else 0.0
        return {
            "sent": self.sent,
            "dropped": self.dropped,
            "completed": self.completed,
            "failed": self.failed,
            "statuses": dict(self.statuses),
            "matched": self.matched,
            "mismatched": self.mismatched,
            "latency_ms": {
                "mean": round(mean * 1000, 3),
                "max": round(self.latency_max_s * 1000, 3),
            },
        }


class MirrorDispatcher:
    """Runs mirror copies in the background, at most ``max_in_flight`` at a time."""

    def __init__(self, max_in_flight: int = 64) -> None:
        self.max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats: dict[tuple[str, str], MirrorStats] = {}

    @property
    def in_flight(self) -> int:
        """Copies running now."""
        return len(self._tasks)

    def stats(self, endpoint: str) -> dict[str, MirrorStats]:
        """The counters of ``endpoint``'s mirror deployments, by deployment."""
        return {dep: s for (ep, dep), s in self._stats.items() if ep == endpoint}

    def submit(
        self,
        endpoint: str,
        deployment: str,
        send: Callable[[], Awaitable[Forwarded]],
        primary: Forwarded,
    ) -> bool:
        """Start sending a copy with ``send``; ``False`` (and counted) if dropped."""
        stats = self._stats.setdefault((endpoint, deployment), MirrorStats())
        if len(self._tasks) >= self.max_in_flight:
            stats.dropped += 1
            if TELEMETRY.metrics is not None:
                TELEMETRY.metrics.mirror(endpoint, deployment, "dropped")
            return False
        stats.sent += 1
        run = self._run(stats, send, primary, (endpoint, deployment))
        task = asyncio.get_running_loop().create_task(run)
        self._tasks.add(task)  # a strong reference until done (the loop keeps weak ones)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(
        self,
        stats: MirrorStats,
        send: Callable[[], Awaitable[Forwarded]],
        primary: Forwarded,
        labels: tuple[str, str] = ("", ""),
    ) -> None:
        try:
            answer = await send()
        except Exception as exc:  # a mirror's failure is counted, never raised
            stats.failed += 1
            log.debug("mirror copy failed: %s", exc)
            if TELEMETRY.metrics is not None:
                TELEMETRY.metrics.mirror(*labels, "failed")
            return
        stats.completed += 1
        key = str(answer.status)
        stats.statuses[key] = stats.statuses.get(key, 0) + 1
        matched = answer.status == primary.status and same_body(primary.body, answer.body)
        if matched:
            stats.matched += 1
        else:
            stats.mismatched += 1
        if TELEMETRY.metrics is not None:  # (endpoint, deployment), outcome, latency delta
            outcome = "matched" if matched else "mismatched"
            TELEMETRY.metrics.mirror(*labels, outcome, answer.elapsed_s - primary.elapsed_s)
        stats.latency_total_s += answer.elapsed_s
        stats.latency_max_s = max(stats.latency_max_s, answer.elapsed_s)

    async def drain(self) -> None:
        """Wait for the copies in flight (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
