"""The router over real HTTP: a router host, two real scoring deployments (fraud v1 and
v2), the dev issuer, Azurite, and small Starlette deployments that sleep, fail or die.

Endpoints are stored in Azurite's ``endpoints`` table exactly as ``scorefn endpoint
apply`` stores them; each test uses its own endpoint so tests stay independent.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.auth.dev_issuer import DEV_TENANT, DevIssuer
from shared.cli import main as scorefn
from shared.client import DevIssuerCredential, ScoringClient
from shared.errors import AuthenticationError
from shared.localhost.azurite import AzuriteProcess
from shared.localhost.ports import free_ports
from shared.localhost.runner import HostProcess
from shared.routing.endpoint import EndpointSpec
from shared.routing.store import EndpointStore
from tests.integration.stack_helpers import wait_ready

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE = "api://scorefn-router-test"
COLUMNS = ["amount", "hour", "merchant_risk", "distance_km",
           "foreign", "txn_24h", "avg_amount_30d", "card_present"]  # fmt: skip
SCORE = {"input_data": {"columns": COLUMNS, "data": [[5000, 3, 0.95, 400, 1, 25, 20, 0]]}}


# ------------------------------------------------------------------ real servers
class ThreadServer:
    """An ASGI app served by uvicorn in a thread on a free loopback port."""

    def __init__(self, app: Any) -> None:
        """``app`` is an ASGI app, or a function of the bound port returning one."""
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        if not isinstance(app, Starlette):
            app = app(self.port)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def fake_deployment(name: str, *, delay_s: float = 0.0, status: int = 200) -> Starlette:
    """A deployment answering /api/score after ``delay_s`` with ``status``."""

    async def score(request: Request) -> JSONResponse:
        await asyncio.sleep(delay_s)
        return JSONResponse({"predictions": [name]}, status_code=status,
                            headers={"x-deployment": name})  # fmt: skip

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"ready": True})

    return Starlette(routes=[Route("/api/score", score, methods=["POST"]),
                             Route("/api/v2/health/ready", ready)])  # fmt: skip


@dataclass
class Env:
    router: str
    issuer: DevIssuer
    key_file: Path
    store: EndpointStore
    storage: str
    blue: int
    green: int
    slow: int
    failing: int
    dead: int
    keys: dict[str, str]
    azurite: AzuriteProcess | None = None
    tmp: Path | None = None

    def url(self, endpoint: str, path: str = "score") -> str:
        return f"{self.router}/api/endpoints/{endpoint}/{path}"

    def token(self, *roles: str, **kwargs: Any) -> str:
        return self.issuer.mint_token(kwargs.pop("audience", AUDIENCE), roles,
                                      kwargs.pop("tenant", DEV_TENANT), **kwargs)  # fmt: skip

    def auth(self, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(*(roles or ('Endpoint.Invoke',)))}"}


def spec(name: str, deployments: dict[str, int], traffic: dict[str, int],
         mirror: dict[str, int] | None = None, mode: str = "entra") -> EndpointSpec:  # fmt: skip
    return EndpointSpec.model_validate({
        "name": name,
        "auth": {"mode": mode, "tenants": [DEV_TENANT], "audiences": [AUDIENCE]},
        "deployments": [{"name": n, "models": ["fraud"], "local_port": p}
                        for n, p in deployments.items()],
        "traffic": traffic,
        "mirror": mirror or {},
    })  # fmt: skip


@pytest.fixture(scope="module")
def env(
    azurite: AzuriteProcess, example_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("router")
    key_file = tmp / "issuer.pem"
    servers: list[ThreadServer] = []
    hosts: list[HostProcess] = []
    try:
        servers.append(ThreadServer(
            lambda port: DevIssuer.from_key_file(key_file, f"http://127.0.0.1:{port}").app()
        ))  # fmt: skip
        issuer = DevIssuer.from_key_file(key_file, f"http://127.0.0.1:{servers[0].port}")
        slow = ThreadServer(fake_deployment("slow", delay_s=2.0))
        failing = ThreadServer(fake_deployment("failing", status=500))
        dead = ThreadServer(fake_deployment("dead"))
        servers += [slow, failing]
        dead.stop()  # killed: its port now refuses connections
        blue_port, green_port, router_port = free_ports(3)
        for port, name, model in ((blue_port, "blue", "fraud:1"), (green_port, "green", "fraud:2")):
            hosts.append(HostProcess(
                "function_app:app", port=port, cwd=ROOT, storage=azurite.connection_string,
                log_path=tmp / f"{name}.log",
                env={"APP_ROLE": "scoring", "SCOREFN_MODELS": model, "SCOREFN_DEPLOYMENT": name,
                     "SCOREFN_MODELS_DIR": str(example_models),
                     "AzureWebJobsStorage": azurite.connection_string},
            ).start(timeout=60))  # fmt: skip
        hosts.append(HostProcess(
            "function_app:app", port=router_port, cwd=ROOT, storage=azurite.connection_string,
            log_path=tmp / "router.log",
            env={"APP_ROLE": "router", "SCOREFN_ROUTER_STORAGE": azurite.connection_string,
                 "SCOREFN_ROUTER_LOCAL_ISSUER": issuer.base_url,
                 "SCOREFN_ROUTER_CONFIG_TTL_S": "1",
                 "AzureWebJobsStorage": azurite.connection_string},
        ).start(timeout=60))  # fmt: skip
        for port in (blue_port, green_port):
            wait_ready(f"http://127.0.0.1:{port}", timeout=60)
        store = EndpointStore.from_connection_string(azurite.connection_string)
        e = Env(f"http://127.0.0.1:{router_port}", issuer, key_file, store,
                azurite.connection_string, blue_port, green_port, slow.port, failing.port,
                dead.port, {})  # fmt: skip
        bg = {"blue": blue_port, "green": green_port}
        store.apply(spec("split", bg, {"blue": 90, "green": 10}))
        store.apply(spec("pinning", bg, {"blue": 100, "green": 0}, {"green": 100}))
        store.apply(spec("live", bg, {"blue": 100, "green": 0}))
        store.apply(spec("admin", bg, {"blue": 90, "green": 10}))
        store.apply(spec("shadow-slow", {"blue": blue_port, "slow": slow.port},
                         {"blue": 100}, {"slow": 100}))  # fmt: skip
        store.apply(spec("shadow-500", {"blue": blue_port, "failing": failing.port},
                         {"blue": 100}, {"failing": 100}))  # fmt: skip
        store.apply(spec("failover", {"blue": blue_port, "dead": dead.port},
                         {"blue": 50, "dead": 50}))  # fmt: skip
        store.apply(spec("slowpath", {"slow": slow.port}, {"slow": 100}))
        _, issued = store.apply(spec("keyed", bg, {"blue": 100}, mode="key"))
        assert issued is not None
        e.keys = {"primary": issued.primary, "secondary": issued.secondary}
        e.azurite = azurite
        e.tmp = tmp
        yield e
        store.close()
    finally:
        for host in reversed(hosts):
            host.stop()
        for server in servers:
            server.stop()


def _error(response: httpx.Response) -> tuple[int, dict[str, str]]:
    return response.status_code, response.json()


# ------------------------------------------------------------------ traffic split
async def test_traffic_split_over_2000_requests_is_within_3_points(env: Env) -> None:
    counts: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    headers = env.auth()
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker(n: int) -> None:
            for _ in range(n):
                r = await client.post(env.url("split"), json=SCORE, headers=headers)
                statuses[r.status_code] += 1
                counts[r.headers["x-deployment"]] += 1

        await asyncio.gather(*(worker(125) for _ in range(16)))
    assert statuses == {200: 2000}
    assert abs(counts["blue"] / 20 - 90) <= 3, counts
    assert counts["blue"] + counts["green"] == 2000


async def test_pinning_request_id_and_v2_routes(env: Env) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        # Pinning a deployment with traffic 0 is allowed; the caller's request id is echoed.
        r = await client.post(env.url("pinning"), json=SCORE,
                              headers={**env.auth(), "x-deployment": "green", "x-request-id": "abc-1"})  # fmt: skip
        assert (r.status_code, r.headers["x-deployment"], r.headers["x-request-id"]) == (200, "green", "abc-1")
        assert r.json()["predictions"] == ["highly_suspicious"]
        # Azure ML's header pins too.
        r = await client.post(env.url("pinning"), json=SCORE,
                              headers={**env.auth(), "azureml-model-deployment": "green"})  # fmt: skip
        assert r.headers["x-deployment"] == "green"
        assert len(r.headers["x-request-id"]) == 32  # generated
        r = await client.post(env.url("pinning"), json=SCORE, headers={**env.auth(), "x-deployment": "red"})
        assert _error(r) == (400, {"error": "deployment 'red' (x-deployment header) is not a deployment of endpoint 'pinning'; the deployments are blue, green"})
        assert r.headers["x-deployment"] == "none"
        # v2 protocol through the router
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8],
                            "data": [5000, 3, 0.95, 400, 1, 25, 20, 0]}]}  # fmt: skip
        r = await client.post(env.url("pinning", "v2/models/fraud/infer"), json=body, headers=env.auth())
        assert r.status_code == 200, r.text
        assert r.headers["x-deployment"] == "blue"
        assert r.json()["model_name"] == "fraud"
        r = await client.get(env.url("pinning", "v2/models/fraud"), headers={**env.auth(), "x-deployment": "green"})
        assert (r.status_code, r.json()["name"], r.headers["x-deployment"]) == (200, "fraud", "green")
        r = await client.get(env.url("pinning", "v2/models/fraud/versions/2/ready"), headers={**env.auth(), "x-deployment": "green"})
        assert (r.status_code, r.json()) == (200, {"name": "fraud", "ready": True})
        r = await client.get(env.url("pinning", "v2/models/nope/ready"), headers=env.auth())
        assert r.status_code == 404 and r.headers["x-deployment"] == "blue"
        # Pinned requests are never mirrored (the endpoint mirrors 100% to green): of the
        # six requests above, only the two unpinned ones that blue answered were copied.
        d = (await client.get(f"{env.router}/api/endpoints/pinning", headers=env.auth())).json()
        assert d["mirror_stats"]["green"]["sent"] == 2
        assert [(x["name"], x["health"]) for x in d["deployments"]] == [("blue", "ready"), ("green", "ready")]
        r = await client.get(f"{env.router}/api/openapi.json")
        assert r.status_code == 200 and "/api/endpoints/{endpoint}/score" in r.json()["paths"]


async def test_traffic_change_under_load_takes_effect_without_failures(env: Env) -> None:
    results: list[tuple[float, int, str]] = []
    stop = asyncio.Event()
    headers = env.auth()
    async with httpx.AsyncClient(timeout=30) as client:

        async def load() -> None:
            while not stop.is_set():
                r = await client.post(env.url("live"), json=SCORE, headers=headers)
                results.append((time.monotonic(), r.status_code, r.headers.get("x-deployment", "")))

        workers = [asyncio.create_task(load()) for _ in range(4)]
        await asyncio.sleep(1.0)
        code = await asyncio.to_thread(
            scorefn, ["traffic", "set", "live", "blue=0", "green=100", "--storage", env.storage]
        )
        changed = time.monotonic()
        assert code == 0
        deadline = changed + 10
        while time.monotonic() < deadline:
            recent = [d for t, _, d in results if t > time.monotonic() - 0.5]
            if recent and all(d == "green" for d in recent):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*workers)
    assert {s for _, s, _ in results} == {200}
    settled = [d for t, _, d in results if t > deadline]
    after = [d for t, _, d in results if t > changed]
    assert after and after[-1] == "green"
    assert all(d == "green" for d in settled)
    assert "blue" in {d for t, _, d in results if t < changed}


# ------------------------------------------------------------------ mirror
async def test_mirror_to_slow_or_failing_deployment_leaves_responses_alone(env: Env) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        for endpoint, mirror in (("shadow-slow", "slow"), ("shadow-500", "failing")):
            started = time.monotonic()
            for _ in range(8):
                r = await client.post(env.url(endpoint), json=SCORE, headers=env.auth())
                assert (r.status_code, r.headers["x-deployment"]) == (200, "blue")
                assert r.json()["predictions"] == ["highly_suspicious"]
            # 8 requests waiting on a 2 s mirror would take 16 s; loosely: far less.
            assert time.monotonic() - started < 12
            deadline = time.monotonic() + 15
            while True:
                d = (await client.get(f"{env.router}/api/endpoints/{endpoint}", headers=env.auth())).json()
                stats = d["mirror_stats"].get(mirror, {})
                if stats.get("completed") == 8 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            status = "200" if mirror == "slow" else "500"
            assert (stats["sent"], stats["completed"], stats["statuses"], stats["matched"],
                    stats["mismatched"], stats["failed"], stats["dropped"]) == (
                        8, 8, {status: 8}, 0, 8, 0, 0)  # fmt: skip


# ------------------------------------------------------------------ failover
async def test_failover_when_a_deployment_is_dead(env: Env) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        seen: Counter[str] = Counter()
        for _ in range(30):
            r = await client.post(env.url("failover"), json=SCORE, headers=env.auth())
            assert r.status_code == 200, r.text
            seen[r.headers["x-deployment"]] += 1
        assert seen == {"blue": 30}
        # Pinned requests never fail over.
        r = await client.post(env.url("failover"), json=SCORE, headers={**env.auth(), "x-deployment": "dead"})
        assert _error(r) == (502, {"error": "deployment 'dead' could not be reached (Connection refused)"})
        assert r.headers["x-deployment"] == "dead"
        d = (await client.get(f"{env.router}/api/endpoints/failover", headers=env.auth())).json()
        assert [(x["name"], x["health"]) for x in d["deployments"]] == [("blue", "ready"), ("dead", "unreachable")]


# ------------------------------------------------------------------ auth
def test_auth_is_wired_to_the_router(env: Env) -> None:
    url = env.url("split")
    cases: list[tuple[dict[str, str], int, str, str]] = [
        ({}, 401, "Bearer", "no credentials; expected 'Authorization: Bearer <token>'"),
    ]
    for headers, status, challenge, message in cases:
        r = httpx.post(url, json=SCORE, headers=headers)
        assert (r.status_code, r.headers["www-authenticate"], r.json()) == (status, challenge, {"error": message})
    bad = {
        "expired": env.token("Endpoint.Invoke", lifetime=-600),
        "audience": env.token("Endpoint.Invoke", audience="api://other"),
        "tenant": env.token("Endpoint.Invoke", tenant="11111111-1111-4111-8111-111111111111"),
        "tampered": env.token("Endpoint.Invoke")[:-4] + "AAAA",
    }
    got = {}
    for name, token in bad.items():
        r = httpx.post(url, json=SCORE, headers={"Authorization": f"Bearer {token}"})
        got[name] = (r.status_code, r.headers["www-authenticate"], r.json()["error"])
    for name, (status, challenge, message) in got.items():
        assert status == 401, (name, message)
        assert challenge == f'Bearer error="invalid_token", error_description="{message}"'
    assert "expired" in got["expired"][2]
    assert AUDIENCE in got["audience"][2] and "api://other" in got["audience"][2]
    assert "11111111-1111-4111-8111-111111111111" in got["tenant"][2]
    assert got["tampered"][2] == "signature verification failed"
    r = httpx.post(url, json=SCORE, headers={"Authorization": f"Bearer {env.token('Other.Role')}"})
    message = "role 'Endpoint.Invoke' is required; the token has roles: Other.Role; scopes: (none)"
    assert (r.status_code, r.json()) == (403, {"error": message})
    assert r.headers["www-authenticate"] == f'Bearer error="insufficient_scope", error_description="{message}"'


def test_unknown_endpoint_is_404(env: Env) -> None:
    r = httpx.post(env.url("nosuch"), json=SCORE, headers=env.auth())
    assert _error(r) == (404, {"error": "endpoint 'nosuch' is not configured; store it with `scorefn endpoint apply endpoints/nosuch.yaml`"})


def test_key_auth(env: Env) -> None:
    for key in env.keys.values():
        r = httpx.post(env.url("keyed"), json=SCORE, headers={"Authorization": f"Bearer {key}"})
        assert (r.status_code, r.headers["x-deployment"]) == (200, "blue")
    r = httpx.post(env.url("keyed"), json=SCORE, headers={"Authorization": "Bearer wrong"})
    assert _error(r) == (401, {"error": "the key is not valid for endpoint 'keyed'"})
    r = httpx.get(env.url("keyed", "traffic"), headers={"Authorization": f"Bearer {env.keys['primary']}"})
    assert _error(r) == (403, {"error": "endpoint 'keyed' uses key auth; keys grant scoring only. Change traffic with `scorefn traffic set` or switch the endpoint to entra auth"})
    # `scorefn keys regenerate` replaces one key; the old one stops working, the other works.
    assert scorefn(["keys", "regenerate", "keyed", "primary", "--storage", env.storage]) == 0
    time.sleep(1.2)  # the router's config cache (1 s here)
    r = httpx.post(env.url("keyed"), json=SCORE, headers={"Authorization": f"Bearer {env.keys['primary']}"})
    assert r.status_code == 401
    r = httpx.post(env.url("keyed"), json=SCORE, headers={"Authorization": f"Bearer {env.keys['secondary']}"})
    assert r.status_code == 200


# ------------------------------------------------------------------ traffic admin
def test_traffic_admin_api(env: Env) -> None:
    url = env.url("admin", "traffic")
    admin = env.auth("Endpoint.Admin")
    r = httpx.get(url, headers=env.auth())
    assert _error(r) == (403, {"error": "app role 'Endpoint.Admin' is required; the token has roles: Endpoint.Invoke"})
    r = httpx.get(url, headers=admin)
    assert r.status_code == 200
    assert {k: r.json()[k] for k in ("endpoint", "traffic", "mirror")} == {
        "endpoint": "admin", "traffic": {"blue": 90, "green": 10}, "mirror": {}}  # fmt: skip
    refused = [
        ({"traffic": {"blue": 90, "green": 20}}, "endpoint 'admin': traffic weights sum to 110 (blue=90, green=20); they must sum to 100"),
        ({"traffic": {"blue": 90, "red": 10}}, "endpoint 'admin': traffic names deployment 'red'; the deployments are blue, green"),
        ({"traffic": {"blue": 110, "green": -10}}, "endpoint 'admin': traffic[blue] is 110; expected 0 to 100"),
        ({"traffic": {"blue": 89.5, "green": 10.5}}, "endpoint 'admin': traffic[blue] is 89.5; percentages are whole numbers 0 to 100"),
        ({"mirror": {"blue": 10, "green": 10}}, "endpoint 'admin': mirror sends copies to blue, green; at most one deployment may receive mirrored traffic"),
        ({"traffic": {"blue": 50, "green": 50}, "mirror": {"green": 101}}, "endpoint 'admin': mirror[green] is 101; expected 0 to 100"),
        ({"weights": {}}, "unknown field(s) weights; expected traffic and/or mirror"),
        ({"traffic": [1]}, "traffic must be an object of deployment -> percent; got list"),
    ]
    for body, message in refused:
        r = httpx.put(url, json=body, headers=admin)
        assert _error(r) == (400, {"error": message})
    assert httpx.get(url, headers=admin).json()["traffic"] == {"blue": 90, "green": 10}  # unchanged
    r = httpx.put(url, json={"traffic": {"blue": 40, "green": 60}, "mirror": {"green": 20}}, headers=admin)
    assert r.status_code == 200
    assert (r.json()["traffic"], r.json()["mirror"]) == ({"blue": 40, "green": 60}, {"green": 20})
    stored = env.store.get("admin")
    assert (stored.spec.traffic, stored.spec.mirror, stored.etag) == ({"blue": 40, "green": 60}, {"green": 20}, r.json()["etag"])


# ------------------------------------------------------------------ client SDK
def test_scoring_client_with_a_token_credential(env: Env) -> None:
    credential = DevIssuerCredential(env.issuer.base_url, key_file=env.key_file)
    with ScoringClient(f"{env.router}/api/endpoints/pinning", credential,
                       scope=f"{AUDIENCE}/.default") as client:  # fmt: skip
        scored = client.score(SCORE, deployment="green")
        assert (scored.body["predictions"], scored.deployment) == (["highly_suspicious"], "green")
        inferred = client.infer("fraud", [{"name": "x", "datatype": "FP32", "shape": [1, 8],
                                           "data": [5000, 3, 0.95, 400, 1, 25, 20, 0]}])  # fmt: skip
        assert inferred.body["model_name"] == "fraud"
    with ScoringClient(f"{env.router}/api/endpoints/pinning") as anonymous:
        with pytest.raises(AuthenticationError) as info:
            anonymous.score(SCORE)
        assert str(info.value) == "no credentials; expected 'Authorization: Bearer <token>'"


# ------------------------------------------------------------------ concurrency cap
async def test_requests_over_the_endpoint_cap_get_429(env: Env) -> None:
    assert env.azurite is not None and env.tmp is not None
    (port,) = free_ports(1)
    cs = env.azurite.connection_string
    capped = HostProcess(
        "function_app:app", port=port, cwd=ROOT, storage=cs, log_path=env.tmp / "capped.log",
        env={"APP_ROLE": "router", "SCOREFN_ROUTER_STORAGE": cs,
             "SCOREFN_ROUTER_LOCAL_ISSUER": env.issuer.base_url,
             "SCOREFN_ROUTER_MAX_CONCURRENT": "1", "AzureWebJobsStorage": cs},
    )  # fmt: skip
    with capped:
        url = f"{capped.base_url}/api/endpoints/slowpath/score"
        async with httpx.AsyncClient(timeout=30) as client:
            first = asyncio.create_task(client.post(url, json=SCORE, headers=env.auth()))
            await asyncio.sleep(1.0)  # the first waits 2 s on the slow deployment
            second = await client.post(url, json=SCORE, headers=env.auth())
            answered = await first
    assert (answered.status_code, answered.json()) == (200, {"predictions": ["slow"]})
    assert _error(second) == (429, {"error": "endpoint 'slowpath' has 1 requests in flight, the limit; retry after a moment"})
    assert second.headers["retry-after"] == "1"
