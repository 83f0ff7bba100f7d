"""The router's view of stored endpoint configs: cached briefly, refreshed by ETag.

A config is served from memory for ``ttl_s`` seconds; after that the next request reads
the entity again (in a worker thread: the table client is synchronous). When the ETag is
unchanged the cached object is kept as it is, so state derived from it (token
validators) is reused; when it changed, the new spec takes effect from that request on.
So a traffic change reaches every router instance within ``ttl_s`` plus one read, with
no restart. Concurrent refreshes of one endpoint share one read. An unknown endpoint is
remembered for ``ttl_s`` too, so a flood of requests for it costs one read per period.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.errors import NotFoundError
from shared.routing.store import EndpointStore, StoredEndpoint

__all__ = ["ConfigCache"]


@dataclass(slots=True)
class _Entry:
    value: StoredEndpoint | NotFoundError | None = None
    fetched_at: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ConfigCache:
    """Endpoint configs of one ``EndpointStore``, cached for ``ttl_s`` seconds.

    ``clock`` is monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        store: EndpointStore,
        *,
        ttl_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    async def get(self, name: str) -> StoredEndpoint:
        """The config of endpoint ``name`` (``NotFoundError`` if none is stored)."""
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry()
        if self._clock() - entry.fetched_at >= self._ttl_s:
            async with entry.lock:
                if self._clock() - entry.fetched_at >= self._ttl_s:
                    await self._refresh(name, entry)
        value = entry.value
        if isinstance(value, NotFoundError):
            raise NotFoundError(str(value))
        assert value is not None
        return value

    def put(self, stored: StoredEndpoint) -> None:
        """Use ``stored`` from now on (after this router changed it itself)."""
        entry = self._entries.setdefault(stored.spec.name, _Entry())
        entry.value = stored
        entry.fetched_at = self._clock()

    async def _refresh(self, name: str, entry: _Entry) -> None:
        try:
            fresh: StoredEndpoint | NotFoundError = await asyncio.to_thread(self.store.get, name)
        except NotFoundError as exc:
            fresh = exc
        current = entry.value
        # The ETag check: an unchanged entity keeps the object already in use.
        if not (
            isinstance(fresh, StoredEndpoint)
            and isinstance(current, StoredEndpoint)
            and fresh.etag == current.etag
        ):
            entry.value = fresh
        entry.fetched_at = self._clock()
