"""``scorefn deploy``: argument parsing and the one call into the planner / runner."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from shared.deploy.plan import DeployOptions, plan_deploy
from shared.deploy.runner import format_plan, run_plan
from shared.routing.endpoint import load_endpoint

__all__ = ["add_deploy_parser"]


def _deploy(args: argparse.Namespace) -> int:
    from shared.stack import ROOT

    spec = load_endpoint(args.endpoint)
    options = DeployOptions(
        resource_group=args.resource_group,
        spec_path=str(args.endpoint),
        image_tag=args.image_tag or time.strftime("%Y%m%d%H%M%S", time.gmtime()),
        location=args.location,
        deployer_object_id=args.deployer_object_id,
        deployer_type=args.deployer_type,
        batch_function=args.batch_function or None,
        batch_deployment=args.batch_deployment,
    )
    steps = plan_deploy(spec, options)
    if args.dry_run:
        print(format_plan(steps))
        return 0
    values = run_plan(steps, root=ROOT)
    print(f"router: {values.get('routerUrl', '?')}/api/endpoints/{spec.name}")
    return 0


def add_deploy_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``scorefn deploy`` on the CLI's subparsers."""
    p = sub.add_parser("deploy", help="deploy an endpoint to Azure (Bicep, image, router code)")
    p.add_argument("--resource-group", "-g", required=True, help="target resource group")
    p.add_argument("--endpoint", type=Path, required=True, help="endpoints/<name>.yaml")
    p.add_argument("--location", "-l", help="create the resource group in this region first")
    p.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    p.add_argument("--image-tag", help="scoring image tag (default: UTC timestamp)")
    p.add_argument("--deployer-object-id", help="skip `az ad signed-in-user show` (CI)")
    p.add_argument(
        "--deployer-type", default="User", choices=["User", "ServicePrincipal", "Group"]
    )
    p.add_argument(
        "--batch-function",
        default="batch_plan",
        help="blob-trigger function the Event Grid subscription targets ('' = none)",
    )
    p.add_argument("--batch-deployment", help="deployment hosting it (default: the first)")
    p.set_defaults(func=_deploy)
