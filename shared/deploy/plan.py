"""The deploy planner: endpoint spec + options -> the ordered steps of an Azure rollout.

Pure: no I/O, no clock, no environment. Values only known while the plan runs (outputs of
the Bicep deployment, the signed-in user's object id, the batch function's system key)
appear as ``{placeholders}`` that :func:`shared.deploy.runner.run_plan` fills from the
``capture`` of earlier steps.

Order and why:

1. ``az group create`` (only with ``--location``).
2. the deployer's object id (for data-plane roles on the storage account).
3. ``make models``: the example ONNX files are built locally and baked into the image.
4. ``az deployment group create`` with ``deployScoring=false``: registry, storage,
   identities, roles, router, Event Grid topic (a container app pulls its image when it is
   created, so the registry must hold the image before the scoring apps exist).
5. ``az acr build``: the scoring image (Dockerfile) built in the new registry.
6. ``az deployment group create`` with ``deployScoring=true``: the scoring apps.
7. package the router code (in-process: ``.funcignore``, router-only requirements).
8. ``az functionapp deployment source config-zip --build-remote true``: Flex Consumption
   publishes the zip to the app's ``deployments`` container and builds it remotely.
9. + 10. (with ``--batch-function``) the blobs extension system key of the batch
   deployment's app, then the Event Grid webhook subscription for ``batch-input/<endpoint>/``.
11. store the endpoint spec, with each deployment's Azure URL, in the ``endpoints`` table
    (in-process, with the deployer's Entra identity).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from shared.routing.endpoint import EndpointSpec

__all__ = ["IMAGE_REPOSITORY", "DeployOptions", "Step", "bicep_deployments", "plan_deploy"]

IMAGE_REPOSITORY = "scorefn-scoring"
"""Repository of the scoring image in the registry (modules/scoring.bicep imageRepository)."""

TEMPLATE = "infra/bicep/main.bicep"
ROUTER_PACKAGE = ".scorefn/deploy/router.zip"

StepAction = Literal["command", "package-router", "apply-endpoint"]


@dataclass(frozen=True)
class Step:
    """One step of a rollout.

    ``argv`` is the command (``action == "command"``) or, for the in-process actions, the
    equivalent command line shown by ``--dry-run``. ``capture`` names the step's output
    for later ``{placeholders}``; ``secret`` marks a captured value that is never printed.
    """

    title: str
    argv: tuple[str, ...]
    action: StepAction = "command"
    capture: str | None = None
    secret: bool = False


@dataclass(frozen=True)
class DeployOptions:
    """What ``scorefn deploy`` was asked for.

    ``spec_path`` is the endpoint YAML as given (shown in commands); ``image_tag`` tags the
    scoring image (the CLI passes a timestamp so each rollout makes a new revision);
    ``deployer_object_id`` skips the ``az ad signed-in-user`` lookup (CI principals);
    ``batch_function`` is the blob-trigger function of the batch deployment (default: the
    spec's first deployment) that the Event Grid subscription targets.
    """

    resource_group: str
    spec_path: str
    image_tag: str
    location: str | None = None
    deployer_object_id: str | None = None
    deployer_type: Literal["User", "ServicePrincipal", "Group"] = "User"
    batch_function: str | None = None
    batch_deployment: str | None = None


def bicep_deployments(spec: EndpointSpec) -> list[dict[str, object]]:
    """The ``deployments`` parameter of main.bicep for ``spec``."""
    return [
        {
            "name": d.name,
            "models": list(d.models),
            "compute": d.compute,
            "minReplicas": d.min_replicas,
            "maxReplicas": d.max_replicas,
            "batching": d.batching,
        }
        for d in spec.deployments
    ]


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _deployment_create(
    spec: EndpointSpec, options: DeployOptions, *, deploy_scoring: bool, deployer: str
) -> Step:
    computes = {d.compute for d in spec.deployments}
    params = [
        f"endpointName={spec.name}",
        "deployments=" + json.dumps(bicep_deployments(spec), separators=(",", ":")),
        f"gpuT4={_bool('gpu-t4' in computes)}",
        f"gpuA100={_bool('gpu-a100' in computes)}",
        f"imageTag={options.image_tag}",
        f"deployScoring={_bool(deploy_scoring)}",
        f"deployerPrincipalId={deployer}",
        f"deployerPrincipalType={options.deployer_type}",
    ]
    phase = "with" if deploy_scoring else "without"
    return Step(
        title=f"Bicep deployment {phase} the scoring apps",
        argv=(
            "az", "deployment", "group", "create",
            "--resource-group", options.resource_group,
            "--name", f"scorefn-{spec.name}",
            "--template-file", TEMPLATE,
            "--parameters", *params,
            "--query", "properties.outputs",
            "--output", "json",
        ),
        capture="outputs",
    )


def plan_deploy(spec: EndpointSpec, options: DeployOptions) -> list[Step]:
    """The steps that deploy ``spec`` to ``options.resource_group`` (see module docstring).

    ``ValueError`` when ``batch_deployment`` names no deployment of the spec.
    """
    rg = options.resource_group
    steps: list[Step] = []
    if options.location:
        steps.append(
            Step(
                "Resource group",
                ("az", "group", "create", "--name", rg, "--location", options.location,
                 "--output", "none"),
            )
        )
    deployer = options.deployer_object_id
    if deployer is None:
        steps.append(
            Step(
                "Object id of the signed-in user (data-plane roles for the rollout)",
                ("az", "ad", "signed-in-user", "show", "--query", "id", "--output", "tsv"),
                capture="deployerId",
            )
        )
        deployer = "{deployerId}"
    steps.append(Step("Build the model packages baked into the image", ("make", "models")))
    steps.append(_deployment_create(spec, options, deploy_scoring=False, deployer=deployer))
    steps.append(
        Step(
            "Build the scoring image in the registry",
            ("az", "acr", "build", "--registry", "{registryName}",
             "--image", f"{IMAGE_REPOSITORY}:{options.image_tag}", "--file", "Dockerfile", "."),
        )
    )
    steps.append(_deployment_create(spec, options, deploy_scoring=True, deployer=deployer))
    steps.append(
        Step(
            "Package the router code",
            ("scorefn-internal", "package-router", ROUTER_PACKAGE),
            action="package-router",
        )
    )
    steps.append(
        Step(
            "Publish the router code (Flex Consumption, remote build)",
            ("az", "functionapp", "deployment", "source", "config-zip",
             "--resource-group", rg, "--name", "{routerName}",
             "--src", ROUTER_PACKAGE, "--build-remote", "true"),
        )
    )
    if options.batch_function:
        batch = options.batch_deployment or spec.deployments[0].name
        names = [d.name for d in spec.deployments]
        if batch not in names:
            raise ValueError(
                f"batch deployment {batch!r} is not a deployment of endpoint {spec.name!r}; "
                f"deployments are {', '.join(names)}"
            )
        steps.append(
            Step(
                f"Blobs extension key of the {batch} scoring app",
                ("az", "containerapp", "function", "keys", "show",
                 "--resource-group", rg, "--name", f"{{scoringApps.{batch}.name}}",
                 "--key-type", "systemKey", "--key-name", "blobs_extension",
                 "--query", "value", "--output", "tsv"),
                capture="blobsKey",
                secret=True,
            )
        )
        prefix = PurePosixPath("/blobServices/default/containers/batch-input/blobs", spec.name)
        endpoint = (
            f"{{scoringApps.{batch}.url}}/runtime/webhooks/blobs"
            f"?functionName=Host.Functions.{options.batch_function}&code={{blobsKey}}"
        )
        steps.append(
            Step(
                "Event Grid subscription: blob created in batch-input -> batch trigger",
                ("az", "eventgrid", "system-topic", "event-subscription", "create",
                 "--resource-group", rg, "--system-topic-name", "{eventGridTopicName}",
                 "--name", f"batch-{spec.name}", "--endpoint", endpoint,
                 "--included-event-types", "Microsoft.Storage.BlobCreated",
                 "--subject-begins-with", f"{prefix}/"),
            )
        )
    steps.append(
        Step(
            "Store the endpoint spec (deployment URLs from the Bicep outputs)",
            ("scorefn", "endpoint", "apply", options.spec_path, "--tables-url", "{tablesUrl}"),
            action="apply-endpoint",
        )
    )
    return steps
