"""``scorefn rollout start|status|abort``: argument parsing and one call each."""

from __future__ import annotations

import argparse
import re
import sys

import orjson

from shared.errors import RequestError

__all__ = ["add_rollout_parser", "parse_duration", "parse_steps"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``10m``, ``30s``, ``1.5h``, ``500ms`` or plain seconds, as seconds."""
    found = _DURATION.match(text)
    if found is None or float(found.group(1)) <= 0:
        raise ValueError(f"--bake {text!r} is not a duration like 10m, 30s, 1h or 2.5")
    return float(found.group(1)) * _UNITS[found.group(2) or "s"]


def parse_steps(text: str) -> tuple[int, ...]:
    """``5,25,50,100`` as percentages."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(
            f"--steps {text!r} is not a comma-separated list of whole percentages, "
            "e.g. 5,25,50,100"
        ) from None


def _clients(args: argparse.Namespace) -> tuple[object, object]:
    from shared.rollout.tables import Tables
    from shared.routing.store import EndpointStore
    from shared.settings import RouterSettings

    storage = args.storage or RouterSettings().storage
    return Tables.from_connection_string(storage), EndpointStore.from_connection_string(storage)


def _print(obj: object) -> None:
    print(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


def _start(args: argparse.Namespace) -> int:
    from shared.rollout.controller import start_rollout

    try:
        steps = parse_steps(args.steps) if args.steps else None
        bake = parse_duration(args.bake) if args.bake else None
    except ValueError as exc:
        print(f"scorefn: {exc}; nothing changed", file=sys.stderr)
        return 2
    tables, endpoints = _clients(args)
    rollout = start_rollout(tables, endpoints, args.endpoint, candidate=args.to,  # type: ignore[arg-type]
                            baseline=args.from_, steps=steps, bake_s=bake)  # fmt: skip
    _print(rollout.summary())
    return 0


def _status(args: argparse.Namespace) -> int:
    from shared.rollout.state import RolloutStore

    tables, _ = _clients(args)
    stored = RolloutStore(tables).find(args.endpoint)  # type: ignore[arg-type]
    if stored is None:
        raise RequestError(f"endpoint {args.endpoint!r} has had no rollout")
    _print(stored.rollout.summary())
    return 0


def _abort(args: argparse.Namespace) -> int:
    from shared.rollout.controller import abort_rollout

    tables, endpoints = _clients(args)
    _print(abort_rollout(tables, endpoints, args.endpoint).summary())  # type: ignore[arg-type]
    return 0


def add_rollout_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``scorefn rollout`` on the CLI's subparsers."""
    p = sub.add_parser("rollout", help="progressive rollout with SLO gates")
    rsub = p.add_subparsers(dest="action", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("endpoint")
        q.add_argument("--storage", help="storage connection string (default: settings)")

    start = rsub.add_parser("start", help="shift traffic to a deployment step by step")
    common(start)
    start.add_argument("--to", required=True, help="the candidate deployment")
    start.add_argument("--from", dest="from_", help="the baseline (default: most traffic)")
    start.add_argument("--steps", help="candidate percentages, e.g. 5,25,50,100 (spec default)")
    start.add_argument("--bake", help="time per step, e.g. 10m (spec default)")
    start.set_defaults(func=_start)
    status = rsub.add_parser("status", help="print the rollout's state, gates and history")
    common(status)
    status.set_defaults(func=_status)
    abort = rsub.add_parser("abort", help="stop the rollout: traffic back to the baseline")
    common(abort)
    abort.set_defaults(func=_abort)
