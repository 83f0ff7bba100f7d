"""The local stack behind ``make up`` / ``scorefn up``.

Starts Azurite (or reuses one already listening), stores the endpoint spec in its
``endpoints`` table, starts the dev token issuer (port 7070), one local Functions host
per deployment of the spec (``APP_ROLE=scoring``, the deployment's models, its
``local_port``) and the router (``APP_ROLE=router``, port 7071, local mode trusting that
dev issuer; hop authentication on: the router's ``ManagedIdentityCredential`` gets its
tokens from the dev issuer's managed-identity endpoint and the deployments accept only
those), waits until every host is ready, prints the URLs and a ready-to-paste
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

from shared.auth.dev_issuer import (
    DEFAULT_KEY_FILE,
    DEV_IDENTITY_CLIENT_ID,
    DEV_TENANT,
    MSI_PATH,
    DevIssuer,
    identity_header_secret,
)
from shared.errors import ScorefnError
from shared.localhost.azurite import AzuriteProcess, StorageEndpoints
from shared.localhost.runner import HostProcess, wait_for_http
from shared.routing.endpoint import DeploymentSpec, EndpointSpec, load_endpoint
from shared.routing.store import EndpointStore

__all__ = [
    "Stack",
    "StackOptions",
    "apply_endpoint",
    "example_curl",
    "router_host",
    "run_stack",
    "start_dev_issuer",
    "stop_dev_issuer",
]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
AZURITE_PORTS = (10000, 10001, 10002)
ISSUER_PORT = 7070
ROUTER_PORT = 7071
EXAMPLE_ROW = [5000, 3, 0.95, 400, 1, 25, 20, 0]
LOCAL_HOP_AUDIENCE = "api://scorefn-scoring"
"""Audience of the router's hop tokens in the local stack (hop authentication)."""


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

    @property
    def identity_header_file(self) -> Path:
        """The dev issuer's managed-identity endpoint secret (``IDENTITY_HEADER``)."""
        return self.key_file.parent / "identity-header"

    def hop_token(self) -> str:
        """A hop token as the router's identity gets it: a deployment accepts it directly."""
        issuer = DevIssuer.from_key_file(self.key_file, self.issuer_url)
        return issuer.identity_token(LOCAL_HOP_AUDIENCE)["access_token"]

    def hop_env(self) -> dict[str, str]:
        """Settings turning hop authentication on in a deployment's host."""
        return {
            "SCOREFN_HOP_AUDIENCE": LOCAL_HOP_AUDIENCE,
            "SCOREFN_HOP_TENANT": DEV_TENANT,
            "SCOREFN_HOP_LOCAL_ISSUER": self.issuer_url,
            "SCOREFN_HOP_ALLOWED_CLIENTS": DEV_IDENTITY_CLIENT_ID,
        }

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
        self.endpoint_key = apply_endpoint(self.connection_string, self.spec)
        logs = opts.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        identity_header = identity_header_secret(self.identity_header_file)
        self.issuer = start_dev_issuer(
            ISSUER_PORT + opts.port_shift,
            key_file=self.key_file,
            log_path=logs / "dev-issuer.log",
            timeout=opts.ready_timeout,
            identity_header_file=self.identity_header_file,
        )
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
                    "SCOREFN_TELEMETRY_ENDPOINT": self.spec.name,
                    "SCOREFN_MODELS_DIR": str(ROOT / "models"),
                    "SCOREFN_BATCHING": "true" if d.batching else "false",
                    "AzureWebJobsStorage": self.connection_string,
                    **self.hop_env(),
                },
            )
            self.hosts[d.name] = host
            host.start(timeout=opts.ready_timeout)
        for d in self.spec.deployments:
            self._wait_ready(d)
        self.router = router_host(
            port=ROUTER_PORT + opts.port_shift,
            storage=self.connection_string,
            issuer_url=self.issuer_url,
            port_shift=opts.port_shift,
            host_id=f"{self.spec.name}-router",
            log_path=logs / "router.log",
            hop_audience=LOCAL_HOP_AUDIENCE,
            identity_header=identity_header,
        )
        self.router.start(timeout=opts.ready_timeout)

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
            stop_dev_issuer(self.issuer)
            log.info("dev issuer stopped")
        if self.azurite is not None:
            self.azurite.stop()
            log.info("Azurite stopped")


