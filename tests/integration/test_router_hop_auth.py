"""Hop authentication over real processes: the dev issuer (serving the managed-identity
endpoint), a scoring host that accepts only the router's token, the router (its
``ManagedIdentityCredential`` pointed at the dev issuer, as ``scorefn up`` does) and
Azurite. Wired with the same ``shared.stack`` functions as the local stack.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shared.auth.dev_issuer import (
    DEV_IDENTITY_CLIENT_ID,
    DEV_TENANT,
    MSI_PATH,
    DevIssuer,
    identity_header_secret,
)
from shared.localhost.azurite import AzuriteProcess
from shared.localhost.ports import free_ports
from shared.localhost.runner import HostProcess
from shared.routing.endpoint import EndpointSpec
from shared.stack import (
    LOCAL_HOP_AUDIENCE,
    apply_endpoint,
    router_host,
    start_dev_issuer,
    stop_dev_issuer,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE = "api://scorefn-hop-test"
ROW = [5000, 3, 0.95, 400, 1, 25, 20, 0]
SCORE = {"data": [ROW]}
INFER = {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": ROW}]}
NO_TOKEN = "no credentials; expected 'Authorization: Bearer <token>'"


@dataclass
class HopEnv:
    router: str
    deployment: str
    issuer: DevIssuer
    secret: str

    def caller(self) -> dict[str, str]:
        """A caller's token for the endpoint (not for the deployment)."""
        token = self.issuer.mint_token(AUDIENCE, ("Endpoint.Invoke",), DEV_TENANT)
        return {"Authorization": f"Bearer {token}"}

    def hop(self, **kwargs: str) -> dict[str, str]:
        """A token for the hop audience (by default as the router's identity gets it)."""
        audience = kwargs.pop("audience", LOCAL_HOP_AUDIENCE)
        client = kwargs.pop("client", DEV_IDENTITY_CLIENT_ID)
        token = self.issuer.mint_token(audience, (), DEV_TENANT, subject=client, app_id=client)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def hop_env(
    azurite: AzuriteProcess, example_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HopEnv]:
    tmp = tmp_path_factory.mktemp("hop")
    key_file = tmp / "issuer" / "signing-key.pem"
    secret_file = tmp / "issuer" / "identity-header"
    secret = identity_header_secret(secret_file)
    issuer_port, deployment_port, router_port = free_ports(3)
    issuer_url = f"http://127.0.0.1:{issuer_port}"
    storage = azurite.connection_string
    issuer_process = start_dev_issuer(
        issuer_port, key_file=key_file, log_path=tmp / "issuer.log",
        identity_header_file=secret_file,
    )  # fmt: skip
    hosts: list[HostProcess] = []
    try:
        hosts.append(HostProcess(
            "function_app:app", port=deployment_port, cwd=ROOT, storage=storage,
            log_path=tmp / "blue.log",
            env={"APP_ROLE": "scoring", "SCOREFN_MODELS": "fraud:1", "SCOREFN_DEPLOYMENT": "blue",
                 "SCOREFN_MODELS_DIR": str(example_models), "AzureWebJobsStorage": storage,
                 "SCOREFN_HOP_AUDIENCE": LOCAL_HOP_AUDIENCE, "SCOREFN_HOP_TENANT": DEV_TENANT,
                 "SCOREFN_HOP_LOCAL_ISSUER": issuer_url,
                 "SCOREFN_HOP_ALLOWED_CLIENTS": DEV_IDENTITY_CLIENT_ID},
        ).start(timeout=60))  # fmt: skip
        hosts.append(router_host(
            port=router_port, storage=storage, issuer_url=issuer_url, log_path=tmp / "router.log",
            hop_audience=LOCAL_HOP_AUDIENCE, identity_header=secret,
        ).start(timeout=60))  # fmt: skip
        # One deployment at 100 %, mirrored to itself under a second name: the mirror
        # copy must carry the hop token too.
        apply_endpoint(storage, EndpointSpec.model_validate({
            "name": "hop",
            "auth": {"mode": "entra", "tenants": [DEV_TENANT], "audiences": [AUDIENCE]},
            "deployments": [{"name": "blue", "models": ["fraud:1"], "local_port": deployment_port},
                            {"name": "shadow", "models": ["fraud:1"],
                             "url": f"http://127.0.0.1:{deployment_port}"}],
            "traffic": {"blue": 100, "shadow": 0},
            "mirror": {"shadow": 100},
        }))  # fmt: skip
        deployment = f"http://127.0.0.1:{deployment_port}"
        deadline = time.monotonic() + 60
        while httpx.get(deployment + "/api/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "the deployment did not get ready"
            time.sleep(0.1)
        issuer = DevIssuer.from_key_file(key_file, issuer_url)
        yield HopEnv(f"http://127.0.0.1:{router_port}", deployment, issuer, secret)
    finally:
        for host in reversed(hosts):
            host.stop()
        stop_dev_issuer(issuer_process)


def _error(r: httpx.Response) -> tuple[int, str, object]:
    return r.status_code, r.headers.get("www-authenticate", ""), r.json()


def test_a_direct_call_without_the_routers_token_is_refused(hop_env: HopEnv) -> None:
    url = hop_env.deployment + "/api/score"
    r = httpx.post(url, json=SCORE)
    assert _error(r) == (401, "Bearer", {"error": NO_TOKEN})
    r = httpx.post(hop_env.deployment + "/api/v2/models/fraud/infer", json=INFER)
    assert _error(r) == (401, "Bearer", {"error": NO_TOKEN})
    # The caller's token for the endpoint is not a token for the deployment.
    r = httpx.post(url, json=SCORE, headers=hop_env.caller())
    assert _error(r) == (
        401,
        'Bearer error="invalid_token", error_description="audience '
        "'api://scorefn-hop-test' is not accepted; expected api://scorefn-scoring\"",
        {"error": "audience 'api://scorefn-hop-test' is not accepted; "
                  "expected api://scorefn-scoring"},
    )  # fmt: skip
    # A token for the right audience but of another identity of the tenant: 403.
    other = "11111111-2222-4333-8444-555555555555"
    r = httpx.post(url, json=SCORE, headers=hop_env.hop(client=other))
    assert r.status_code == 403
    assert r.json() == {"error": f"client '{other}' may not call this deployment; only the "
                                 "router's identity may (hop_allowed_clients)"}  # fmt: skip
    # The router's identity and audience, but signed with a key the issuer never published.
    stranger = DevIssuer.generate(hop_env.issuer.base_url)
    token = stranger.mint_token(LOCAL_HOP_AUDIENCE, (), DEV_TENANT,
                                app_id=DEV_IDENTITY_CLIENT_ID)  # fmt: skip
    r = httpx.post(url, json=SCORE, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert r.json() == {"error": f"signing key '{stranger.kid}' not found in the tenant's JWKS"}


def test_health_and_docs_stay_open(hop_env: HopEnv) -> None:
    for path in ("/api/v2/health/live", "/api/v2/health/ready", "/api/openapi.json"):
        assert httpx.get(hop_env.deployment + path).status_code == 200, path


def test_the_routers_token_gets_in(hop_env: HopEnv) -> None:
    r = httpx.post(hop_env.deployment + "/api/score", json=SCORE, headers=hop_env.hop())
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == ["highly_suspicious"]


def test_routed_calls_carry_the_hop_token_forwarded_and_mirrored(hop_env: HopEnv) -> None:
    score = f"{hop_env.router}/api/endpoints/hop/score"
    with httpx.Client(timeout=30) as client:
        for _ in range(5):
            r = client.post(score, json=SCORE, headers=hop_env.caller())
            assert r.status_code == 200, r.text
            assert r.json()["predictions"] == ["highly_suspicious"]
            assert r.headers["x-deployment"] == "blue"
        infer = f"{hop_env.router}/api/endpoints/hop/v2/models/fraud/infer"
        r = client.post(infer, json=INFER, headers=hop_env.caller())
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["name"] == "label"
        # The router's own calls without a caller token are still refused by the router.
        r = client.post(score, json=SCORE)
        assert r.status_code == 401
        # Every mirror copy was let in too (200s, not 401s).
        deadline = time.monotonic() + 10
        while True:
            d = client.get(f"{hop_env.router}/api/endpoints/hop", headers=hop_env.caller())
            stats = d.json()["mirror_stats"].get("shadow", {})
            if stats.get("completed", 0) >= 6 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert stats["statuses"] == {"200": 6}
        assert stats["matched"] == 6


def test_the_managed_identity_endpoint_wants_its_secret(hop_env: HopEnv) -> None:
    url = hop_env.issuer.base_url + MSI_PATH
    params = {"resource": LOCAL_HOP_AUDIENCE, "api-version": "2019-08-01"}
    r = httpx.get(url, params=params, headers={"X-IDENTITY-HEADER": "wrong"})
    assert (r.status_code, r.json()) == (
        401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"}
    )  # fmt: skip
    r = httpx.get(url, params={"api-version": "2019-08-01"},
                  headers={"X-IDENTITY-HEADER": hop_env.secret})  # fmt: skip
    assert r.status_code == 400
    assert r.json()["message"] == "the resource query parameter (an audience) is required"
    r = httpx.get(url, params=params, headers={"X-IDENTITY-HEADER": hop_env.secret})
    assert r.status_code == 200
    body = r.json()
    assert (body["resource"], body["token_type"], body["client_id"]) == (
        LOCAL_HOP_AUDIENCE, "Bearer", DEV_IDENTITY_CLIENT_ID
    )  # fmt: skip
    assert int(body["expires_on"]) > time.time() + 3000
