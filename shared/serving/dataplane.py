"""The transport-free data plane of a scoring app (MLServer's ``DataPlane`` idea).

It owns the models this deployment serves: loads them in a background thread at start
(so the process answers health checks at once and ``ready`` turns true only when every
model is loaded and warmed up), one dynamic batcher per model, and the calls the HTTP
handlers make: metadata, readiness, infer. It knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import NotFoundError, NotReadyError, PackageError, RequestError
from shared.pipeline.batcher import Batcher
from shared.pipeline.model import Model
from shared.pipeline.package import discover_packages, sort_versions
from shared.pipeline.session import available_providers, cuda_usable
from shared.pipeline.spec import PackageSpec
from shared.telemetry.state import TELEMETRY
from shared.telemetry.tracing import detached, span

__all__ = [
    "DataPlane",
    "ModelEntry",
    "ModelLease",
    "ModelState",
    "check_cuda",
    "parse_model_list",
]

log = logging.getLogger(__name__)


def check_cuda(required: bool) -> None:
    """Raise ``RuntimeError`` when CUDA is required but onnxruntime cannot use it here.

    Called at start-up of a GPU deployment (``SCOREFN_REQUIRE_CUDA``): an import-time
    failure stops the Functions host loudly instead of serving on CPU.
    """
    if required and not cuda_usable():
        raise RuntimeError(
            "SCOREFN_REQUIRE_CUDA is set but onnxruntime cannot create a CUDA session on "
            f"this machine (available providers: {', '.join(available_providers())}); "
            "check the GPU, the driver and the CUDA/cuDNN libraries of the image"
        )


class ModelState(enum.Enum):
    """Lifecycle of one model in this process."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass
class ModelEntry:
    """One servable (name, version)."""

    spec: PackageSpec
    state: ModelState = ModelState.LOADING
    model: Model | None = None
    error: str = ""
    batchers: dict[int, Batcher] = field(default_factory=dict)  # keyed by event loop id


