"""The Bicep templates: they parse, follow the security policies, pass checkov, and set
exactly the app settings that shared/settings.py reads."""

from __future__ import annotations

import inspect
import json
import subprocess
from typing import Any

import pytest
from pydantic import AliasChoices, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

import shared.settings as settings_module
from tests.infra.conftest import BICEP, ROOT, bicep_files, require_iac_venv

# --------------------------------------------------------------------------- helpers


def _resource(template: dict[str, Any], name: str) -> dict[str, Any]:
    """A resource's body, looking through a `[for ...]` loop."""
    config: dict[str, Any] = template["resources"][name]["config"]
    return config.get("config", config) if "loop_type" in config else config


def _names(items: list[dict[str, Any]]) -> list[str]:
    return [item["name"] for item in items]


def _router_settings(templates: dict[str, dict[str, Any]]) -> list[str]:
    app = _resource(templates["modules/router.bicep"], "app")
    return _names(app["properties"]["siteConfig"]["appSettings"])


def _scoring_settings(templates: dict[str, dict[str, Any]]) -> list[str]:
    app = _resource(templates["modules/scoring.bicep"], "apps")
    (container,) = app["properties"]["template"]["containers"]
    return _names(container["env"])


# Names the Azure platform or SDKs read (not scorefn settings), allowed on both apps.
PLATFORM = {
    "FUNCTIONS_WORKER_RUNTIME",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}

# Which app reads each settings class. A new BaseSettings class in shared/settings.py
# fails test_every_settings_class_has_an_app until it is placed here.
APPS_OF = {
    "AppSettings": {"router", "scoring"},
    "RouterSettings": {"router"},
    "ScoringSettings": {"scoring"},
    "BatchSettings": {"router", "scoring"},  # the router's job API reads it too
    "TelemetrySettings": {"router", "scoring"},
}

# Fields Bicep deliberately does not set in Azure, with the reason.
NOT_IN_AZURE = {
    ("RouterSettings", "storage"): "a connection string; in Azure the router uses tables_url "
    "with its managed identity (shared keys are disabled on the account)",
    ("RouterSettings", "local_issuer"): "local mode only: never trust the dev issuer in Azure",
    ("RouterSettings", "port_shift"): "local stack only",
    ("ScoringSettings", "hop_local_issuer"): "local mode only: never trust the dev issuer in Azure",
    ("BatchSettings", "storage"): "a connection string; in Azure batch storage is reached "
    "with blobs_url / queues_url / tables_url and the managed identity (shared keys are "
    "disabled on the account)",
    ("TelemetrySettings", "collect_storage"): "a connection string; in Azure collected data "
    "goes to collect_blobs_url with the managed identity (shared keys are disabled)",
    # Telemetry: the defaults fit Azure, where APPLICATIONINSIGHTS_CONNECTION_STRING (a
    # platform name, set by Bicep) switches Azure Monitor on; the rest are opt-in knobs
    # (exporters, sampling, data collection; its storage is a connection string).
    **{
        ("TelemetrySettings", name): "optional telemetry knob; defaults fit Azure"
        for name in settings_module.TelemetrySettings.model_fields
        if name
        not in {
            "applicationinsights_connection_string",
            "collect_storage",
            "collect_blobs_url",  # identity-based storage: set by Bicep
            "collect_client_id",
            "endpoint",  # ONLY_ON
        }
    },
}

ONLY_ON: dict[tuple[str, str], set[str]] = {
    # a scoring app serves one endpoint: its metrics' endpoint label; the router labels
    # each request with the endpoint it names
    ("TelemetrySettings", "endpoint"): {"scoring"},
}
"""Settings Bicep sets on some of the apps that read them (never on the others)."""


def _settings_classes() -> dict[str, type[BaseSettings]]:
    return {
        name: cls
        for name, cls in inspect.getmembers(settings_module, inspect.isclass)
        if issubclass(cls, BaseSettings)
        and cls is not BaseSettings
        and cls.__module__ == settings_module.__name__
    }


