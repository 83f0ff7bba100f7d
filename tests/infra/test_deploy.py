"""scorefn deploy: the planned az steps, --dry-run output, the router package, the image."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from shared.cli import main
from shared.deploy import (
    DeployOptions,
    Step,
    format_plan,
    package_router,
    plan_deploy,
    run_plan,
    with_deployment_urls,
)
from shared.deploy.runner import ROUTER_EXCLUDED_REQUIREMENTS, flatten_outputs, resolve
from shared.routing.endpoint import load_endpoint
from tests.infra.conftest import ROOT

SPEC = ROOT / "endpoints" / "fraud.yaml"
DEPLOYMENTS = (
    '[{"name":"blue","models":["fraud:1","vision"],"compute":"gpu-t4","minReplicas":0,'
    '"maxReplicas":1,"batching":true},{"name":"green","models":["fraud:2","vision"],'
    '"compute":"gpu-t4","minReplicas":0,"maxReplicas":1,"batching":true}]'
)


def _create(scoring: bool, deployer: str = "{deployerId}") -> list[str]:
    return [
        "az", "deployment", "group", "create", "--resource-group", "rg-demo",
        "--name", "scorefn-fraud", "--template-file", "infra/bicep/main.bicep",
        "--parameters", "endpointName=fraud", f"deployments={DEPLOYMENTS}",
        "gpuT4=true", "gpuA100=false", "imageTag=t1",
        f"deployScoring={'true' if scoring else 'false'}",
        f"deployerPrincipalId={deployer}", "deployerPrincipalType=User",
        "--query", "properties.outputs", "--output", "json",
    ]  # fmt: skip


def test_plan_for_the_example_endpoint() -> None:
    spec = load_endpoint(SPEC)
    options = DeployOptions(
        resource_group="rg-demo",
        spec_path="endpoints/fraud.yaml",
        image_tag="t1",
        location="swedencentral",
        batch_function="batch_blob",
    )
    steps = plan_deploy(spec, options)
    assert [list(s.argv) for s in steps] == [
        ["az", "group", "create", "--name", "rg-demo", "--location", "swedencentral",
         "--output", "none"],
        ["az", "ad", "signed-in-user", "show", "--query", "id", "--output", "tsv"],
        ["make", "models"],
        _create(scoring=False),
        ["az", "acr", "build", "--registry", "{registryName}", "--image",
         "scorefn-scoring:t1", "--file", "Dockerfile", "."],
        _create(scoring=True),
        ["scorefn-internal", "package-router", ".scorefn/deploy/router.zip"],
        ["az", "functionapp", "deployment", "source", "config-zip", "--resource-group",
         "rg-demo", "--name", "{routerName}", "--src", ".scorefn/deploy/router.zip",
         "--build-remote", "true"],
        ["az", "containerapp", "function", "keys", "show", "--resource-group", "rg-demo",
         "--name", "{scoringApps.blue.name}", "--key-type", "systemKey",
         "--key-name", "blobs_extension", "--query", "value", "--output", "tsv"],
        ["az", "eventgrid", "system-topic", "event-subscription", "create",
         "--resource-group", "rg-demo", "--system-topic-name", "{eventGridTopicName}",
         "--name", "batch-fraud", "--endpoint",
         "{scoringApps.blue.url}/runtime/webhooks/blobs"
         "?functionName=Host.Functions.batch_blob&code={blobsKey}",
         "--included-event-types", "Microsoft.Storage.BlobCreated",
         "--subject-begins-with", "/blobServices/default/containers/batch-input/blobs/fraud/"],
        ["scorefn", "endpoint", "apply", "endpoints/fraud.yaml", "--tables-url", "{tablesUrl}"],
    ]  # fmt: skip
    assert [s.capture for s in steps if s.capture] == ["deployerId", "outputs", "outputs", "blobsKey"]
    assert [s.capture for s in steps if s.secret] == ["blobsKey"]
    assert [s.action for s in steps].count("command") == len(steps) - 2


def test_plan_without_location_batch_or_user_lookup() -> None:
    spec = load_endpoint(SPEC)
    options = DeployOptions(
        resource_group="rg-demo",
        spec_path="endpoints/fraud.yaml",
        image_tag="t1",
        deployer_object_id="00000000-0000-0000-0000-000000000001",
    )
    argvs = [list(s.argv) for s in plan_deploy(spec, options)]
    assert argvs[0] == ["make", "models"]
    assert argvs[1] == _create(False, deployer="00000000-0000-0000-0000-000000000001")
    assert not any("eventgrid" in a or a[1] == "group" for a in argvs)


def test_a100_deployment_selects_the_a100_profile() -> None:
    spec = load_endpoint(SPEC)
    raw = spec.model_dump()
    raw["deployments"][1]["compute"] = "gpu-a100"
    spec = type(spec).model_validate(raw)
    options = DeployOptions(resource_group="rg", spec_path="x.yaml", image_tag="t")
    create = next(s for s in plan_deploy(spec, options) if s.capture == "outputs")
    assert "gpuT4=true" in create.argv and "gpuA100=true" in create.argv


def test_unknown_batch_deployment_is_refused() -> None:
    spec = load_endpoint(SPEC)
    options = DeployOptions(
        resource_group="rg", spec_path="x.yaml", image_tag="t",
        batch_function="f", batch_deployment="red",
    )  # fmt: skip
    with pytest.raises(ValueError) as info:
        plan_deploy(spec, options)
    assert str(info.value) == (
        "batch deployment 'red' is not a deployment of endpoint 'fraud'; deployments are blue, green"
    )


def test_dry_run_prints_the_plan_and_runs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["deploy", "--resource-group", "rg-demo", "--endpoint", str(SPEC),
            "--image-tag", "t1", "--dry-run"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    spec = load_endpoint(SPEC)
    expected = format_plan(
        plan_deploy(
            spec,
            DeployOptions(
                resource_group="rg-demo",
                spec_path=str(SPEC),
                image_tag="t1",
                batch_function="batch_plan",
            ),
        )
    )
    assert out == expected + "\n"
    assert out.splitlines()[0] == "# 1. Object id of the signed-in user (data-plane roles for the rollout)"
    assert "# 6. Package the router code  (in-process)" in out


def test_runner_fills_placeholders_and_never_prints_secrets(tmp_path: Path) -> None:
    outputs = {
        "routerName": {"type": "String", "value": "func-x-router"},
        "tablesUrl": {"type": "String", "value": "https://st.table.core.windows.net/"},
        "scoringApps": {"type": "Array", "value": [
            {"deployment": "blue", "name": "ca-blue", "url": "https://blue.example"},
        ]},
    }  # fmt: skip
    ran: list[list[str]] = []

    def fake(argv: list[str]) -> str:
        ran.append(list(argv))
        if argv[0] == "outputs":
            return json.dumps(outputs)
        return "s3cret-key\n"

    steps = [
        Step("outputs", ("outputs",), capture="outputs"),
        Step("key", ("key", "{scoringApps.blue.name}"), capture="blobsKey", secret=True),
        Step("use", ("use", "--endpoint", "{scoringApps.blue.url}?code={blobsKey}", "{routerName}")),
    ]
    out = io.StringIO()
    values = run_plan(steps, root=tmp_path, run=fake, out=out)
    assert ran[1:] == [
        ["key", "ca-blue"],
        ["use", "--endpoint", "https://blue.example?code=s3cret-key", "func-x-router"],
    ]
    assert values["blobsKey"] == "s3cret-key"
    assert "s3cret" not in out.getvalue()
    assert flatten_outputs(outputs)["scoringApps.blue.url"] == "https://blue.example"
    with pytest.raises(KeyError) as info:
        resolve(["{nope}"], {"a": "1"})
    assert info.value.args[0] == "placeholder {nope} has no value; known: a"


def test_deployment_urls_go_into_the_stored_spec() -> None:
    spec = load_endpoint(SPEC)
    deployed = with_deployment_urls(spec, {"blue": "https://b.example", "green": "https://g.example"})
    assert [d.base_url() for d in deployed.deployments] == ["https://b.example", "https://g.example"]
    assert deployed.traffic == spec.traffic
    with pytest.raises(KeyError) as info:
        with_deployment_urls(spec, {"blue": "https://b.example"})
    assert info.value.args[0] == "no Azure URL for deployment(s) green"


def test_router_package_has_the_app_and_no_models_tests_or_onnxruntime(tmp_path: Path) -> None:
    names = package_router(ROOT, tmp_path / "router.zip")
    top = {n.split("/")[0] for n in names}
    assert top == {"function_app.py", "host.json", "functions", "shared", "requirements.txt"}
    assert not any(n.endswith((".pyc", ".onnx")) for n in names)
    with zipfile.ZipFile(tmp_path / "router.zip") as archive:
        requirements = archive.read("requirements.txt").decode()
    for line in requirements.splitlines():
        name = re.split(r"[\[=<>~ ;]", line.strip(), maxsplit=1)[0].lower()
        assert name not in ROUTER_EXCLUDED_REQUIREMENTS
    assert "azure-functions==" in requirements and "azure-data-tables==" in requirements


def test_router_role_imports_nothing_left_out_of_its_package() -> None:
    # The router package drops these distributions: importing the app as a router must not
    # need them (their import names).
    code = (
        "import sys, function_app; "
        "bad = {'onnxruntime', 'numpy', 'pyarrow', 'tritonclient', 'sklearn', 'skl2onnx',"
        " 'onnx', 'pytest', 'hypothesis', 'google.protobuf'} & set(sys.modules); "
        "print(sorted(bad))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env={"APP_ROLE": "router", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_dockerfile_pins_the_requirements_onnxruntime_with_cuda_wheels() -> None:
    pin = next(
        line for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.startswith("onnxruntime-gpu==")
    )  # fmt: skip
    dockerfile = (ROOT / "Dockerfile").read_text()
    froms = [line for line in dockerfile.splitlines() if line.startswith("FROM")]
    assert froms == ["FROM mcr.microsoft.com/azure-functions/python:4-python3.11"]
    assert f'"onnxruntime-gpu[cuda,cudnn]=={pin.split("==")[1]}"' in dockerfile
    assert "APP_ROLE=scoring" in dockerfile
    assert "AzureWebJobsScriptRoot=/home/site/wwwroot" in dockerfile
    assert "COPY models/ /home/site/wwwroot/models/" in dockerfile
    assert "models" not in (ROOT / ".dockerignore").read_text().split()
