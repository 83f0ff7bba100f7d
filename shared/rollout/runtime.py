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
from typing import Any, Final

import orjson

from shared.errors import DecodeError, RequestError, ScorefnError
from shared.rollout.arms import ArmStore
from shared.rollout.ledger import Claim, RequestLedger, Served, expired, unknown
from shared.rollout.tables import Tables
from shared.rollout.windows import OutcomeCounter, WindowStore
from shared.routing.bandit import Allocation, ArmStats, allocation, check_reward, posterior
from shared.routing.endpoint import EndpointSpec

__all__ = ["StrategyRuntime", "decode_feedback"]

log = logging.getLogger("shared.rollout")

MAX_PENDING_IDS: Final = 200_000
"""Request ids kept in memory between flushes (per instance); more are not remembered."""
_MAX_REQUEST_ID: Final = 256


@dataclass(slots=True)
class _Delta:
    pulls: int = 0
    rewarded: int = 0
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0

    def stats(self) -> ArmStats:
        return ArmStats(self.pulls, self.rewarded, self.reward_sum, self.reward_sq_sum)


@dataclass(slots=True)
class _Pending:
    deployment: str
    served_at: float
    rewarded: bool = False


@dataclass(slots=True)
class _Bandit:
    """One bandit endpoint's state on this instance."""

    spec: EndpointSpec
    allocation: Allocation
    totals: dict[str, ArmStats]
    deltas: dict[str, _Delta]
    pending: dict[str, _Pending]
    dropped: int = 0


def decode_feedback(body: bytes) -> tuple[str, Any]:
    """``{"request_id": "...", "reward": ...}`` as its two fields; ``DecodeError`` names
    the field that is missing or wrong (the reward's range is checked by the spec)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError(
            'expected a JSON object like {"request_id": "...", "reward": 1}; '
            f"got {type(data).__name__}"
        )
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
    ) -> None:
        self.tables = tables
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
            totals = state.totals if state is not None else {}
            alloc = allocation(spec.bandit, spec.traffic, totals, self._rng, samples=200)
            if state is None:
                state = self._bandits[spec.name] = _Bandit(spec, alloc, totals, {}, {})
            else:
                state.spec, state.allocation = spec, alloc
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
        if len(state.pending) >= MAX_PENDING_IDS:
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
        """Count the reward of a request this endpoint served (once per request id)."""
        if spec.bandit is None:
            raise RequestError(
                f"endpoint {spec.name!r} routes by fixed weights; feedback is taken only "
                "with traffic.mode bandit"
            )
        request_id, raw = decode_feedback(body)
        try:
            reward = check_reward(spec.bandit, raw)
        except ValueError as exc:
            raise DecodeError(f"field {exc}") from None
        state = self._bandit(spec)
        window = spec.bandit.feedback_window_s
        now = self._clock()
        claim: Claim | None = None
        local = state.pending.get(request_id)
        if local is None and request_id in self._writing.get(spec.name, {}):
            await self._written.wait()  # being written now: ask the table once it is
        if local is not None:
            age = now - local.served_at
            if age > window:
                raise expired(spec.name, request_id, age, window)
            claim = Claim(local.deployment, duplicate=local.rewarded)
            local.rewarded = True
        else:
            claim = await asyncio.to_thread(
                self.ledger.claim, spec.name, request_id, window_s=window, now=now
            )
        if not claim.duplicate:
            if claim.deployment not in spec.traffic:
                raise unknown(spec.name, request_id, window)
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
        stats = await asyncio.to_thread(self.arms.read, spec.name)
        state = self._bandit(spec)
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
        }

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
        """Write this instance's counts and ids; re-read arm totals; new allocations."""
        deltas: dict[str, dict[str, ArmStats]] = {}
        served: list[Served] = []
        writing: dict[str, dict[str, _Pending]] = {}
        for name, state in self._bandits.items():
            if state.deltas:
                deltas[name] = {d: v.stats() for d, v in state.deltas.items()}
                state.deltas = {}
            if state.pending:
                writing[name], state.pending = state.pending, {}
                served.extend(
                    Served(name, rid, p.deployment, p.served_at, p.rewarded)
                    for rid, p in writing[name].items()
                )
        rows = self.outcomes.take()
        self._writing, self._written = writing, asyncio.Event()
        specs = {name: state.spec for name, state in self._bandits.items()}
        try:
            fresh = await asyncio.to_thread(self._flush_sync, deltas, served, rows, specs)
        finally:
            self._writing = {}
            self._written.set()
        for name, (totals, alloc) in fresh.items():
            current = self._bandits.get(name)
            if current is not None and current.spec is specs[name]:
                if alloc.as_dict() != current.allocation.as_dict():
                    log.info(
                        "bandit allocation",
                        extra={"endpoint": name, "phase": alloc.phase,
                               "shares": alloc.as_dict(),
                               "pulls": {a: s.pulls for a, s in totals.items()},
                               "mean_reward": {a: s.mean for a, s in totals.items()}},
                    )  # fmt: skip
                current.totals, current.allocation = totals, alloc

    def _flush_sync(
        self,
        deltas: Mapping[str, Mapping[str, ArmStats]],
        served: list[Served],
        rows: list[Any],
        specs: Mapping[str, EndpointSpec],
    ) -> dict[str, tuple[dict[str, ArmStats], Allocation]]:
        if served:
            self.ledger.write(served)
        if rows:
            self.windows.write(self.instance, rows)
        fresh: dict[str, tuple[dict[str, ArmStats], Allocation]] = {}
        for name, spec in specs.items():
            if name in deltas:
                self.arms.add(name, deltas[name])
            totals = self.arms.read(name)
            assert spec.bandit is not None
            fresh[name] = (totals, allocation(spec.bandit, spec.traffic, totals, self._rng))
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
