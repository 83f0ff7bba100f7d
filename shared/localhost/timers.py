"""Timer triggers: run a function on its NCRONTAB schedule with a ``func.TimerRequest``.

``run_on_startup`` runs it once when the host starts. Invocations of one timer never
overlap: an occurrence missed while the previous run was still going is skipped, and the
next run reports ``past_due`` when it starts more than a second late. Failures are logged;
timers do not retry. Schedule status is kept in memory only (no ``useMonitor`` storage).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from azure.functions.timer import TimerRequest

from shared.localhost.invocation import Invoker
from shared.localhost.ncrontab import Schedule

__all__ = ["TimerListener"]

logger = logging.getLogger("shared.localhost.timers")

_PAST_DUE = timedelta(seconds=1)


class TimerListener:
    """Fires one function on its schedule."""

    def __init__(
        self,
        invoker: Invoker,
        *,
        schedule: Schedule,
        run_on_startup: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``clock`` returns the current UTC time (a seam for tests)."""
        self.invoker = invoker
        self.schedule = schedule
        self._run_on_startup = run_on_startup
        self._clock = clock or (lambda: datetime.now(UTC))
        self._stop = asyncio.Event()
        self._last: datetime | None = None

    def stop(self) -> None:
        """Ask ``run`` to return (after the running invocation, if any)."""
        self._stop.set()

    async def run(self) -> None:
        """Fire on schedule until ``stop()``."""
        now = self._clock()
        if self._run_on_startup:
            await self._fire(now, now, reason="Timer fired at startup (run_on_startup)")
        due = self.schedule.next_after(self._clock())
        while not self._stop.is_set():
            delay = (due - self._clock()).total_seconds()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    return
                except TimeoutError:
                    pass
            await self._fire(due, self._clock(), reason=f"Timer fired at {due.isoformat()}")
            due = self.schedule.next_after(max(due, self._clock()))

    async def _fire(self, due: datetime, started: datetime, *, reason: str) -> None:
        following = self.schedule.next_after(started)
        request = TimerRequest(
            past_due=started - due > _PAST_DUE,
            schedule_status={
                "Last": (self._last or due).isoformat(),
                "Next": following.isoformat(),
                "LastUpdated": started.isoformat(),
            },
            schedule={"AdjustForDST": True},
        )
        self._last = started
        await self.invoker.invoke(request, {}, reason=reason)
