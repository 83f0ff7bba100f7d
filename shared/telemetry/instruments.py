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
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple, Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from shared.telemetry.fast import FastHistogram, FastMetrics

__all__ = [
    "ArmReading",
    "BanditSource",
    "Instruments",
    "QueueSource",
    "SECONDS_BUCKETS",
    "ROWS_BUCKETS",
]

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


class ArmReading(NamedTuple):
    """One bandit arm as of the last statistics refresh (every router instance's counts)."""

    endpoint: str
    deployment: str
    pulls: int
    mean_reward: float | None
    posterior_mean: float
    share: float


class BanditSource(Protocol):
    """What the bandit gauges read (the router's ``StrategyRuntime``)."""

    def arm_readings(self) -> Iterable[ArmReading]: ...


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
        self._strategy_instruments(meter)
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

    # ------------------------------------------------------------------ rollout, bandit
    def _strategy_instruments(self, meter: Meter) -> None:
        self.rollout_events = meter.create_counter(
            "scorefn.rollout.events",
            unit="{event}",
            description=(
                "rollout decisions by event: started, step, succeeded, rolled_back, aborted"
            ),
        )
        self.rollout_step = meter.create_gauge(
            "scorefn.rollout.step",
            unit="%",
            description="the candidate's traffic share set by the rollout's latest decision",
        )
        self.rollout_evaluations = meter.create_counter(
            "scorefn.rollout.evaluations",
            unit="{evaluation}",
            description="gate evaluations by decision: wait, pass, fail",
        )
        self.rollout_gate = meter.create_gauge(
            "scorefn.rollout.gate.value",
            unit="1",
            description=(
                "each gate's value at the latest evaluation: error_rate_increase, "
                "p99_latency_ratio, agreement (only measured gates)"
            ),
        )
        self.rollout_requests = meter.create_gauge(
            "scorefn.rollout.window.requests",
            unit="{request}",
            description="requests in the latest evaluated window, by side: candidate, baseline",
        )
        self.rollout_error_rate = meter.create_gauge(
            "scorefn.rollout.window.error_rate",
            unit="1",
            description="error rate in the latest evaluated window, by side",
        )
        self.rollbacks = meter.create_counter(
            "scorefn.rollout.rollbacks",
            unit="{rollback}",
            description="automatic rollbacks, by the gate that broke",
        )
        self.bandit_choices = meter.create_counter(
            "scorefn.bandit.choices",
            unit="{request}",
            description="requests this router sent to each arm (counted at each state flush)",
        )
        self.bandit_feedback = meter.create_counter(
            "scorefn.bandit.feedback",
            unit="{feedback}",
            description="feedback received by result: counted, duplicate, unknown, expired, "
            "invalid, failed",
        )
        self.strategy_flushes = meter.create_counter(
            "scorefn.strategy.flushes",
            unit="{flush}",
            description="router state flushes (arms, request ids, outcome windows): ok, failed",
        )
        self.strategy_dropped = meter.create_counter(
            "scorefn.strategy.dropped",
            unit="{item}",
            description="state kept over failed flushes beyond its bound, dropped: "
            "request_ids, outcome_buckets",
        )
        self._bandits: weakref.WeakSet[BanditSource] = weakref.WeakSet()
        gauges: tuple[tuple[str, Callable[[ArmReading], float | None], str, str], ...] = (
            ("scorefn.bandit.pulls", lambda a: a.pulls, "{request}",
             "requests each arm served (every router, as of the last flush)"),
            ("scorefn.bandit.mean_reward", lambda a: a.mean_reward, "1",
             "mean reward of each arm's feedback"),
            ("scorefn.bandit.posterior_mean", lambda a: a.posterior_mean, "1",
             "mean of each arm's posterior"),
            ("scorefn.bandit.share", lambda a: a.share, "1", "traffic share each arm gets now"),
        )  # fmt: skip
        for name, field, unit, what in gauges:
            meter.create_observable_gauge(
                name, callbacks=[self._arm_callback(field)], unit=unit, description=what
            )

    def _arm_callback(
        self, field: Callable[[ArmReading], float | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            out: list[Observation] = []
            with self._queues_lock:  # a router may add a source meanwhile
                sources = list(self._bandits)
            for source in sources:
                try:
                    readings = list(source.arm_readings())
                except Exception:
                    log.debug("bandit arms not observed", exc_info=True)
                    continue
                for arm in readings:
                    value = field(arm)
                    if value is not None:
                        labels = {"endpoint": arm.endpoint, "deployment": arm.deployment}
                        out.append(Observation(value, labels))
            return out

        return observe

    def watch_bandits(self, source: BanditSource) -> None:
        """Report ``source.arm_readings()`` as the bandit arm gauges."""
        with self._queues_lock:
            self._bandits.add(source)

    def rollout_event(self, endpoint: str, candidate: str, event: str, share: int) -> None:
        """A rollout ``started``, moved a ``step``, ``succeeded``, ``rolled_back`` or was
        ``aborted``; ``share``: the candidate's traffic share now."""
        try:
            attributes = {"endpoint": endpoint, "candidate": candidate}
            self.rollout_events.add(1, {**attributes, "event": event})
            self.rollout_step.set(share, attributes)
        except Exception:
            log.debug("rollout metric not recorded", exc_info=True)

    def rollout_check(
        self,
        endpoint: str,
        decision: str,
        gates: Iterable[tuple[str, float | None]],
        sides: Iterable[tuple[str, str, int, float]],
    ) -> None:
        """One gate evaluation: ``gates`` (name, value or None when not measured) and
        ``sides`` (side, deployment, requests, error rate)."""
        try:
            self.rollout_evaluations.add(1, {"endpoint": endpoint, "decision": decision})
            for gate, value in gates:
                if value is not None:
                    self.rollout_gate.set(value, {"endpoint": endpoint, "gate": gate})
            for side, deployment, requests, error_rate in sides:
                attributes = {"endpoint": endpoint, "deployment": deployment, "side": side}
                self.rollout_requests.set(requests, attributes)
                self.rollout_error_rate.set(error_rate, attributes)
        except Exception:
            log.debug("rollout gate metric not recorded", exc_info=True)

    def rollback(self, endpoint: str, gate: str) -> None:
        """An automatic rollback because ``gate`` broke."""
        try:
            self.rollbacks.add(1, {"endpoint": endpoint, "gate": gate})
        except Exception:
            log.debug("rollback metric not recorded", exc_info=True)

    def arm_choices(self, endpoint: str, counts: Iterable[tuple[str, int]]) -> None:
        """Requests sent to each arm since the last flush."""
        try:
            for deployment, count in counts:
                if count:
                    self.bandit_choices.add(count, {"endpoint": endpoint, "deployment": deployment})
        except Exception:
            log.debug("bandit choice metric not recorded", exc_info=True)

    def feedback(self, endpoint: str, result: str) -> None:
        """One feedback request and its ``result``."""
        try:
            self.bandit_feedback.add(1, {"endpoint": endpoint, "result": result})
        except Exception:
            log.debug("feedback metric not recorded", exc_info=True)

    def strategy_flush(self, outcome: str, dropped: Iterable[tuple[str, int]] = ()) -> None:
        """One state flush (``ok`` or ``failed``) and what was dropped, by kind."""
        try:
            self.strategy_flushes.add(1, {"outcome": outcome})
            for kind, count in dropped:
                if count:
                    self.strategy_dropped.add(count, {"kind": kind})
        except Exception:
            log.debug("flush metric not recorded", exc_info=True)
