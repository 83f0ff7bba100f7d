"""Bandit experiments and their telemetry: the statistics' fingerprint, posterior means,
the outcome buckets kept over failed flushes, and the arms of ``scorefn stats`` read from
a real Prometheus scrape of the bandit gauges."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.rollout.windows import OutcomeCounter
from shared.routing.bandit import ArmStats, fingerprint, posterior_mean
from shared.routing.endpoint import BanditSpec
from shared.settings import TelemetrySettings
from shared.telemetry.cli import BanditArm, bandit_arms, render_arms
from shared.telemetry.instruments import ArmReading
from shared.telemetry.prometheus import scrape
from shared.telemetry.scrape import parse
from shared.telemetry.setup import setup_telemetry
from shared.telemetry.state import TELEMETRY


@pytest.fixture(autouse=True)
def _off() -> Iterator[None]:
    yield
    TELEMETRY.reset()


def test_fingerprint_changes_with_the_arms_and_the_reward_scale_only() -> None:
    base = fingerprint(BanditSpec(), {"blue": 50, "green": 50})
    assert len(base) == 16
    # weights, policy, floor and warm-up do not start a new experiment
    assert fingerprint(BanditSpec(), {"green": 10, "blue": 90}) == base
    assert fingerprint(BanditSpec(policy="epsilon_greedy", min_share=0.1, warmup_requests=5),
                       {"blue": 1, "green": 1}) == base  # fmt: skip
    assert fingerprint(BanditSpec(), {"blue": 50, "green": 50, "red": 0}) == base
    # other arms, or rewards that mean something else, do
    others = {
        fingerprint(BanditSpec(), {"blue": 50, "red": 50}),
        fingerprint(BanditSpec(), {"blue": 100, "green": 0}),
        fingerprint(BanditSpec(reward="real"), {"blue": 50, "green": 50}),
        fingerprint(BanditSpec(reward="real", reward_max=5), {"blue": 50, "green": 50}),
    }
    assert len(others) == 4 and base not in others


def test_posterior_mean() -> None:
    assert posterior_mean(BanditSpec(), ArmStats()) == 0.5
    assert posterior_mean(BanditSpec(), ArmStats(10, 8, 6.0, 6.0)) == pytest.approx(7 / 10)
    real = BanditSpec(reward="real", reward_min=0, reward_max=10)
    assert posterior_mean(real, ArmStats()) == 5.0
    assert posterior_mean(real, ArmStats(4, 4, 12.0, 40.0)) == 3.0


def test_restored_buckets_go_first_and_the_oldest_are_dropped() -> None:
    counter = OutcomeCounter(bucket_s=1)
    for t in range(4):
        counter.record("e", "blue", error=False, elapsed_s=0.01, now=100.0 + t)
    failed = counter.take()  # three closed buckets and a copy of the open one
    assert [r[2] for r in failed] == [100, 101, 102, 103]
    counter.record("e", "blue", error=True, elapsed_s=0.01, now=103.5)  # the open one grows
    assert counter.restore(failed, limit=10) == 0
    rows = counter.take()
    assert [(r[2], r[3].requests) for r in rows] == [(100, 1), (101, 1), (102, 1), (103, 1),
                                                     (103, 2)]  # fmt: skip (later wins)
    assert counter.restore(rows, limit=3) == 2
    assert counter.waiting == 3
    assert [r[2] for r in counter.take()] == [102, 103, 103]


class _Arms:
    """A ``BanditSource`` (the seam the gauges read): fixed readings."""

    def __init__(self, readings: list[ArmReading]) -> None:
        self.readings = readings

    def arm_readings(self) -> list[ArmReading]:
        return self.readings


def test_stats_shows_the_arms_from_a_prometheus_scrape() -> None:
    setup_telemetry(TelemetrySettings.model_validate({"exporter": "prometheus"}), role="router")
    assert TELEMETRY.metrics is not None
    source = _Arms([ArmReading("fraud", "blue", 120, 0.05, 0.0547, 0.1),
                    ArmReading("fraud", "green", 880, None, 0.5, 0.9),
                    ArmReading("other", "blue", 7, 1.0, 0.9, 1.0)])  # fmt: skip
    TELEMETRY.metrics.watch_bandits(source)
    text = scrape()
    assert text is not None
    samples = parse(text.decode())
    arms = bandit_arms("fraud", ["blue", "green", "red"], samples)
    assert arms == [
        BanditArm("blue", 120, 0.05, 0.0547, 0.1),
        BanditArm("green", 880, None, 0.5, 0.9),
        BanditArm("red", None, None, None, None),  # not reported (yet)
    ]
    assert bandit_arms("fraud", ["blue"], None) == [BanditArm("blue", None, None, None, None)]
    assert render_arms("thompson", arms).splitlines() == [
        "bandit arms (policy thompson; every router, as of its last flush)",
        "arm    pulls  mean reward  posterior mean  share",
        "blue   120    0.0500       0.0547          10.0%",
        "green  880    -            0.5000          90.0%",
        "red    -      -            -               -",
    ]
