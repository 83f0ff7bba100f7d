"""Traffic decisions as pure functions: which deployment serves a request, which takes
over when it fails, and whether a new set of weights is acceptable.

Every function takes its inputs (weights, a random draw in ``[0, 1)``) and returns a
decision; nothing here does I/O or keeps state, so the router's behaviour is tested by
feeding draws, and the CLI and the admin API refuse bad weights with the same messages.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

__all__ = [
    "choose_deployment",
    "failover_deployment",
    "parse_assignments",
    "check_mirror",
    "check_traffic",
]


def choose_deployment(weights: Mapping[str, int], draw: float) -> str:
    """The deployment a request goes to, for ``draw`` uniform in ``[0, 1)``.

    Deployments are laid out in the mapping's order on ``[0, total)``, each over a width
    equal to its weight; the draw scaled by the total falls into exactly one. Weights of 0
    are never chosen. ``ValueError`` when no weight is positive.
    """
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        raise ValueError("no deployment has traffic > 0")
    point = min(max(draw, 0.0), 1.0) * total
    upper = 0
    chosen = ""
    for name, weight in weights.items():
        if weight <= 0:
            continue
        upper += weight
        chosen = name
        if point < upper:
            return name
    return chosen  # draw == 1.0 (or rounding): the last positive deployment


def failover_deployment(
    weights: Mapping[str, int], failed: Collection[str], draw: float
) -> str | None:
    """Another deployment with traffic > 0 for a request whose choice in ``failed`` could
    not answer, chosen by the remaining weights; ``None`` when there is none."""
    rest = {name: w for name, w in weights.items() if w > 0 and name not in failed}
    if not rest:
        return None
    return choose_deployment(rest, draw)


def parse_assignments(items: Sequence[str], *, kind: str) -> dict[str, int]:
    """``["blue=90", "green=10"]`` as ``{"blue": 90, "green": 10}``.

    ``ValueError`` names the item when it is not ``name=integer``, when the integer is
    negative, or when a name repeats.
    """
    if not items:
        raise ValueError(f"no {kind} given; expected name=percent, e.g. blue=90 green=10")
    result: dict[str, int] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"{kind} {item!r} is not name=percent (e.g. blue=90)")
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(
                f"{kind} {item!r}: {raw.strip()!r} is not a whole number; "
                "percentages are integers 0 to 100"
            ) from None
        if value < 0 or value > 100:
            raise ValueError(f"{kind} {item!r}: {value} is out of range; expected 0 to 100")
        if name in result:
            raise ValueError(f"{kind} names deployment {name!r} twice")
        result[name] = value
    return result


def _check_names(table: Mapping[str, object], deployments: Iterable[str], kind: str) -> None:
    known = list(deployments)
    for name in table:
        if name not in known:
            raise ValueError(
                f"{kind} names deployment {name!r}; the deployments are {', '.join(known)}"
            )


def _check_values(table: Mapping[str, object], kind: str) -> dict[str, int]:
    checked: dict[str, int] = {}
    for name, value in table.items():
        # bool is an int subclass; True is not a percentage.
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{kind}[{name}] is {value!r}; percentages are whole numbers 0 to 100")
        if not 0 <= value <= 100:
            raise ValueError(f"{kind}[{name}] is {value}; expected 0 to 100")
        checked[name] = value
    return checked


def check_traffic(weights: Mapping[str, object], deployments: Sequence[str]) -> dict[str, int]:
    """``weights`` as accepted traffic, or ``ValueError`` saying what is wrong.

    Every name must be a deployment, every value a whole number 0 to 100, and the values
    must sum to 100. Deployments not named get 0.
    """
    _check_names(weights, deployments, "traffic")
    checked = _check_values(weights, "traffic")
    total = sum(checked.values())
    if total != 100:
        listed = ", ".join(f"{n}={v}" for n, v in checked.items())
        raise ValueError(f"traffic weights sum to {total} ({listed}); they must sum to 100")
    return {name: checked.get(name, 0) for name in deployments}


def check_mirror(percent: Mapping[str, object], deployments: Sequence[str]) -> dict[str, int]:
    """``percent`` as accepted mirror settings, or ``ValueError`` saying what is wrong.

    At most one deployment may receive a mirror copy (as in Azure ML), with a whole
    percentage 0 to 100; every name must be a deployment.
    """
    _check_names(percent, deployments, "mirror")
    checked = _check_values(percent, "mirror")
    active = [name for name, value in checked.items() if value > 0]
    if len(active) > 1:
        raise ValueError(
            f"mirror sends copies to {', '.join(active)}; at most one deployment may "
            "receive mirrored traffic"
        )
    return checked
