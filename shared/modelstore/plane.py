"""The on-demand data plane: hundreds of packages in the model store, a bounded working
set loaded, the rest loaded when a request names them.

A request resolves its (name, version) in the index once and holds a lease on that
exact package (name, version and content digest) until it is answered, so a version
pushed meanwhile serves the next requests while this one finishes where it started.
Loads run on loader threads: download and verify into the disk cache, then
``Model.load`` under one lock with resident memory read before and after (the measured
size the memory bound counts; floored at the ONNX files' size because memory freed by an
eviction and reused by the next load shows no growth).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from shared.errors import NotFoundError, NotReadyError, PackageError
from shared.modelstore.blobstore import ModelStoreClient, PackageListing
from shared.modelstore.diskcache import PackageCache
from shared.modelstore.index import StoreIndex
from shared.modelstore.memory import rss_bytes, trim_heap
from shared.modelstore.policy import ModelRule
from shared.modelstore.workingset import Slot, WorkingSet
from shared.pipeline.model import Model
from shared.pipeline.package import load_model_yaml
from shared.pipeline.spec import PackageSpec
from shared.serving.dataplane import DataPlane, ModelEntry, ModelLease, ModelState
from shared.telemetry.state import TELEMETRY

__all__ = ["StoreDataPlane", "StoreOptions"]

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # name, version, digest
_FAILED_RETRY_S: Final = 30.0


@dataclass(frozen=True)
class StoreOptions:
    """How the on-demand plane is bounded and refreshed (from ``ScoringSettings``)."""

    cache_dir: Path
    max_loaded_models: int = 20
    max_memory_mb: int = 4096
    refresh_s: float = 5.0
    loader_threads: int = 2
    load_wait_s: float = 30.0
    """How long a request waits for its model's load before a 503 (the load goes on)."""


