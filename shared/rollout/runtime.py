"""The router's side of rollout strategies: cheap per-request bookkeeping in memory,
flushed to table storage every ``flush_s`` seconds by one background task.

Per request (O(1), a few dict operations): the bandit's choice from a precomputed
``Allocation``, the pull and the request id of bandit endpoints, and the outcome
(status class, latency) of every forwarded request for the rollout windows. Per flush:
arm increments (ETag-guarded), request ids (batched transactions), outcome buckets, then
fresh arm totals and new allocations (Thompson's Monte Carlo runs here, in a worker
thread, never on a request).

Feedback (``feedback``) is checked against this instance's ids not yet written, then
against the ledger table, so any instance accepts feedback for any request once the
serving instance has flushed (within ``flush_s``).

A flush that fails (storage down) loses nothing it can keep: arm increments not yet
added, request ids not yet written and outcome buckets are merged into the next flush.
Kept ids count against ``max_pending_ids`` (the newest are kept; expired ones are let
go) and outcome buckets against ``max_kept_buckets`` (the oldest go); what is dropped is
counted (``ids_not_remembered``, metric ``scorefn.strategy.dropped``). An arm increment
is added at most once: each is forgotten as soon as its ETag-guarded add succeeded.

Telemetry (``shared.telemetry``; nothing on the request path): arm choices per flush,
the arms' pulls, mean reward, posterior mean and share as gauges, feedback by result
with a ``scorefn.bandit.feedback`` span, flush outcomes and drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from shared.errors import DecodeError, RequestError, ScorefnError
from shared.rollout.arms import ArmStore
from shared.rollout.ledger import Claim, RequestLedger, Served
from shared.rollout.tables import Tables
from shared.rollout.windows import Counts, OutcomeCounter, WindowStore
from shared.routing.bandit import (
    Allocation,
    ArmStats,
    allocation,
    check_reward,
    fingerprint,
    posterior,
    posterior_mean,
)
from shared.routing.endpoint import EndpointSpec
from shared.routing.jsonbody import json_object
from shared.telemetry.state import TELEMETRY
from shared.telemetry.tracing import set_attributes, span

if TYPE_CHECKING:  # the instruments (and prometheus_client) load only with telemetry on
    from shared.telemetry.instruments import ArmReading

__all__ = ["StrategyRuntime", "decode_feedback"]

log = logging.getLogger("shared.rollout")

MAX_PENDING_IDS: Final = 200_000
"""Request ids kept in memory between flushes (per instance); more are not remembered."""
MAX_KEPT_BUCKETS: Final = 20_000
"""Outcome bucket rows kept over failed flushes (per instance); the oldest beyond go."""
_MAX_REQUEST_ID: Final = 256


@dataclass(slots=True)
class _Delta:
    pulls: int = 0
    rewarded: int = 0
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0
    reported: int = 0
    """Pulls already counted in the choices metric (kept over a failed flush)."""

    def stats(self) -> ArmStats:
        return ArmStats(self.pulls, self.rewarded, self.reward_sum, self.reward_sq_sum)

    def merge(self, kept: ArmStats) -> None:
        """Add increments a failed flush kept (their pulls were reported already)."""
        self.pulls += kept.pulls
        self.reported += kept.pulls
        self.rewarded += kept.rewarded
        self.reward_sum += kept.reward_sum
        self.reward_sq_sum += kept.reward_sq_sum


@dataclass(slots=True)
class _Pending:
    deployment: str
    served_at: float
    rewarded: bool = False


@dataclass(slots=True)
class _Bandit:
    """One bandit endpoint's state on this instance."""

    spec: EndpointSpec
    experiment: str
    """``fingerprint`` of the arms and reward scale: the statistics' experiment."""
    allocation: Allocation
    totals: dict[str, ArmStats]
    deltas: dict[str, _Delta]
    pending: dict[str, _Pending]
    dropped: int = 0
    readings: tuple[ArmReading, ...] = ()


