"""The rollout controller: run by the router's gate timer, acts only under the lease.

Each run, for every running rollout: make the endpoint's traffic what the state calls
for (so a controller that died between two writes is repaired by the next one), sum
the stored outcome windows since the step started, ``evaluate`` the gates, and:

* ``fail``: traffic back to the baseline at once, the rollout ``failed`` with the gate,
  the figures and the window;
* ``pass``: the next step (its traffic and a new bake); the 100% step is the
  promotion: the rollout ``succeeded`` (no baseline traffic is left to compare with);
* ``wait``: the figures are recorded in ``last_check``.

The same runs also sweep the bandit request-id ledger (under the lease, at most every
``sweep_every_s`` and ``sweep_limit`` rows a run; a run that hits the limit leaves the
rest for the next tick): ids older than each bandit endpoint's feedback window, and arm
statistics of an earlier experiment (other arms).

Telemetry: each evaluation is a ``scorefn.rollout.evaluate`` span (decision, gate values,
both sides' requests and error rates as attributes) and sets the gate gauges; every
decision counts in ``scorefn.rollout.events`` and a rollback in
``scorefn.rollout.rollbacks`` with the gate that broke.

``start`` and ``abort`` are what ``scorefn rollout start|abort`` call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace

from shared.errors import NotFoundError, RequestError, UpstreamError
from shared.rollout.arms import ArmStore
from shared.rollout.gates import Verdict, evaluate
from shared.rollout.lease import ControllerLease
from shared.rollout.ledger import RequestLedger
from shared.rollout.state import Conflict, Rollout, RolloutStore, StoredRollout
from shared.rollout.tables import Tables
from shared.rollout.windows import Counts, WindowStore
from shared.routing.bandit import fingerprint
from shared.routing.endpoint import EndpointSpec, GateSpec, check_steps
from shared.routing.store import EndpointStore
from shared.telemetry.state import TELEMETRY
from shared.telemetry.tracing import set_attributes, span

__all__ = ["RolloutController", "abort_rollout", "start_rollout"]

log = logging.getLogger("shared.rollout")


def _event(name: str, rollout: Rollout, **fields: Any) -> None:
    """A structured log line per decision (``shared.rollout`` logger), and its metrics."""
    log.info(
        "rollout %s", name,
        extra={"rollout_event": name, "endpoint": rollout.endpoint,
               "candidate": rollout.candidate, "baseline": rollout.baseline,
               "step": rollout.step, "share": rollout.share, **fields},
    )  # fmt: skip
    metrics = TELEMETRY.metrics
    if metrics is not None:
        share = rollout.traffic().get(rollout.candidate, 0)
        event = "succeeded" if name == "step" and rollout.state == "succeeded" else name
        metrics.rollout_event(rollout.endpoint, rollout.candidate, event, share)
        if name == "rolled_back":
            metrics.rollback(rollout.endpoint, str(fields.get("gate", "")))


class RolloutController:
    """Evaluates gates and moves rollouts on, when this instance holds the lease."""

    def __init__(
        self,
        tables: Tables,
        endpoints: EndpointStore,
        lease: ControllerLease,
        *,
        instance: str,
        clock: Callable[[], float] = time.time,
        sweep_every_s: float = 60.0,
        sweep_limit: int = 1000,
    ) -> None:
        self.rollouts = RolloutStore(tables)
        self.windows = WindowStore(tables)
        self.ledger = RequestLedger(tables)
        self.arms = ArmStore(tables)
        self.endpoints = endpoints
        self.lease = lease
        self.instance = instance
        self._clock = clock
        self.sweep_every_s = sweep_every_s
        self.sweep_limit = sweep_limit
        self._next_sweep = float("-inf")
        self._sweep_turn = 0

    def tick(self) -> list[str]:
        """One run: what was done, as ``endpoint: event`` lines (empty: nothing)."""
        running = self.rollouts.running()
        done: list[str] = []
        if running and self.lease.hold():
            done += self._advance_all(running)
        done += self.sweep()
        return done

    def _advance_all(self, running: list[StoredRollout]) -> list[str]:
        done: list[str] = []
        for stored in running:
            if not self.lease.held and not self.lease.hold():
                break  # lost the lease mid-run: stop acting
            try:
                with span("scorefn.rollout.evaluate", _identity(stored.rollout)):
                    event = self._advance(stored)
            except Conflict:  # changed meanwhile (an abort): the next run sees it
                log.info("rollout of %s changed meanwhile", stored.rollout.endpoint)
                continue
            except (UpstreamError, NotFoundError) as exc:
                log.warning("rollout of %s: %s", stored.rollout.endpoint, exc)
                continue
            if event:
                done.append(f"{stored.rollout.endpoint}: {event}")
        return done

    def sweep(self) -> list[str]:
        """Delete expired request ids and other experiments' arm statistics of bandit
        endpoints, when due and under the lease; what was deleted, as lines."""
        now = self._clock()
        if now < self._next_sweep:
            return []
        self._next_sweep = now + self.sweep_every_s
        try:
            specs = [self.endpoints.get(name).spec for name in self.endpoints.names()]
        except (UpstreamError, NotFoundError) as exc:  # NotFound: deleted meanwhile
            log.warning("bandit sweep skipped: %s", exc)
            return []
        bandits = [s for s in specs if s.bandit is not None]
        if not bandits or not self.lease.hold():
            return []
        turn = self._sweep_turn % len(bandits)  # who goes first, in turn: none starves
        self._sweep_turn += 1
        budget = self.sweep_limit
        done: list[str] = []
        with span("scorefn.bandit.sweep", {"endpoints": len(bandits)}) as current:
            for spec in bandits[turn:] + bandits[:turn]:
                try:
                    ids, arms = self._sweep_one(spec, now, budget)
                except UpstreamError as exc:
                    log.warning("bandit sweep of %s: %s", spec.name, exc)
                    continue
                budget -= ids
                if ids or arms:
                    done.append(f"{spec.name}: swept {ids} request ids, {arms} stale arms")
                if budget <= 0:
                    self._next_sweep = now  # more to delete: go on at the next tick
                    break
            set_attributes(current, {"scorefn.swept_ids": self.sweep_limit - budget})
        return done

    def _sweep_one(self, spec: EndpointSpec, now: float, budget: int) -> tuple[int, int]:
        bandit = spec.bandit
        assert bandit is not None
        ids = self.ledger.sweep(spec.name, before=now - bandit.feedback_window_s, limit=budget)
        arms = self.arms.reset(spec.name, keep=fingerprint(bandit, spec.traffic))
        return ids, arms

    def _advance(self, stored: StoredRollout) -> str:
        rollout = stored.rollout.model_copy(deep=True)
        now = self._clock()
        self._reconcile(rollout)
        totals = self.windows.totals(rollout.endpoint, start=rollout.step_started_at, end=now)
        mirror = self.windows.totals(
            rollout.endpoint,
            start=rollout.started_at - rollout.gates.agreement_lookback_s,
            end=rollout.started_at,
        ).get(rollout.candidate)
        candidate = totals.get(rollout.candidate, Counts())
        baseline = totals.get(rollout.baseline, Counts())
        verdict = evaluate(rollout.gates, candidate, baseline, mirror=mirror,
                           baked=now - rollout.step_started_at >= rollout.bake_s)  # fmt: skip
        _observe(rollout, verdict, candidate, baseline)
        check = _check(verdict, candidate, baseline, rollout.step_started_at, now)
        rollout.last_check = check
        rollout.updated_at = now
        rollout.actor = self.instance
        event = ""
        if verdict.decision == "fail":
            broken = verdict.broken
            rollout.state = "failed"
            rollout.failure = {**check, "gate": broken.gate if broken else verdict.reason}
            rollout.message = (
                f"rolled back at step {rollout.share}%: {verdict.reason} "
                f"({_figures(verdict)})"
            )
            rollout.log("rolled_back", now, actor=self.instance, gate=rollout.failure["gate"],
                        gates=check["gates"])  # fmt: skip
            self._set_traffic(rollout)  # the baseline first: at once
            event = "rolled back"
            _event("rolled_back", rollout, gate=rollout.failure["gate"], gates=check["gates"])
        elif verdict.decision == "pass":
            rollout.log("step_passed", now, actor=self.instance, gates=check["gates"])
            if rollout.step + 1 >= len(rollout.steps) or rollout.steps[rollout.step + 1] == 100:
                rollout.step = len(rollout.steps) - 1
                rollout.state = "succeeded"
                rollout.message = f"{rollout.candidate} serves 100%"
                event = "succeeded"
            else:
                rollout.step += 1
                rollout.step_started_at = now
                rollout.message = f"step {rollout.share}% baking"
                event = f"step {rollout.share}%"
            rollout.log(event.replace(" ", "_"), now, actor=self.instance)
            self._set_traffic(rollout)
            _event("step", rollout, gates=check["gates"], state=rollout.state)
        else:
            rollout.message = f"step {rollout.share}%: {verdict.reason}"
        self.rollouts.update(stored, rollout)
        return event

    def _reconcile(self, rollout: Rollout) -> None:
        current = self.endpoints.get(rollout.endpoint).spec.traffic
        wanted = rollout.traffic()
        if any(current.get(k, 0) != v for k, v in wanted.items()):
            self._set_traffic(rollout)

    def _set_traffic(self, rollout: Rollout) -> None:
        if not self.lease.held and not self.lease.hold():
            raise Conflict(rollout.endpoint)  # lost the lease: someone else acts now
        self.endpoints.set_routing(rollout.endpoint, traffic=rollout.traffic())


def _identity(rollout: Rollout) -> dict[str, str | int]:
    return {"endpoint": rollout.endpoint, "candidate": rollout.candidate,
            "baseline": rollout.baseline, "scorefn.rollout.share": rollout.share}  # fmt: skip


def _observe(rollout: Rollout, verdict: Verdict, candidate: Counts, baseline: Counts) -> None:
    """The evaluation's figures on the current span and in the gate gauges."""
    if TELEMETRY.tracing:
        attributes: dict[str, str | int | float] = {
            "scorefn.rollout.decision": verdict.decision,
            "scorefn.rollout.reason": verdict.reason,
            "scorefn.candidate.requests": candidate.requests,
            "scorefn.candidate.error_rate": candidate.error_rate,
            "scorefn.baseline.requests": baseline.requests,
            "scorefn.baseline.error_rate": baseline.error_rate,
        }
        for g in verdict.gates:
            if g.value is not None:
                attributes[f"scorefn.gate.{g.gate}"] = g.value
        set_attributes(trace.get_current_span(), attributes)
    metrics = TELEMETRY.metrics
    if metrics is not None:
        metrics.rollout_check(
            rollout.endpoint,
            verdict.decision,
            [(g.gate, g.value) for g in verdict.gates],
            [("candidate", rollout.candidate, candidate.requests, candidate.error_rate),
             ("baseline", rollout.baseline, baseline.requests, baseline.error_rate)],
        )  # fmt: skip


