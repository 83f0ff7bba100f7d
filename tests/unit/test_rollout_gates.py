"""Rollout gates (shared/rollout/gates.py), outcome counts and CLI parsing."""

from __future__ import annotations

import pytest

from shared.rollout.cli import parse_duration, parse_steps
from shared.rollout.gates import evaluate
from shared.rollout.windows import Counts, OutcomeCounter, latency_bin
from shared.routing.endpoint import GateSpec, RolloutSpec

GATES = GateSpec(min_requests=100)


def counts(requests: int, errors: int = 0, latency_s: float = 0.005) -> Counts:
    c = Counts(requests, errors)
    c.hist[latency_bin(latency_s)] = requests
    return c


def test_too_few_requests_waits_never_passes() -> None:
    verdict = evaluate(GATES, counts(99), counts(1000), mirror=None, baked=True)
    assert verdict.decision == "wait"
    assert verdict.reason == "too few requests: candidate 99, baseline 1000; each needs 100"


def test_error_rate_gate_fails_even_before_the_bake_ends() -> None:
    verdict = evaluate(GATES, counts(100, errors=20), counts(1000, errors=5), mirror=None,
                       baked=False)  # fmt: skip
    assert verdict.decision == "fail"
    assert verdict.broken is not None and verdict.broken.gate == "error_rate_increase"
    assert verdict.broken.value == pytest.approx(0.195)


def test_p99_ratio_gate_with_a_floor() -> None:
    slow = evaluate(GATES, counts(200, latency_s=0.2), counts(200, latency_s=0.05),
                    mirror=None, baked=True)  # fmt: skip
    assert slow.decision == "fail" and slow.broken is not None
    assert slow.broken.gate == "p99_latency_ratio"
    # 3 ms against 1 ms: both under the 20 ms floor, not a regression
    fast = evaluate(GATES, counts(200, latency_s=0.003), counts(200, latency_s=0.001),
                    mirror=None, baked=True)  # fmt: skip
    assert fast.decision == "pass"


def test_all_gates_hold_passes_only_after_the_bake() -> None:
    assert evaluate(GATES, counts(200), counts(200), mirror=None, baked=False).decision == "wait"
    verdict = evaluate(GATES, counts(200), counts(200), mirror=None, baked=True)
    assert verdict.decision == "pass"
    assert [g.gate for g in verdict.gates] == ["agreement", "error_rate_increase",
                                              "p99_latency_ratio"]  # fmt: skip
    assert verdict.gates[0].holds is None  # never mirrored: not measured


def test_agreement_gate_from_mirrored_copies() -> None:
    mirror = Counts(mirrored=200, agreed=150)
    verdict = evaluate(GATES, counts(10), counts(10), mirror=mirror, baked=False)
    assert verdict.decision == "fail" and verdict.broken is not None
    assert (verdict.broken.gate, verdict.broken.value) == ("agreement", 0.75)
    good = Counts(mirrored=200, agreed=199)
    assert evaluate(GATES, counts(200), counts(200), mirror=good, baked=True).decision == "pass"


def test_outcome_counter_buckets_and_quantiles() -> None:
    counter = OutcomeCounter(bucket_s=10)
    for i in range(100):
        counter.record("e", "blue", error=i < 3, elapsed_s=0.010 if i < 99 else 1.0, now=105.0)
    counter.record("e", "blue", error=False, elapsed_s=0.01, now=111.0)  # next bucket
    rows = counter.take()
    assert [(r[0], r[1], r[2], r[3].requests, r[3].errors) for r in rows] == [
        ("e", "blue", 100, 100, 3), ("e", "blue", 110, 1, 0)]  # fmt: skip
    assert 10 <= rows[0][3].quantile_ms(0.98) <= 12.5
    assert rows[0][3].quantile_ms(1.0) >= 1000
    assert counter.take() == []  # nothing new


def test_steps_and_durations() -> None:
    assert parse_steps("5,25,50,100") == (5, 25, 50, 100)
    assert [parse_duration(t) for t in ("10m", "30s", "2.5", "1h", "500ms")] == [
        600.0, 30.0, 2.5, 3600.0, 0.5]  # fmt: skip
    with pytest.raises(ValueError, match="--bake '10x' is not a duration"):
        parse_duration("10x")
    with pytest.raises(ValueError, match="--steps '5,a' is not a comma-separated list"):
        parse_steps("5,a")
    for steps, message in (((5, 50), "must end at 100"), ((50, 25, 100), "must rise"),
                           ((0, 100), "must be percentages 1 to 100")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            RolloutSpec(steps=steps)