@dataclass(slots=True)
class _Batch:
    """What one flush writes; whatever is left in it after a failure is kept."""

    deltas: dict[str, tuple[str, dict[str, ArmStats]]]
    """endpoint -> (experiment, arm -> increments not added yet)."""
    ids: dict[str, dict[str, _Pending]]
    rows: list[tuple[str, str, int, Counts]]
    specs: dict[str, EndpointSpec]
    ids_written: bool = False
    rows_written: bool = False


def decode_feedback(body: bytes) -> tuple[str, Any]:
    """``{"request_id": "...", "reward": ...}`` as its two fields; ``DecodeError`` names
    the field that is missing or wrong (the reward's range is checked by the spec)."""
    data = json_object(body, '{"request_id": "...", "reward": 1}')
    unknown_fields = sorted(set(data) - {"request_id", "reward"})
    if unknown_fields:
        raise DecodeError(
            f"unknown field(s) {', '.join(unknown_fields)}; expected request_id and reward"
        )
    for name in ("request_id", "reward"):
        if name not in data:
            raise DecodeError(f"field {name} is missing; expected request_id and reward")
    request_id = data["request_id"]
    if not isinstance(request_id, str) or not request_id.strip():
        raise DecodeError(
            f"field request_id must be a non-empty string (a response's x-request-id); "
            f"got {request_id!r}"
        )
    if len(request_id) > _MAX_REQUEST_ID:
        raise DecodeError(
            f"field request_id is {len(request_id)} characters; at most {_MAX_REQUEST_ID}"
        )
    return request_id, data["reward"]


def _check_feedback(spec: EndpointSpec, body: bytes) -> tuple[str, float]:
    """The request id and checked reward of a feedback body for ``spec``."""
    if spec.bandit is None:
        raise RequestError(
            f"endpoint {spec.name!r} routes by fixed weights; feedback is taken only "
            "with traffic.mode bandit"
        )
    request_id, raw = decode_feedback(body)
    try:
        return request_id, check_reward(spec.bandit, raw)
    except ValueError as exc:
        raise DecodeError(f"field {exc}") from None


def _report_choices(endpoint: str, deltas: Mapping[str, _Delta]) -> None:
    """Count the arm choices of ``deltas`` not reported yet (choices metric)."""
    metrics = TELEMETRY.metrics
    if metrics is None:
        return
    metrics.arm_choices(endpoint, [(arm, d.pulls - d.reported) for arm, d in deltas.items()])
    for d in deltas.values():
        d.reported = d.pulls


def _readings(spec: EndpointSpec, totals: Mapping[str, ArmStats],
              alloc: Allocation) -> tuple[ArmReading, ...]:  # fmt: skip
    from shared.telemetry.instruments import ArmReading

    assert spec.bandit is not None
    empty = ArmStats()
    return tuple(
        ArmReading(spec.name, arm, totals.get(arm, empty).pulls, totals.get(arm, empty).mean,
                   posterior_mean(spec.bandit, totals.get(arm, empty)), share)
        for arm, share in zip(alloc.names, alloc.shares, strict=True)
    )  # fmt: skip