def _figures(verdict: Verdict) -> str:
    return ", ".join(
        f"{g.gate} {g.value:.4g} > {g.threshold:g}" if g.gate != "agreement"
        else f"agreement {g.value:.4g} < {g.threshold:g}"
        for g in verdict.gates if g.holds is False and g.value is not None
    )  # fmt: skip


def _check(
    verdict: Verdict, candidate: Counts, baseline: Counts, start: float, end: float
) -> dict[str, Any]:
    return {
        "decision": verdict.decision,
        "reason": verdict.reason,
        "gates": [g.summary() for g in verdict.gates],
        "candidate": candidate.summary(),
        "baseline": baseline.summary(),
        "window": {"start": round(start, 3), "end": round(end, 3)},
    }


def start_rollout(
    tables: Tables,
    endpoints: EndpointStore,
    endpoint: str,
    *,
    candidate: str,
    baseline: str | None = None,
    steps: Sequence[int] | None = None,
    bake_s: float | None = None,
    gates: GateSpec | None = None,
    clock: Callable[[], float] = time.time,
) -> Rollout:
    """Start a rollout of ``candidate``: its first step's traffic is set at once.
    ``RequestError`` says why not (unknown deployment, a rollout running, bandit mode)."""
    stored = endpoints.get(endpoint)
    spec = stored.spec
    names = [d.name for d in spec.deployments]
    if candidate not in names:
        raise RequestError(
            f"--to {candidate!r} is not a deployment of endpoint {endpoint!r}; "
            f"the deployments are {', '.join(names)}"
        )
    if spec.bandit is not None:
        raise RequestError(
            f"endpoint {endpoint!r} routes by bandit; a rollout needs traffic.mode weights"
        )
    if baseline is None:
        others = {n: w for n, w in spec.traffic.items() if n != candidate}
        baseline = max(others, key=lambda n: others[n]) if others else None
        if baseline is None or others[baseline] <= 0:
            raise RequestError(
                f"endpoint {endpoint!r} has no deployment besides {candidate!r} serving "
                "traffic to compare with; pass --from"
            )
    elif baseline not in names or baseline == candidate:
        raise RequestError(
            f"--from {baseline!r} must be a deployment of endpoint {endpoint!r} other than "
            f"{candidate!r}; the deployments are {', '.join(names)}"
        )
    chosen_steps = tuple(steps) if steps is not None else spec.rollout.steps
    try:
        check_steps(chosen_steps)
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    store = RolloutStore(tables)
    previous = store.find(endpoint)
    if previous is not None and previous.rollout.state == "running":
        raise RequestError(
            f"a rollout of {previous.rollout.candidate!r} on endpoint {endpoint!r} is "
            f"running (step {previous.rollout.share}%); abort it first"
        )
    others = {n: w for n, w in spec.traffic.items() if n not in (baseline, candidate)}
    now = clock()
    rollout = Rollout(
        endpoint=endpoint, baseline=baseline, candidate=candidate, steps=chosen_steps,
        bake_s=bake_s if bake_s is not None else spec.rollout.bake_s,
        gates=gates or spec.rollout.gates, pool=100 - sum(others.values()), others=others,
        started_at=now, step_started_at=now, updated_at=now,
        message=f"step {chosen_steps[0]}% baking", actor="cli",
    )  # fmt: skip
    if rollout.pool <= 0:
        raise RequestError(f"deployments other than {baseline} and {candidate} take all traffic")
    rollout.log("started", now, actor="cli", traffic=rollout.traffic())
    try:
        store.create(rollout, replacing=previous)
    except Conflict:
        raise RequestError(
            f"endpoint {endpoint!r}'s rollout changed meanwhile; try again"
        ) from None
    endpoints.set_routing(endpoint, traffic=rollout.traffic())
    _event("started", rollout)
    return rollout


def abort_rollout(
    tables: Tables,
    endpoints: EndpointStore,
    endpoint: str,
    *,
    clock: Callable[[], float] = time.time,
) -> Rollout:
    """Stop the running rollout of ``endpoint``: traffic back to the baseline."""
    store = RolloutStore(tables)
    for _ in range(5):
        stored = store.find(endpoint)
        if stored is None or stored.rollout.state != "running":
            state = "none" if stored is None else stored.rollout.state
            raise RequestError(f"endpoint {endpoint!r} has no running rollout (last: {state})")
        rollout = stored.rollout.model_copy(deep=True)
        now = clock()
        rollout.state = "aborted"
        rollout.updated_at = now
        rollout.message = f"aborted at step {rollout.share}%; traffic back to {rollout.baseline}"
        rollout.log("aborted", now, actor="cli")
        try:
            store.update(stored, rollout)
        except Conflict:
            continue
        endpoints.set_routing(endpoint, traffic=rollout.traffic())
        _event("aborted", rollout)
        return rollout
    raise UpstreamError(f"endpoint {endpoint!r}'s rollout kept changing; try again")