def apply_endpoint(storage: str, spec: EndpointSpec) -> str | None:
    """Store ``spec`` in the endpoints table of ``storage`` (a connection string);
    the primary key when one was created (auth mode key), else None."""
    store = EndpointStore.from_connection_string(storage)
    try:
        _, issued = store.apply(spec)
    finally:
        store.close()
    return issued.primary if issued is not None else None


def start_dev_issuer(
    port: int,
    *,
    key_file: Path,
    log_path: Path,
    timeout: float = 60.0,
    python: str = sys.executable,
    identity_header_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Launch ``python -m shared.auth.dev_issuer`` on 127.0.0.1:``port`` signing with
    ``key_file`` (created if absent); return once its metadata document answers.

    ``python`` is the interpreter to run it with (a wrapper may pin it to a core).
    ``identity_header_file``: also serve the managed-identity endpoint with that secret.
    """
    command = [python, "-m", "shared.auth.dev_issuer", "--port", str(port)]
    command += ["--key-file", str(key_file)]
    if identity_header_file is not None:
        command += ["--identity-header-file", str(identity_header_file)]
    with log_path.open("ab") as out:
        issuer = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_http(
            f"http://127.0.0.1:{port}/{DEV_TENANT}/v2.0/.well-known/openid-configuration",
            timeout=timeout,
            alive=lambda: issuer.poll() is None,
        )
    except (RuntimeError, TimeoutError):
        stop_dev_issuer(issuer)
        raise
    return issuer


def stop_dev_issuer(issuer: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the dev issuer, SIGKILL it after ``timeout`` seconds."""
    if issuer.poll() is not None:
        return
    issuer.terminate()
    try:
        issuer.wait(timeout)
    except subprocess.TimeoutExpired:
        issuer.kill()
        issuer.wait()


def router_host(
    *,
    port: int,
    storage: str,
    issuer_url: str,
    port_shift: int = 0,
    host_id: str | None = None,
    log_path: Path | None = None,
    python: str = sys.executable,
    hop_audience: str | None = None,
    identity_header: str | None = None,
) -> HostProcess:
    """The router as a local host (not started): ``APP_ROLE=router`` reading endpoints
    from ``storage`` and trusting the dev issuer at ``issuer_url`` (local mode).

    With ``hop_audience`` (and the dev issuer's ``identity_header`` secret) it sends hop
    tokens for that audience, from ``ManagedIdentityCredential`` pointed at the dev
    issuer's managed-identity endpoint, as in Azure.
    """
    hop: dict[str, str] = {}
    if hop_audience is not None:
        if identity_header is None:
            raise ValueError("hop_audience needs the dev issuer's identity_header secret")
        hop = {
            "SCOREFN_ROUTER_HOP_AUDIENCE": hop_audience,
            "IDENTITY_ENDPOINT": issuer_url.rstrip("/") + MSI_PATH,
            "IDENTITY_HEADER": identity_header,
        }
    return HostProcess(
        "function_app:app",
        port=port,
        cwd=ROOT,
        storage=storage,
        host_id=host_id,
        log_path=log_path,
        python=python,
        env={
            "APP_ROLE": "router",
            "SCOREFN_ROUTER_STORAGE": storage,
            "SCOREFN_ROUTER_LOCAL_ISSUER": issuer_url,
            "SCOREFN_ROUTER_PORT_SHIFT": str(port_shift),
            "AzureWebJobsStorage": storage,
            **hop,
        },
    )


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
        print(
            "Or a deployment directly (hop authentication: the router's token):\n  "
            + example_curl(first, authorization=f"Bearer {stack.hop_token()}")
        )
        print("\nCtrl-C stops everything.", flush=True)
        stop.wait()
        print("\nstopping...", flush=True)
        return 0
    except (RuntimeError, TimeoutError, ValueError, FileNotFoundError, ScorefnError) as exc:
        print(f"scorefn up failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()
