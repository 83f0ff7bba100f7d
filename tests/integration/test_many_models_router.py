"""Many models through the router: repository load/unload need the admin role, the
index and inference the invoke role (real router host, real scoring host on a model
store in Azurite, real tokens from the dev issuer)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shared.auth.dev_issuer import DEV_TENANT, DevIssuer
from shared.localhost.azurite import AzuriteProcess
from shared.localhost.ports import free_ports
from shared.localhost.runner import HostProcess
from shared.modelstore.blobstore import ModelStoreClient
from shared.routing.endpoint import EndpointSpec
from shared.routing.store import EndpointStore
from tests.integration.stack_helpers import wait_ready
from tests.integration.test_many_models import CONTAINER, infer_body, package, scoring_host
from tests.integration.test_router import ThreadServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE = "api://scorefn-many-router"


@dataclass
class Stack:
    router: str
    issuer: DevIssuer

    def headers(self, role: str) -> dict[str, str]:
        token = self.issuer.mint_token(AUDIENCE, (role,), DEV_TENANT)
        return {"Authorization": f"Bearer {token}"}

    def url(self, path: str) -> str:
        return f"{self.router}/api/endpoints/many/v2/{path}"


@pytest.fixture(scope="module")
def stack(azurite: AzuriteProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("many-router")
    client = ModelStoreClient.from_setting(azurite.connection_string, CONTAINER)
    for name in ("r000", "r001"):
        client.push(package(tmp / "models", name, "1", seed=3), name, "1", overwrite=True)
    key_file = tmp / "issuer.pem"
    issuer_server = ThreadServer(
        lambda port: DevIssuer.from_key_file(key_file, f"http://127.0.0.1:{port}").app()
    )
    issuer = DevIssuer.from_key_file(key_file, f"http://127.0.0.1:{issuer_server.port}")
    (router_port,) = free_ports(1)
    scoring = scoring_host(tmp, azurite.connection_string, "r*")
    router = HostProcess(
        "function_app:app",
        port=router_port,
        cwd=ROOT,
        storage=azurite.connection_string,
        log_path=tmp / "router.log",
        env={
            "APP_ROLE": "router",
            "SCOREFN_ROUTER_STORAGE": azurite.connection_string,
            "SCOREFN_ROUTER_LOCAL_ISSUER": issuer.base_url,
            "AzureWebJobsStorage": azurite.connection_string,
        },
    )
    try:
        scoring.start(timeout=60)
        router.start(timeout=60)
        wait_ready(scoring.base_url)
        store = EndpointStore.from_connection_string(azurite.connection_string)
        store.apply(
            EndpointSpec.model_validate(
                {
                    "name": "many",
                    "auth": {"mode": "entra", "tenants": [DEV_TENANT], "audiences": [AUDIENCE]},
                    "deployments": [
                        {"name": "many", "models": ["r000"], "local_port": scoring.port}
                    ],
                    "traffic": {"many": 100},
                }
            )
        )
        store.close()
        yield Stack(f"http://127.0.0.1:{router_port}", issuer)
    finally:
        router.stop()
        scoring.stop()
        issuer_server.stop()


def test_load_and_unload_need_the_admin_role(stack: Stack) -> None:
    invoke, admin = stack.headers("Endpoint.Invoke"), stack.headers("Endpoint.Admin")
    for action in ("load", "unload"):
        r = httpx.post(stack.url(f"repository/models/r000/{action}"), headers=invoke)
        assert (r.status_code, r.json()) == (
            403,
            {
                "error": "app role 'Endpoint.Admin' is required; the token has roles: Endpoint.Invoke"
            },
        )
    r = httpx.post(stack.url("repository/models/r000/load"), headers=admin)
    assert (r.status_code, r.headers["x-deployment"]) == (200, "many")
    assert r.json() == [{"name": "r000", "version": "1", "state": "READY"}]
    index = httpx.post(stack.url("repository/index"), headers=invoke, json={"ready": True})
    assert index.status_code == 200
    assert index.json() == [{"name": "r000", "version": "1", "state": "READY", "reason": ""}]
    scored = httpx.post(
        stack.url("models/r001/infer"), headers=invoke, json=infer_body([[1, 2, 3, 4]])
    )
    assert scored.status_code == 200 and scored.json()["model_name"] == "r001"
    r = httpx.post(stack.url("repository/models/r000/unload"), headers=admin)
    assert r.json() == [{"name": "r000", "version": "1", "state": "UNAVAILABLE"}]
    r = httpx.post(stack.url("repository/models/nosuch/load"), headers=admin)
    assert r.status_code == 404 and r.json()["error"].startswith("model 'nosuch' not found")
