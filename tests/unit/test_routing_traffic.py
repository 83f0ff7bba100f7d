"""Traffic and mirror decisions: pure functions fed with draws."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.routing.mirror import mirror_target, same_body
from shared.routing.traffic import (
    check_mirror,
    check_traffic,
    choose_deployment,
    failover_deployment,
    parse_assignments,
)

NAMES = ["blue", "green", "red"]


@st.composite
def weights(draw: st.DrawFn) -> dict[str, int]:
    cut1 = draw(st.integers(0, 100))
    cut2 = draw(st.integers(cut1, 100))
    return {"blue": cut1, "green": cut2 - cut1, "red": 100 - cut2}


@given(weights(), st.floats(0, 1, exclude_max=True))
def test_choice_is_a_deployment_with_positive_weight(w: dict[str, int], draw: float) -> None:
    chosen = choose_deployment(w, draw)
    assert w[chosen] > 0


@given(weights())
def test_choice_covers_each_deployment_exactly_its_weight(w: dict[str, int]) -> None:
    # Draws at the centre of each of 100 equal slices land on a deployment weight-many times.
    counts = Counter(choose_deployment(w, (i + 0.5) / 100) for i in range(100))
    assert {name: counts.get(name, 0) for name in w} == w


def test_choice_over_many_random_draws_is_within_a_point() -> None:
    rng = random.Random(7)
    counts = Counter(choose_deployment({"blue": 90, "green": 10}, rng.random()) for _ in range(100_000))
    assert abs(counts["blue"] / 1000 - 90) < 1


def test_choice_edges() -> None:
    assert choose_deployment({"blue": 0, "green": 100}, 0.0) == "green"
    assert choose_deployment({"blue": 50, "green": 50}, 1.0) == "green"
    with pytest.raises(ValueError, match="no deployment has traffic > 0"):
        choose_deployment({"blue": 0}, 0.5)


@given(weights(), st.sampled_from(NAMES), st.floats(0, 1, exclude_max=True))
def test_failover_never_returns_the_failed_or_a_zero_weight(
    w: dict[str, int], failed: str, draw: float
) -> None:
    other = failover_deployment(w, {failed}, draw)
    rest = [n for n, v in w.items() if v > 0 and n != failed]
    if rest:
        assert other in rest
    else:
        assert other is None


@given(st.dictionaries(st.sampled_from(NAMES), st.integers(0, 100)), st.sampled_from(NAMES),
       st.floats(0, 1, exclude_max=True), st.booleans())  # fmt: skip
def test_mirror_target(mirror: dict[str, int], primary: str, draw: float, pinned: bool) -> None:
    target = mirror_target(mirror, primary, draw, pinned=pinned)
    if pinned:
        assert target is None
    elif target is not None:
        assert target != primary
        assert draw * 100 < mirror[target]
    else:
        assert all(pct == 0 or n == primary or draw * 100 >= pct for n, pct in mirror.items())


def test_mirror_at_100_always_and_0_never() -> None:
    assert mirror_target({"green": 100}, "blue", 0.999, pinned=False) == "green"
    assert mirror_target({"green": 0}, "blue", 0.0, pinned=False) is None
    assert mirror_target({"green": 100}, "green", 0.0, pinned=False) is None


def test_same_body_compares_json_values() -> None:
    assert same_body(b'{"a": 1, "b": [1.0]}', b'{"b":[1.0],"a":1}')
    assert not same_body(b'{"a": 1}', b'{"a": 2}')
    assert not same_body(b"not json", b"other")


def test_parse_assignments() -> None:
    assert parse_assignments(["blue=90", "green= 10"], kind="traffic") == {"blue": 90, "green": 10}
    cases = {
        ("blue",): "traffic 'blue' is not name=percent (e.g. blue=90)",
        ("=5",): "traffic '=5' is not name=percent (e.g. blue=90)",
        ("blue=x",): "traffic 'blue=x': 'x' is not a whole number; percentages are integers 0 to 100",
        ("blue=9.5",): "traffic 'blue=9.5': '9.5' is not a whole number; percentages are integers 0 to 100",
        ("blue=-1",): "traffic 'blue=-1': -1 is out of range; expected 0 to 100",
        ("blue=101",): "traffic 'blue=101': 101 is out of range; expected 0 to 100",
        ("blue=50", "blue=50"): "traffic names deployment 'blue' twice",
        (): "no traffic given; expected name=percent, e.g. blue=90 green=10",
    }
    for items, message in cases.items():
        with pytest.raises(ValueError) as info:
            parse_assignments(list(items), kind="traffic")
        assert str(info.value) == message


def test_check_traffic_and_mirror_messages() -> None:
    names = ["blue", "green"]
    assert check_traffic({"blue": 100}, names) == {"blue": 100, "green": 0}
    cases = [
        ({"blue": 90, "green": 5}, "traffic weights sum to 95 (blue=90, green=5); they must sum to 100"),
        ({"blue": 90, "red": 10}, "traffic names deployment 'red'; the deployments are blue, green"),
        ({"blue": 110, "green": -10}, "traffic[blue] is 110; expected 0 to 100"),
        ({"blue": 90.0, "green": 10}, "traffic[blue] is 90.0; percentages are whole numbers 0 to 100"),
        ({"blue": True, "green": 99}, "traffic[blue] is True; percentages are whole numbers 0 to 100"),
    ]
    for table, message in cases:
        with pytest.raises(ValueError) as info:
            check_traffic(table, names)
        assert str(info.value) == message
    assert check_mirror({"green": 20}, names) == {"green": 20}
    with pytest.raises(ValueError) as info:
        check_mirror({"blue": 1, "green": 20}, names)
    assert str(info.value) == (
        "mirror sends copies to blue, green; at most one deployment may receive mirrored traffic"
    )