class ModelLease:
    """One request's hold on a loaded model, from decoding to its answer: a plane that
    evicts models (``shared.modelstore``) never drops one with a lease. ``release()``
    exactly once, in a ``finally``."""

    __slots__ = ("_plane", "_release", "entry", "model")

    def __init__(
        self,
        plane: DataPlane,
        entry: ModelEntry,
        model: Model,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.entry = entry
        self.model = model
        self._plane = plane
        self._release = release

    async def infer(
        self, inputs: Mapping[str, np.ndarray], *, timeout: float | None = None
    ) -> dict[str, np.ndarray]:
        """Validate and run ``inputs`` through this model's batcher."""
        return await self._plane.infer_entry(self.entry, self.model, inputs, timeout=timeout)

    def release(self) -> None:
        """End the lease."""
        release, self._release = self._release, None
        if release is not None:
            release()


async def _traced_infer(
    batcher: Batcher, model: Model, inputs: dict[str, np.ndarray], timeout: float | None
) -> dict[str, np.ndarray]:
    """``batcher.infer`` in a span covering its queue wait and its batch's run."""
    rows = next(iter(inputs.values())).shape[0] if inputs else 0
    attributes = {"model": model.spec.name, "version": model.spec.version, "rows": rows}
    with span("scorefn.batcher", attributes):
        return await batcher.infer(inputs, timeout=timeout)


def parse_model_list(text: str) -> list[tuple[str, str | None]]:
    """``'fraud:1, vision'`` -> ``[('fraud', '1'), ('vision', None)]``."""
    out: list[tuple[str, str | None]] = []
    for item in (s.strip() for s in text.split(",")):
        if item:
            name, _, version = item.partition(":")
            out.append((name, version or None))
    return out


class DataPlane:
    """Models of one deployment. Build once per process; call ``start_loading()``."""

    def __init__(self, models_dir: Path, selection: str = "", *, batching: bool = True) -> None:
        self.models_dir = models_dir
        self.batching = batching
        self.started_at = time.monotonic()
        self._entries: dict[tuple[str, str], ModelEntry] = {}
        self._latest: dict[str, str] = {}
        self._default: str | None = None
        self._lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self._selection = parse_model_list(selection)
        self.discovery_error = ""

    # ----------------------------------------------------------------- loading
    def start_loading(self) -> None:
        """Discover packages and load them in a background thread (idempotent)."""
        with self._lock:
            if self._loader is not None:
                return
            self._loader = threading.Thread(target=self._load_all, name="model-loader", daemon=True)
            self._loader.start()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Block until loading finished (for tests and CLIs); True if it did."""
        if self._loader is None:
            self.start_loading()
        assert self._loader is not None
        self._loader.join(timeout)
        return not self._loader.is_alive()

    def _select(self, specs: list[PackageSpec]) -> list[PackageSpec]:
        if not self._selection:
            return specs
        chosen: list[PackageSpec] = []
        for name, version in self._selection:
            matches = [s for s in specs if s.name == name]
            if not matches:
                raise PackageError(
                    str(self.models_dir), name, "model not found in the models folder"
                )
            if version is None:
                latest = sort_versions([s.version for s in matches])[-1]
                matches = [s for s in matches if s.version == latest]
            else:
                matches = [s for s in matches if s.version == version]
                if not matches:
                    raise PackageError(
                        str(self.models_dir), f"{name}:{version}", "version not found"
                    )
            chosen.extend(matches)
        return chosen

    def _load_all(self) -> None:
        try:
            specs = self._select(discover_packages(self.models_dir))
        except PackageError as exc:
            self.discovery_error = str(exc)
            log.error("cannot discover models: %s", exc)
            return
        with self._lock:
            for s in specs:
                self._entries[(s.name, s.version)] = ModelEntry(s)
            for name in {s.name for s in specs}:
                self._latest[name] = sort_versions([s.version for s in specs if s.name == name])[-1]
            self._default = specs[0].name if specs else None
        for s in specs:
            entry = self._entries[(s.name, s.version)]
            try:
                entry.model = Model.load(s)
                entry.state = ModelState.READY
                if TELEMETRY.metrics is not None:
                    stats = entry.model.stats
                    TELEMETRY.metrics.model_loaded(
                        s.name, s.version, stats.load_seconds, stats.warmup_seconds
                    )
            except PackageError as exc:
                entry.error = str(exc)
                entry.state = ModelState.FAILED
                log.error("model %s:%s failed to load: %s", s.name, s.version, exc)
        # Sessions, graphs and modules live for the whole process: move them out of the
        # collector's reach so full collections under load stay short (they took 24-74 ms
        # with everything tracked; bench/http.py measured p99 at c=64 drop from ~60 ms).
        gc.collect()
        gc.freeze()

    # ----------------------------------------------------------------- queries
    @property
    def live(self) -> bool:
        """The process is up and serving requests."""
        return True

    @property
    def ready(self) -> bool:
        """Every selected model is loaded and warmed up."""
        loader = self._loader
        if loader is None or loader.is_alive() or self.discovery_error:
            return False
        return bool(self._entries) and all(
            e.state is ModelState.READY for e in self._entries.values()
        )

    @property
    def default_model(self) -> str | None:
        """The first model of the selection: what ``/score`` scores without a name."""
        return self._default

    def entries(self) -> list[ModelEntry]:
        """All models, in selection order."""
        return list(self._entries.values())

    def entry(self, name: str, version: str | None = None) -> ModelEntry:
        """The entry for ``name`` (latest version when None). ``NotFoundError`` if unknown;
        ``NotReadyError`` while discovery is still running."""
        if not self._entries and self._loader is not None and self._loader.is_alive():
            raise NotReadyError("models are still being discovered", retry_after=1)
        if name not in self._latest:
            known = ", ".join(sorted(self._latest)) or "none"
            raise NotFoundError(f"model '{name}' not found; this deployment serves {known}")
        v = version or self._latest[name]
        found = self._entries.get((name, v))
        if found is None:
            versions = ", ".join(
                e.spec.version for e in self._entries.values() if e.spec.name == name
            )
            raise NotFoundError(f"model '{name}' has no version '{v}'; versions: {versions}")
        return found

    def model(self, name: str, version: str | None = None) -> Model:
        """The loaded model, or ``NotReadyError`` (loading or failed)."""
        return self._loaded(self.entry(name, version))

    @staticmethod
    def _loaded(e: ModelEntry) -> Model:
        if e.state is ModelState.LOADING or e.model is None:
            if e.state is ModelState.FAILED:
                raise NotReadyError(
                    f"model '{e.spec.name}' version '{e.spec.version}' failed to load: {e.error}",
                    retry_after=30,
                )
            raise NotReadyError(
                f"model '{e.spec.name}' version '{e.spec.version}' is still loading",
                retry_after=1,
            )
        return e.model

    # ----------------------------------------------------------------- infer
    async def infer(
        self,
        name: str,
        version: str | None,
        inputs: Mapping[str, np.ndarray],
        *,
        timeout: float | None = None,
    ) -> tuple[Model, dict[str, np.ndarray]]:
        """Validate, queue into the model's batcher, return ``(model, outputs)``."""
        entry = self.entry(name, version)
        model = self._loaded(entry)
        return model, await self.infer_entry(entry, model, inputs, timeout=timeout)

    async def infer_entry(
        self,
        entry: ModelEntry,
        model: Model,
        inputs: Mapping[str, np.ndarray],
        *,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """``infer`` on an entry already looked up (a ``ModelLease``'s)."""
        # NaN/inf is checked once per batch on the batcher's worker (model.batcher()),
        # and the error still reaches exactly this request.
        valid = model.validate(inputs, defer_finite=True)
        # One batcher per event loop: tests and hosts may run several loops in one process.
        b = entry.batchers.get(id(asyncio.get_running_loop()))
        if b is None:
            b = await self._start_batcher(entry, model)
        if TELEMETRY.tracing:
            return await _traced_infer(b, model, valid, timeout)
        return await b.infer(valid, timeout=timeout)

    # ----------------------------------------------------------------- leases
    # The handlers' interface, shared with the on-demand plane of shared.modelstore: a
    # request holds a lease on one (name, version) from decoding to its answer.
    async def acquire(self, name: str, version: str | None = None) -> ModelLease:
        """Lease the loaded model (every model here stays loaded: releasing is a no-op)."""
        entry = self.entry(name, version)
        return ModelLease(self, entry, self._loaded(entry))

    async def describe(
        self, name: str, version: str | None = None
    ) -> tuple[PackageSpec, list[str]]:
        """``(spec, versions served)`` of a model, for metadata (loaded or not)."""
        spec = self.entry(name, version).spec
        return spec, [e.spec.version for e in self._entries.values() if e.spec.name == name]

    def repository_index(self) -> list[dict[str, str]]:
        """Model repository index: name, version, state (READY, LOADING, UNAVAILABLE), reason."""
        states = {ModelState.READY: "READY", ModelState.LOADING: "LOADING"}
        return [
            {
                "name": e.spec.name,
                "version": e.spec.version,
                "state": states.get(e.state, "UNAVAILABLE"),
                "reason": e.error,
            }
            for e in self._entries.values()
        ]

    def check_ready(self, name: str, version: str | None = None) -> None:
        """Return if the model is loaded: ``NotFoundError`` / ``NotReadyError`` otherwise."""
        self.model(name, version)

    def stats(self) -> dict[str, Any]:
        """Loaded-model counters (``GET v2/repository/stats``)."""
        states = [e.state for e in self._entries.values()]
        return {
            "loaded": states.count(ModelState.READY),
            "loading": states.count(ModelState.LOADING),
            "load_failures": states.count(ModelState.FAILED),
        }

    async def load_model(self, name: str) -> list[dict[str, str]]:
        """Repository ``load``: only a plane with a model store loads on request."""
        raise RequestError(
            f"cannot load model '{name}': this deployment serves the packages of its models "
            "folder, all loaded at start; set SCOREFN_MODEL_STORE to load models on demand"
        )

    async def unload_model(self, name: str) -> list[dict[str, str]]:
        """Repository ``unload``: only a plane with a model store unloads on request."""
        raise RequestError(
            f"cannot unload model '{name}': this deployment serves the packages of its models "
            "folder, all loaded at start; set SCOREFN_MODEL_STORE to load models on demand"
        )

    async def _start_batcher(self, entry: ModelEntry, model: Model) -> Batcher:
        loop_id = id(asyncio.get_running_loop())
        b = entry.batchers.get(loop_id)
        if b is None:
            spec = model.spec.batching
            if not self.batching:
                spec = spec.model_copy(update={"enabled": False, "max_delay_ms": 0.0})
            b = model.batcher(spec)
            if TELEMETRY.tracing:
                # The gather task copies the current context: give it none, so batches
                # are not charged to the trace of the request that started the batcher.
                await detached(b.start())
            else:
                await b.start()
            if TELEMETRY.metrics is not None:
                TELEMETRY.metrics.watch_queue(b)
            entry.batchers[loop_id] = b
        return b

    async def close(self) -> None:
        """Close every batcher of the running loop."""
        loop_id = id(asyncio.get_running_loop())
        for e in self._entries.values():
            b = e.batchers.pop(loop_id, None)
            if b is not None:
                await b.close()