class StrategyRuntime:
    """Bandit choices, request ids and outcomes of one router instance."""

    def __init__(
        self,
        tables: Tables,
        *,
        flush_s: float = 1.0,
        bucket_s: int = 10,
        instance: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        max_pending_ids: int = MAX_PENDING_IDS,
        max_kept_buckets: int = MAX_KEPT_BUCKETS,
    ) -> None:
        """``max_pending_ids`` / ``max_kept_buckets``: the bounds of what this instance
        keeps between flushes (defaults ``MAX_PENDING_IDS``, ``MAX_KEPT_BUCKETS``)."""
        self.tables = tables
        self.max_pending_ids = max_pending_ids
        self.max_kept_buckets = max_kept_buckets
        self.arms = ArmStore(tables)
        self.ledger = RequestLedger(tables)
        self.windows = WindowStore(tables)
        self.outcomes = OutcomeCounter(bucket_s)
        self.instance = instance or uuid.uuid4().hex[:12]
        self.flush_s = flush_s
        self._rng = rng or random.Random()
        self._clock = clock
        self._bandits: dict[str, _Bandit] = {}
        self._writing: dict[str, dict[str, _Pending]] = {}
        self._written = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # ------------------------------------------------------------------ hot path
    def _ensure_task(self) -> None:
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _bandit(self, spec: EndpointSpec) -> _Bandit:
        state = self._bandits.get(spec.name)
        if state is None or state.spec is not spec:
            assert spec.bandit is not None
            experiment = fingerprint(spec.bandit, spec.traffic)
            if state is not None and state.experiment != experiment:
                # other arms (or reward scale): a new experiment, nothing carried over
                _report_choices(spec.name, state.deltas)
                state.totals, state.deltas, state.readings = {}, {}, ()
            totals = state.totals if state is not None else {}
            alloc = allocation(spec.bandit, spec.traffic, totals, self._rng, samples=200)
            if state is None:
                state = self._bandits[spec.name] = _Bandit(spec, experiment, alloc, totals,
                                                           {}, {})  # fmt: skip
            else:
                state.spec, state.experiment, state.allocation = spec, experiment, alloc
            self._ensure_task()
        return state

    def choose(self, spec: EndpointSpec, draw: float) -> str:
        """The arm for this request of bandit endpoint ``spec`` (one draw)."""
        return self._bandit(spec).allocation.choose(draw)

    def served(self, spec: EndpointSpec, deployment: str, request_id: str) -> None:
        """Remember that ``deployment`` served ``request_id`` of bandit endpoint ``spec``."""
        state = self._bandit(spec)
        delta = state.deltas.get(deployment)
        if delta is None:
            delta = state.deltas[deployment] = _Delta()
        delta.pulls += 1
        if len(state.pending) >= self.max_pending_ids:
            state.dropped += 1
            return
        state.pending[request_id] = _Pending(deployment, self._clock())

    def record(self, endpoint: str, deployment: str, *, error: bool, elapsed_s: float) -> None:
        """Count one forwarded request's outcome for the rollout windows."""
        self.outcomes.record(endpoint, deployment, error=error, elapsed_s=elapsed_s,
                             now=self._clock())  # fmt: skip
        if self._task is None:
            self._ensure_task()

    def mirrored(self, endpoint: str, deployment: str, *, agreed: bool) -> None:
        """Count one mirrored copy and whether it agreed with the primary."""
        self.outcomes.mirrored(endpoint, deployment, agreed=agreed, now=self._clock())

    # ------------------------------------------------------------------ feedback
    async def feedback(self, spec: EndpointSpec, body: bytes) -> dict[str, Any]:
        """Count the reward of a request this endpoint served (once per request id).
        Recorded by result (counted, duplicate, unknown, expired, invalid, failed) in a
        ``scorefn.bandit.feedback`` span and counter when telemetry is on."""
        with span("scorefn.bandit.feedback", {"endpoint": spec.name}) as current:
            result = "invalid"
            try:
                request_id, reward = _check_feedback(spec, body)
                result = "failed"
                claim = await self._claim(spec, request_id)
                result = claim.result
                assert spec.bandit is not None
                if claim.result in ("unknown", "expired"):
                    raise claim.error(spec.name, request_id, spec.bandit.feedback_window_s)
                set_attributes(current, {"deployment": claim.deployment})
                return self._count(spec, request_id, reward, claim)
            finally:
                metrics = TELEMETRY.metrics
                if metrics is not None:
                    metrics.feedback(spec.name, result)
                set_attributes(current, {"scorefn.feedback.result": result})

    async def _claim(self, spec: EndpointSpec, request_id: str) -> Claim:
        assert spec.bandit is not None
        state = self._bandit(spec)
        window = spec.bandit.feedback_window_s
        now = self._clock()
        if request_id not in state.pending and request_id in self._writing.get(spec.name, {}):
            await self._written.wait()  # being written now: ask again once it is (or kept)
        local = state.pending.get(request_id)
        if local is None:
            claim = await asyncio.to_thread(
                self.ledger.claim, spec.name, request_id, window_s=window, now=now
            )
        else:
            age = now - local.served_at
            if age > window:
                return Claim("expired", age_s=age)
            claim = Claim("duplicate" if local.rewarded else "counted", local.deployment, age)
            local.rewarded = True
        if claim.result == "counted" and claim.deployment not in spec.traffic:
            return Claim("unknown")
        return claim

    def _count(
        self, spec: EndpointSpec, request_id: str, reward: float, claim: Claim
    ) -> dict[str, Any]:
        state = self._bandit(spec)
        if not claim.duplicate:
            delta = state.deltas.get(claim.deployment)
            if delta is None:
                delta = state.deltas[claim.deployment] = _Delta()
            delta.rewarded += 1
            delta.reward_sum += reward
            delta.reward_sq_sum += reward * reward
        log.info(
            "bandit feedback",
            extra={"endpoint": spec.name, "request_id": request_id,
                   "deployment": claim.deployment, "reward": reward,
                   "duplicate": claim.duplicate},
        )  # fmt: skip
        return {
            "endpoint": spec.name,
            "request_id": request_id,
            "deployment": claim.deployment,
            "reward": reward,
            "counted": not claim.duplicate,
            "duplicate": claim.duplicate,
        }

    # ------------------------------------------------------------------ describe
    async def describe(self, spec: EndpointSpec) -> dict[str, Any]:
        """The bandit's arms: stored statistics, posterior and current shares."""
        assert spec.bandit is not None
        bandit = spec.bandit
        state = self._bandit(spec)
        stats = await asyncio.to_thread(self.arms.read, spec.name, state.experiment)
        shares = state.allocation.as_dict()
        arms = {}
        for name in state.allocation.names:
            s = stats.get(name, ArmStats())
            arms[name] = {
                "pulls": s.pulls,
                "feedback": s.rewarded,
                "mean_reward": None if s.mean is None else round(s.mean, 6),
                "posterior": {k: round(v, 6) for k, v in posterior(bandit, s).items()},
                "share": shares.get(name, 0.0),
            }
        return {
            "policy": bandit.policy,
            "reward": bandit.reward,
            "phase": state.allocation.phase,
            "min_share": bandit.min_share,
            "warmup_requests": bandit.warmup_requests,
            "feedback_window_s": bandit.feedback_window_s,
            "arms": arms,
            "ids_not_remembered": state.dropped,
            "experiment": state.experiment,
        }

    def arm_readings(self) -> list[ArmReading]:
        """Every bandit endpoint's arms as of the last flush (the bandit gauges)."""
        return [r for state in tuple(self._bandits.values()) for r in state.readings]

    # ------------------------------------------------------------------ flushing
    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except ScorefnError as exc:  # storage down: keep counting, try next period
                log.warning("rollout state flush failed: %s", exc)
            except Exception:
                log.exception("rollout state flush failed")

    async def flush(self) -> None:
        """Write this instance's counts and ids; re-read arm totals; new allocations.
        On failure what was not written is kept for the next flush (bounded)."""
        batch = self._take()
        self._writing, self._written = batch.ids, asyncio.Event()
        metrics = TELEMETRY.metrics
        try:
            fresh = await asyncio.to_thread(self._flush_sync, batch)
        except Exception:
            dropped = self._keep(batch)
            if metrics is not None:
                metrics.strategy_flush("failed", dropped.items())
            raise
        finally:
            self._writing = {}
            self._written.set()
        if metrics is not None:
            metrics.strategy_flush("ok")
            if self._bandits:
                metrics.watch_bandits(self)
        for name, (experiment, totals, alloc) in fresh.items():
            current = self._bandits.get(name)
            if current is None or current.experiment != experiment:
                continue  # other arms meanwhile: their own flush comes next
            if alloc.as_dict() != current.allocation.as_dict():
                log.info(
                    "bandit allocation",
                    extra={"endpoint": name, "phase": alloc.phase, "shares": alloc.as_dict(),
                           "pulls": {a: s.pulls for a, s in totals.items()},
                           "mean_reward": {a: s.mean for a, s in totals.items()}},
                )  # fmt: skip
            current.totals, current.allocation = totals, alloc
            if metrics is not None:  # the gauges' source
                current.readings = _readings(current.spec, totals, alloc)

    def _take(self) -> _Batch:
        batch = _Batch({}, {}, self.outcomes.take(), {})
        for name, state in self._bandits.items():
            batch.specs[name] = state.spec
            if state.deltas:
                _report_choices(name, state.deltas)
                batch.deltas[name] = (
                    state.experiment, {d: v.stats() for d, v in state.deltas.items()}
                )
                state.deltas = {}
            if state.pending:
                batch.ids[name], state.pending = state.pending, {}
        return batch

    def _keep(self, batch: _Batch) -> dict[str, int]:
        """Merge what ``batch`` did not write back into this instance's state; what had
        to be dropped, by kind."""
        now = self._clock()
        dropped = {"request_ids": 0, "outcome_buckets": 0}
        for name, (experiment, arms) in batch.deltas.items():
            state = self._bandits.get(name)
            if state is None or state.experiment != experiment:
                continue  # another experiment now: those counts no longer apply
            for arm, kept in arms.items():
                delta = state.deltas.get(arm)
                if delta is None:
                    delta = state.deltas[arm] = _Delta()
                delta.merge(kept)
        if not batch.ids_written:
            for name, ids in batch.ids.items():
                state = self._bandits.get(name)
                if state is None or state.spec.bandit is None:
                    continue
                window = state.spec.bandit.feedback_window_s
                live = [(rid, p) for rid, p in ids.items() if now - p.served_at <= window]
                room = max(self.max_pending_ids - len(state.pending), 0)
                if len(live) > room:  # keep the newest: they can still get feedback
                    lost = len(live) - room
                    live = live[lost:]
                    state.dropped += lost
                    dropped["request_ids"] += lost
                restored = dict(live)
                restored.update(state.pending)
                state.pending = restored
        if not batch.rows_written and batch.rows:
            limit = self.max_kept_buckets
            dropped["outcome_buckets"] = self.outcomes.restore(batch.rows, limit=limit)
        if any(dropped.values()):
            log.warning("rollout state kept over a failed flush beyond its bound; dropped %s",
                        dropped)  # fmt: skip
        return dropped

    def _flush_sync(
        self, batch: _Batch
    ) -> dict[str, tuple[str, dict[str, ArmStats], Allocation]]:
        if batch.ids:
            self.ledger.write(
                Served(name, rid, p.deployment, p.served_at, p.rewarded)
                for name, ids in batch.ids.items()
                for rid, p in ids.items()
            )
        batch.ids_written = True
        if batch.rows:
            self.windows.write(self.instance, batch.rows)
        batch.rows_written = True
        fresh: dict[str, tuple[str, dict[str, ArmStats], Allocation]] = {}
        for name, spec in batch.specs.items():
            assert spec.bandit is not None
            experiment = fingerprint(spec.bandit, spec.traffic)
            pending = batch.deltas.get(name)
            if pending is not None and pending[0] == experiment:
                arms = pending[1]
                for arm in list(arms):  # one by one: an added increment is never re-added
                    self.arms.add(name, {arm: arms[arm]}, experiment)
                    del arms[arm]
            totals = self.arms.read(name, experiment)
            fresh[name] = (experiment, totals,
                           allocation(spec.bandit, spec.traffic, totals, self._rng))  # fmt: skip
        return fresh

    async def aclose(self) -> None:
        """Stop the flush task after one last flush."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except ScorefnError as exc:
            log.warning("last rollout state flush failed: %s", exc)
