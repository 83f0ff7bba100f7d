"""The ``scorefn`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from shared.errors import PackageError

__all__ = ["main"]


def _up(args: argparse.Namespace) -> int:
    from shared.stack import StackOptions, run_stack

    return run_stack(
        StackOptions(endpoint=args.endpoint, port_shift=args.port_shift, run_dir=args.run_dir)
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``scorefn``."""
    from shared.stack import ROOT

    parser = argparse.ArgumentParser(prog="scorefn", description="ONNX models as Azure Functions")
    parser.add_argument("--log-level", default="INFO", help="Python logging level")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the local stack serving an endpoint")
    up.add_argument("--endpoint", type=Path, default=ROOT / "endpoints" / "fraud.yaml")
    up.add_argument(
        "--port-shift", type=int, default=0, help="add this to every port (several stacks)"
    )
    up.add_argument("--run-dir", type=Path, default=ROOT / ".run", help="logs and Azurite data")
    up.set_defaults(func=_up)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except PackageError as exc:
        print(f"scorefn: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
