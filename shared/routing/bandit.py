"""Bandit routing as pure functions: from arm statistics to traffic shares, and a draw.

An *arm* is a deployment with traffic > 0. ``allocation`` turns the arms' statistics
(requests served, feedback received, reward sums) into a share of traffic per arm:

* warm-up: until the arms together served ``warmup_requests``, the fixed ``traffic``
  weights;
* ``thompson``: the probability that each arm is the best under its posterior (Beta for
  binary rewards, Normal for real-valued ones), estimated with ``samples`` draws. Sending
  each request to an arm with that probability is Thompson sampling with the posterior
  frozen between refreshes, so a request costs one uniform draw, not one posterior draw
  per arm;
* ``epsilon_greedy``: ``1 - epsilon`` to the arm with the best mean reward, ``epsilon``
  spread evenly (an arm without feedback yet counts as best, so it gets tried);
* then every arm gets at least ``min_share``: ``share = min_share + (1 - k * min_share) * p``.

``Allocation.choose(draw)`` picks an arm for a draw uniform in ``[0, 1)``; the router
refreshes allocations when it flushes statistics, never per request. ``simulate`` runs
the same code against Bernoulli arms (``bench/bandit.py`` and the tests).

Statistics belong to one experiment: ``fingerprint`` names it by the arms and the reward
scale (kind, and range for real rewards). Stored statistics carry it, and statistics
under another fingerprint count as none, so changing the arms (or what a reward means)
starts afresh; changing weights of the same arms, the policy, ``min_share`` or the
warm-up keeps what was learnt.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.routing.endpoint import BanditSpec

__all__ = [
    "Allocation",
    "ArmStats",
    "SimulationResult",
    "allocation",
    "check_reward",
    "fingerprint",
    "posterior",
    "posterior_mean",
    "simulate",
]


@dataclass(frozen=True, slots=True)
class ArmStats:
    """What one arm has earned: requests served, feedback received and reward sums."""

    pulls: int = 0
    rewarded: int = 0
    reward_sum: float = 0.0
    reward_sq_sum: float = 0.0

    def plus(self, other: ArmStats) -> ArmStats:
        """Both counts together (a batch of increments added to stored totals)."""
        return ArmStats(
            self.pulls + other.pulls,
            self.rewarded + other.rewarded,
            self.reward_sum + other.reward_sum,
            self.reward_sq_sum + other.reward_sq_sum,
        )

    @property
    def mean(self) -> float | None:
        """Mean reward, ``None`` before any feedback."""
        return self.reward_sum / self.rewarded if self.rewarded else None


@dataclass(frozen=True, slots=True)
class Allocation:
    """Traffic shares of the arms, and how they were decided."""

    names: tuple[str, ...]
    shares: tuple[float, ...]
    phase: str
    """``warmup``, ``thompson`` or ``epsilon_greedy``."""
    _upper: tuple[float, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        upper: list[float] = []
        total = 0.0
        for share in self.shares:
            total += share
            upper.append(total)
        object.__setattr__(self, "_upper", tuple(u / total for u in upper) if total else ())

    def choose(self, draw: float) -> str:
        """The arm for ``draw`` uniform in ``[0, 1)`` (O(log arms))."""
        index = bisect.bisect_right(self._upper, draw)
        return self.names[min(index, len(self.names) - 1)]

    def as_dict(self) -> dict[str, float]:
        """Shares by arm, rounded for display."""
        return {n: round(s, 4) for n, s in zip(self.names, self.shares, strict=True)}


def _arms(weights: Mapping[str, int]) -> list[str]:
    arms = [name for name, weight in weights.items() if weight > 0]
    if not arms:
        raise ValueError("no deployment has traffic > 0, so the bandit has no arm")
    return arms


def posterior(spec: BanditSpec, stats: ArmStats) -> dict[str, float]:
    """The arm's posterior parameters: Beta ``alpha``/``beta`` for binary rewards,
    Normal ``mean``/``sd`` of the mean reward for real-valued ones."""
    if spec.reward == "binary":
        successes = min(max(stats.reward_sum, 0.0), float(stats.rewarded))
        return {"alpha": 1.0 + successes, "beta": 1.0 + stats.rewarded - successes}
    n = stats.rewarded
    spread = spec.reward_max - spec.reward_min
    if n == 0:
        return {"mean": (spec.reward_min + spec.reward_max) / 2, "sd": spread}
    mean = stats.reward_sum / n
    # A prior variance of (range/2)^2 weighted as one observation keeps tiny samples wide.
    prior_var = (spread / 2) ** 2
    sq = max(stats.reward_sq_sum - n * mean * mean, 0.0)
    var = (sq + prior_var) / n
    return {"mean": mean, "sd": math.sqrt(var / (n + 1))}


def posterior_mean(spec: BanditSpec, stats: ArmStats) -> float:
    """The mean of the arm's posterior (Beta mean, or the Normal's mean)."""
    params = posterior(spec, stats)
    if spec.reward == "binary":
        return params["alpha"] / (params["alpha"] + params["beta"])
    return params["mean"]


def fingerprint(spec: BanditSpec, weights: Mapping[str, int]) -> str:
    """The experiment's identity: the arms (deployments with ``weights`` > 0) and the
    reward scale. Statistics recorded under another fingerprint are not reused."""
    scale = spec.reward if spec.reward == "binary" else (
        f"real:{spec.reward_min!r}:{spec.reward_max!r}"
    )
    text = "|".join([*sorted(n for n, w in weights.items() if w > 0), scale])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sample(spec: BanditSpec, params: Mapping[str, float], rng: random.Random) -> float:
    if spec.reward == "binary":
        return rng.betavariate(params["alpha"], params["beta"])
    return rng.gauss(params["mean"], params["sd"])


def _with_floor(raw: Sequence[float], min_share: float) -> tuple[float, ...]:
    k = len(raw)
    floor = min(min_share, 1.0 / k)
    total = sum(raw)
    if total <= 0:
        return tuple(1.0 / k for _ in raw)
    return tuple(floor + (1.0 - k * floor) * (p / total) for p in raw)


def allocation(
    spec: BanditSpec,
    weights: Mapping[str, int],
    stats: Mapping[str, ArmStats],
    rng: random.Random,
    *,
    samples: int = 1000,
) -> Allocation:
    """The traffic share of each arm (deployments with ``weights`` > 0) given ``stats``."""
    arms = _arms(weights)
    empty = ArmStats()
    arm_stats = [stats.get(a, empty) for a in arms]
    if sum(s.pulls for s in arm_stats) < spec.warmup_requests:
        return Allocation(tuple(arms), tuple(float(weights[a]) for a in arms), "warmup")
    if spec.policy == "thompson":
        params = [posterior(spec, s) for s in arm_stats]
        wins = [0] * len(arms)
        for _ in range(samples):
            values = [_sample(spec, p, rng) for p in params]
            wins[values.index(max(values))] += 1
        raw: list[float] = [w / samples for w in wins]
    else:
        means = [s.mean if s.mean is not None else math.inf for s in arm_stats]
        best = means.index(max(means))
        explore = spec.epsilon / len(arms)
        raw = [explore + (1.0 - spec.epsilon if i == best else 0.0) for i in range(len(arms))]
    return Allocation(tuple(arms), _with_floor(raw, spec.min_share), spec.policy)


def check_reward(spec: BanditSpec, value: Any) -> float:
    """``value`` as a reward the spec accepts, or ``ValueError`` naming what is wrong."""
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int | float):
        raise ValueError(f"reward must be a number; got {type(value).__name__} {value!r}")
    reward = float(value)
    if not math.isfinite(reward):
        raise ValueError(f"reward must be a finite number; got {reward}")
    if spec.reward == "binary":
        if reward not in (0.0, 1.0):
            raise ValueError(f"reward is {value!r}; this endpoint's rewards are binary: 0 or 1")
    elif not spec.reward_min <= reward <= spec.reward_max:
        raise ValueError(
            f"reward is {value!r}; expected {spec.reward_min} to {spec.reward_max}"
        )
    return reward


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """What ``simulate`` measured."""

    counts: dict[str, int]
    last_share: dict[str, float]
    """Share of the last ``tail`` requests each arm served."""
    regret: float
    """Expected reward lost against always choosing the best arm."""
    reward: float
    """Rewards earned."""


def simulate(
    spec: BanditSpec,
    rates: Mapping[str, float],
    *,
    requests: int,
    seed: int,
    refresh_every: int = 50,
    tail: int = 1000,
    fixed: Mapping[str, int] | None = None,
) -> SimulationResult:
    """Route ``requests`` to Bernoulli arms (``rates``: reward probability per arm) with
    feedback for every request, refreshing the allocation every ``refresh_every``
    requests as the router does after each flush. ``fixed`` routes by those weights
    instead (the baseline)."""
    rng = random.Random(seed)
    weights = {a: 1 for a in rates}
    stats = {a: ArmStats() for a in rates}
    best = max(rates.values())
    counts = dict.fromkeys(rates, 0)
    tail_counts = dict.fromkeys(rates, 0)
    regret = reward_total = 0.0
    current: Allocation | None = None
    for i in range(requests):
        if fixed is not None:
            if current is None:
                current = Allocation(tuple(fixed), tuple(float(v) for v in fixed.values()), "fixed")
        elif current is None or i % refresh_every == 0:
            current = allocation(spec, weights, stats, rng)
        arm = current.choose(rng.random())
        counts[arm] += 1
        if i >= requests - tail:
            tail_counts[arm] += 1
        reward = 1.0 if rng.random() < rates[arm] else 0.0
        reward_total += reward
        regret += best - rates[arm]
        stats[arm] = stats[arm].plus(ArmStats(1, 1, reward, reward * reward))
    shown = min(tail, requests)
    return SimulationResult(
        counts,
        {a: c / shown for a, c in tail_counts.items()},
        regret,
        reward_total,
    )