class StoreDataPlane(DataPlane):
    """Models of one deployment, loaded on demand from a model store."""

    def __init__(
        self,
        client: ModelStoreClient,
        rules: Sequence[ModelRule],
        options: StoreOptions,
        *,
        batching: bool = True,
    ) -> None:
        super().__init__(options.cache_dir, "", batching=batching)
        self.client = client
        self.options = options
        self.index = StoreIndex(
            client.list_packages, rules, refresh_s=options.refresh_s, prober=client.list_names
        )
        self.cache = PackageCache(options.cache_dir, client)
        self.working: WorkingSet[Key, ModelEntry] = WorkingSet(
            max_items=options.max_loaded_models,
            max_bytes=options.max_memory_mb * 1024 * 1024,
            on_evict=self._evicted,
        )
        self._executor = ThreadPoolExecutor(options.loader_threads, "model-load")
        self._lister = ThreadPoolExecutor(1, "model-relist")
        self._load_lock = threading.Lock()
        self._failed: dict[Key, tuple[str, float]] = {}
        self._loops: dict[int, asyncio.AbstractEventLoop] = {}
        self._listed = threading.Event()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._relisting: Future[None] | None = None
        self._load_seconds = 0.0  # all loads together: download + verify + load + warm-up

    # ------------------------------------------------------------------ lifecycle
    def start_loading(self) -> None:
        """Start the index refresher (first listing at once); loads nothing."""
        with self._lock:
            if self._refresher is not None:
                return
            self._refresher = threading.Thread(
                target=self._refresh_loop, name="model-index", daemon=True
            )
            self._refresher.start()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Block until the store was listed once (successfully or not)."""
        self.start_loading()
        return self._listed.wait(timeout)

    def stop(self) -> None:
        """Stop the refresher (tests)."""
        self._stop.set()

    def _refresh_loop(self) -> None:
        first = True
        while True:
            self.refresh()
            if first:
                # What exists now (modules, app, clients) lives for the whole process: out
                # of the collector's reach, as the eager plane does after loading, so full
                # collections under load stay short. Models come and go: they stay tracked.
                gc.collect()
                gc.freeze()
                first = False
            self._listed.set()
            if self._stop.wait(self.options.refresh_s):
                return

    def refresh(self) -> None:
        """List the store now; retire loaded packages it no longer serves."""
        snap = self.index.refresh()
        if snap is None or self.index.error:
            return
        for key in self.working.loaded_keys():
            name, version, digest = key
            listing = snap.models.get(name, {}).get(version)
            if listing is None or listing.digest != digest:
                log.info("model %s:%s left the index or changed: unloading", name, version)
                self.working.retire(key)

    @property
    def ready(self) -> bool:
        """The store has been listed (models then load on demand)."""
        return self.index.snapshot is not None

    @property
    def default_model(self) -> str | None:
        """The first served model by name (what ``/score`` scores without a name)."""
        snap = self.index.snapshot
        return min(snap.models) if snap is not None and snap.models else None

    # ------------------------------------------------------------------ queries
    def entries(self) -> list[ModelEntry]:
        """Loaded models, least recently used first."""
        out = []
        for key in self.working.loaded_keys():
            slot = self.working.get(key)
            if slot is not None:
                out.append(slot.value)
        return out

    def _resolve(self, name: str, version: str | None) -> PackageListing:
        return self.index.resolve(name, version)

    def entry(self, name: str, version: str | None = None) -> ModelEntry:
        """The loaded entry; else start its load and raise ``NotReadyError`` (callers
        without an event loop, such as batch workers, retry)."""
        listing = self._resolve(name, version)
        key = _key(listing)
        slot = self.working.get(key)
        if slot is not None:
            return slot.value
        self._check_failed(key, listing)
        acquired = self.working.acquire(key)
        if acquired.slot is not None:
            self.working.release(acquired.slot)
            return acquired.slot.value
        if acquired.start:
            self._executor.submit(self._load, key, listing)
        assert acquired.future is not None
        acquired.future.add_done_callback(self._release_when_loaded)
        raise NotReadyError(f"model '{listing.key}' is loading", retry_after=1)

    def model(self, name: str, version: str | None = None) -> Model:
        """The loaded model; else start its load and raise ``NotReadyError`` (batch
        workers call this and retry the chunk)."""
        model = self.entry(name, version).model
        if model is None:  # evicted between the lookup and now
            raise NotReadyError(f"model '{name}' was unloaded; retry", retry_after=1)
        return model

    def hold(
        self,
        name: str,
        version: str | None = None,
        *,
        timeout: float,
        listed_after: float | None = None,
    ) -> ModelLease:
        """Blocking ``acquire`` for threads without an event loop (partitioned batch
        chunks): lease the model, waiting up to ``timeout`` s for its load (single flight
        with every other caller). A name the index does not know is looked up again in a
        listing started after ``listed_after`` (``time.monotonic()``) before the
        ``NotFoundError``. A package that failed to load raises ``PackageError``; still
        loading after ``timeout``, or the store unreachable, ``NotReadyError``."""
        try:
            listing = self._resolve(name, version)
        except NotFoundError:
            snap = self.index.snapshot
            if listed_after is None or (snap is not None and snap.listed_at >= listed_after):
                raise
            with self._lock:
                running = self._relisting
                if running is None or running.done():
                    running = self._relisting = self._lister.submit(self.refresh)
            running.result()
            listing = self._resolve(name, version)
        key = _key(listing)
        where = f"model '{listing.name}' version '{listing.version}'"
        failed = self._failed.get(key)
        if failed is not None and failed[1] > time.monotonic():
            raise PackageError(where, "", f"failed to load: {failed[0]}")
        acquired = self.working.acquire(key)
        slot = acquired.slot
        if slot is None:
            if acquired.start:
                self._executor.submit(self._load, key, listing)
            future = acquired.future
            assert future is not None
            try:
                slot = future.result(timeout)
            except TimeoutError as exc:
                future.add_done_callback(self._release_when_loaded)
                raise NotReadyError(
                    f"{where} is still loading after {timeout:g} s", retry_after=1
                ) from exc
            except NotReadyError as exc:
                why = self._failed.get(key)
                if why is not None:
                    raise PackageError(where, "", f"failed to load: {why[0]}") from exc
                raise
        entry = slot.value
        assert entry.model is not None
        held = slot
        return ModelLease(self, entry, entry.model, lambda: self.working.release(held))

    def check_ready(self, name: str, version: str | None = None) -> None:
        """``NotReadyError`` unless loaded. Loads nothing: readiness probes must not
        churn the working set."""
        listing = self._resolve(name, version)
        if self.working.get(_key(listing)) is None:
            raise NotReadyError(
                f"model '{listing.key}' is not loaded; a request to it or "
                f"POST v2/repository/models/{name}/load loads it",
                retry_after=1,
            )

    def versions(self, name: str) -> list[str]:
        """Servable versions of ``name`` (ascending)."""
        snap = self.index.snapshot
        return list(snap.models.get(name, {})) if snap is not None else []

    # ------------------------------------------------------------------ leases
    async def acquire(self, name: str, version: str | None = None) -> ModelLease:
        """Lease ``name`` (latest servable version when ``version`` is None), loading it
        first if needed; concurrent first requests share one load."""
        try:
            listing = self._resolve(name, version)
        except NotFoundError:
            await self._refresh_for_unknown(time.monotonic())
            listing = self._resolve(name, version)
        key = _key(listing)
        self._check_failed(key, listing)
        acquired = self.working.acquire(key)
        slot = acquired.slot
        if slot is None:
            if acquired.start:
                self._executor.submit(self._load, key, listing)
            assert acquired.future is not None
            slot = await self._wait(acquired.future, listing)
        entry = slot.value
        assert entry.model is not None
        loop = asyncio.get_running_loop()
        self._loops.setdefault(id(loop), loop)
        return ModelLease(self, entry, entry.model, lambda: self.working.release(slot))

    async def _wait(self, future: Any, listing: PackageListing) -> Slot[Key, ModelEntry]:
        wrapped = asyncio.wrap_future(future)
        try:
            slot: Slot[Key, ModelEntry] = await asyncio.wait_for(
                asyncio.shield(wrapped), self.options.load_wait_s
            )
        except (asyncio.CancelledError, TimeoutError) as exc:
            # The lease was taken for us when the load completes: give it back then.
            future.add_done_callback(self._release_when_loaded)
            if isinstance(exc, TimeoutError):
                raise NotReadyError(
                    f"model '{listing.key}' is still loading after "
                    f"{self.options.load_wait_s:g} s",
                    retry_after=1,
                ) from exc
            raise
        return slot

    def _release_when_loaded(self, future: Any) -> None:
        if not future.cancelled() and future.exception() is None:
            self.working.release(future.result())

    async def _refresh_for_unknown(self, arrived: float) -> None:
        """Before answering 404, wait for a listing that started after the request
        arrived, so a model pushed a moment ago is served at once. Concurrent requests
        share one listing (at most one runs, and one more is started after it)."""
        for _ in range(2):
            snap = self.index.snapshot
            if snap is not None and snap.listed_at >= arrived:
                return
            with self._lock:
                running = self._relisting
                if running is None or running.done():
                    running = self._relisting = self._lister.submit(self.refresh)
            await asyncio.wrap_future(running)
            if self.index.error:
                return

    def _check_failed(self, key: Key, listing: PackageListing) -> None:
        failed = self._failed.get(key)
        if failed is None:
            return
        message, until = failed
        left = until - time.monotonic()
        if left <= 0:
            self._failed.pop(key, None)
            return
        raise NotReadyError(
            f"model '{listing.name}' version '{listing.version}' failed to load: {message}",
            retry_after=left,
        )

    # ------------------------------------------------------------------ loading
    def _load(self, key: Key, listing: PackageListing) -> None:
        """Loader thread: fetch, verify, load, measure; hand the result to the set."""
        t0 = time.perf_counter()
        try:
            folder = self.cache.fetch(listing)
            with self._load_lock:
                trim_heap()
                before = rss_bytes()
                spec = load_model_yaml(folder)
                model = Model.load(spec)
                grown = rss_bytes() - before
        except PackageError as exc:
            self.cache.remove(listing)
            message = str(exc)
            self._failed[key] = (message, time.monotonic() + _FAILED_RETRY_S)
            log.error("model %s failed to load: %s", listing.key, message)
            self.working.fail(
                key,
                NotReadyError(
                    f"model '{listing.name}' version '{listing.version}' failed to load: {message}",
                    retry_after=_FAILED_RETRY_S,
                ),
            )
            return
        except BaseException as exc:
            log.warning("model %s could not be loaded: %s", listing.key, exc)
            self.working.fail(key, exc)
            return
        size = max(grown, listing.onnx_size)
        with self._load_lock:
            self._load_seconds += time.perf_counter() - t0
        if TELEMETRY.metrics is not None:
            stats = model.stats
            TELEMETRY.metrics.model_loaded(
                spec.name, spec.version, stats.load_seconds, stats.warmup_seconds
            )
        entry = ModelEntry(spec, state=ModelState.READY, model=model)
        self.working.complete(key, entry, size)

    def _evicted(self, slot: Slot[Key, ModelEntry]) -> None:
        """Close the evicted model's batchers on their loops; drop its sessions."""
        entry = slot.value
        for loop_id, batcher in list(entry.batchers.items()):
            loop = self._loops.get(loop_id)
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                    asyncio.run_coroutine_threadsafe(batcher.close(), loop)
        entry.batchers.clear()
        entry.model = None
        entry.state = ModelState.LOADING
        log.info("unloaded model %s:%s", slot.key[0], slot.key[1])

    # ------------------------------------------------------------------ repository API
    async def describe(
        self, name: str, version: str | None = None
    ) -> tuple[PackageSpec, list[str]]:
        """``(spec, versions)`` of a model: loads it on demand."""
        lease = await self.acquire(name, version)
        try:
            return lease.model.spec, self.versions(name)
        finally:
            lease.release()

    def repository_index(self) -> list[dict[str, str]]:
        """Every servable (name, version): READY when loaded, LOADING, or UNAVAILABLE with
        the reason (failed load, or simply not loaded)."""
        snap = self.index.snapshot
        if snap is None:
            raise NotReadyError(
                self.index.error or "the model store has not been listed yet",
                self.index.error_retry_after,
            )
        out: list[dict[str, str]] = []
        now = time.monotonic()
        for name, versions in snap.models.items():
            for version, listing in versions.items():
                key = _key(listing)
                failed = self._failed.get(key)
                if self.working.get(key) is not None:
                    state, reason = "READY", ""
                elif self.working.loading(key):
                    state, reason = "LOADING", ""
                elif failed is not None and failed[1] > now:
                    state, reason = "UNAVAILABLE", f"failed to load: {failed[0]}"
                else:
                    state, reason = "UNAVAILABLE", "not loaded"
                out.append({"name": name, "version": version, "state": state, "reason": reason})
        return out

    async def load_model(self, name: str) -> list[dict[str, str]]:
        """Load every servable version of ``name`` (Triton's explicit ``load``)."""
        versions: list[str | None] = [*self.versions(name)] or [None]  # None: 404 / 503
        out = []
        for version in versions:
            lease = await self.acquire(name, version)
            lease.release()
            out.append({"name": name, "version": lease.model.spec.version, "state": "READY"})
        return out

    async def unload_model(self, name: str) -> list[dict[str, str]]:
        """Unload every loaded version of ``name`` (requests in flight finish first)."""
        self._resolve(name, None)  # 404 naming what is served
        out = []
        for key in self.working.loaded_keys():
            if key[0] == name:
                self.working.retire(key)
                out.append({"name": name, "version": key[1], "state": "UNAVAILABLE"})
        return out

    async def close(self) -> None:
        """Close the batchers of the loaded models on the running loop."""
        loop_id = id(asyncio.get_running_loop())
        for entry in self.entries():
            b = entry.batchers.pop(loop_id, None)
            if b is not None:
                await b.close()

    def stats(self) -> dict[str, Any]:
        """Working-set counters and bounds (``GET v2/repository/stats``)."""
        s = self.working.stats()
        return {
            "loaded": s.loaded,
            "loading": s.loading,
            "max_loaded_models": self.working.max_items,
            "memory_bytes": s.bytes,
            "max_memory_bytes": self.working.max_bytes,
            "loads": s.loads,
            "load_failures": s.load_failures,
            "evictions": s.evictions,
            "hits": s.hits,
            "load_seconds_mean": self._load_seconds / s.loads if s.loads else 0.0,
            "store_error": self.index.error,
        }


def _key(listing: PackageListing) -> Key:
    return (listing.name, listing.version, listing.digest)
