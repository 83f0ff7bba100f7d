"""The bounded working set of loaded models: an LRU with reference counts and
single-flight loads.

* ``acquire(key)`` returns a leased ``Slot`` when the model is loaded, else a future
  shared by every caller waiting for the same key, and tells exactly one of them to
  start the load (``Acquired.start``). Each waiter holds its lease as soon as the load
  completes, so nothing can evict the model between its load and its first request.
* ``release(slot)`` ends a lease. A slot with leases is never evicted; when every slot
  is leased the set may run over its bounds until leases end (a request is never
  refused for lack of room).
* Bounds: ``max_items`` loaded models and ``max_bytes`` of their measured size. Least
  recently used idle slots go first; ``on_evict`` is called outside the lock.

Thread-safe: loads complete on loader threads, leases end on event loops.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Acquired", "Slot", "WorkingSet", "WorkingSetStats"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(eq=False)
class Slot(Generic[K, V]):
    """A loaded model: its value, measured size, leases and whether it is retired
    (unloaded or replaced: evicted when its last lease ends)."""

    key: K
    value: V
    size: int
    refs: int = 0
    retired: bool = False


@dataclass
class _Pending(Generic[K, V]):
    future: concurrent.futures.Future[Slot[K, V]]
    waiters: int = 1


@dataclass(frozen=True)
class Acquired(Generic[K, V]):
    """What ``acquire`` gives: a leased slot, or a future of one; ``start`` is True for
    the one caller that must run the load and then call ``complete`` or ``fail``."""

    slot: Slot[K, V] | None
    future: concurrent.futures.Future[Slot[K, V]] | None = None
    start: bool = False


@dataclass(frozen=True)
class WorkingSetStats:
    """Counters for the stats route, tests and benchmarks."""

    loaded: int
    loading: int
    bytes: int
    loads: int
    load_failures: int
    evictions: int
    hits: int
    sizes: dict[str, int] = field(default_factory=dict)


class WorkingSet(Generic[K, V]):
    """LRU of loaded models bounded by count and bytes, with leases and single flight."""

    def __init__(
        self,
        *,
        max_items: int,
        max_bytes: int,
        on_evict: Callable[[Slot[K, V]], None] = lambda slot: None,
    ) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("max_items and max_bytes must be at least 1")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._on_evict = on_evict
        self._slots: OrderedDict[K, Slot[K, V]] = OrderedDict()
        self._pending: dict[K, _Pending[K, V]] = {}
        self._bytes = 0
        self._retired = 0  # retired slots still held (leased): scanned only when > 0
        self._lock = threading.Lock()
        self._loads = self._failures = self._evictions = self._hits = 0

    # ------------------------------------------------------------------ leases
    def acquire(self, key: K) -> Acquired[K, V]:
        """Lease ``key`` if loaded; otherwise join (or start) its one load."""
        evicted: list[Slot[K, V]] = []
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None and not slot.retired:
                slot.refs += 1
                self._slots.move_to_end(key)
                self._hits += 1
                return Acquired(slot)
            pending = self._pending.get(key)
            if pending is not None:
                pending.waiters += 1
                return Acquired(None, pending.future)
            future: concurrent.futures.Future[Slot[K, V]] = concurrent.futures.Future()
            future.set_running_or_notify_cancel()  # waiters giving up must not cancel it
            self._pending[key] = _Pending(future)
            # Make room for the count now; bytes are known only once it is loaded.
            evicted = self._shrink()
        self._evicted(evicted)
        return Acquired(None, future, start=True)

    def release(self, slot: Slot[K, V]) -> None:
        """End one lease of ``slot``; evict what the bounds (or retirement) ask for."""
        with self._lock:
            slot.refs -= 1
            evicted = self._shrink()
            orphan = slot.refs <= 0 and self._slots.get(slot.key) is not slot
            if orphan and slot not in evicted:
                evicted.append(slot)  # a retired copy replaced by a reload: done now
        self._evicted(evicted)

    def complete(self, key: K, value: V, size: int) -> Slot[K, V]:
        """The load of ``key`` succeeded: insert it leased once per waiter."""
        with self._lock:
            pending = self._pending.pop(key)
            old = self._slots.pop(key, None)
            if old is not None:  # a retired copy still serving its last requests
                self._bytes -= old.size
                self._retired -= old.retired
            slot = Slot(key, value, max(size, 1), refs=pending.waiters)
            self._slots[key] = slot
            self._bytes += slot.size
            self._loads += 1
            evicted = self._shrink()
        pending.future.set_result(slot)
        self._evicted(evicted)
        return slot

    def fail(self, key: K, exc: BaseException) -> None:
        """The load of ``key`` failed: every waiter gets ``exc``."""
        with self._lock:
            pending = self._pending.pop(key)
            self._failures += 1
        pending.future.set_exception(exc)

    def retire(self, key: K) -> bool:
        """Unload ``key``: now if idle, else when its last lease ends. False if absent."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return False
            if not slot.retired:
                slot.retired = True
                self._retired += 1
            evicted = self._shrink()
        self._evicted(evicted)
        return True

    # ------------------------------------------------------------------ queries
    def get(self, key: K) -> Slot[K, V] | None:
        """The loaded (not retired) slot of ``key``, without leasing or touching LRU order."""
        slot = self._slots.get(key)
        return slot if slot is not None and not slot.retired else None

    def loading(self, key: K) -> bool:
        """Whether a load of ``key`` is under way."""
        return key in self._pending

    def loaded_keys(self) -> list[K]:
        """Loaded keys, least recently used first."""
        with self._lock:
            return [k for k, s in self._slots.items() if not s.retired]

    def stats(self) -> WorkingSetStats:
        """Counters and sizes now."""
        with self._lock:
            return WorkingSetStats(
                loaded=len(self._slots),
                loading=len(self._pending),
                bytes=self._bytes,
                loads=self._loads,
                load_failures=self._failures,
                evictions=self._evictions,
                hits=self._hits,
                sizes={str(k): s.size for k, s in self._slots.items()},
            )

    # ------------------------------------------------------------------ eviction
    def _shrink(self) -> list[Slot[K, V]]:
        """Pop idle slots (retired first, then least recently used) until within bounds;
        loads under way count against ``max_items``. Called with the lock held; returns
        what to hand to ``on_evict``."""
        out: list[Slot[K, V]] = []
        if self._retired:
            for key in [k for k, s in self._slots.items() if s.retired and s.refs <= 0]:
                out.append(self._pop(key))
        limit = max(self.max_items - len(self._pending), 0)
        while len(self._slots) > limit or self._bytes > self.max_bytes:
            victim = next((k for k, s in self._slots.items() if s.refs <= 0), None)
            if victim is None:
                break  # every slot is serving a request: over the bound until they end
            out.append(self._pop(victim))
        return out

    def _pop(self, key: K) -> Slot[K, V]:
        slot = self._slots.pop(key)
        self._bytes -= slot.size
        self._retired -= slot.retired
        self._evictions += 1
        return slot

    def _evicted(self, slots: list[Slot[K, V]]) -> None:
        for slot in slots:
            self._on_evict(slot)
