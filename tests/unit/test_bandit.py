"""Bandit policy (shared/routing/bandit.py): allocations, rewards, and the simulation."""

from __future__ import annotations

import random

import pytest

from shared.errors import DecodeError
from shared.rollout.runtime import decode_feedback
from shared.routing.bandit import Allocation, ArmStats, allocation, check_reward, simulate
from shared.routing.endpoint import BanditSpec, EndpointSpec

WEIGHTS = {"blue": 50, "green": 50}


def test_simulation_sends_80_percent_of_the_last_1000_to_the_better_arm() -> None:
    rates = {"worse": 0.05, "better": 0.10}
    for seed in (1, 2, 3):
        bandit = simulate(BanditSpec(), rates, requests=5000, seed=seed)
        fixed = simulate(BanditSpec(), rates, requests=5000, seed=seed,
                         fixed={"worse": 50, "better": 50})  # fmt: skip
        assert bandit.last_share["better"] >= 0.80, bandit
        assert bandit.regret < fixed.regret / 3, (bandit.regret, fixed.regret)
        assert abs(fixed.regret - 5000 * 0.05 / 2) < 15  # 50/50 loses 0.025 per request


def test_epsilon_greedy_also_converges() -> None:
    spec = BanditSpec(policy="epsilon_greedy", epsilon=0.1)
    result = simulate(spec, {"a": 0.05, "b": 0.10}, requests=5000, seed=7)
    assert result.last_share["b"] >= 0.80


def test_warmup_uses_the_fixed_weights_and_min_share_keeps_every_arm() -> None:
    spec = BanditSpec(warmup_requests=100, min_share=0.05)
    early = allocation(spec, {"blue": 90, "green": 10}, {"blue": ArmStats(50)},
                       random.Random(0))  # fmt: skip
    assert (early.phase, early.as_dict()) == ("warmup", {"blue": 90.0, "green": 10.0})
    # green is far worse, but keeps min_share
    stats = {"blue": ArmStats(5000, 5000, 4000.0, 4000.0), "green": ArmStats(5000, 5000, 50.0, 50.0)}
    late = allocation(spec, {"blue": 90, "green": 10}, stats, random.Random(0))
    assert late.phase == "thompson"
    assert late.as_dict() == {"blue": 0.95, "green": 0.05}
    assert abs(sum(late.choose(i / 1000) == "green" for i in range(1000)) - 50) <= 1


def test_real_valued_rewards_use_the_normal_posterior() -> None:
    spec = BanditSpec(reward="real", reward_min=-10, reward_max=10, min_share=0.0,
                      warmup_requests=0)  # fmt: skip
    stats = {"blue": ArmStats(400, 400, 400 * 2.0, 400 * 5.0),
             "green": ArmStats(400, 400, 400 * 1.0, 400 * 2.0)}  # fmt: skip
    assert allocation(spec, WEIGHTS, stats, random.Random(0)).as_dict() == {
        "blue": 1.0, "green": 0.0}  # fmt: skip


def test_arms_are_deployments_with_traffic() -> None:
    alloc = allocation(BanditSpec(warmup_requests=0), {"blue": 100, "green": 0}, {},
                       random.Random(0))  # fmt: skip
    assert alloc.names == ("blue",)
    with pytest.raises(ValueError, match="no deployment has traffic > 0"):
        allocation(BanditSpec(), {"blue": 0}, {}, random.Random(0))


def test_allocation_choose_covers_the_unit_interval() -> None:
    alloc = Allocation(("a", "b", "c"), (0.2, 0.3, 0.5), "x")
    assert [alloc.choose(d) for d in (0.0, 0.19, 0.2, 0.49, 0.5, 0.999999)] == [
        "a", "a", "b", "b", "c", "c"]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "value", "message"),
    [
        (BanditSpec(), 0.5, "reward is 0.5; this endpoint's rewards are binary: 0 or 1"),
        (BanditSpec(), "1", "reward must be a number; got str '1'"),
        (BanditSpec(), None, "reward must be a number; got NoneType None"),
        (BanditSpec(), [1], "reward must be a number; got list [1]"),
        (BanditSpec(reward="real", reward_max=5), 6, "reward is 6; expected 0.0 to 5.0"),
        (BanditSpec(reward="real"), float("nan"), "reward must be a finite number; got nan"),
    ],
)
def test_bad_rewards_are_refused(spec: BanditSpec, value: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        check_reward(spec, value)
    assert str(err.value) == message


def test_good_rewards() -> None:
    assert [check_reward(BanditSpec(), v) for v in (0, 1, True, False, 1.0)] == [
        0.0, 1.0, 1.0, 0.0, 1.0]  # fmt: skip
    assert check_reward(BanditSpec(reward="real", reward_min=-1), -0.5) == -0.5


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "request body is not valid JSON"),
        (b"[]", 'expected a JSON object like {"request_id": "...", "reward": 1}; got list'),
        (b'{"reward": 1}', "field request_id is missing; expected request_id and reward"),
        (b'{"request_id": "a"}', "field reward is missing; expected request_id and reward"),
        (b'{"request_id": 5, "reward": 1}', "field request_id must be a non-empty string"),
        (b'{"request_id": "a", "reward": 1, "x": 2}', "unknown field(s) x"),
    ],
)
def test_feedback_bodies_are_checked(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_feedback(body)
    assert str(err.value).startswith(message)


def test_traffic_mode_bandit_in_the_spec() -> None:
    base = {"name": "e", "auth": {"mode": "none"},
            "deployments": [{"name": "blue", "models": ["m"]}, {"name": "green", "models": ["m"]}]}  # fmt: skip
    spec = EndpointSpec.model_validate(
        {**base, "traffic": {"mode": "bandit", "blue": 50, "green": 50}}
    )
    assert spec.bandit == BanditSpec() and spec.traffic == {"blue": 50, "green": 50}
    again = EndpointSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    with pytest.raises(ValueError, match=r"traffic\.mode is 'random'; expected weights or bandit"):
        EndpointSpec.model_validate({**base, "traffic": {"mode": "random", "blue": 100}})
    with pytest.raises(ValueError, match=r"bandit reward_max \(0.0\) must be above reward_min"):
        BanditSpec(reward="real", reward_max=0)