def _env_names(cls: type[BaseSettings], name: str, field: FieldInfo) -> list[str]:
    """The environment names a field is read from, the canonical one first."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    prefix = str(cls.model_config.get("env_prefix", ""))
    return [f"{prefix}{name}".upper()]


def _expected(app: str) -> tuple[set[str], set[str]]:
    """(canonical names Bicep must set on ``app``, names it must never set there)."""
    must: set[str] = set()
    never: set[str] = set()
    for cls_name, cls in _settings_classes().items():
        if app not in APPS_OF.get(cls_name, set()):
            continue
        for field_name, field in cls.model_fields.items():
            names = _env_names(cls, field_name, field)
            only = ONLY_ON.get((cls_name, field_name))
            if (cls_name, field_name) in NOT_IN_AZURE or (only is not None and app not in only):
                never.update(names)
            elif names[0] not in PLATFORM:  # platform names are checked by PLATFORM
                must.add(names[0])
    return must, never


# --------------------------------------------------------------------------- parsing


def test_every_bicep_file_parses(parsed: dict[str, dict[str, Any]]) -> None:
    assert set(parsed) == {str(p.relative_to(BICEP)) for p in bicep_files()}
    errors = {name: r["error"] for name, r in parsed.items() if "error" in r}
    assert errors == {}


def test_parameters_file_matches_main_parameters(templates: dict[str, dict[str, Any]]) -> None:
    params = json.loads((BICEP / "main.parameters.json").read_text())["parameters"]
    declared = templates["main.bicep"]["parameters"]
    assert set(params) <= set(declared)
    required = {n for n, p in declared.items() if p.get("default") is None and "default" not in p}
    assert required <= set(params)
    for dep in params["deployments"]["value"]:
        assert dep["minReplicas"] == 0
        assert dep["compute"] in {"cpu", "gpu-t4", "gpu-a100"}


# --------------------------------------------------------------------------- policies

EXPECTED_TYPES = {
    "Microsoft.OperationalInsights/workspaces": "2023-09-01",
    "Microsoft.Insights/components": "2020-02-02",
    "Microsoft.Insights/diagnosticSettings": "2021-05-01-preview",
    "Microsoft.Storage/storageAccounts": "2023-05-01",
    "Microsoft.Storage/storageAccounts/blobServices": "2023-05-01",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "2023-05-01",
    "Microsoft.Storage/storageAccounts/queueServices": "2023-05-01",
    "Microsoft.Storage/storageAccounts/queueServices/queues": "2023-05-01",
    "Microsoft.Storage/storageAccounts/tableServices": "2023-05-01",
    "Microsoft.Storage/storageAccounts/tableServices/tables": "2023-05-01",
    "Microsoft.ManagedIdentity/userAssignedIdentities": "2023-01-31",
    "Microsoft.Authorization/roleAssignments": "2022-04-01",
    "Microsoft.ContainerRegistry/registries": "2023-07-01",
    "Microsoft.Web/serverfarms": "2024-04-01",
    "Microsoft.Web/sites": "2024-04-01",
    "Microsoft.App/managedEnvironments": "2025-07-01",
    "Microsoft.App/containerApps": "2025-02-02-preview",
    "Microsoft.EventGrid/systemTopics": "2025-02-15",
    "Microsoft.Graph/applications": "v1.0",
    "Microsoft.Graph/servicePrincipals": "v1.0",
}


def test_resource_types_and_api_versions(templates: dict[str, dict[str, Any]]) -> None:
    seen = {
        (r["type"], r["api_version"])
        for t in templates.values()
        for r in t.get("resources", {}).values()
    }
    assert seen == set(EXPECTED_TYPES.items())


def test_storage_account_is_locked_down(templates: dict[str, dict[str, Any]]) -> None:
    storage = templates["modules/storage.bicep"]
    account = _resource(storage, "account")
    assert account["kind"] == "StorageV2"
    props = account["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert _resource(storage, "blobContainers")["properties"]["publicAccess"] == "None"
    defaults = storage["parameters"]
    assert {"batch-input", "batch-output", "batch-staging", "models", "deployments"} <= set(
        defaults["containers"]["default"]
    )
    assert {"jobs", "endpoints"} <= set(defaults["tables"]["default"])


def test_no_keys_connection_strings_or_secrets_in_templates() -> None:
    for path in bicep_files():
        text = path.read_text()
        for banned in ("listKeys", "AccountKey", "DefaultEndpointsProtocol", "SharedAccessSignature",
                       "secretRef", "passwordSecretRef", "@secure()", "sharedKey"):  # fmt: skip
            assert banned not in text, f"{path.name} contains {banned!r}"


def test_outputs_carry_no_secrets(templates: dict[str, dict[str, Any]]) -> None:
    outputs = templates["main.bicep"]["outputs"]
    assert set(outputs) == {
        "routerUrl", "routerName", "scoringApps", "storageName", "tablesUrl",
        "registryName", "registryLoginServer", "eventGridTopicName",
    }  # fmt: skip
    for name, template in templates.items():
        for out_name, out in template.get("outputs", {}).items():
            text = f"{out_name} {json.dumps(out['value'])}".lower()
            for word in ("key", "secret", "password", "token", "sas"):
                assert word not in text.replace("appinsightsconnectionstring", ""), (
                    f"{name}: output {out_name} looks like a secret"
                )


def test_monitoring_disables_local_auth(templates: dict[str, dict[str, Any]]) -> None:
    ai = _resource(templates["modules/monitoring.bicep"], "appInsights")
    assert ai["properties"]["DisableLocalAuth"] is True
    ws = _resource(templates["modules/monitoring.bicep"], "workspace")
    assert ws["properties"]["features"]["disableLocalAuth"] is True


def test_registry_has_no_admin_user(templates: dict[str, dict[str, Any]]) -> None:
    props = _resource(templates["modules/registry.bicep"], "registry")["properties"]
    assert props["adminUserEnabled"] is False
    assert props["anonymousPullEnabled"] is False


def test_role_assignments_use_builtin_role_ids(templates: dict[str, dict[str, Any]]) -> None:
    roles = templates["modules/roles.bicep"]["variables"]["roleIds"]["value"]
    assert roles == {
        "blobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        "blobDataContributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        "queueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
        "tableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
        "metricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
        "acrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    }
    # scoped to the resources, never the resource group
    for name in ("storageRoles", "deployerRoles", "metricsRoles", "acrPull"):
        assert _resource(templates["modules/roles.bicep"], name)["scope"] in {
            "storage", "appInsights", "registry",
        }  # fmt: skip


def test_router_is_flex_consumption_with_identity_storage(
    templates: dict[str, dict[str, Any]],
) -> None:
    router = templates["modules/router.bicep"]
    plan = _resource(router, "plan")
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    app = _resource(router, "app")
    assert app["kind"] == "functionapp,linux"
    props = app["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    always = config["scaleAndConcurrency"]["alwaysReady"]["operator"]["operands"]
    assert always["true_value"][0]["name"] == "http"
    settings = {s["name"]: s["value"] for s in props["siteConfig"]["appSettings"]}
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["APP_ROLE"] == "router"
    assert "AzureWebJobsStorage" not in settings


def test_scoring_apps_are_functionapps_on_gpu_profiles(
    templates: dict[str, dict[str, Any]],
) -> None:
    scoring = templates["modules/scoring.bicep"]
    variables = scoring["variables"]
    profiles = json.dumps([variables["t4Profiles"], variables["a100Profiles"]])
    assert "Consumption-GPU-NC8as-T4" in profiles
    assert "Consumption-GPU-NC24-A100" in profiles
    assert scoring["parameters"]["gpuT4"]["default"] is True
    assert scoring["parameters"]["gpuA100"]["default"] is False
    assert {k.strip("'") for k in variables["computeProfiles"]["value"]} == {"cpu", "gpu-t4", "gpu-a100"}
    app = _resource(scoring, "apps")
    assert app["kind"] == "functionapp"
    config = app["properties"]["configuration"]
    assert config["ingress"]["allowInsecure"] is False
    (registry,) = config["registries"]
    assert set(registry) == {"server", "identity"}  # pulled by managed identity
    assert "secrets" not in config
    env = {e["name"]: e.get("value") for e in app["properties"]["template"]["containers"][0]["env"]}
    assert env["APP_ROLE"] == "scoring"
    assert env["AzureWebJobsStorage__credential"] == "managedidentity"


def test_entra_app_is_optional_and_declares_the_roles(
    templates: dict[str, dict[str, Any]],
) -> None:
    main = templates["main.bicep"]
    assert main["parameters"]["createEntraApp"]["default"] is False
    assert main["modules"]["entraApp"]["config"]["condition"] == "createEntraApp"
    app = _resource(templates["modules/entra-app.bicep"], "app")
    assert [r["value"] for r in app["appRoles"]] == ["invokeRole", "adminRole"]
    params = templates["modules/entra-app.bicep"]["parameters"]
    assert params["invokeRole"]["default"] == "Endpoint.Invoke"
    assert params["adminRole"]["default"] == "Endpoint.Admin"


# --------------------------------------------------------------------------- settings


def test_every_settings_class_has_an_app() -> None:
    unplaced = set(_settings_classes()) - set(APPS_OF)
    assert not unplaced, f"place {sorted(unplaced)} in APPS_OF (which app reads them?)"


@pytest.mark.parametrize("app", ["router", "scoring"])
def test_bicep_sets_exactly_the_settings_the_app_reads(
    templates: dict[str, dict[str, Any]], app: str
) -> None:
    names = _router_settings(templates) if app == "router" else _scoring_settings(templates)
    assert len(names) == len(set(names)), "a setting is set twice"
    must, never = _expected(app)
    assert set(names) - PLATFORM == must
    assert not set(names) & never


def test_bicep_defaults_are_the_settings_defaults(templates: dict[str, dict[str, Any]]) -> None:
    variables = templates["main.bicep"]["variables"]
    classes = _settings_classes()
    for var, cls_name in (
        ("routerDefaults", "RouterSettings"),
        ("scoringDefaults", "ScoringSettings"),
        ("batchDefaults", "BatchSettings"),
    ):
        fields = classes[cls_name].model_fields
        for key, value in variables[var]["value"].items():
            if (cls_name, key) == ("ScoringSettings", "models_dir"):
                continue  # the image's path, not the local default
            field = fields[key]
            assert TypeAdapter(field.annotation).validate_python(value) == field.default, (
                f"{var}.{key} = {value!r} but {cls_name}.{key} defaults to {field.default!r}"
            )


# --------------------------------------------------------------------------- checkov


def test_checkov_reports_no_failed_checks() -> None:
    require_iac_venv()
    done = subprocess.run(
        [str(ROOT / ".venv-iac" / "bin" / "checkov"), "--framework", "bicep",
         "-d", str(BICEP), "-o", "json", "--skip-download"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    report = json.loads(done.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["file_path"]) for c in results["failed_checks"]]
    assert failed == []
    for check in results["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason.strip()) > 20, f"{check['check_id']} suppressed without a reason"
    # checkov's bundled pycep cannot parse the Graph `extension` statement.
    assert [e.replace("\\", "/").rsplit("/", 1)[-1] for e in results["parsing_errors"]] in (
        [],
        ["entra-app.bicep"],
    )
