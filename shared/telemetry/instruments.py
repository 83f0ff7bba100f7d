"""The metric instruments of scorefn: one schema for router, scoring and batch.

Each method records one event and never raises (a telemetry failure must not fail the
request that produced it). The names below are OpenTelemetry names; the Prometheus
exporter turns dots into underscores and adds the unit (``_seconds``) and ``_total`` to
counters, so ``scorefn.request.duration`` is scraped as
``scorefn_request_duration_seconds_{bucket,count,sum}``. The README's Observability
section has the table.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from typing import Final, Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from shared.telemetry.fast import FastHistogram, FastMetrics

__all__ = ["Instruments", "QueueSource", "SECONDS_BUCKETS", "ROWS_BUCKETS"]

log = logging.getLogger(__name__)

SECONDS_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
)  # fmt: skip
"""Histogram boundaries of durations, in seconds (0.5 ms .. 5 min)."""
ROWS_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
"""Histogram boundaries of batch sizes, in rows."""
RATE_BUCKETS: Final = (10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)
"""Histogram boundaries of throughputs, in rows per second."""


class QueueSource(Protocol):
    """What the queue-depth gauge reads (a ``Batcher``)."""

    name: str

    @property
    def queued_rows(self) -> int: ...


class Instruments:
    """Every scorefn instrument, created once from one ``Meter``."""

    def __init__(self, meter: Meter, *, fast: bool = False, sdk_hot: bool = True) -> None:
        """``fast``: also keep the hot-path histograms (request duration, batch size,
        queue wait) in ``self.fast``, which the Prometheus scrape serves
        (``shared.telemetry.fast``); ``sdk_hot``: record them in the SDK too (another
        metrics exporter needs them). Prometheus alone: ``fast`` and not ``sdk_hot``."""
        self._sdk_hot = sdk_hot or not fast
        self.fast: FastMetrics | None = None
        self._fast_request: FastHistogram | None = None
        self._fast_batch: FastHistogram | None = None
        self._fast_wait: FastHistogram | None = None
        if fast:
            self._fast_request = FastHistogram(
                "scorefn_request_duration_seconds",
                "requests served, by role, endpoint, deployment, model and status",
                ("role", "endpoint", "deployment", "model", "http_response_status_code"),
                SECONDS_BUCKETS,
            )
            self._fast_batch = FastHistogram(
                "scorefn_batcher_batch_size",
                "rows per batch sent to the model by the dynamic batcher",
                ("model",),
                ROWS_BUCKETS,
            )
            self._fast_wait = FastHistogram(
                "scorefn_batcher_queue_wait_seconds",
                "time the oldest request of each batch waited in the batcher queue",
                ("model",),
                SECONDS_BUCKETS,
            )
            self.fast = FastMetrics([self._fast_request, self._fast_batch, self._fast_wait])
        self.request_duration = meter.create_histogram(
            "scorefn.request.duration",
            unit="s",
            description="requests served, by role, endpoint, deployment, model and status",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.batch_size = meter.create_histogram(
            "scorefn.batcher.batch_size",
            unit="{row}",
            description="rows per batch sent to the model by the dynamic batcher",
            explicit_bucket_boundaries_advisory=ROWS_BUCKETS,
        )
        self.queue_wait = meter.create_histogram(
            "scorefn.batcher.queue_wait",
            unit="s",
            description="time the oldest request of each batch waited in the batcher queue",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.model_load = meter.create_histogram(
            "scorefn.model.load.duration",
            unit="s",
            description="model load time (sessions, hooks, checks), warm-up excluded",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.model_warmup = meter.create_histogram(
            "scorefn.model.warmup.duration",
            unit="s",
            description="model warm-up run time",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.mirror_copies = meter.create_counter(
            "scorefn.mirror.copies",
            unit="{copy}",
            description="mirror copies by outcome: matched, mismatched, failed, dropped",
        )
        self.mirror_delta = meter.create_histogram(
            "scorefn.mirror.latency_delta",
            unit="s",
            description=(
                "|mirror latency - primary latency| of answered copies; label 'mirror' says "
                "whether the mirror was slower or faster (histograms take no negative values)"
            ),
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.batch_rows = meter.create_counter(
            "scorefn.batch.rows",
            unit="{row}",
            description="rows of committed batch jobs by outcome: predicted, failed",
        )
        self.batch_job_duration = meter.create_histogram(
            "scorefn.batch.job.duration",
            unit="s",
            description="batch job time from creation to commit, by status",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.batch_throughput = meter.create_histogram(
            "scorefn.batch.job.throughput",
            unit="{row}/s",
            description="rows per second of each committed batch job",
            explicit_bucket_boundaries_advisory=RATE_BUCKETS,
        )
        self.jwks_fetches = meter.create_counter(
            "scorefn.jwks.fetches",
            unit="{fetch}",
            description="signing-key (OIDC metadata + JWKS) fetches by outcome: ok, failed",
        )
        self.overload = meter.create_counter(
            "scorefn.overload.rejections",
            unit="{request}",
            description="requests refused with 429 (router in-flight limit, batcher queue)",
        )
        self.collected = meter.create_counter(
            "scorefn.datacollection.records",
            unit="{record}",
            description="data collection records by outcome: written, dropped, failed",
        )
        self._queues: weakref.WeakSet[QueueSource] = weakref.WeakSet()
        self._queues_lock = threading.Lock()
        meter.create_observable_gauge(
            "scorefn.batcher.queue_depth",
            callbacks=[self._observe_queues],
            unit="{row}",
            description="rows waiting in each model's batcher queue",
        )

    # ------------------------------------------------------------------ recording
    def request(
        self,
        role: str,
        endpoint: str,
        deployment: str,
        model: str,
        status: int,
        seconds: float,
    ) -> None:
        """One request answered by the router (``role`` router) or a scoring app."""
        fast = self._fast_request
        if fast is not None:
            fast.observe((role, endpoint, deployment, model, str(status)), seconds)
            if not self._sdk_hot:
                return
        try:
            self.request_duration.record(
                seconds,
                {
                    "role": role,
                    "endpoint": endpoint,
                    "deployment": deployment,
                    "model": model,
                    "http.response.status_code": status,
                },
            )
        except Exception:  # telemetry never fails a request
            log.debug("request metric not recorded", exc_info=True)

    def batch_sent(self, model: str, rows: int, waited_s: float) -> None:
        """The batcher sent a batch of ``rows`` whose oldest request waited ``waited_s``."""
        if self._fast_batch is not None and self._fast_wait is not None:
            labels = (model,)
            self._fast_batch.observe(labels, rows)
            self._fast_wait.observe(labels, waited_s)
            if not self._sdk_hot:
                return
        try:
            attributes = {"model": model}
            self.batch_size.record(rows, attributes)
            self.queue_wait.record(waited_s, attributes)
        except Exception:
            log.debug("batch metric not recorded", exc_info=True)

    def watch_queue(self, source: QueueSource) -> None:
        """Report ``source.queued_rows`` as the queue depth of ``source.name``."""
        with self._queues_lock:
            self._queues.add(source)

    def _observe_queues(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._queues_lock:
            sources = list(self._queues)
        depth: dict[str, int] = {}
        for source in sources:
            depth[source.name] = depth.get(source.name, 0) + source.queued_rows
        return [Observation(rows, {"model": name}) for name, rows in depth.items()]

    def model_loaded(self, model: str, version: str, load_s: float, warmup_s: float) -> None:
        """A model finished loading and warming up."""
        try:
            attributes = {"model": model, "version": version}
            self.model_load.record(load_s, attributes)
            self.model_warmup.record(warmup_s, attributes)
        except Exception:
            log.debug("model metric not recorded", exc_info=True)

    def mirror(
        self, endpoint: str, deployment: str, outcome: str, delta_s: float | None = None
    ) -> None:
        """A mirror copy ended (``matched``, ``mismatched``, ``failed``) or was ``dropped``;
        ``delta_s``: its latency minus the primary's, when it was answered."""
        try:
            attributes = {"endpoint": endpoint, "deployment": deployment}
            self.mirror_copies.add(1, {**attributes, "outcome": outcome})
            if delta_s is not None:
                side = "slower" if delta_s > 0 else "faster"
                self.mirror_delta.record(abs(delta_s), {**attributes, "mirror": side})
        except Exception:
            log.debug("mirror metric not recorded", exc_info=True)

    def batch_job(
        self,
        endpoint: str,
        deployment: str,
        model: str,
        status: str,
        *,
        predicted: int,
        failed: int,
        seconds: float,
    ) -> None:
        """A batch job was committed (``status`` succeeded or failed)."""
        try:
            attributes = {"endpoint": endpoint, "deployment": deployment, "model": model}
            self.batch_rows.add(predicted, {**attributes, "outcome": "predicted"})
            self.batch_rows.add(failed, {**attributes, "outcome": "failed"})
            self.batch_job_duration.record(seconds, {**attributes, "status": status})
            if seconds > 0:
                self.batch_throughput.record((predicted + failed) / seconds, attributes)
        except Exception:
            log.debug("batch job metric not recorded", exc_info=True)

    def jwks_fetch(self, outcome: str) -> None:
        """One signing-key fetch (``ok`` or ``failed``)."""
        try:
            self.jwks_fetches.add(1, {"outcome": outcome})
        except Exception:
            log.debug("jwks metric not recorded", exc_info=True)

    def overloaded(self, role: str, name: str) -> None:
        """A request was refused with 429; ``name``: the endpoint (router) or model."""
        try:
            self.overload.add(1, {"role": role, "name": name})
        except Exception:
            log.debug("overload metric not recorded", exc_info=True)

    def collection(self, outcome: str, count: int = 1) -> None:
        """Data collection records ``written``, ``dropped`` or ``failed``."""
        try:
            self.collected.add(count, {"outcome": outcome})
        except Exception:
            log.debug("collection metric not recorded", exc_info=True)
