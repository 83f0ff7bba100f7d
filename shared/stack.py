"""The local stack behind ``make up`` / ``scorefn up``.

Starts Azurite (or reuses one already listening), then one local Functions host per
deployment of an endpoint spec (``APP_ROLE=scoring``, the deployment's models, its
``local_port``), waits until every host is ready, prints the URLs and a ready-to-paste
``curl``, and on Ctrl-C (SIGINT) or SIGTERM stops every child and frees the ports.
"""

from __future__ import annotations

import json
import logging
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from shared.localhost.azurite import AzuriteProcess, StorageEndpoints
from shared.localhost.runner import HostProcess
from shared.routing.endpoint import DeploymentSpec, EndpointSpec, load_endpoint

__all__ = ["Stack", "StackOptions", "run_stack", "example_curl"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
AZURITE_PORTS = (10000, 10001, 10002)
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
        logs = opts.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
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
        """Stop every host, then Azurite (if this stack started it)."""
        for name, host in reversed(list(self.hosts.items())):
            code = host.stop()
            log.info("deployment %s stopped (exit %s)", name, code)
        if self.azurite is not None:
            self.azurite.stop()
            log.info("Azurite stopped")


def example_curl(base_url: str) -> str:
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
    return (
        f"curl -s -X POST {base_url}/api/score -H 'Content-Type: application/json' "
        f"-d {shlex.quote(json.dumps(body, separators=(',', ':')))}"
    )


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
        for d in spec.deployments:
            url = stack.url(d)
            print(f"  deployment {d.name:6s} {url}/api  models: {', '.join(d.models)}")
            print(
                f"      docs: {url}/api/docs   v2: {url}/api/v2/models/{d.models[0].split(':')[0]}"
            )
        first = stack.url(spec.deployments[0])
        print("\nTry:\n  " + example_curl(first))
        print("\nCtrl-C stops everything.", flush=True)
        stop.wait()
        print("\nstopping...", flush=True)
        return 0
    except (RuntimeError, TimeoutError, ValueError, FileNotFoundError) as exc:
        print(f"scorefn up failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.stop()
