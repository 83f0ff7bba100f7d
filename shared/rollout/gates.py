"""Rollout gates as one pure function: candidate against baseline over the same window.

``evaluate`` returns ``fail`` as soon as a gate is broken on enough requests (so a bad
candidate is rolled back without waiting for the end of its bake), ``pass`` only when the
bake time is over and every gate holds, and ``wait`` otherwise: too few requests on
either side is never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from shared.rollout.windows import Counts
from shared.routing.endpoint import GateSpec

__all__ = ["GateResult", "Verdict", "evaluate"]


@dataclass(frozen=True, slots=True)
class GateResult:
    """One gate: its measured value, its threshold, and whether it holds."""

    gate: str
    value: float | None
    threshold: float
    holds: bool | None
    """``None``: not measured (no mirrored copies before the rollout)."""

    def summary(self) -> dict[str, Any]:
        """JSON-ready."""
        value = None if self.value is None else round(self.value, 4)
        return {"gate": self.gate, "value": value, "threshold": self.threshold,
                "holds": self.holds}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the gates say about one window."""

    decision: Literal["wait", "pass", "fail"]
    reason: str
    gates: tuple[GateResult, ...]

    @property
    def broken(self) -> GateResult | None:
        """The first broken gate."""
        return next((g for g in self.gates if g.holds is False), None)


def evaluate(
    gates: GateSpec,
    candidate: Counts,
    baseline: Counts,
    *,
    mirror: Counts | None,
    baked: bool,
) -> Verdict:
    """The decision for a step whose window measured ``candidate`` and ``baseline``;
    ``mirror``: the candidate's mirrored copies before the rollout (agreement gate)."""
    results: list[GateResult] = []
    if mirror is not None and mirror.mirrored >= gates.min_requests:
        agreement = mirror.agreed / mirror.mirrored
        results.append(GateResult("agreement", agreement, gates.min_agreement,
                                  agreement >= gates.min_agreement))  # fmt: skip
    else:
        results.append(GateResult("agreement", None, gates.min_agreement, None))
    need = gates.min_requests
    if candidate.requests < need or baseline.requests < need:
        if results[0].holds is False:
            return Verdict("fail", "agreement gate broken", tuple(results))
        return Verdict(
            "wait",
            f"too few requests: candidate {candidate.requests}, baseline "
            f"{baseline.requests}; each needs {need}",
            tuple(results),
        )
    increase = candidate.error_rate - baseline.error_rate
    results.append(GateResult("error_rate_increase", increase, gates.max_error_rate_increase,
                              increase <= gates.max_error_rate_increase))  # fmt: skip
    floor = gates.latency_floor_ms
    ratio = max(candidate.quantile_ms(0.99), floor) / max(baseline.quantile_ms(0.99), floor, 1e-9)
    results.append(GateResult("p99_latency_ratio", ratio, gates.max_p99_ratio,
                              ratio <= gates.max_p99_ratio))  # fmt: skip
    broken = [g.gate for g in results if g.holds is False]
    if broken:
        return Verdict("fail", f"gate broken: {', '.join(broken)}", tuple(results))
    if not baked:
        return Verdict("wait", "gates hold; baking", tuple(results))
    return Verdict("pass", "every gate holds over the bake time", tuple(results))
