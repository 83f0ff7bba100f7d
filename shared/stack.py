"""The local stack behind ``make up`` / ``scorefn up``.

Starts Azurite (or reuses one already listening), stores the endpoint spec in its
``endpoints`` table, starts the dev token issuer (port 7070), one local Functions host
per deployment of the spec (``APP_ROLE=scoring``, the deployment's models, its
``local_port``) and the router (``APP_ROLE=router``, port 7071, local mode trusting that
dev issuer), waits until every host is ready, prints the URLs and a ready-to-paste
``curl`` through the router with a fresh token, and on Ctrl-C (SIGINT) or SIGTERM stops
every child and frees the ports. ``port_shift`` is added to every port.
"""

from __future__ import annotations

import json
import logging
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from shared.auth.dev_issuer import DEFAULT_KEY_FILE, DEV_TENANT, DevIssuer
from shared.errors import ScorefnError
from shared.localhost.azurite import AzuriteProcess, StorageEndpoints
from shared.localhost.runner import HostProcess, wait_for_http
from shared.routing.endpoint import DeploymentSpec, EndpointSpec, load_endpoint
from shared.routing.store import EndpointStore

__all__ = ["Stack", "StackOptions", "run_stack", "example_curl"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
AZURITE_PORTS = (10000, 10001, 10002)
ISSUER_PORT = 7070
ROUTER_PORT = 7071
EXAMPLE_ROW = [5000, 3, 0.95, 400, 1, 25, 20, 0]


@dataclass
class StackOptions:
    """What to run and where."""

    endpoint: Path = ROOT / "endpoints" / "fraud.yaml"
    port_shift: int = 0
    run_dir: Path = ROOT / ".run"
    ready_timeout: float = 60.0


@dataclass
class Stack:
    """The running processes of the local stack."""

    spec: EndpointSpec
    options: StackOptions
    azurite: AzuriteProcess | None = None
    connection_string: str = ""
    hosts: dict[str, HostProcess] = field(default_factory=dict)
    issuer: subprocess.Popen[bytes] | None = None
    router: HostProcess | None = None
    endpoint_key: str | None = None
    """The primary key, when the stack created it (auth mode key)."""

    @property
    def issuer_url(self) -> str:
        """Base URL of the dev token issuer."""
        return f"http://127.0.0.1:{ISSUER_PORT + self.options.port_shift}"

    @property
    def router_url(self) -> str:
        """Base URL of the router."""
        return f"http://127.0.0.1:{ROUTER_PORT + self.options.port_shift}"

    @property
    def key_file(self) -> Path:
        """The dev issuer's signing key (kept across restarts, so tokens stay valid)."""
        return ROOT / DEFAULT_KEY_FILE

    def token(self, roles: tuple[str, ...] = ("Endpoint.Invoke",)) -> str:
        """A fresh dev token for the endpoint's first audience and tenant."""
        auth = self.spec.auth
        issuer = DevIssuer.from_key_file(self.key_file, self.issuer_url)
        tenant = auth.tenants[0] if auth.tenants else DEV_TENANT
        return issuer.mint_token(auth.audiences[0], roles, tenant)

    def url(self, deployment: DeploymentSpec) -> str:
        """Base URL of a deployment's host."""
        assert deployment.local_port is not None
        return f"http://127.0.0.1:{deployment.local_port + self.options.port_shift}"

    def start(self) -> None:
        """Start Azurite and every deployment; wait until each host is ready."""
        opts = self.options
        ends = StorageEndpoints("127.0.0.1", *(p + opts.port_shift for p in AZURITE_PORTS))
        if ends.reachable():
            log.info("reusing the Azurite already listening on %s", ends.blob_port)
        else:
            self.azurite = AzuriteProcess(opts.run_dir / "azurite", endpoints=ends)
            (opts.run_dir / "azurite").mkdir(parents=True, exist_ok=True)
            self.azurite.start()
        self.connection_string = ends.connection_string
        store = EndpointStore.from_connection_string(self.connection_string)
        try:
            _, issued = store.apply(self.spec)
        finally:
            store.close()
        self.endpoint_key = issued.primary if issued is not None else None
        logs = opts.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self._start_issuer(logs)
        for d in self.spec.deployments:
            if d.local_port is None:
                raise ValueError(f"deployment {d.name!r} has no local_port in {opts.endpoint}")
            host = HostProcess(
                "function_app:app",
                port=d.local_port + opts.port_shift,
                cwd=ROOT,
                storage=self.connection_string,
                host_id=f"{self.spec.name}-{d.name}",
                log_path=logs / f"{d.name}.log",
                env={
                    "APP_ROLE": "scoring",
                    "SCOREFN_MODELS": ",".join(d.models),
                    "SCOREFN_DEPLOYMENT": d.name,
                    "SCOREFN_MODELS_DIR": str(ROOT / "models"),
                    "SCOREFN_BATCHING": "true" if d.batching else "false",
                    "AzureWebJobsStorage": self.connection_string,
                },
            )
            self.hosts[d.name] = host
            host.start(timeout=opts.ready_timeout)
        for d in self.spec.deployments:
            self._wait_ready(d)
        self.router = HostProcess(
            "function_app:app",
            port=ROUTER_PORT + opts.port_shift,
            cwd=ROOT,
            storage=self.connection_string,
            host_id=f"{self.spec.name}-router",
            log_path=logs / "router.log",
            env={
                "APP_ROLE": "router",
                "SCOREFN_ROUTER_STORAGE": self.connection_string,
                "SCOREFN_ROUTER_LOCAL_ISSUER": self.issuer_url,
                "SCOREFN_ROUTER_PORT_SHIFT": str(opts.port_shift),
                "AzureWebJobsStorage": self.connection_string,
            },
        )
        self.router.start(timeout=opts.ready_timeout)

    def _start_issuer(self, logs: Path) -> None:
        port = ISSUER_PORT + self.options.port_shift
        command = [sys.executable, "-m", "shared.auth.dev_issuer", "--port", str(port)]
        command += ["--key-file", str(self.key_file)]
        with (logs / "dev-issuer.log").open("ab") as out:
            self.issuer = subprocess.Popen(
                command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        issuer = self.issuer
        wait_for_http(
            f"{self.issuer_url}/{DEV_TENANT}/v2.0/.well-known/openid-configuration",
            timeout=self.options.ready_timeout,
            alive=lambda: issuer.poll() is None,
        )

    def _wait_ready(self, d: DeploymentSpec) -> None:
        deadline = time.monotonic() + self.options.ready_timeout
        url = self.url(d) + "/api/v2/health/ready"
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if not self.hosts[d.name].running:
                raise RuntimeError(
                    f"deployment {d.name} exited; see {self.options.run_dir}/logs/{d.name}.log"
                )
            time.sleep(0.1)
        raise TimeoutError(
            f"deployment {d.name} was not ready within {self.options.ready_timeout}s"
        )

    def stop(self) -> None:
        """Stop the router, every host, the dev issuer, then Azurite (if started here)."""
        if self.router is not None:
            log.info("router stopped (exit %s)", self.router.stop())
        for name, host in reversed(list(self.hosts.items())):
            code = host.stop()
            log.info("deployment %s stopped (exit %s)", name, code)
        if self.issuer is not None and self.issuer.poll() is None:
            self.issuer.terminate()
            try:
                self.issuer.wait(10)
            except subprocess.TimeoutExpired:
                self.issuer.kill()
                self.issuer.wait()
            log.info("dev issuer stopped")
        if self.azurite is not None:
            self.azurite.stop()
            log.info("Azurite stopped")


def example_curl(
    base_url: str, *, path: str = "/api/score", authorization: str | None = None
) -> str:
    """A ready-to-paste curl scoring one transaction with column names."""
    body = {
        "input_data": {
            "columns": [
                "amount",
                "hour",
                "merchant_risk",
                "distance_km",
                "foreign",
                "txn_24h",
                "avg_amount_30d",
                "card_present",
            ],
            "data": [EXAMPLE_ROW],
        }
    }
    auth = f"-H {shlex.quote('Authorization: ' + authorization)} " if authorization else ""
    return (
        f"curl -s -X POST {base_url}{path} -H 'Content-Type: application/json' {auth}"
        f"-d {shlex.quote(json.dumps(body, separators=(',', ':')))}"
    )


def _weights(table: dict[str, int]) -> str:
    return " ".join(f"{name}={pct}" for name, pct in table.items() if pct > 0)


def _router_curl(stack: Stack) -> str:
    mode = stack.spec.auth.mode
    if mode == "entra":
        authorization: str | None = f"Bearer {stack.token()}"
    elif mode == "key" and stack.endpoint_key is not None:
        authorization = f"Bearer {stack.endpoint_key}"
    else:
        authorization = None
    path = f"/api/endpoints/{stack.spec.name}/score"
    return example_curl(stack.router_url, path=path, authorization=authorization)


def run_stack(options: StackOptions) -> int:
    """Start the stack, print how to use it, block until SIGINT/SIGTERM, stop it."""
    spec = load_endpoint(options.endpoint)
    stack = Stack(spec, options)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
        if stop.is_set():
            return 0
        print(f"\nscorefn local stack for endpoint '{spec.name}' is ready", flush=True)
        print(f"  storage (Azurite): {stack.connection_string}")
        print(f"  dev token issuer:  {stack.issuer_url}")
        print(
            f"  router:            {stack.router_url}/api/endpoints/{spec.name}  "
            f"(traffic {_weights(spec.traffic)}; mirror {_weights(spec.mirror) or 'off'})"
        )
        for d in spec.deployments:
            url = stack.url(d)
            print(f"  deployment {d.name:6s} {url}/api  models: {', '.join(d.models)}")
            print(
                f"      docs: {url}/api/docs   v2: {url}/api/v2/models/{d.models[0].split(':')[0]}"
            )
        print(
            "\nTry (through the router; the token is valid for an hour):\n  " + _router_curl(stack)
        )
        print(
            f"\nA new token: scorefn token --endpoint {spec.name}"
            + (f" --issuer-url {stack.issuer_url}" if options.port_shift else "")
        )
        first = stack.url(spec.deployments[0])
        print("Or a deployment directly:\n  " + example_curl(first))
        print("\nCtrl-C stops everything.", flush=True)
        stop.wait()
        print("\nstopping...", flush=True)
        return 0
    except (RuntimeError, TimeoutError, ValueError, FileNotFoundError, ScorefnError) as exc:
        print(f"scorefn up failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()
