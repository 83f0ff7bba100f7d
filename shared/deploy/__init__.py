"""``scorefn deploy``: the Azure rollout of one endpoint as a list of steps.

:func:`plan_deploy` is a pure function from an endpoint spec and options to the ordered
:class:`Step` list (``az`` commands plus two in-process steps); :func:`run_plan` executes
such a list (``--dry-run`` only prints it). See README "Deploy to Azure".
"""

from shared.deploy.plan import DeployOptions, Step, bicep_deployments, plan_deploy
from shared.deploy.runner import (
    apply_endpoint,
    format_plan,
    package_router,
    run_plan,
    with_deployment_urls,
)

__all__ = [
    "DeployOptions",
    "Step",
    "apply_endpoint",
    "bicep_deployments",
    "format_plan",
    "package_router",
    "plan_deploy",
    "run_plan",
    "with_deployment_urls",
]
